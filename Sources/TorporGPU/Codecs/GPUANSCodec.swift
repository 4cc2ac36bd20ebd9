public import CTorporNVCOMP
import FoundationEssentials
import Glibc
public import TorporCheckpoint

/// nvCOMP's batched ANS codec on one GPU: the codec for 16-bit float weights (`data_type` FLOAT16 codes the
/// exponent byte and the mantissa byte apart).
public final class GPUANSCodec: @unchecked Sendable {
    public let nvcomp: NVCOMPLibrary
    public let device: GPUDevice
    public let dataType: CTorporNVCOMP_DataType
    public let tuning: ANSTuning

    public init(
        nvcomp: NVCOMPLibrary, device: GPUDevice, dataType: CTorporNVCOMP_DataType, tuning: ANSTuning = .default
    ) {
        self.nvcomp = nvcomp
        self.device = device
        self.dataType = dataType
        self.tuning = tuning
    }

    /// The result of `compress`: every chunk's compressed bytes at its slot of `output`.
    public struct Compressed: @unchecked Sendable {
        public let plan: ChunkPlan
        public let output: DeviceBuffer
        public let compressedSizes: [Int]
        public var compressedBytes: Int { compressedSizes.reduce(0, +) }
    }

    /// Compresses `count` bytes of `input` in chunks of `chunkBytes`, waiting for the result.
    public func compress(_ input: DeviceBuffer, count: Int, chunkBytes: Int, stream: GPUStream) throws(GPUError)
        -> Compressed
    {
        let elementBytes = dataType == CTorporNVCOMP_TypeFloat16 ? 2 : 1
        let maxOutput = try nvcomp.ansMaxCompressedChunkBytes(
            chunkBytes: chunkBytes, dataType: dataType, tuning: tuning)
        let plan = try ChunkPlan(
            totalBytes: count, chunkBytes: chunkBytes, elementBytes: elementBytes, alignment: 16,
            maxCompressedChunkBytes: maxOutput)
        let output = try DeviceBuffer(device: device, count: plan.outputBytes)
        let tables = try PointerTables(device: device, chunkCount: plan.chunks.count, stream: stream)
        try tables.upload(
            first: plan.inputPointers(base: input.address), second: plan.slotPointers(base: output.address),
            sizes: plan.sizes, stream: stream)
        let options = NVCOMPLibrary.ansCompressOptions(dataType, tuning)
        var tempBytes = 0
        try NVCOMPLibrary.check(
            nvcomp.ansCompressGetTempSize(plan.chunks.count, chunkBytes, options, &tempBytes, count, stream.opaque),
            "nvcompBatchedANSCompressGetTempSize")
        let temp = try DeviceBuffer(device: device, count: tempBytes)
        try NVCOMPLibrary.check(
            nvcomp.ansCompressAsync(
                tables.firstPointers, tables.sizes, chunkBytes, plan.chunks.count, temp.pointer(), tempBytes,
                tables.secondPointers, tables.resultSizes, options, tables.statuses, stream.opaque),
            "nvcompBatchedANSCompressAsync")
        let (statuses, sizes) = try tables.download(stream: stream)
        for (index, status) in statuses.enumerated() where status != CTorporNVCOMP_Success {
            throw GPUError(
                .nvcomp,
                "ANS compression of chunk \(index) failed on GPU \(device.info.ordinal): "
                    + NVCOMPLibrary.statusName(status))
        }
        return Compressed(plan: plan, output: output, compressedSizes: sizes)
    }

    /// Decompresses every chunk of `compressed` into `output` (at the plan's offsets), checking every chunk's
    /// status and decoded size; waits for the result.
    /// - Returns: GPU milliseconds of the decode kernel alone.
    @discardableResult
    public func decompress(_ compressed: Compressed, into output: DeviceBuffer, stream: GPUStream) throws(GPUError)
        -> Double
    {
        let plan = compressed.plan
        let tables = try PointerTables(device: device, chunkCount: plan.chunks.count, stream: stream)
        try tables.upload(
            first: plan.slotPointers(base: compressed.output.address), second: plan.inputPointers(base: output.address),
            sizes: compressed.compressedSizes, bufferSizes: plan.sizes, stream: stream)
        let options = NVCOMPLibrary.ansDecompressOptions(dataType)
        var tempBytes = 0
        let total = plan.sizes.reduce(0, +)
        try NVCOMPLibrary.check(
            nvcomp.ansDecompressGetTempSize(
                plan.chunks.count, plan.chunkBytes, options, &tempBytes, total, stream.opaque),
            "nvcompBatchedANSDecompressGetTempSize")
        return try tables.timedDecode(
            name: "ANS", tempBytes: tempBytes, expected: plan.chunks.map(\.count), stream: stream
        ) { temp throws(GPUError) in
            try NVCOMPLibrary.check(
                nvcomp.ansDecompressAsync(
                    tables.firstPointers, tables.sizes, tables.bufferSizes, tables.resultSizes, plan.chunks.count,
                    temp.pointer(), tempBytes, tables.secondPointers, options, tables.statuses, stream.opaque),
                "nvcompBatchedANSDecompressAsync")
        }
    }
}

