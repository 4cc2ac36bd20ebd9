import CTorporLinux
import CTorporNVCOMP
import Dispatch
import FoundationEssentials
import Glibc
import Synchronization
public import TorporCheckpoint

/// Where a load reads a container's stored bytes from.
public enum LoadSource: Sendable {
    /// The container file, read with parallel `pread`s into a ring of pinned buffers (`O_DIRECT` when `direct`).
    case file(direct: Bool)
    /// The container's bytes already in pinned host memory (`HostCache`): copied to the GPU without staging.
    case hostCache(HostCache)
    /// The container's bytes read by range from `ByteRangeSource` (an object in an S3-compatible store) straight
    /// into the ring of pinned buffers, batch by batch: the way to load a container opened with
    /// `Container(metadataOf:)`, with no local copy. The source fetches each batch with its own parallelism.
    case ranges(any ByteRangeSource)
}

extension LoadSource {
    var readsByRange: Bool {
        if case .ranges = self { return true }
        return false
    }
}

/// Where a load puts each tensor.
public enum LoadDestination: @unchecked Sendable {
    /// One device buffer laid out as the safetensors file's data section: every tensor at its `dataOffsets`.
    case arena(DeviceBuffer)
    /// Caller-given device addresses, by tensor name; tensors not named are not loaded.
    case pointers([String: UInt64])
}

/// Tuning of the loader's pipeline.
public struct GPULoadOptions: Sendable {
    /// Stored bytes per batch: one read, one host-to-device copy, one batched decode per codec.
    public var batchBytes = 64 << 20
    /// Pinned buffers (and device staging buffers) in the ring.
    public var ringSlots = 4
    /// Streams that batches with byte-plane chunks are checked and decoded on, in turn (at most `ringSlots`): up to
    /// this many such batches decode at once, as the kernel works a chunk with one warp and needs many chunks in
    /// flight to fill the GPU. Other batches decode on the first stream.
    public var decodeStreams = 4
    /// Threads issuing the reads of one batch in parallel.
    public var readThreads = 8
    /// NVRTC's library file or folder, for the byte-plane kernel (default: `NVRTCLibrary`'s search).
    public var nvrtcPath: String?
    public init() {}
}

/// What one load did.
public struct LoadReport: Sendable {
    /// Bytes delivered into GPU memory (decoded).
    public var bytes: Int
    /// Stored (compressed) bytes read.
    public var storedBytes: Int
    public var chunks: Int
    public var tensors: Int
    public var seconds: Double
    /// Decoded gigabytes per second into GPU memory.
    public var gigabytesPerSecond: Double { seconds > 0 ? Double(bytes) / 1e9 / seconds : 0 }
}

/// The pipelined loader: storage → a ring of pinned buffers filled by parallel large reads → host-to-device
/// copies on one stream → CRC-32 of the stored bytes and batched decoding on a decode stream (several in turn for
/// byte-plane batches), straight into the destination. Reading, copying and decoding of successive batches
/// overlap; the host queues the whole load and waits only for reads (and, for the codecs
/// whose decoders trust their input, for the stored checksums).
///
/// Every chunk is checked: the CRC-32 of its stored bytes (before decoding for zstd and Bitcomp, whose nvCOMP
/// decoders do not validate their input; ANS validates its own), its decoder status and decoded size, and the
/// CRC-32 of the decoded bytes. A load that fails any check throws, naming the tensor and chunk; the destination
/// then holds unspecified bytes and must not be used. One loader runs one load at a time (loads queue); it keeps
/// its pinned ring, staging buffers and streams between loads.
public final class GPULoader: @unchecked Sendable {
    public let nvcomp: NVCOMPLibrary
    public let device: GPUDevice
    public let options: GPULoadOptions
    private let crc: GPUCRC32
    private let resources = Mutex<LoadResources?>(nil)

    public init(nvcomp: NVCOMPLibrary, device: GPUDevice, options: GPULoadOptions = GPULoadOptions()) {
        self.nvcomp = nvcomp
        self.device = device
        self.options = options
        crc = GPUCRC32(nvcomp: nvcomp, device: device)
    }

