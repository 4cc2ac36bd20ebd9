import Foundation
import NIOCore

/// Reads the token counts an engine reports in an answer's `usage` object, from the answer's bytes as they pass:
/// the end of a non-streamed answer, or a stream's last usage chunk (vLLM sends one when the client asks with
/// `stream_options.include_usage`). Only the last few KiB are kept; nothing is parsed until the end.
struct UsageTally {
    private var tail: [UInt8] = []
    private static let kept = 16 << 10

    mutating func consume(_ chunk: ByteBuffer) {
        tail.append(contentsOf: chunk.readableBytesView.suffix(Self.kept))
        // Trimmed once it holds twice what is kept, not at every chunk: a stream's chunks are small, and moving
        // 16 KiB for each would cost more than passing the chunk on.
        if tail.count > 2 * Self.kept { tail.removeFirst(tail.count - Self.kept) }
    }

    /// The last `usage` the answer reported (`completion_tokens` is 0 for embeddings), or nil.
    var usage: (prompt: Int, completion: Int)? {
        let text = String(decoding: tail.suffix(Self.kept), as: UTF8.self)
        guard let start = text.ranges(of: "\"usage\"").last?.lowerBound else { return nil }
        let usage = text[start...]
        guard let prompt = Self.count("prompt_tokens", in: usage) else { return nil }
        return (prompt, Self.count("completion_tokens", in: usage) ?? 0)
    }

    private static func count(_ field: String, in text: Substring) -> Int? {
        guard let key = text.range(of: "\"\(field)\"") else { return nil }
        let digits = text[key.upperBound...].drop { $0 == ":" || $0 == " " }.prefix { $0.isNumber }
        return Int(digits)
    }
}