/// The device arrays one nvCOMP batch call takes: two pointer tables, sizes, buffer sizes, result sizes and
/// statuses, filled from the host through one pinned staging buffer.
final class PointerTables: @unchecked Sendable {
    let device: GPUDevice
    /// Entries allocated per table.
    let capacity: Int
    /// Entries in use (at most `capacity`): what `upload` and `download` move.
    var chunkCount: Int {
        didSet { precondition(chunkCount <= capacity, "\(chunkCount) entries in tables of \(capacity)") }
    }
    private let memory: DeviceBuffer
    private let staging: PinnedBuffer

    init(device: GPUDevice, chunkCount: Int, stream: GPUStream) throws(GPUError) {
        self.device = device
        self.chunkCount = chunkCount
        capacity = max(chunkCount, 1)
        // Six arrays of 8-byte entries (statuses are 4 bytes; they get 8 to keep everything aligned).
        memory = try DeviceBuffer(device: device, count: 6 * 8 * capacity)
        staging = try PinnedBuffer(device: device, count: 6 * 8 * capacity)
    }

    private func address(_ table: Int) -> UnsafeMutableRawPointer { memory.pointer(at: table * 8 * capacity) }

    /// Entry `index` of table `table` (0 first pointers, 1 second pointers, 2 sizes, 3 buffer sizes, 4 result
    /// sizes, 5 statuses), for a call on a sub-range of the chunks.
    func entry<T>(_ table: Int, _ index: Int, as type: T.Type = T.self) -> UnsafeMutablePointer<T> {
        UnsafeMutablePointer(OpaquePointer(address(table).advanced(by: 8 * index)))
    }

    var firstPointers: UnsafePointer<UnsafeRawPointer?> { UnsafePointer(OpaquePointer(address(0))) }
    var secondPointers: UnsafePointer<UnsafeMutableRawPointer?> { UnsafePointer(OpaquePointer(address(1))) }
    var sizes: UnsafePointer<Int> { UnsafePointer(OpaquePointer(address(2))) }
    var bufferSizes: UnsafePointer<Int> { UnsafePointer(OpaquePointer(address(3))) }
    var resultSizes: UnsafeMutablePointer<Int> { UnsafeMutablePointer(OpaquePointer(address(4))) }
    var statuses: UnsafeMutablePointer<CTorporNVCOMP_Status> { UnsafeMutablePointer(OpaquePointer(address(5))) }

    /// Copies the tables to the device (the result sizes and statuses zeroed).
    func upload(first: [UInt64], second: [UInt64], sizes: [Int], bufferSizes: [Int]? = nil, stream: GPUStream)
        throws(GPUError)
    {
        let host = staging.pointer
        let count = chunkCount
        for (table, values) in [first, second, sizes.map { UInt64($0) }, (bufferSizes ?? sizes).map { UInt64($0) }]
            .enumerated()
        {
            let base = host.advanced(by: table * 8 * capacity).assumingMemoryBound(to: UInt64.self)
            for (index, value) in values.prefix(count).enumerated() { base[index] = value }
        }
        memset(host.advanced(by: 4 * 8 * capacity), 0, 2 * 8 * capacity)
        // Up to the last entry in use: the tables lie `capacity` entries apart.
        try memory.copy(from: host, count: 8 * (5 * capacity + count), on: stream)
    }

    /// Waits for the stream, then returns every chunk's status and result size.
    func download(stream: GPUStream) throws(GPUError) -> ([CTorporNVCOMP_Status], [Int]) {
        let host = staging.pointer.advanced(by: 4 * 8 * capacity)
        try memory.copy(to: host, count: 8 * (capacity + chunkCount), from: 4 * 8 * capacity, on: stream)
        try stream.synchronize()
        let sizes = host.assumingMemoryBound(to: Int.self)
        let statuses = host.advanced(by: 8 * capacity).assumingMemoryBound(to: CTorporNVCOMP_Status.self)
        return ((0..<chunkCount).map { statuses[$0] }, (0..<chunkCount).map { sizes[$0] })
    }

    /// Runs one batched decode of these tables (`decode`, given `tempBytes` of scratch) between two timing events,
    /// then checks every chunk's status and size against `expected`; the decode's milliseconds on the GPU.
    func timedDecode(
        name: String, tempBytes: Int, expected: [Int], stream: GPUStream,
        _ decode: (DeviceBuffer) throws(GPUError) -> Void
    ) throws(GPUError) -> Double {
        let temp = try DeviceBuffer(device: device, count: tempBytes)
        let start = try GPUEvent(device: device, timing: true)
        let end = try GPUEvent(device: device, timing: true)
        try start.record(on: stream)
        try decode(temp)
        try end.record(on: stream)
        let (statuses, sizes) = try download(stream: stream)
        for (index, status) in statuses.enumerated() where status != CTorporNVCOMP_Success {
            throw GPUError(.corruptData, "\(name) chunk \(index) did not decode: \(NVCOMPLibrary.statusName(status))")
        }
        for (index, size) in sizes.enumerated() where size != expected[index] {
            throw GPUError(
                .corruptData, "\(name) chunk \(index) decoded to \(size) bytes instead of \(expected[index])")
        }
        return try end.milliseconds(since: start)
    }
}
