import CTorporNVCOMP
import TorporCheckpoint

/// One of nvCOMP's batched decoders as the loader calls it: the temporary size for a batch, then the decode of
/// a run of the loader's pointer tables (compressed pointers and sizes, buffer sizes, outputs, result sizes and
/// statuses, all in device memory).
struct GPUDecoder {
    let nvcomp: NVCOMPLibrary
    let codec: ChunkCodec

    init(nvcomp: NVCOMPLibrary, codec: ChunkCodec) throws(GPUError) {
        switch codec {
        case .zstd, .ans16, .ans32, .ans8, .bitcomp: break
        case .raw, .bytePlane: throw GPUError(.unsupported, "\(codec.name) chunks have no nvCOMP decoder")
        }
        self.nvcomp = nvcomp
        self.codec = codec
    }

    private var ansOptions: CTorporNVCOMP_ANSDecompressOptions {
        NVCOMPLibrary.ansDecompressOptions(GPUBatchEncoder.dataType(codec, .u8))
    }

    private var zstdOptions: CTorporNVCOMP_ZstdDecompressOptions {
        var options = CTorporNVCOMP_ZstdDecompressOptions()
        options.backend = Int32(CTorporNVCOMP_BackendDefault)
        return options
    }

    private var bitcompOptions: CTorporNVCOMP_BitcompDecompressOptions {
        var options = CTorporNVCOMP_BitcompDecompressOptions()
        options.backend = Int32(CTorporNVCOMP_BackendDefault)
        return options
    }

    /// nvCOMP's name for the codec, as its functions spell it.
    private var family: String {
        switch codec {
        case .zstd: "Zstd"
        case .bitcomp: "Bitcomp"
        default: "ANS"
        }
    }

    /// The temporary bytes for `count` chunks of at most `maxRaw` bytes, `total` bytes in all.
    func tempBytes(count: Int, maxRaw: Int, total: Int, stream: GPUStream) throws(GPUError) -> Int {
        var bytes = 0
        let status =
            switch codec {
            case .zstd: nvcomp.zstdDecompressGetTempSize(count, maxRaw, zstdOptions, &bytes, total, stream.opaque)
            case .bitcomp:
                nvcomp.bitcompDecompressGetTempSize(count, maxRaw, bitcompOptions, &bytes, total, stream.opaque)
            default: nvcomp.ansDecompressGetTempSize(count, maxRaw, ansOptions, &bytes, total, stream.opaque)
            }
        try NVCOMPLibrary.check(status, "nvcompBatched\(family)DecompressGetTempSize")
        return bytes
    }

    /// Queues the decode of the table entries `range` on `stream`.
    func run(tables: PointerTables, range: Range<Int>, temp: DeviceBuffer, tempBytes: Int, stream: GPUStream)
        throws(GPUError)
    {
        let compressed = UnsafePointer(tables.entry(0, range.lowerBound, as: UnsafeRawPointer?.self))
        let outputs = UnsafePointer(tables.entry(1, range.lowerBound, as: UnsafeMutableRawPointer?.self))
        let compressedSizes = UnsafePointer(tables.entry(2, range.lowerBound, as: Int.self))
        let bufferSizes = UnsafePointer(tables.entry(3, range.lowerBound, as: Int.self))
        let resultSizes = tables.entry(4, range.lowerBound, as: Int.self)
        let statuses = tables.statuses + range.lowerBound
        let count = range.count
        let status =
            switch codec {
            case .zstd:
                nvcomp.zstdDecompressAsync(
                    compressed, compressedSizes, bufferSizes, resultSizes, count, temp.pointer(), tempBytes, outputs,
                    zstdOptions, statuses, stream.opaque)
            case .bitcomp:
                nvcomp.bitcompDecompressAsync(
                    compressed, compressedSizes, bufferSizes, resultSizes, count, temp.pointer(), tempBytes, outputs,
                    bitcompOptions, statuses, stream.opaque)
            default:
                nvcomp.ansDecompressAsync(
                    compressed, compressedSizes, bufferSizes, resultSizes, count, temp.pointer(), tempBytes, outputs,
                    ansOptions, statuses, stream.opaque)
            }
        try NVCOMPLibrary.check(status, "nvcompBatched\(family)DecompressAsync")
    }
}

extension ChunkCodec {
    /// Whether the GPU decoder of the codec rejects malformed input by itself: nvCOMP's ANS, and Torpor's
    /// byte-plane kernel, which bounds every read and write by the chunk's header, plane table and lane counts
    /// (clean under compute-sanitizer on corrupted chunks); a raw chunk is only copied. nvCOMP's Zstd and Bitcomp
    /// decoders trust their input, so the loader checks those chunks' stored CRC-32s before decoding them.
    var decoderValidatesInput: Bool {
        switch self {
        case .raw, .ans16, .ans32, .ans8, .bytePlane: true
        default: false
        }
    }
}
