import CTorporLinux
import Glibc

/// The text of an `errno` value, e.g. "No space left on device".
func errnoDescription(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// Throws an `.io` error naming the operation, the path and the system's reason.
func ioError(_ operation: String, _ path: String, errno code: Int32 = errno) -> CheckpointError {
    CheckpointError(.io, "\(operation) \(path): \(errnoDescription(code))")
}

/// A file descriptor owned by this object; closed on `close()` or deinit.
final class FileDescriptor {
    let fd: Int32
    let path: String
    private var isOpen = true

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Opens `path` for reading.
    static func openForReading(_ path: String) throws(CheckpointError) -> FileDescriptor {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("cannot open", path) }
        return FileDescriptor(fd: fd, path: path)
    }

    /// Creates `path` for writing; fails if it exists.
    static func create(_ path: String) throws(CheckpointError) -> FileDescriptor {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ioError("cannot create", path) }
        return FileDescriptor(fd: fd, path: path)
    }

    /// Writes `pieces` one after the other from `offset`, up to 1024 (IOV_MAX) in one `pwritev`, retrying short
    /// writes and EINTR.
    func write(_ pieces: [UnsafeRawBufferPointer], at offset: Int) throws(CheckpointError) {
        var vectors = pieces.filter { $0.count > 0 }.map {
            iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count)
        }
        var first = 0
        var position = offset
        while first < vectors.count {
            let count = Int32(min(vectors.count - first, 1024))
            let n = vectors.withUnsafeBufferPointer { pwritev(fd, $0.baseAddress! + first, count, off_t(position)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("cannot write", path)
            }
            if n == 0 { throw CheckpointError(.io, "cannot write \(path): the device accepted no bytes") }
            position += n
            // Past the pieces written whole; into the one written in part.
            var written = n
            while written > 0 {
                if written >= vectors[first].iov_len {
                    written -= vectors[first].iov_len
                    first += 1
                } else {
                    vectors[first].iov_base += written
                    vectors[first].iov_len -= written
                    written = 0
                }
            }
        }
    }

    /// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        try write([bytes], at: offset)
    }

    /// Reserves `size` bytes of disk for the file before it is written, so that a full disk fails now, not halfway,
    /// and the writes that follow find their blocks allocated. Filesystems without `fallocate` skip it.
    func reserve(_ size: Int) throws(CheckpointError) {
        guard size > 0, CTorporLinux_allocate(fd, Int64(size)) != 0 else { return }
        let code = errno
        guard code == EOPNOTSUPP || code == ENOSYS || code == EINVAL else {
            throw ioError("cannot reserve space for", path, errno: code)
        }
    }

    /// Asks the kernel to start writing a range to the device now, so that the final `sync()` has little left
    /// to wait for. Advisory: failures are ignored, `sync()` reports them.
    func startWriteback(offset: Int, count: Int) {
        _ = CTorporLinux_startWriteback(fd, Int64(offset), Int64(count))
    }

    /// Flushes the file's data and metadata to stable storage.
    func sync() throws(CheckpointError) {
        guard fsync(fd) == 0 else { throw ioError("cannot fsync", path) }
    }

    func close() {
        guard isOpen else { return }
        isOpen = false
        _ = Glibc.close(fd)
    }

    deinit { close() }
}
