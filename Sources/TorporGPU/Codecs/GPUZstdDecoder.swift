import CTorporNVCOMP
import FoundationEssentials
public import TorporCheckpoint

/// Decodes zstd frames written on the CPU (the container's zstd chunks) on the GPU with nvCOMP's batched Zstd:
/// one frame per chunk, each into its place in a device buffer, every status and decoded size checked.
public final class GPUZstdDecoder: @unchecked Sendable {
    public let nvcomp: NVCOMPLibrary
    public let device: GPUDevice

    public init(nvcomp: NVCOMPLibrary, device: GPUDevice) {
        self.nvcomp = nvcomp
        self.device = device
    }

    /// Frames uploaded to the GPU, each at a 16-byte aligned offset (nvCOMP's Zstd needs 8).
    public struct Uploaded: @unchecked Sendable {
        public let buffer: DeviceBuffer
        public let offsets: [Int]
        public let sizes: [Int]
    }

    /// Copies `frames` to the GPU through one pinned staging buffer.
    public func upload(_ frames: [[UInt8]], stream: GPUStream) throws(GPUError) -> Uploaded {
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
        return Uploaded(buffer: buffer, offsets: offsets, sizes: frames.map(\.count))
    }

    /// Decodes every uploaded frame into `output` at `plan`'s chunk offsets (one frame per chunk).
    /// - Returns: GPU milliseconds of the decode kernel.
    @discardableResult
    public func decode(_ frames: Uploaded, plan: ChunkPlan, into output: DeviceBuffer, stream: GPUStream)
        throws(GPUError) -> Double
    {
        let count = plan.chunks.count
        guard frames.offsets.count == count else {
            throw GPUError(.invalidArgument, "\(frames.offsets.count) zstd frames for \(count) chunks")
        }
        let tables = try PointerTables(device: device, chunkCount: count, stream: stream)
        try tables.upload(
            first: frames.offsets.map { frames.buffer.address + UInt64($0) },
            second: plan.inputPointers(base: output.address), sizes: frames.sizes, bufferSizes: plan.sizes,
            stream: stream)
        var options = CTorporNVCOMP_ZstdDecompressOptions()
        options.backend = Int32(CTorporNVCOMP_BackendDefault)
        var tempBytes = 0
        try NVCOMPLibrary.check(
            nvcomp.zstdDecompressGetTempSize(
                count, plan.chunkBytes, options, &tempBytes, plan.sizes.reduce(0, +), stream.opaque),
            "nvcompBatchedZstdDecompressGetTempSize")
        return try tables.timedDecode(
            name: "zstd", tempBytes: tempBytes, expected: plan.chunks.map(\.count), stream: stream
        ) { temp throws(GPUError) in
            try NVCOMPLibrary.check(
                nvcomp.zstdDecompressAsync(
                    tables.firstPointers, tables.sizes, tables.bufferSizes, tables.resultSizes, count, temp.pointer(),
                    tempBytes, tables.secondPointers, options, tables.statuses, stream.opaque),
                "nvcompBatchedZstdDecompressAsync")
        }
    }
}
