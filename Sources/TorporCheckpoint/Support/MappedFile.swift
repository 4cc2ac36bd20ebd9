import Glibc

/// A whole file mapped read-only into memory; unmapped on deinit.
///
/// Reading through a mapping lets the codecs work on the file's bytes in place, in parallel, without copies.
public final class MappedFile: @unchecked Sendable {
    /// The path the file was opened from, for messages.
    public let path: String
    /// The file's bytes. Empty for an empty file.
    public let bytes: UnsafeRawBufferPointer
    /// What owns the bytes when this mapping only views them (`init(viewing:)`); nil: this mapping unmaps them.
    private let owner: AnyObject?

    /// Maps `path` read-only.
    /// - Throws: `CheckpointError` with code `.io` when the file cannot be opened or mapped.
    public init(path: String) throws(CheckpointError) {
        self.path = path
        owner = nil
        let file = try FileDescriptor.openForReading(path)
        defer { file.close() }
        var info = stat()
        guard fstat(file.fd, &info) == 0 else { throw ioError("cannot stat", path) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw CheckpointError(.io, "\(path) is not a regular file")
        }
        let size = Int(info.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, file.fd, 0), base != MAP_FAILED else {
            throw ioError("cannot map", path)
        }
        _ = madvise(base, size, MADV_SEQUENTIAL)
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    /// Anonymous, writable memory of `count` bytes, zeroed, standing in for a file named `name` (in messages):
    /// where a safetensors file is assembled in memory before it is packed.
    /// - Throws: `CheckpointError` with code `.io` when the memory cannot be mapped.
    public convenience init(anonymous count: Int, name: String) throws(CheckpointError) {
        try self.init(mapping: count, flags: MAP_PRIVATE | MAP_ANONYMOUS, name: name, what: "bytes of memory")
    }

    /// Anonymous, writable memory of `count` bytes standing in for the file `name`, reserving no swap: only the
    /// pages written take memory. Where a remote container's metadata is placed at its offsets.
    /// - Throws: `CheckpointError` with code `.io` when the memory cannot be mapped.
    public convenience init(sparse count: Int, name: String) throws(CheckpointError) {
        try self.init(
            mapping: count, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, name: name,
            what: "bytes of address space")
    }

    private init(mapping count: Int, flags: Int32, name: String, what: String) throws(CheckpointError) {
        path = name
        owner = nil
        guard count > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, count, PROT_READ | PROT_WRITE, flags, -1, 0), base != MAP_FAILED else {
            throw ioError("cannot map \(count) \(what) for", name)
        }
        bytes = UnsafeRawBufferPointer(start: base, count: count)
    }

    /// The first `count` bytes of memory that `owner` holds (kept alive by this mapping, never unmapped by it),
    /// standing in for the file `name`: a file assembled in memory that is reused from one file to the next.
    public init(viewing memory: UnsafeRawBufferPointer, count: Int, name: String, owner: AnyObject) {
        precondition(count >= 0 && count <= memory.count, "a view of \(count) bytes of \(memory.count)")
        path = name
        self.owner = owner
        bytes = UnsafeRawBufferPointer(start: count > 0 ? memory.baseAddress : nil, count: count)
    }

    /// The number of bytes in the file.
    public var count: Int { bytes.count }

    deinit {
        if owner == nil, let base = bytes.baseAddress {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        }
    }
}

extension UnsafeRawBufferPointer {
    /// Reads a little-endian integer at `offset`; the caller has checked the bounds.
    @inline(__always)
    func loadLE<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Writes a little-endian integer at `offset`; the caller has checked the bounds.
    @inline(__always)
    func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}
