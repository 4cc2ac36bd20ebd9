import CTorporNVCOMP
import Dispatch
import FoundationEssentials
public import TorporCheckpoint

/// `pack --gpu`: encodes windows of chunks with nvCOMP's ANS and Bitcomp on one GPU and computes both CRC-32s of
/// every chunk there, so the CPU only copies bytes between the source mapping, pinned memory and the writer.
///
/// One window is one round trip: the chunks are gathered into pinned memory (every core), copied to the GPU in
/// one transfer, compressed with one batched call per codec, checksummed, and copied back in one transfer.
public final class GPUBatchEncoder: BatchChunkEncoder, @unchecked Sendable {
    public let nvcomp: NVCOMPLibrary
    public let device: GPUDevice
    public let codecVersions: [ChunkCodec: String]
    /// How ANS cuts and codes each chunk.
    public let ansTuning: ANSTuning
    private let stream: GPUStream
    private let maxChunkBytes: Int
    private let inputSlot: Int
    private let outputSlot: Int
    private var capacity = 0
    private var pinnedInput: PinnedBuffer?
    private var pinnedOutput: PinnedBuffer?
    private var deviceInput: DeviceBuffer?
    private var deviceOutput: DeviceBuffer?
    private var checksums: DeviceBuffer?
    private var pinnedChecksums: PinnedBuffer?
    private var checkStatuses: DeviceBuffer?
    private var pinnedCheckStatuses: PinnedBuffer?
    private var tables: PointerTables?
    private var temp: DeviceBuffer?
    private let crc: GPUCRC32

    /// - Parameters:
    ///   - maxChunkBytes: the container's chunk size (at most 16 MiB).
    ///   - ansTuning: how ANS cuts and codes each chunk.
    public init(nvcomp: NVCOMPLibrary, device: GPUDevice, maxChunkBytes: Int, ansTuning: ANSTuning = .default)
        throws(GPUError)
    {
        self.nvcomp = nvcomp
        self.device = device
        self.maxChunkBytes = maxChunkBytes
        self.ansTuning = try ansTuning.validated()
        stream = try GPUStream(device: device)
        crc = GPUCRC32(nvcomp: nvcomp, device: device)
        let version = "nvCOMP \(nvcomp.versionString)"
        let ans = "\(version) ANS (rANS, \(ansTuning))"
        codecVersions = [
            .ans16: "\(ans), data_type FLOAT16",
            .ans32: "\(ans), data_type FLOAT32",
            .ans8: "\(ans), data_type UCHAR",
            .bitcomp: "\(version) Bitcomp, default algorithm, lossless, data_type by element width",
        ]
        var worst = maxChunkBytes
        for dataType in [CTorporNVCOMP_TypeFloat16, CTorporNVCOMP_TypeFloat32, CTorporNVCOMP_TypeUChar] {
            worst = max(
                worst,
                try nvcomp.ansMaxCompressedChunkBytes(chunkBytes: maxChunkBytes, dataType: dataType, tuning: ansTuning))
        }
        for dataType in [CTorporNVCOMP_TypeUChar, CTorporNVCOMP_TypeUShort, CTorporNVCOMP_TypeUInt] {
            worst = max(
                worst, try nvcomp.bitcompMaxCompressedChunkBytes(chunkBytes: maxChunkBytes, dataType: dataType))
        }
        inputSlot = (maxChunkBytes + 255) / 256 * 256
        outputSlot = (worst + 255) / 256 * 256
    }

    public func maxEncodedSize(_ codec: ChunkCodec, rawSize: Int) throws(CheckpointError) -> Int {
        guard codecVersions[codec] != nil else {
            throw CheckpointError(.unsupported, "the GPU encoder has no codec \(codec.name)")
        }
        return outputSlot
    }

    /// nvCOMP's data type for a chunk of `codec` holding `dtype` elements.
    static func dataType(_ codec: ChunkCodec, _ dtype: DType) -> CTorporNVCOMP_DataType {
        switch codec {
        case .ans16: CTorporNVCOMP_TypeFloat16
        case .ans32: CTorporNVCOMP_TypeFloat32
        case .bitcomp:
            switch dtype.bitWidth {
            case 16: CTorporNVCOMP_TypeUShort
            case 32, 64: CTorporNVCOMP_TypeUInt
            default: CTorporNVCOMP_TypeUChar
            }
        default: CTorporNVCOMP_TypeUChar
        }
    }

