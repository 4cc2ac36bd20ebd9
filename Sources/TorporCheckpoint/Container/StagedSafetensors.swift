import Glibc

/// A safetensors file assembled in anonymous memory from tensors that live elsewhere (a Python state dict, GPU
/// memory), then packed into a container: how `torpor_save` and `torpor.save` write checkpoints.
///
/// The caller fills each tensor's bytes (`destination(of:)`) — on any thread, in any order — and then calls
/// `pack`, which validates the assembled file like any other and writes the container under a temporary name
/// beside `path`, renaming it into place only when it is complete.
public final class StagedSafetensors: @unchecked Sendable {
    /// A tensor to stage: its name, element type and shape (its size follows from them).
    public struct Tensor: Sendable, Equatable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]

        public init(name: String, dtype: DType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
    }

    public let tensors: [Tensor]
    /// Where each tensor's bytes start in the memory, and how many there are.
    public let ranges: [Range<Int>]
    /// The memory: the safetensors file being assembled.
    public let mapping: MappedFile

    /// Lays the tensors out as a safetensors file in memory: new anonymous memory, or what `memory` gives for
    /// the file's size (memory kept from an earlier save, say; every byte of the file is written, the header here
    /// and the tensors by the caller, so it need not be zeroed).
    /// - Throws: `.invalidArgument` for an empty or repeated name, a negative dimension, a shape whose size does
    ///   not fill whole bytes; `.io` when the memory cannot be had; what `memory` throws.
    public init(
        _ tensors: [Tensor], metadata: [String: String] = [:], name: String = "staged.safetensors",
        memory: (_ count: Int, _ name: String) throws(CheckpointError) -> MappedFile = {
            count, name throws(CheckpointError) in
            try MappedFile(anonymous: count, name: name)
        }
    ) throws(CheckpointError) {
        var seen = Set<String>()
        var sizes: [Int] = []
        for tensor in tensors {
            guard !tensor.name.isEmpty, tensor.name != "__metadata__" else {
                throw CheckpointError(.invalidArgument, "a tensor name may be neither empty nor \"__metadata__\"")
            }
            guard seen.insert(tensor.name).inserted else {
                throw CheckpointError(.invalidArgument, "the tensor name \"\(tensor.name)\" is given twice")
            }
            guard tensor.shape.allSatisfy({ $0 >= 0 }) else {
                throw CheckpointError(
                    .invalidArgument, "tensor \"\(tensor.name)\" has a negative dimension: \(tensor.shape)")
            }
            var elements = 1
            for dimension in tensor.shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
                guard !overflow else {
                    throw CheckpointError(.invalidArgument, "tensor \"\(tensor.name)\" is too large: \(tensor.shape)")
                }
                elements = product
            }
            guard let bytes = tensor.dtype.byteCount(elements: elements) else {
                throw CheckpointError(
                    .invalidArgument,
                    "tensor \"\(tensor.name)\": \(elements) \(tensor.dtype.rawValue) elements do not fill whole bytes")
            }
            sizes.append(bytes)
        }
        let header = SafetensorsBuilder.header(
            zip(tensors, sizes).map { ($0.name, $0.dtype, $0.shape, $1) }, metadata: metadata)
        var ranges: [Range<Int>] = []
        var offset = header.count
        for size in sizes {
            ranges.append(offset..<(offset + size))
            offset += size
        }
        self.tensors = tensors
        self.ranges = ranges
        let mapping = try memory(offset, name)
        guard mapping.count == offset else {
            throw CheckpointError(
                .invalidArgument, "\(name) needs \(offset) bytes of memory, but \(mapping.count) were given")
        }
        self.mapping = mapping
        UnsafeMutableRawPointer(mutating: mapping.bytes.baseAddress!).copyMemory(
            from: header, byteCount: header.count)
    }

    /// The memory a tensor's bytes go to.
    public func destination(of index: Int) -> UnsafeMutableRawBufferPointer {
        let range = ranges[index]
        guard range.count > 0 else { return UnsafeMutableRawBufferPointer(start: nil, count: 0) }
        return UnsafeMutableRawBufferPointer(
            start: UnsafeMutableRawPointer(mutating: mapping.bytes.baseAddress! + range.lowerBound),
            count: range.count)
    }

    /// Packs the filled-in file into a container at `path`: written as `.NAME.partial-PID` in the same
    /// directory, fsynced, then renamed over `path` (an existing file there is replaced only by a complete one).
    public func pack(to path: String, options: PackOptions = PackOptions()) throws(CheckpointError) -> PackedFile {
        let source = try SafetensorsFile(mapping: mapping)
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let fileName = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !fileName.isEmpty else {
            throw CheckpointError(.invalidArgument, "\(path) names a directory, not a container file")
        }
        let partial = "\(directory)/.\(fileName).partial-\(getpid())"
        unlink(partial)
        let sourceName = fileName.hasSuffix(".torpor") ? String(fileName.dropLast(7)) + ".safetensors" : fileName
        let packed = try ContainerPacker.pack(source: source, to: partial, fileName: sourceName, options: options)
        guard rename(partial, path) == 0 else {
            let error = ioError("cannot rename the finished container to", path)
            unlink(partial)
            throw error
        }
        let handle = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY)
        if handle >= 0 {
            _ = fsync(handle)
            close(handle)
        }
        return packed
    }
}