    /// The bytes an arena for `container` needs: its safetensors data section.
    public static func arenaBytes(for container: Container) -> Int {
        container.index.tensors.map { $0.dataOffsets[1] }.max() ?? 0
    }

    /// One chunk placed at one destination.
    struct Entry {
        var placement: ChunkPlacement
        var output: UInt64

        var chunk: Int { placement.chunk }
        var tensor: Int { placement.tensor }
        var chunkInTensor: Int { placement.chunkInTensor }
    }

    /// Consecutive chunks of the file read, copied and decoded together.
    struct Batch {
        var span: Range<Int>  // file bytes read, aligned for direct I/O
        var entries: Range<Int>  // in the plan's entry order, grouped by codec
    }

    /// Runs `body` with this loader's kept resources, one load at a time.
    private func withResources<R>(_ body: (LoadResources) throws(GPUError) -> R) throws(GPUError) -> R {
        try resources.withLock { (kept: inout LoadResources?) throws(GPUError) -> R in
            try device.makeCurrent()
            if kept == nil {
                let slots = max(2, options.ringSlots)
                kept = try LoadResources(
                    device: device, slots: slots, decodeStreams: min(max(1, options.decodeStreams), slots))
            }
            return try body(kept!)
        }
    }

    /// Loads `container` into `destination`, reading from `source`.
    /// - Throws: `GPUError`: `.unsupported` for chunks the GPU cannot decode yet, `.corruptData` naming the tensor
    ///   and chunk that failed a check, `.io`, `.outOfMemory`, `.invalidArgument` for a destination that does not fit.
    public func load(_ container: Container, from source: LoadSource, into destination: LoadDestination)
        throws(GPUError) -> LoadReport
    {
        try withResources { (kept) throws(GPUError) in try load(container, source, destination, kept) }
    }

