import CTorporZstd

/// How one chunk's bytes are stored. The raw value is the codec id written in the chunk table.
///
/// Ids 0–15 are CPU codecs; 16 and up are GPU codecs (nvCOMP 6's batched ANS and Bitcomp), which have no CPU
/// implementation: their chunks are written by `pack --gpu` and read by the GPU loader (TorporGPU).
public enum ChunkCodec: UInt8, CaseIterable, Sendable, Codable {
    /// The bytes as they are.
    case raw = 0
    /// One zstd frame per chunk, readable by stock zstd and by nvCOMP's GPU Zstd.
    case zstd = 1
    /// Byte planes of 16- and 32-bit floats, each plane stored raw or rANS-coded (see `BytePlaneCodec`).
    case bytePlane = 2
    /// nvCOMP ANS with `data_type` FLOAT16: 16-bit floats (BF16, F16), exponent and mantissa bytes coded apart.
    case ans16 = 16
    /// nvCOMP ANS with `data_type` FLOAT32.
    case ans32 = 17
    /// nvCOMP ANS on bytes (`data_type` UCHAR).
    case ans8 = 18
    /// nvCOMP Bitcomp, lossless, with the element width of the tensor's dtype.
    case bitcomp = 19

    /// The name used in `inspect`, JSON and `--codec`.
    public var name: String {
        switch self {
        case .raw: "raw"
        case .zstd: "zstd"
        case .bytePlane: "byteplane"
        case .ans16: "ans16"
        case .ans32: "ans32"
        case .ans8: "ans8"
        case .bitcomp: "bitcomp"
        }
    }

    /// The codec called `name`, if there is one.
    public init?(name: String) {
        guard let codec = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = codec
    }

    /// Whether the CPU encodes and decodes it (ids below 16); the others need an NVIDIA GPU and nvCOMP 6.
    public var runsOnCPU: Bool { rawValue < 16 }

    /// The codec's element width: every chunk's size is a multiple of it.
    public var elementWidth: Int {
        switch self {
        case .ans16: 2
        case .ans32: 4
        default: 1
        }
    }

    /// Whether the codec can encode a tensor of `dtype` (the GPU's float codecs only floats of their width).
    public func applies(to dtype: DType) -> Bool {
        switch self {
        case .bytePlane: dtype.isPlaneSplittableFloat
        case .ans16: dtype == .bf16 || dtype == .f16
        case .ans32: dtype == .f32
        default: true
        }
    }
}

/// Per-thread working memory for encoding and decoding chunks: zstd contexts and plane buffers, allocated once
/// per worker instead of once per chunk.
final class CodecScratch {
    /// The reusable buffers, one per use so that a codec can hold several at once.
    enum Slot: Int, CaseIterable {
        /// Byte planes of a chunk (encode and decode).
        case planes
        /// rANS encoder output words.
        case words
        /// rANS decoder tables.
        case decodeTables
        /// A padded copy of a rANS stream.
        case streamCopy
    }

    private(set) var compressContext: OpaquePointer?
    private(set) var decompressContext: OpaquePointer?
    private var buffers = [UnsafeMutableRawBufferPointer](
        repeating: UnsafeMutableRawBufferPointer(start: nil, count: 0), count: Slot.allCases.count)

    init() {}

    /// A zstd compression context, created on first use.
    func zstdCompressor() -> OpaquePointer {
        if let context = compressContext { return context }
        let context = ZSTD_createCCtx()!
        compressContext = context
        return context
    }

    /// A zstd decompression context, created on first use.
    func zstdDecompressor() -> OpaquePointer {
        if let context = decompressContext { return context }
        let context = ZSTD_createDCtx()!
        decompressContext = context
        return context
    }

    /// The buffer for `slot`, at least `count` bytes, 64-byte aligned, reused between calls.
    func buffer(_ slot: Slot, bytes count: Int) -> UnsafeMutableRawBufferPointer {
        if buffers[slot.rawValue].count < count {
            WorkingMemory.deallocate(buffers[slot.rawValue])
            buffers[slot.rawValue] = WorkingMemory.allocate(count)
        }
        return UnsafeMutableRawBufferPointer(rebasing: buffers[slot.rawValue][0..<count])
    }

    deinit {
        if let compressContext { ZSTD_freeCCtx(compressContext) }
        if let decompressContext { ZSTD_freeDCtx(decompressContext) }
        for buffer in buffers { WorkingMemory.deallocate(buffer) }
    }
}