    private func reserve(_ count: Int) throws(GPUError) {
        guard count > capacity else { return }
        pinnedInput = try PinnedBuffer(device: device, count: count * inputSlot)
        pinnedOutput = try PinnedBuffer(device: device, count: count * outputSlot)
        deviceInput = try DeviceBuffer(device: device, count: count * inputSlot)
        deviceOutput = try DeviceBuffer(device: device, count: count * outputSlot)
        checksums = try DeviceBuffer(device: device, count: 8 * count)
        pinnedChecksums = try PinnedBuffer(device: device, count: 8 * count)
        checkStatuses = try DeviceBuffer(device: device, count: 8 * count)
        pinnedCheckStatuses = try PinnedBuffer(device: device, count: 8 * count)
        tables = try PointerTables(device: device, chunkCount: count, stream: stream)
        capacity = count
    }

    private func scratch(_ bytes: Int) throws(GPUError) -> DeviceBuffer {
        if let temp, temp.count >= bytes { return temp }
        try stream.synchronize()  // a smaller one may still be in use by a queued call
        let buffer = try DeviceBuffer(device: device, count: bytes)
        temp = buffer
        return buffer
    }

    public func encode(_ chunks: [BatchChunk]) throws(CheckpointError) -> [BatchEncodedChunk] {
        do {
            return try encodeOnGPU(chunks)
        } catch {
            throw CheckpointError(.io, "GPU encoding on GPU \(device.info.ordinal) failed: \(error.message)")
        }
    }

    private func encodeOnGPU(_ chunks: [BatchChunk]) throws(GPUError) -> [BatchEncodedChunk] {
        let count = chunks.count
        guard count > 0 else { return [] }
        for (number, chunk) in chunks.enumerated() {
            guard chunk.input.count <= maxChunkBytes, chunk.input.count % chunk.codec.elementWidth == 0,
                codecVersions[chunk.codec] != nil
            else {
                throw GPUError(
                    .invalidArgument,
                    "chunk \(number): \(chunk.input.count) bytes cannot be coded with \(chunk.codec.name) in chunks of "
                        + "\(maxChunkBytes)")
            }
        }
        try device.makeCurrent()
        try reserve(count)
        let pinnedInput = pinnedInput!
        let pinnedOutput = pinnedOutput!
        let deviceInput = deviceInput!
        let deviceOutput = deviceOutput!
        let tables = tables!
        let inputSlot = inputSlot
        let outputSlot = outputSlot

        // Gather on every core: the source is a pageable mapping, which the GPU must never copy from.
        let gathered = UncheckedSendable((chunks, pinnedInput.pointer))
        DispatchQueue.concurrentPerform(iterations: count) { index in
            let (chunks, base) = gathered.value
            let input = chunks[index].input
            base.advanced(by: index * inputSlot).copyMemory(from: input.baseAddress!, byteCount: input.count)
        }
        try deviceInput.copy(from: pinnedInput.pointer, count: count * inputSlot, on: stream)

        // One batched call per codec and data type: order the chunks so that each group is a run of the tables.
        let keys = chunks.map { (codec: $0.codec, dataType: Self.dataType($0.codec, $0.dtype)) }
        let order = (0..<count).sorted {
            (keys[$0].codec.rawValue, keys[$0].dataType, $0) < (keys[$1].codec.rawValue, keys[$1].dataType, $1)
        }
        try tables.upload(
            first: order.map { deviceInput.address + UInt64($0 * inputSlot) },
            second: order.map { deviceOutput.address + UInt64($0 * outputSlot) },
            sizes: order.map { chunks[$0].input.count }, stream: stream)
        var groupStart = 0
        while groupStart < count {
            let key = keys[order[groupStart]]
            var groupEnd = groupStart + 1
            while groupEnd < count, keys[order[groupEnd]] == key { groupEnd += 1 }
            try compress(
                key.codec, dataType: key.dataType, tables: tables, range: groupStart..<groupEnd,
                maxBytes: order[groupStart..<groupEnd].map { chunks[$0].input.count }.max()!)
            groupStart = groupEnd
        }
        // CRC-32 of every input, and of every output at the size the compressor wrote.
        let checksums = checksums!
        let results = UnsafeMutablePointer<UInt32>(OpaquePointer(checksums.pointer()))
        let checkStatuses = checkStatuses!
        let statusPointer = UnsafeMutablePointer<CTorporNVCOMP_Status>(OpaquePointer(checkStatuses.pointer()))
        try crc.enqueue(
            inputs: tables.firstPointers, sizes: tables.sizes, count: count, maxChunkBytes: maxChunkBytes,
            results: results, statuses: statusPointer, stream: stream)
        try crc.enqueue(
            inputs: UnsafePointer(OpaquePointer(tables.secondPointers)), sizes: tables.resultSizes, count: count,
            maxChunkBytes: outputSlot, results: results + count, statuses: statusPointer + count, stream: stream)
        let pinnedChecksums = pinnedChecksums!
        try checksums.copy(to: pinnedChecksums.pointer, count: 8 * count, on: stream)
        try deviceOutput.copy(to: pinnedOutput.pointer, count: count * outputSlot, on: stream)
        let checkHost = pinnedCheckStatuses!
        try checkStatuses.copy(to: checkHost.pointer, count: 8 * count, on: stream)
        let (statuses, sizes) = try tables.download(stream: stream)

        let crcs = pinnedChecksums.pointer.assumingMemoryBound(to: UInt32.self)
        let checkResults = checkHost.pointer.assumingMemoryBound(to: CTorporNVCOMP_Status.self)
        var encoded = [BatchEncodedChunk](repeating: .init(size: 0, rawCRC: 0, storedCRC: 0), count: count)
        for (position, index) in order.enumerated() {
            guard statuses[position] == CTorporNVCOMP_Success else {
                throw GPUError(
                    .nvcomp,
                    "\(chunks[index].codec.name) compression of chunk \(index) of the window failed: "
                        + NVCOMPLibrary.statusName(statuses[position]))
            }
            for check in [position, count + position] where checkResults[check] != CTorporNVCOMP_Success {
                throw GPUError(
                    .nvcomp, "CRC32 of chunk \(index) failed: \(NVCOMPLibrary.statusName(checkResults[check]))")
            }
            guard sizes[position] > 0, sizes[position] <= outputSlot else {
                throw GPUError(.nvcomp, "chunk \(index) compressed to an impossible \(sizes[position]) bytes")
            }
            encoded[index] = BatchEncodedChunk(
                size: sizes[position], rawCRC: crcs[position], storedCRC: crcs[count + position])
        }
        // Scatter on every core into the packer's output slots.
        let scattered = UncheckedSendable((chunks, pinnedOutput.pointer, encoded))
        DispatchQueue.concurrentPerform(iterations: count) { index in
            let (chunks, base, encoded) = scattered.value
            let size = encoded[index].size
            guard size < chunks[index].input.count else { return }  // stored raw by the packer
            chunks[index].output.baseAddress!.copyMemory(
                from: base.advanced(by: index * outputSlot), byteCount: size)
        }
        return encoded
    }

