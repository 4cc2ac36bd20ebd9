import CTorporNVCOMP
import FoundationEssentials
public import TorporCheckpoint

/// CRC-32 (IEEE, as zlib and the container's chunk records compute it) of many chunks at once on the GPU, with
/// nvCOMP's batched CRC32: how the loader checks every decoded chunk without copying it back.
public final class GPUCRC32: @unchecked Sendable {
    public let nvcomp: NVCOMPLibrary
    public let device: GPUDevice

    public init(nvcomp: NVCOMPLibrary, device: GPUDevice) {
        self.nvcomp = nvcomp
        self.device = device
    }

    /// The CRC-32 of every chunk of `plan` in `buffer`, and the GPU milliseconds of the checksum kernel.
    public func checksums(of buffer: DeviceBuffer, plan: ChunkPlan, stream: GPUStream) throws(GPUError)
        -> (crcs: [UInt32], milliseconds: Double)
    {
        let count = plan.chunks.count
        guard count > 0 else { return ([], 0) }
        let tables = try PointerTables(device: device, chunkCount: count, stream: stream)
        try tables.upload(
            first: plan.inputPointers(base: buffer.address), second: plan.inputPointers(base: buffer.address),
            sizes: plan.sizes, stream: stream)
        let results = try DeviceBuffer(device: device, count: 4 * count)
        let start = try GPUEvent(device: device, timing: true)
        let end = try GPUEvent(device: device, timing: true)
        try start.record(on: stream)
        try enqueue(
            inputs: tables.firstPointers, sizes: tables.sizes, count: count, maxChunkBytes: plan.chunkBytes,
            results: UnsafeMutablePointer(OpaquePointer(results.pointer())), statuses: tables.statuses, stream: stream)
        try end.record(on: stream)
        let (statuses, _) = try tables.download(stream: stream)
        for (index, status) in statuses.enumerated() where status != CTorporNVCOMP_Success {
            throw GPUError(.nvcomp, "CRC32 of chunk \(index) failed: \(NVCOMPLibrary.statusName(status))")
        }
        let host = try PinnedBuffer(device: device, count: 4 * count)
        try results.copy(to: host.pointer, count: 4 * count, on: stream)
        try stream.synchronize()
        let values = host.pointer.assumingMemoryBound(to: UInt32.self)
        return ((0..<count).map { values[$0] }, try end.milliseconds(since: start))
    }

    /// Queues the CRC-32s of `count` chunks on `stream`: pointer, size, result and status arrays all in device
    /// memory (sizes may be another kernel's output, such as a compressor's result sizes).
    func enqueue(
        inputs: UnsafePointer<UnsafeRawPointer?>, sizes: UnsafePointer<Int>, count: Int, maxChunkBytes: Int,
        results: UnsafeMutablePointer<UInt32>, statuses: UnsafeMutablePointer<CTorporNVCOMP_Status>,
        stream: GPUStream
    ) throws(GPUError) {
        guard count > 0 else { return }
        var options = CTorporNVCOMP_CRC32Options()
        // CRC-32/ISO-HDLC: zlib's crc32().
        options.spec.poly = 0x04C1_1DB7
        options.spec.`init` = 0xFFFF_FFFF
        options.spec.refIn = true
        options.spec.refOut = true
        options.spec.xorOut = 0xFFFF_FFFF
        try NVCOMPLibrary.check(
            nvcomp.crc32GetHeuristicConfiguration(nil, count, &options.kernel, maxChunkBytes, stream.opaque),
            "nvcompBatchedCRC32GetHeuristicConf")
        try NVCOMPLibrary.check(
            nvcomp.crc32Async(inputs, sizes, count, results, options, 0, statuses, stream.opaque),
            "nvcompBatchedCRC32Async")
    }
}