    private func load(
        _ container: Container, _ source: LoadSource, _ destination: LoadDestination, _ kept: LoadResources
    ) throws(GPUError) -> LoadReport {
        let started = ContinuousClock.now
        if !container.holdsChunks, !source.readsByRange {
            throw GPUError(
                .invalidArgument,
                "\(container.path): only its metadata is here; load it from its source (LoadSource.ranges)")
        }
        let (entries, batches, tensorCount) = try Self.plan(
            container, destination: destination, batchBytes: options.batchBytes)
        guard !entries.isEmpty else {
            return LoadReport(bytes: 0, storedBytes: 0, chunks: 0, tensors: tensorCount, seconds: 0)
        }
        let chunks = container.chunks
        let slots = kept.slots
        let slotBytes = batches.map(\.span.count).max()!
        let staging = try kept.staging(bytes: slots * slotBytes)
        let copyStream = kept.copyStream

        // Every table for the whole load, uploaded once: the pointers depend only on the batch's ring slot.
        let tables = try kept.tables(count: entries.count, stream: copyStream)
        var inputs = [UInt64](repeating: 0, count: entries.count)
        for (number, batch) in batches.enumerated() {
            let base = staging.address + UInt64((number % slots) * slotBytes)
            for position in batch.entries {
                inputs[position] = base + UInt64(chunks[entries[position].chunk].offset - batch.span.lowerBound)
            }
        }
        try tables.upload(
            first: inputs, second: entries.map(\.output), sizes: entries.map { chunks[$0.chunk].storedSize },
            bufferSizes: entries.map { chunks[$0.chunk].rawSize }, stream: copyStream)
        try kept.tablesUploaded.record(on: copyStream)
        for stream in kept.decodeStreams { try stream.wait(for: kept.tablesUploaded) }
        // CRC-32s: stored bytes, then decoded bytes; each with a status per entry. Read back at the end (and
        // per batch, before decoding, for the codecs that trust their input).
        let (checks, results, stride) = try kept.checks(count: entries.count)
        let checkResults = UnsafeMutablePointer<UInt32>(OpaquePointer(checks.pointer()))
        let checkStatuses = UnsafeMutablePointer<CTorporNVCOMP_Status>(OpaquePointer(checks.pointer(at: 8 * stride)))
        let tempBytes = try tempBytes(entries, batches, chunks, stream: kept.decodeStreams[0])
        let temps = try kept.decodeStreams.indices.map { index throws(GPUError) in
            try kept.temp(bytes: tempBytes, stream: index)
        }
        // Whatever happens, nothing queued may outlive the buffers it uses.
        defer {
            try? copyStream.synchronize()
            try? kept.synchronizeDecodes()
        }
        let reader = try BatchReader(
            path: container.path, fileSize: container.fileSize, source: source, batches: batches.map(\.span),
            ring: try kept.ring(bytes: slotBytes, for: source), copied: kept.copied, device: device,
            threads: options.readThreads)
        defer { reader.finish() }

        /// The host reads a stored CRC-32 (at `position` of `table`: 0 stored, 1 decoded) from `results`.
        func storedCheck(_ position: Int) throws(GPUError) {
            let crcs = results.pointer.assumingMemoryBound(to: UInt32.self)
            let statuses = results.pointer.advanced(by: 8 * stride).assumingMemoryBound(to: CTorporNVCOMP_Status.self)
            let entry = entries[position]
            let record = chunks[entry.chunk]
            guard statuses[position] == CTorporNVCOMP_Success, crcs[position] == record.storedCRC else {
                throw GPUError(.corruptData, container.storedCRCFailure(entry.placement, found: crcs[position]))
            }
        }

        for (number, batch) in batches.enumerated() {
            let slot = number % slots
            // Copy: the staging slot is free once the decode of the batch before in it has run.
            let host = try reader.waitUntilRead(number)
            try copyStream.wait(for: kept.decoded[slot])
            try copyStream.copy(
                toDevice: staging.address + UInt64(slot * slotBytes), from: host, count: batch.span.count)
            try kept.copied[slot].record(on: copyStream)
            reader.release(number)

            // Check and decode once the copy is in. Batches with byte-plane chunks take the decode streams in turn,
            // so several decode at once; nvCOMP's decoders fill the GPU alone and stay on the first stream (spread
            // over four, ANS loads ran 7 % slower on an H200: 76.1 against 81.7 GB/s).
            let range = batch.entries
            let spread = range.contains { chunks[entries[$0].chunk].codec == .bytePlane }
            let streamIndex = spread ? number % kept.decodeStreams.count : 0
            let decodeStream = kept.decodeStreams[streamIndex]
            try decodeStream.wait(for: kept.copied[slot])
            try crc.enqueue(
                inputs: UnsafePointer(tables.entry(0, range.lowerBound, as: UnsafeRawPointer?.self)),
                sizes: UnsafePointer(tables.entry(2, range.lowerBound, as: Int.self)), count: range.count,
                maxChunkBytes: range.map { chunks[entries[$0].chunk].storedSize }.max()!,
                results: checkResults + range.lowerBound, statuses: checkStatuses + range.lowerBound,
                stream: decodeStream)
            if range.contains(where: { !chunks[entries[$0].chunk].codec.decoderValidatesInput }) {
                try decodeStream.copy(
                    toHost: results.pointer.advanced(by: 4 * range.lowerBound),
                    fromDevice: checks.address + UInt64(4 * range.lowerBound), count: 4 * range.count)
                try decodeStream.copy(
                    toHost: results.pointer.advanced(by: 8 * stride + 4 * range.lowerBound),
                    fromDevice: checks.address + UInt64(8 * stride + 4 * range.lowerBound), count: 4 * range.count)
                try decodeStream.synchronize()
                for position in range { try storedCheck(position) }
            }
            var start = range.lowerBound
            while start < range.upperBound {
                let codec = chunks[entries[start].chunk].codec
                let key = Self.decodeGroup(entries[start], container)
                var end = start + 1
                while end < range.upperBound, Self.decodeGroup(entries[end], container) == key { end += 1 }
                if codec == .bytePlane {
                    try kept.bytePlaneDecoder(nvrtcPath: options.nvrtcPath).run(
                        tables: tables, range: start..<end, stream: decodeStream)
                } else {
                    try decode(
                        codec, start..<end, entries: entries, chunks: chunks, inputs: inputs, tables: tables,
                        temp: temps[streamIndex], stream: decodeStream, describe: { container.describe($0.placement) })
                }
                start = end
            }
            try kept.decoded[slot].record(on: decodeStream)
            // The decoded bytes' CRC-32s, while the next batches copy.
            try crc.enqueue(
                inputs: UnsafePointer(OpaquePointer(tables.entry(1, range.lowerBound, as: UInt64.self))),
                sizes: UnsafePointer(tables.entry(3, range.lowerBound, as: Int.self)), count: range.count,
                maxChunkBytes: container.index.chunkSize, results: checkResults + stride + range.lowerBound,
                statuses: checkStatuses + stride + range.lowerBound, stream: decodeStream)
        }
        // Every check read back at once, after every slot's decodes.
        try kept.synchronizeDecodes()
        let finalStream = kept.decodeStreams[0]
        try finalStream.copy(toHost: results.pointer, fromDevice: checks.address, count: 16 * stride)
        let (statuses, sizes) = try tables.download(stream: finalStream)
        let crcs = results.pointer.assumingMemoryBound(to: UInt32.self)
        let crcStatuses = results.pointer.advanced(by: 8 * stride).assumingMemoryBound(to: CTorporNVCOMP_Status.self)
        for (position, entry) in entries.enumerated() {
            let record = chunks[entry.chunk]
            try storedCheck(position)
            if record.codec != .raw {
                guard statuses[position] == CTorporNVCOMP_Success else {
                    throw GPUError(
                        .corruptData,
                        "\(container.describe(entry.placement)): \(record.codec.name) data did not decode: "
                            + NVCOMPLibrary.statusName(statuses[position]))
                }
                guard sizes[position] == record.rawSize else {
                    throw GPUError(
                        .corruptData,
                        "\(container.describe(entry.placement)): decoded to \(sizes[position]) bytes, expected \(record.rawSize)"
                    )
                }
            }
            let check = stride + position
            guard crcStatuses[check] == CTorporNVCOMP_Success, crcs[check] == record.rawCRC else {
                throw GPUError(.corruptData, container.decodedCRCFailure(entry.placement, found: crcs[check]))
            }
        }
        try reader.check()
        let seconds = (ContinuousClock.now - started) / .seconds(1)
        return LoadReport(
            bytes: entries.reduce(0) { $0 + chunks[$1.chunk].rawSize },
            storedBytes: batches.reduce(0) { $0 + $1.span.count }, chunks: entries.count, tensors: tensorCount,
            seconds: seconds)
    }

