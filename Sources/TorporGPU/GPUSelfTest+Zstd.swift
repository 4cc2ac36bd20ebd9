import CTorporNVCOMP
import FoundationEssentials
import Glibc
public import TorporCheckpoint

/// The self-test's zstd half: frames written on the CPU (the container's zstd chunks) decoded on the GPU by the
/// loader's decoder.
extension GPUSelfTest {
    /// What `runZstd` measures.
    public struct ZstdResult: Sendable, Codable {
        public var bytes: Int
        public var chunkBytes: Int
        public var compressedBytes: Int
        public var ratio: Double
        public var decodeGBps: Double
        public var bitExact: Bool
    }

    /// Decodes CPU-written zstd frames (one per chunk of `data`, made by `compressFrame`) on the GPU with nvCOMP's
    /// Zstd and compares the result with `data`: the path of the container's zstd chunks to GPU memory.
    public func runZstd(
        nvcomp: NVCOMPLibrary, device: GPUDevice, data: UnsafeRawBufferPointer,
        compressFrame: (UnsafeRawBufferPointer) -> [UInt8]
    ) throws(GPUError) -> ZstdResult {
        let plan = try ChunkPlan(totalBytes: data.count, chunkBytes: chunkBytes, maxCompressedChunkBytes: chunkBytes)
        let frames = plan.chunks.map { chunk in
            compressFrame(UnsafeRawBufferPointer(rebasing: data[chunk.offset..<(chunk.offset + chunk.count)]))
        }
        let stream = try GPUStream(device: device)
        let uploaded = try Self.upload(frames, device: device, stream: stream)
        let output = try DeviceBuffer(device: device, count: data.count)
        // The loader's decoder, on the loader's pointer tables: one frame per chunk, each into its place.
        let decoder = try GPUDecoder(nvcomp: nvcomp, codec: .zstd)
        let tables = try PointerTables(device: device, chunkCount: frames.count, stream: stream)
        try tables.upload(
            first: uploaded.offsets.map { uploaded.buffer.address + UInt64($0) },
            second: plan.inputPointers(base: output.address), sizes: frames.map(\.count), bufferSizes: plan.sizes,
            stream: stream)
        let tempBytes = try decoder.tempBytes(
            count: frames.count, maxRaw: plan.chunkBytes, total: plan.sizes.reduce(0, +), stream: stream)
        var milliseconds = Double.infinity
        for _ in 0..<repeats {
            let decoded = try tables.timedDecode(
                name: "zstd", tempBytes: tempBytes, expected: plan.chunks.map(\.count), stream: stream
            ) { temp throws(GPUError) in
                try decoder.run(
                    tables: tables, range: 0..<frames.count, temp: temp, tempBytes: tempBytes, stream: stream)
            }
            milliseconds = min(milliseconds, decoded)
        }
        let back = try PinnedBuffer(device: device, count: data.count)
        try output.copy(to: back.pointer, count: data.count, on: stream)
        try stream.synchronize()
        let compressed = frames.reduce(0) { $0 + $1.count }
        return ZstdResult(
            bytes: data.count, chunkBytes: chunkBytes, compressedBytes: compressed,
            ratio: Double(compressed) / Double(max(data.count, 1)),
            decodeGBps: Double(data.count) / milliseconds / 1e6,
            bitExact: memcmp(back.pointer, data.baseAddress!, data.count) == 0)
    }

    /// Copies `frames` to the GPU through one pinned staging buffer, each at a 16-byte aligned offset (nvCOMP's
    /// Zstd needs 8).
    private static func upload(_ frames: [[UInt8]], device: GPUDevice, stream: GPUStream) throws(GPUError)
        -> (buffer: DeviceBuffer, offsets: [Int])
    {
        var offsets: [Int] = []
        var total = 0
        for frame in frames {
            offsets.append(total)
            total += (frame.count + 15) / 16 * 16
        }
        let staging = try PinnedBuffer(device: device, count: total)
        for (frame, offset) in zip(frames, offsets) {
            frame.withUnsafeBytes {
                staging.pointer.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
            }
        }
        let buffer = try DeviceBuffer(device: device, count: total)
        try buffer.copy(from: staging.pointer, count: total, on: stream)
        try stream.synchronize()
        return (buffer, offsets)
    }
}
