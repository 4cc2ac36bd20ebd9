import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The end of an engine's log for `GET /admin/models/NAME/logs[?lines=N&follow=1]`: the last `lines` lines, then,
/// when following, what the engine appends, until the client leaves or the gateway shuts down. An engine restarted
/// meanwhile starts a new log in the same file (it is truncated), which is followed from its start.
struct EngineLogTail: Sendable {
    let path: String
    let lines: Int
    var poll = Duration.milliseconds(250)

    func response(
        following: Bool, request: Request, stopping: @escaping @Sendable () async -> Bool
    ) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                var offset = try await writeTail(to: &writer)
                if following {
                    try await request.body.consumeWithCancellationOnInboundClose { _ in
                        while !Task.isCancelled, !(await stopping()) {
                            try await Task.sleep(for: poll)
                            offset = try await writeAppended(from: offset, to: &writer)
                        }
                    }
                }
                try await writer.finish(nil)
            })
    }

    /// Writes the last `lines` lines; the file's size then.
    private func writeTail(to writer: inout some ResponseBodyWriter) async throws -> UInt64 {
        guard let handle = FileHandle(forReadingAtPath: path) else { return 0 }
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        // Enough for the lines asked for in all but pathological logs; the cut is made at a line's start.
        let window = min(size, UInt64(max(lines, 1)) * 1024 + 4096)
        try handle.seek(toOffset: size - window)
        let data = try handle.readToEnd() ?? Data()
        var text = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if window < size, !text.isEmpty { text.removeFirst() }
        if text.last?.isEmpty == true { text.removeLast() }
        let kept = text.suffix(lines)
        if !kept.isEmpty {
            var buffer = ByteBuffer()
            for line in kept {
                buffer.writeBytes(line)
                buffer.writeInteger(UInt8(ascii: "\n"))
            }
            try await writer.write(buffer)
        }
        return size
    }

    /// Writes what was appended since `offset`; the new offset.
    private func writeAppended(from offset: UInt64, to writer: inout some ResponseBodyWriter) async throws -> UInt64 {
        guard let handle = FileHandle(forReadingAtPath: path) else { return offset }
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        let start = size < offset ? 0 : offset
        guard size > start else { return size }
        try handle.seek(toOffset: start)
        if let data = try handle.read(upToCount: Int(min(size - start, 1 << 20))), !data.isEmpty {
            try await writer.write(ByteBuffer(bytes: data))
            return start + UInt64(data.count)
        }
        return size
    }
}
