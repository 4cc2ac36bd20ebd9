import FoundationEssentials
import Glibc
public import TorporCheckpoint

/// A container's bytes held in pinned host memory: a file under /dev/shm, mapped and registered with the CUDA
/// driver, so the loader copies from it to the GPU at full PCIe speed without staging, and another process (a
/// vLLM worker) can map the same file and load from it without its own copy.
///
/// The cache file is a byte-for-byte copy of the container. It is written under a temporary name and renamed
/// when complete, so a cache that exists is whole; one whose size or first page differs from the container is
/// stale and rewritten.
public final class HostCache: @unchecked Sendable {
    public let path: String
    public let pointer: UnsafeMutableRawPointer
    public let count: Int
    /// Whether opening it copied the container (it was absent or stale).
    public let filled: Bool
    /// Seconds spent copying (when filled) and registering the mapping as pinned.
    public let fillSeconds: Double
    public let registerSeconds: Double
    private var pinned: PinnedBuffer?

    /// The cache file for `containerPath` in `directory` (`HostCachePath`).
    public static func defaultPath(for containerPath: String, directory: String = "/dev/shm") -> String {
        HostCachePath.for(container: containerPath, directory: directory)
    }

    public init(container: Container, path: String? = nil, device: GPUDevice) throws(GPUError) {
        try Self.requireLocal(container)
        let path = path ?? Self.defaultPath(for: container.path)
        self.path = path
        count = container.fileSize
        let started = ContinuousClock.now
        filled = try !Self.isCurrent(path, container: container)
        if filled { try Self.fill(path, from: container.path, count: count) }
        let copied = ContinuousClock.now
        fillSeconds = (copied - started) / .seconds(1)

        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw GPUError(.io, "cannot open the host cache \(path): \(errnoText())") }
        defer { close(descriptor) }
        guard let mapping = mmap(nil, count, PROT_READ, MAP_SHARED | MAP_POPULATE, descriptor, 0),
            mapping != MAP_FAILED
        else {
            throw GPUError(.io, "cannot map the host cache \(path) (\(count) bytes): \(errnoText())")
        }
        pointer = mapping
        do {
            pinned = try PinnedBuffer(device: device, registering: mapping, count: count, readOnly: true)
        } catch {
            munmap(mapping, count)
            throw GPUError(
                error.code, "cannot pin the host cache \(path) (\(count) bytes) for GPU copies: \(error.message)")
        }
        registerSeconds = (ContinuousClock.now - copied) / .seconds(1)
    }

    deinit {
        pinned = nil  // unregister before unmapping
        munmap(pointer, count)
    }

    /// Whether the cache file at `path` already holds this container: same size, same first page (the preamble,
    /// with the CRC-32s of the chunk table and index).
    /// Makes sure the host cache file of `container` exists and is current, copying the container there if not;
    /// needs no GPU (a loader in another process maps and pins it).
    /// - Returns: the cache file's path, and whether it was written now.
    public static func prepare(_ container: Container, path: String? = nil) throws(GPUError)
        -> (path: String, filled: Bool)
    {
        try requireLocal(container)
        let path = path ?? defaultPath(for: container.path)
        if try isCurrent(path, container: container) { return (path, false) }
        try fill(path, from: container.path, count: container.fileSize)
        return (path, true)
    }

    /// A host cache is a copy of a local container file.
    private static func requireLocal(_ container: Container) throws(GPUError) {
        guard !container.holdsChunks else { return }
        throw GPUError(
            .unsupported,
            "\(container.path): a host cache is copied from a local container; pull it first, or load it by range")
    }

    static func isCurrent(_ path: String, container: Container) throws(GPUError) -> Bool {
        var status = stat()
        guard stat(path, &status) == 0 else { return false }
        guard Int(status.st_size) == container.fileSize else { return false }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var cached = [UInt8](repeating: 0, count: 4096)
        let read = cached.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, 4096, 0) }
        guard read == min(4096, container.fileSize) else { return false }
        return cached.withUnsafeBytes { cachedBytes in
            container.firstPage.withUnsafeBytes { $0.elementsEqual(cachedBytes.prefix(read)) }
        }
    }

    /// Copies the container to `path` through a temporary file renamed into place when complete.
    static func fill(_ path: String, from source: String, count: Int) throws(GPUError) {
        let temporary = "\(path).partial-\(getpid())"
        // The cache directory (a plugin's cache_dir, the gateway's host_cache_dir) is made when it is missing.
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !directory.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw GPUError(.io, "cannot create the host cache directory \(directory): \(error)")
            }
        }
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw GPUError(.io, "cannot open \(source): \(errnoText())") }
        defer { close(input) }
        let output = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw GPUError(.io, "cannot create the host cache \(temporary): \(errnoText())") }
        var complete = false
        defer {
            close(output)
            if !complete { unlink(temporary) }
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 16 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset = 0
        while offset < count {
            let got = pread(input, buffer, min(16 << 20, count - offset), off_t(offset))
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else {
                throw GPUError(.io, "cannot read \(source) at byte \(offset): \(got < 0 ? errnoText() : "end of file")")
            }
            var written = 0
            while written < got {
                let put = pwrite(output, buffer.advanced(by: written), got - written, off_t(offset + written))
                if put < 0 && errno == EINTR { continue }
                guard put > 0 else {
                    throw GPUError(
                        .io,
                        "cannot write the host cache \(temporary) at byte \(offset + written): \(errnoText()) "
                            + "(is /dev/shm large enough for \(count) bytes?)")
                }
                written += put
            }
            offset += got
        }
        guard rename(temporary, path) == 0 else {
            throw GPUError(.io, "cannot rename \(temporary) to \(path): \(errnoText())")
        }
        complete = true
    }
}
