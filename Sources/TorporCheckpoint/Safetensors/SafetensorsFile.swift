import FoundationEssentials

/// One tensor described by a safetensors header.
public struct TensorInfo: Sendable, Equatable {
    /// The tensor's name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Byte range within the data region (after the 8-byte length and the header).
    public var dataOffsets: Range<Int>

    public init(name: String, dtype: DType, shape: [Int], dataOffsets: Range<Int>) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.dataOffsets = dataOffsets
    }

    /// The number of elements (1 for a 0-d tensor, 0 when any dimension is 0).
    public var elementCount: Int { shape.reduce(1, *) }
    /// The tensor's size in bytes.
    public var byteCount: Int { dataOffsets.count }
}

/// A parsed, validated safetensors header.
///
/// Validation is as strict as the reference implementation: the header must fit the file and be a JSON object;
/// every tensor needs a known dtype, a shape of non-negative integers and offsets whose length equals
/// dtype × shape; tensors must tile the data region exactly, with no overlap, hole or trailing byte.
public struct SafetensorsHeader: Sendable {
    /// The longest header accepted, as in the reference implementation (100 MB).
    public static let maximumHeaderBytes = 100_000_000

    /// The tensors in data order (ascending offsets).
    public let tensors: [TensorInfo]
    /// The `__metadata__` map, empty when absent.
    public let metadata: [String: String]
    /// The length of the JSON header (the 8-byte prefix's value).
    public let headerLength: Int
    /// Where the data region starts in the file: 8 + `headerLength`.
    public var dataStart: Int { 8 + headerLength }
    /// The size of the data region in bytes.
    public let dataLength: Int

