/// The fixed parts of a `.torpor` container. docs/FORMAT.md is the specification; this file implements it.
public enum ContainerLayout {
    /// The first 8 bytes of every container: 0x89 "TORPOR" 0x0A. The high first byte and the newline catch
    /// transfers that mangle binary files as text.
    public static let magic: [UInt8] = [0x89, 0x54, 0x4F, 0x52, 0x50, 0x4F, 0x52, 0x0A]
    /// The major version this code writes and reads. A reader refuses a higher major version.
    public static let majorVersion: UInt16 = 1
    /// The minor version this code writes. Minor versions only add optional fields.
    public static let minorVersion: UInt16 = 0
    /// The size of the preamble at offset 0.
    public static let preambleSize = 128
    /// Alignment of the data region and of the chunk table: direct I/O's 4 KiB.
    public static let pageAlignment = 4096
    /// The default alignment of every chunk within the file (nvCOMP ANS needs 16 bytes).
    public static let defaultChunkAlignment = 16
    /// The default uncompressed size of a chunk.
    public static let defaultChunkSize = 1 << 20
    /// The largest chunk nvCOMP's ANS, LZ4 and Bitcomp accept.
    public static let maximumChunkSize = 16 << 20
    /// The size of one chunk table record.
    public static let chunkRecordSize = 32

    static func align(_ value: Int, to alignment: Int) -> Int {
        (value + alignment - 1) / alignment * alignment
    }
}

/// The 128-byte preamble at offset 0: where everything else is, with checksums.
struct Preamble: Equatable {
    var majorVersion = ContainerLayout.majorVersion
    var minorVersion = ContainerLayout.minorVersion
    var flags: UInt32 = 0
    var dataOffset = 0
    var dataLength = 0
    var chunkTableOffset = 0
    var chunkCount = 0
    var chunkTableCRC: UInt32 = 0
    var indexCRC: UInt32 = 0
    var indexOffset = 0
    var indexLength = 0
    var sourceHeaderOffset = 0
    var sourceHeaderLength = 0
    var sourceHeaderCRC: UInt32 = 0

    /// Where each u64 region field sits in the preamble (docs/FORMAT.md's table, stated once for both directions).
    private static var regionFields: [(field: WritableKeyPath<Preamble, Int>, at: Int)] {
        [
            (\.dataOffset, 16), (\.dataLength, 24), (\.chunkTableOffset, 32), (\.chunkCount, 40),
            (\.indexOffset, 56), (\.indexLength, 64), (\.sourceHeaderOffset, 72), (\.sourceHeaderLength, 80),
        ]
    }
    /// Where each u32 checksum field sits in the preamble.
    private static var checksumFields: [(field: WritableKeyPath<Preamble, UInt32>, at: Int)] {
        [(\.chunkTableCRC, 48), (\.indexCRC, 52), (\.sourceHeaderCRC, 88)]
    }

    func serialized() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: ContainerLayout.preambleSize)
        bytes.withUnsafeMutableBytes { out in
            for (index, byte) in ContainerLayout.magic.enumerated() { out[index] = byte }
            out.storeLE(majorVersion, at: 8)
            out.storeLE(minorVersion, at: 10)
            out.storeLE(flags, at: 12)
            for (field, at) in Self.regionFields { out.storeLE(UInt64(self[keyPath: field]), at: at) }
            for (field, at) in Self.checksumFields { out.storeLE(self[keyPath: field], at: at) }
            let crc = CRC32.checksum(UnsafeRawBufferPointer(rebasing: out[0..<124]))
            out.storeLE(crc, at: 124)
        }
        return bytes
    }

    /// Parses and checks a preamble, and that every region it names lies inside a file of `fileSize` bytes.
    init(parsing bytes: UnsafeRawBufferPointer, fileSize: Int, file: String) throws(CheckpointError) {
        func fail(_ reason: String) -> CheckpointError {
            CheckpointError(.invalidContainer, "\(file): \(reason)")
        }
        guard bytes.count >= ContainerLayout.preambleSize else {
            throw fail("\(bytes.count) bytes is too short for a .torpor container (truncated?)")
        }
        guard bytes.prefix(8).elementsEqual(ContainerLayout.magic) else {
            throw fail("not a .torpor container (wrong magic bytes)")
        }
        let stored = bytes.loadLE(UInt32.self, at: 124)
        let actual = CRC32.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<124]))
        guard stored == actual else {
            throw CheckpointError(.corruptData, "\(file): the preamble fails its CRC-32 (the file is corrupted)")
        }
        majorVersion = bytes.loadLE(UInt16.self, at: 8)
        minorVersion = bytes.loadLE(UInt16.self, at: 10)
        guard majorVersion == ContainerLayout.majorVersion else {
            throw CheckpointError(
                .unsupported,
                "\(file): container format version \(majorVersion).\(minorVersion) is not supported by this torpor (reads \(ContainerLayout.majorVersion).x); upgrade torpor"
            )
        }
        flags = bytes.loadLE(UInt32.self, at: 12)
        func offset(_ at: Int) throws(CheckpointError) -> Int {
            let value = bytes.loadLE(UInt64.self, at: at)
            guard value <= UInt64(fileSize) else {
                throw fail(
                    "looks truncated: its preamble (field at byte \(at)) points to byte \(value), beyond the file's "
                        + "\(fileSize) bytes (an interrupted copy or download?)")
            }
            return Int(value)
        }
        for (field, at) in Self.regionFields { self[keyPath: field] = try offset(at) }
        for (field, at) in Self.checksumFields { self[keyPath: field] = bytes.loadLE(UInt32.self, at: at) }
        guard bytes[92..<124].allSatisfy({ $0 == 0 }) else { throw fail("reserved preamble bytes are not zero") }

        guard dataOffset >= ContainerLayout.preambleSize, dataOffset <= fileSize - dataLength,
            chunkCount <= (fileSize - chunkTableOffset) / ContainerLayout.chunkRecordSize,
            chunkTableOffset >= dataOffset + dataLength,
            sourceHeaderOffset >= chunkTableOffset + chunkCount * ContainerLayout.chunkRecordSize,
            sourceHeaderLength <= fileSize - sourceHeaderOffset,
            indexOffset >= sourceHeaderOffset + sourceHeaderLength,
            indexLength <= fileSize - indexOffset
        else { throw fail("the preamble's regions overlap or run beyond the file's \(fileSize) bytes (truncated?)") }
        guard indexOffset + indexLength == fileSize else {
            throw fail(
                "the file is \(fileSize) bytes but its index ends at \(indexOffset + indexLength) (truncated or appended to)"
            )
        }
    }

    init() {}
}