    /// Queues one batched compression of the table entries `range`.
    private func compress(
        _ codec: ChunkCodec, dataType: CTorporNVCOMP_DataType, tables: PointerTables, range: Range<Int>, maxBytes: Int
    ) throws(GPUError) {
        let count = range.count
        let total = count * maxBytes
        let inputs = UnsafePointer(tables.entry(0, range.lowerBound, as: UnsafeRawPointer?.self))
        let outputs = UnsafePointer(tables.entry(1, range.lowerBound, as: UnsafeMutableRawPointer?.self))
        let sizes = UnsafePointer(tables.entry(2, range.lowerBound, as: Int.self))
        let results = tables.entry(4, range.lowerBound, as: Int.self)
        let statuses = tables.statuses + range.lowerBound
        // One batched call: its scratch size, then the compression into the scratch.
        func run(
            _ algorithm: String, tempSize: (inout Int) -> CTorporNVCOMP_Status,
            compress: (_ temp: UnsafeMutableRawPointer?, _ tempBytes: Int) -> CTorporNVCOMP_Status
        ) throws(GPUError) {
            var tempBytes = 0
            try NVCOMPLibrary.check(tempSize(&tempBytes), "nvcompBatched\(algorithm)CompressGetTempSize")
            let temp = try scratch(tempBytes)
            try NVCOMPLibrary.check(compress(temp.pointer(), tempBytes), "nvcompBatched\(algorithm)CompressAsync")
        }
        switch codec {
        case .ans16, .ans32, .ans8:
            let options = NVCOMPLibrary.ansCompressOptions(dataType, ansTuning)
            try run("ANS") {
                nvcomp.ansCompressGetTempSize(count, maxBytes, options, &$0, total, stream.opaque)
            } compress: {
                nvcomp.ansCompressAsync(
                    inputs, sizes, maxBytes, count, $0, $1, outputs, results, options, statuses, stream.opaque)
            }
        case .bitcomp:
            let options = NVCOMPLibrary.bitcompCompressOptions(dataType)
            try run("Bitcomp") {
                nvcomp.bitcompCompressGetTempSize(count, maxBytes, options, &$0, total, stream.opaque)
            } compress: {
                nvcomp.bitcompCompressAsync(
                    inputs, sizes, maxBytes, count, $0, $1, outputs, results, options, statuses, stream.opaque)
            }
        default:
            throw GPUError(.invalidArgument, "\(codec.name) is not a GPU codec")
        }
    }
}