    /// Parses and validates the header of a safetensors file's bytes.
    /// - Parameters:
    ///   - bytes: the whole file.
    ///   - file: the file's name, used in every error message.
    /// - Throws: `CheckpointError` with code `.invalidSafetensors` naming the file and, where there is one,
    ///   the tensor.
    public init(parsing bytes: UnsafeRawBufferPointer, file: String) throws(CheckpointError) {
        func fail(_ reason: String) -> CheckpointError {
            CheckpointError(.invalidSafetensors, "\(file): \(reason)")
        }
        guard bytes.count >= 8 else {
            throw fail("file is \(bytes.count) bytes, too short for the 8-byte header length")
        }
        let declared = bytes.loadLE(UInt64.self, at: 0)
        guard declared <= UInt64(Self.maximumHeaderBytes) else {
            throw fail(
                "not a safetensors file: its first 8 bytes, a safetensors file's header length, read as \(declared), "
                    + "more than the \(Self.maximumHeaderBytes)-byte limit")
        }
        let headerLength = Int(declared)
        guard headerLength <= bytes.count - 8 else {
            throw fail("header length \(headerLength) runs beyond the end of the file (\(bytes.count) bytes)")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + headerLength)])
        try self.init(
            headerJSON: headerBytes, dataLength: bytes.count - 8 - headerLength, file: file)
    }

    /// Parses and validates a header given its JSON bytes (without the 8-byte prefix) and the size of the data
    /// region that follows it. Containers use this to check the source header they store.
    public init(headerJSON headerBytes: UnsafeRawBufferPointer, dataLength: Int, file: String) throws(CheckpointError) {
        func fail(_ reason: String) -> CheckpointError {
            CheckpointError(.invalidSafetensors, "\(file): \(reason)")
        }
        let headerLength = headerBytes.count
        guard headerLength >= 2, headerBytes[0] == UInt8(ascii: "{") else {
            throw fail("header does not start with '{'")
        }
        let root: JSONValue
        do {
            root = try JSONParser.parse(headerBytes)
        } catch {
            throw fail("header is not valid JSON (\(error))")
        }
        guard let entries = root.objectValue else { throw fail("header is not a JSON object") }

        var metadata: [String: String] = [:]
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(entries.count)
        var seen = Set<String>()
        for (name, value) in entries {
            guard seen.insert(name).inserted else { throw fail("tensor \"\(name)\" appears twice in the header") }
            if name == "__metadata__" {
                guard let map = value.objectValue else { throw fail("__metadata__ is not an object of strings") }
                for (key, item) in map {
                    guard let text = item.stringValue else {
                        throw fail("__metadata__ value for \"\(key)\" is not a string")
                    }
                    metadata[key] = text
                }
                continue
            }
            tensors.append(try Self.parseTensor(name: name, value: value, file: file))
        }
        tensors.sort {
            ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound) < (
                $1.dataOffsets.lowerBound, $1.dataOffsets.upperBound
            )
        }

        var expectedStart = 0
        for (index, tensor) in tensors.enumerated() {
            if tensor.dataOffsets.lowerBound < expectedStart {
                let previous = tensors[index - 1].name
                throw fail(
                    "tensor \"\(tensor.name)\" overlaps \"\(previous)\" (starts at \(tensor.dataOffsets.lowerBound), before \(expectedStart))"
                )
            }
            if tensor.dataOffsets.lowerBound > expectedStart {
                throw fail(
                    "bytes \(expectedStart)..<\(tensor.dataOffsets.lowerBound) of the data region belong to no tensor (hole before \"\(tensor.name)\")"
                )
            }
            expectedStart = tensor.dataOffsets.upperBound
        }
        if let last = tensors.last, last.dataOffsets.upperBound > dataLength {
            throw fail(
                "tensor \"\(last.name)\" ends at data offset \(last.dataOffsets.upperBound), beyond the \(dataLength)-byte data region (truncated file?)"
            )
        }
        if expectedStart != dataLength {
            throw fail(
                "the data region is \(dataLength) bytes but the tensors cover \(expectedStart) (trailing bytes belong to no tensor)"
            )
        }

        self.tensors = tensors
        self.metadata = metadata
        self.headerLength = headerLength
        self.dataLength = dataLength
    }

    private static func parseTensor(name: String, value: JSONValue, file: String) throws(CheckpointError)
        -> TensorInfo
    {
        func fail(_ reason: String) -> CheckpointError {
            CheckpointError(.invalidSafetensors, "\(file): tensor \"\(name)\": \(reason)")
        }
        guard value.objectValue != nil else { throw fail("entry is not a JSON object") }
        guard let dtypeName = value["dtype"]?.stringValue else { throw fail("missing or non-string \"dtype\"") }
        guard let dtype = DType(rawValue: dtypeName) else {
            let known = DType.allCases.map(\.rawValue).joined(separator: " ")
            throw fail("unknown dtype \"\(dtypeName)\" (known: \(known))")
        }
        guard let shapeItems = value["shape"]?.arrayValue else { throw fail("missing or non-array \"shape\"") }
        var shape: [Int] = []
        var elements = 1
        for item in shapeItems {
            guard let dim = item.nonNegativeInt else {
                throw fail("\"shape\" holds something other than a non-negative integer")
            }
            shape.append(dim)
            let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
            guard !overflow else { throw fail("shape \(shape) has more elements than can be addressed") }
            elements = product
        }
        guard let offsetItems = value["data_offsets"]?.arrayValue, offsetItems.count == 2,
            let begin = offsetItems[0].nonNegativeInt, let end = offsetItems[1].nonNegativeInt
        else { throw fail("\"data_offsets\" must be two non-negative integers [begin, end]") }
        guard end >= begin else { throw fail("data_offsets [\(begin), \(end)] are out of order") }
        guard let expected = dtype.byteCount(elements: elements) else {
            throw fail("\(elements) elements of \(dtype.rawValue) do not fill whole bytes")
        }
        guard end - begin == expected else {
            throw fail(
                "data_offsets [\(begin), \(end)] hold \(end - begin) bytes but \(dtype.rawValue) × \(shape) needs \(expected)"
            )
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end)
    }
}

/// A safetensors file mapped into memory and validated.
public struct SafetensorsFile: Sendable {
    public let mapping: MappedFile
    public let header: SafetensorsHeader

    /// Maps and validates the safetensors file at `path`.
    public init(path: String) throws(CheckpointError) {
        mapping = try MappedFile(path: path)
        header = try SafetensorsHeader(parsing: mapping.bytes, file: path)
    }

    /// Validates a safetensors file already in memory (`mapping.path` names it in messages).
    public init(mapping: MappedFile) throws(CheckpointError) {
        self.mapping = mapping
        header = try SafetensorsHeader(parsing: mapping.bytes, file: mapping.path)
    }

    /// The bytes of the JSON header, with the 8-byte length prefix.
    public var headerBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: mapping.bytes[0..<header.dataStart])
    }

    /// The bytes of one tensor.
    public func bytes(of tensor: TensorInfo) -> UnsafeRawBufferPointer {
        let start = header.dataStart + tensor.dataOffsets.lowerBound
        return UnsafeRawBufferPointer(rebasing: mapping.bytes[start..<(start + tensor.byteCount)])
    }
}