    /// The uncompressed baseline through the same pipeline: `range` of the file at `path` (a safetensors data
    /// section) read into the pinned ring and copied straight into `arena`, batch by batch, without decoding.
    public func loadUncompressed(path: String, range: Range<Int>, into arena: DeviceBuffer, direct: Bool)
        throws(GPUError) -> LoadReport
    {
        try withResources { (kept) throws(GPUError) in
            try loadUncompressed(path: path, range: range, into: arena, direct: direct, kept)
        }
    }

    private func loadUncompressed(
        path: String, range: Range<Int>, into arena: DeviceBuffer, direct: Bool, _ kept: LoadResources
    ) throws(GPUError) -> LoadReport {
        let started = ContinuousClock.now
        guard range.count <= arena.count else {
            throw GPUError(.invalidArgument, "\(path): \(range.count) bytes do not fit an arena of \(arena.count)")
        }
        var status = stat()
        guard stat(path, &status) == 0 else { throw GPUError(.io, "cannot stat \(path): \(errnoText())") }
        // Batches of whole pages; the first and last are trimmed when copied.
        let first = range.lowerBound / 4096 * 4096
        var spans: [Range<Int>] = []
        var start = first
        while start < range.upperBound {
            let end = min(start + options.batchBytes, (range.upperBound + 4095) / 4096 * 4096)
            spans.append(start..<end)
            start = end
        }
        guard !spans.isEmpty else { return LoadReport(bytes: 0, storedBytes: 0, chunks: 0, tensors: 0, seconds: 0) }
        let stream = kept.copyStream
        defer { try? stream.synchronize() }
        // Direct I/O may not read past the end of the file: the last span ends at the file's last page.
        let fileSize = Int(status.st_size)
        let source = LoadSource.file(direct: direct)
        let reader = try BatchReader(
            path: path, fileSize: fileSize, source: source,
            batches: spans.map { $0.lowerBound..<min($0.upperBound, (fileSize + 4095) / 4096 * 4096) },
            ring: try kept.ring(bytes: options.batchBytes, for: source), copied: kept.copied, device: device,
            threads: options.readThreads)
        defer { reader.finish() }
        for (number, span) in spans.enumerated() {
            let host = try reader.waitUntilRead(number)
            let from = max(span.lowerBound, range.lowerBound)
            let to = min(span.upperBound, range.upperBound)
            try stream.copy(
                toDevice: arena.address + UInt64(from - range.lowerBound),
                from: host.advanced(by: from - span.lowerBound),
                count: to - from)
            try kept.copied[number % kept.slots].record(on: stream)
            reader.release(number)
        }
        try stream.synchronize()
        try reader.check()
        return LoadReport(
            bytes: range.count, storedBytes: range.count, chunks: spans.count, tensors: 0,
            seconds: (ContinuousClock.now - started) / .seconds(1))
    }

