import Glibc
public import TorporCheckpoint

/// What a load benchmark needs around the loader: cold reads, and proof that GPU memory holds the right bytes.
public enum LoadChecks {
    /// Drops a file's pages from the page cache (written back first), so that the next read comes from the disk.
    public static func evictFromPageCache(_ path: String) throws(GPUError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw GPUError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        fdatasync(descriptor)
        let result = posix_fadvise(descriptor, 0, 0, Int32(POSIX_FADV_DONTNEED))
        guard result == 0 else { throw GPUError(.io, "posix_fadvise(DONTNEED) on \(path) failed: \(result)") }
    }

    /// Copies `buffer` back through pinned memory, 256 MiB at a time, and compares it with `expected`.
    /// - Throws: `.corruptData` naming the first byte that differs (`source` names where `expected` came from).
    public static func compare(_ buffer: DeviceBuffer, with expected: UnsafeRawBufferPointer, source: String)
        throws(GPUError)
    {
        guard expected.count == buffer.count else {
            throw GPUError(.corruptData, "\(source) holds \(expected.count) bytes, the GPU copy \(buffer.count)")
        }
        let window = 256 << 20
        let host = try PinnedBuffer(device: buffer.device, count: min(window, max(expected.count, 1)))
        let stream = try GPUStream(device: buffer.device)
        var offset = 0
        while offset < expected.count {
            let count = min(window, expected.count - offset)
            try buffer.copy(to: host.pointer, count: count, from: offset, on: stream)
            try stream.synchronize()
            if memcmp(host.pointer, expected.baseAddress! + offset, count) != 0 {
                var at = 0
                let loaded = host.pointer.assumingMemoryBound(to: UInt8.self)
                while loaded[at] == expected[offset + at] { at += 1 }
                throw GPUError(
                    .corruptData, "GPU memory differs from \(source) at byte \(offset + at): the load is wrong")
            }
            offset += count
        }
    }
}
