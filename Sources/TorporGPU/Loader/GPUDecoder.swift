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

/// What the loader keeps between loads: streams, events, the pinned read ring, the device staging ring and the
/// decoders' temporary memory — pinned and large device allocations cost milliseconds each.
final class LoadResources: @unchecked Sendable {
    let device: GPUDevice
    let slots: Int
    let copyStream: GPUStream
    /// The streams batches are checked and decoded on, in turn, so several batches decode at once (a decoder that
    /// works a chunk with one warp, as the byte-plane kernel does, needs many chunks in flight to fill the GPU).
    let decodeStreams: [GPUStream]
    /// Per ring slot: its host-to-device copy ran; its decode ran.
    let copied: [GPUEvent]
    let decoded: [GPUEvent]
    let tablesUploaded: GPUEvent
    private var stagingBuffer: DeviceBuffer?
    private var tempBuffers: [DeviceBuffer?]
    private var ringBuffers: [PinnedBuffer] = []

    init(device: GPUDevice, slots: Int, decodeStreams: Int) throws(GPUError) {
        self.device = device
        self.slots = slots
        copyStream = try GPUStream(device: device)
        self.decodeStreams = try (0..<decodeStreams).map { _ throws(GPUError) in try GPUStream(device: device) }
        tempBuffers = Array(repeating: nil, count: decodeStreams)
        copied = try (0..<slots).map { _ throws(GPUError) in try GPUEvent(device: device) }
        decoded = try (0..<slots).map { _ throws(GPUError) in try GPUEvent(device: device) }
        tablesUploaded = try GPUEvent(device: device)
    }

    /// Device memory for the staging ring, at least `bytes`.
    func staging(bytes: Int) throws(GPUError) -> DeviceBuffer {
        if let stagingBuffer, stagingBuffer.count >= bytes { return stagingBuffer }
        stagingBuffer = nil
        let buffer = try DeviceBuffer(device: device, count: bytes)
        stagingBuffer = buffer
        return buffer
    }

    /// Device memory for the decoders on decode stream `stream`, at least `bytes` (at least 1 byte).
    func temp(bytes: Int, stream: Int) throws(GPUError) -> DeviceBuffer {
        if let buffer = tempBuffers[stream], buffer.count >= bytes { return buffer }
        tempBuffers[stream] = nil
        let buffer = try DeviceBuffer(device: device, count: max(bytes, 1))
        tempBuffers[stream] = buffer
        return buffer
    }

    /// Waits for everything queued on the decode streams.
    func synchronizeDecodes() throws(GPUError) {
        for stream in decodeStreams { try stream.synchronize() }
    }

    private var bytePlane: GPUBytePlaneDecoder?

    /// The byte-plane kernel, compiled with NVRTC on first use.
    func bytePlaneDecoder(nvrtcPath: String?) throws(GPUError) -> GPUBytePlaneDecoder {
        if let bytePlane { return bytePlane }
        let decoder: GPUBytePlaneDecoder
        do {
            decoder = try GPUBytePlaneDecoder(device: device, nvrtc: try NVRTCLibrary(explicitPath: nvrtcPath))
        } catch {
            throw GPUError(error.code, "byteplane chunks cannot be decoded on this GPU: \(error.message)")
        }
        bytePlane = decoder
        return decoder
    }

    private var pointerTables: PointerTables?
    private var checkBuffers: (device: DeviceBuffer, host: PinnedBuffer, stride: Int)?

    /// Pointer tables for `count` entries.
    func tables(count: Int, stream: GPUStream) throws(GPUError) -> PointerTables {
        if let pointerTables, pointerTables.capacity >= count {
            pointerTables.chunkCount = count
            return pointerTables
        }
        pointerTables = nil
        let tables = try PointerTables(device: device, chunkCount: count, stream: stream)
        pointerTables = tables
        return tables
    }

    /// Device and pinned memory for the checksums of `count` entries: four arrays of `stride` (≥ `count`) 4-byte
    /// entries — stored CRC-32s, decoded CRC-32s, and the statuses of each.
    func checks(count: Int) throws(GPUError) -> (device: DeviceBuffer, host: PinnedBuffer, stride: Int) {
        if let checkBuffers, checkBuffers.stride >= count { return checkBuffers }
        checkBuffers = nil
        let buffers = (
            device: try DeviceBuffer(device: device, count: 16 * count),
            host: try PinnedBuffer(device: device, count: 16 * count), stride: count
        )
        checkBuffers = buffers
        return buffers
    }

    /// The pinned read ring, each slot at least `bytes`; none for a host cache, which is pinned itself.
    func ring(bytes: Int, for source: LoadSource) throws(GPUError) -> [PinnedBuffer] {
        if case .hostCache = source { return [] }
        if ringBuffers.count == slots, ringBuffers.allSatisfy({ $0.count >= bytes }) { return ringBuffers }
        ringBuffers = []
        ringBuffers = try (0..<slots).map { _ throws(GPUError) in try PinnedBuffer(device: device, count: bytes) }
        return ringBuffers
    }
}