    /// Queues the batched decode of the entries `range`, all of one codec. When nvCOMP refuses the whole call,
    /// the chunks are tried one at a time to name the one it refuses.
    private func decode(
        _ codec: ChunkCodec, _ range: Range<Int>, entries: [Entry], chunks: [ChunkRecord], inputs: [UInt64],
        tables: PointerTables, temp: DeviceBuffer, stream: GPUStream, describe: (Entry) -> String
    ) throws(GPUError) {
        if codec == .raw {
            for position in range {
                try stream.copy(
                    toDevice: entries[position].output, fromDevice: inputs[position],
                    count: chunks[entries[position].chunk].rawSize)
            }
            return
        }
        let decoder = try GPUDecoder(nvcomp: nvcomp, codec: codec)
        func call(_ range: Range<Int>) throws(GPUError) {
            let maxRaw = range.map { chunks[entries[$0].chunk].rawSize }.max()!
            let total = range.reduce(0) { $0 + chunks[entries[$1].chunk].rawSize }
            let tempBytes = try decoder.tempBytes(count: range.count, maxRaw: maxRaw, total: total, stream: stream)
            guard tempBytes <= temp.count else {
                throw GPUError(
                    .invalidArgument,
                    "\(codec.name) decoding asked for \(tempBytes) temporary bytes, \(temp.count) kept")
            }
            try decoder.run(tables: tables, range: range, temp: temp, tempBytes: tempBytes, stream: stream)
        }
        do {
            try call(range)
        } catch {
            guard error.code == .nvcomp, range.count > 1 else { throw error }
            for position in range {
                do {
                    try call(position..<(position + 1))
                } catch {
                    throw GPUError(.corruptData, "\(describe(entries[position])): \(error.message)")
                }
            }
            throw error
        }
    }

    /// The largest temporary buffer any batch's decode calls need.
    private func tempBytes(_ entries: [Entry], _ batches: [Batch], _ chunks: [ChunkRecord], stream: GPUStream)
        throws(GPUError) -> Int
    {
        var most = 0
        for batch in batches {
            var groups: [ChunkCodec: (count: Int, maxRaw: Int, total: Int)] = [:]
            for position in batch.entries {
                let record = chunks[entries[position].chunk]
                let group = groups[record.codec] ?? (0, 0, 0)
                groups[record.codec] = (
                    group.count + 1, max(group.maxRaw, record.rawSize), group.total + record.rawSize
                )
            }
            for (codec, group) in groups where codec != .raw && codec != .bytePlane {
                let bytes = try GPUDecoder(nvcomp: nvcomp, codec: codec).tempBytes(
                    count: group.count, maxRaw: group.maxRaw, total: group.total, stream: stream)
                most = max(most, bytes)
            }
        }
        return most
    }

}