/// Encodes and decodes single chunks with any CPU codec.
extension ChunkCodec {
    /// `bytes` as a container's zstd chunk holds them (one frame at the packer's level), for tools that make such
    /// chunks outside a pack (the GPU self-test decodes them with nvCOMP); nil when zstd refuses them.
    public static func zstdChunk(_ bytes: UnsafeRawBufferPointer) -> [UInt8]? {
        var output = [UInt8](repeating: 0, count: ChunkCoder.maxEncodedSize(.zstd, rawSize: bytes.count))
        let written = output.withUnsafeMutableBytes {
            ChunkCoder.encode(.zstd, bytes, dtype: .u8, into: $0, scratch: CodecScratch())
        }
        return written.map { Array(output.prefix($0)) }
    }
}

enum ChunkCoder {
    /// The zstd level used for zstd chunks: level 3 keeps packing fast; higher levels gain little on weights.
    static let zstdLevel: Int32 = 3

    /// An upper bound on the encoded size of a `rawSize`-byte chunk.
    static func maxEncodedSize(_ codec: ChunkCodec, rawSize: Int) -> Int {
        switch codec {
        case .raw: rawSize
        case .zstd: ZSTD_compressBound(rawSize)
        case .bytePlane: BytePlaneCodec.maxEncodedSize(rawSize: rawSize)
        case .ans16, .ans32, .ans8, .bitcomp: rawSize  // encoded by a `BatchChunkEncoder`, never here
        }
    }

    /// Encodes `input` into `output`, of any size: `maxEncodedSize` bytes always suffice, and a packer that keeps
    /// only encodings smaller than the input offers just the input's size.
    /// - Parameter dtype: the elements' type, for the byte-plane codec (BF16, F16 or F32).
    /// - Returns: the bytes written, or nil when the codec cannot encode this input or its encoding does not fit
    ///   in `output` (the caller stores it raw).
    static func encode(
        _ codec: ChunkCodec,
        _ input: UnsafeRawBufferPointer,
        dtype: DType,
        into output: UnsafeMutableRawBufferPointer,
        scratch: CodecScratch
    ) -> Int? {
        switch codec {
        case .raw:
            guard output.count >= input.count else { return nil }
            output.copyMemory(from: input)
            return input.count
        case .zstd:
            let written = ZSTD_compressCCtx(
                scratch.zstdCompressor(), output.baseAddress, output.count, input.baseAddress, input.count, zstdLevel)
            return CTorporZstd_isError(written) != 0 ? nil : written
        case .bytePlane:
            return BytePlaneCodec.encode(input, dtype: dtype, into: output, scratch: scratch)
        case .ans16, .ans32, .ans8, .bitcomp:
            return nil
        }
    }

    /// Decodes `input` into `output`, whose size is the chunk's uncompressed size.
    /// - Throws: `CodecFailure` when the input is malformed or decodes to the wrong size.
    static func decode(
        _ codec: ChunkCodec,
        _ input: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer,
        scratch: CodecScratch
    ) throws(CodecFailure) {
        switch codec {
        case .raw:
            guard input.count == output.count else {
                throw CodecFailure("raw chunk holds \(input.count) bytes, expected \(output.count)")
            }
            output.copyMemory(from: input)
        case .zstd:
            let declared = CTorporZstd_frameContentSize(input.baseAddress, input.count)
            guard declared == UInt64(output.count) else {
                throw CodecFailure("zstd frame declares \(declared) bytes, expected \(output.count)")
            }
            let written = ZSTD_decompressDCtx(
                scratch.zstdDecompressor(), output.baseAddress, output.count, input.baseAddress, input.count)
            guard CTorporZstd_isError(written) == 0 else {
                throw CodecFailure("zstd: \(String(cString: ZSTD_getErrorName(written)))")
            }
            guard written == output.count else {
                throw CodecFailure("zstd frame decoded to \(written) bytes, expected \(output.count)")
            }
        case .bytePlane:
            try BytePlaneCodec.decode(input, into: output, scratch: scratch)
        case .ans16, .ans32, .ans8, .bitcomp:
            throw CodecFailure(
                "\(codec.name) is a GPU codec (nvCOMP) without a CPU decoder: load it on an NVIDIA GPU with "
                    + "`torpor load`, or repack with a CPU codec")
        }
    }
}