/// One row of the chunk table: where a chunk's stored bytes are and how to check and decode them.
///
/// 32 bytes, little-endian: u64 offset, u32 storedSize, u32 rawSize, u32 storedCRC32, u32 rawCRC32, u8 codec,
/// 7 reserved bytes (0). Fixed-size binary records so a GPU loader can copy the table to the device as is.
public struct ChunkRecord: Equatable, Sendable {
    /// Absolute byte offset of the stored bytes in the container.
    public var offset: Int
    public var storedSize: Int
    public var rawSize: Int
    /// CRC-32 of the stored (encoded) bytes: checked before decoding, since some GPU decoders trust their input.
    public var storedCRC: UInt32
    /// CRC-32 of the decoded bytes: checked after decoding.
    public var rawCRC: UInt32
    public var codec: ChunkCodec

    func store(into out: UnsafeMutableRawBufferPointer, at position: Int) {
        out.storeLE(UInt64(offset), at: position)
        out.storeLE(UInt32(storedSize), at: position + 8)
        out.storeLE(UInt32(rawSize), at: position + 12)
        out.storeLE(storedCRC, at: position + 16)
        out.storeLE(rawCRC, at: position + 20)
        out.storeLE(codec.rawValue, at: position + 24)
        for pad in 25..<32 { out.storeLE(UInt8(0), at: position + pad) }
    }

    static func load(from bytes: UnsafeRawBufferPointer, at position: Int) -> (ChunkRecord?, codecID: UInt8) {
        let codecID = bytes.loadLE(UInt8.self, at: position + 24)
        guard let codec = ChunkCodec(rawValue: codecID) else { return (nil, codecID) }
        let record = ChunkRecord(
            offset: Int(truncatingIfNeeded: bytes.loadLE(UInt64.self, at: position)),
            storedSize: Int(bytes.loadLE(UInt32.self, at: position + 8)),
            rawSize: Int(bytes.loadLE(UInt32.self, at: position + 12)),
            storedCRC: bytes.loadLE(UInt32.self, at: position + 16),
            rawCRC: bytes.loadLE(UInt32.self, at: position + 20),
            codec: codec
        )
        return (record, codecID)
    }
}

/// The JSON index at the end of a container: the tensors and everything needed to rebuild the source file.
public struct ContainerIndex: Encodable, Sendable, Equatable {
    /// Who wrote the container, and with which codec versions.
    public struct Writer: Encodable, Sendable, Equatable {
        public var name: String
        public var version: String
        /// Codec name → version of its bitstream (and of the library that wrote it).
        public var codecs: [String: String]
    }

    /// The safetensors file this container restores to.
    public struct Source: Encodable, Sendable, Equatable {
        public var fileName: String
        public var size: Int
        public var sha256: String
    }

    /// One tensor: its safetensors description and the chunks that hold its bytes.
    public struct Tensor: Encodable, Sendable, Equatable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        /// `[begin, end]` in the source's data region, as in the safetensors header.
        public var dataOffsets: [Int]
        /// The codec chosen for the tensor; single chunks may fall back to `raw` when coding does not pay.
        public var codec: String
        public var firstChunk: Int
        public var chunkCount: Int
        /// Set when the tensor's bytes equal an earlier tensor's: both name the same chunks.
        public var duplicateOf: String?

        public var byteCount: Int { dataOffsets[1] - dataOffsets[0] }
    }

    public var writer: Writer
    /// "crc32-ieee": the checksum of every chunk.
    public var checksum: String
    public var chunkSize: Int
    public var chunkAlignment: Int
    public var source: Source
    /// The source's `__metadata__`.
    public var metadata: [String: String]
    /// In data order.
    public var tensors: [Tensor]
}
