import CTorporNVCOMP
import TorporCheckpoint

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
