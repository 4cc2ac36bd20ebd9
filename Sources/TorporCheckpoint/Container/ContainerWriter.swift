import CTorporZstd
import Dispatch
import FoundationEssentials
import Glibc

/// The version string of this build of torpor, written into every container and manifest.
public let torporVersion = "0.1.0"

/// Packs safetensors files into `.torpor` containers.
public enum ContainerPacker {
    /// The codec bitstream versions this writer produces, recorded in every container's index.
    static var codecVersions: [String: String] {
        [
            ChunkCodec.raw.name: "1",
            ChunkCodec.zstd.name:
                "zstd frame, libzstd \(String(cString: ZSTD_versionString())) level \(ChunkCoder.zstdLevel)",
            ChunkCodec.bytePlane.name:
                "\(BytePlaneCodec.version) (rANS \(RANS.defaultLanes) lanes, \(RANS.defaultScaleBits)-bit frequencies)",
        ]
    }

    private struct Job {
        var tensor: Int
        var source: Range<Int>
        var codec: ChunkCodec
        var dtype: DType
        /// The source bytes' CRC-32 when already known.
        var rawCRC: UInt32?
    }

    /// Packs the safetensors file at `sourcePath` into a new container at `containerPath`.
    /// - Parameters:
    ///   - sourcePath: a safetensors file; validated strictly first.
    ///   - containerPath: must not exist; the file is fsynced before this returns.
    ///   - fileName: the name recorded in the container (the source's path relative to the model directory).
    /// - Throws: `CheckpointError` for invalid input and for I/O failures; a partly written container is removed.
    public static func pack(
        sourcePath: String,
        to containerPath: String,
        fileName: String,
        options: PackOptions = PackOptions(),
        progress: ProgressHandler? = nil
    ) throws(CheckpointError) -> PackedFile {
        try options.validate()
        return try pack(
            source: try SafetensorsFile(path: sourcePath), to: containerPath, fileName: fileName, options: options,
            progress: progress, digest: nil)
    }

    /// `pack`, with the source's SHA-256 already under way on the same mapping (`ModelPack` starts shards' ahead).
    static func pack(
        source: SafetensorsFile, to containerPath: String, fileName: String, options: PackOptions,
        progress: ProgressHandler?, digest: SourceDigest
    ) throws(CheckpointError) -> PackedFile {
        try options.validate()
        return try pack(
            source: source, to: containerPath, fileName: fileName, options: options, progress: progress,
            digest: Optional(digest))
    }

    /// Packs a safetensors file already mapped or assembled in memory (`StagedSafetensors`).
    public static func pack(
        source: SafetensorsFile, to containerPath: String, fileName: String, options: PackOptions = PackOptions(),
        progress: ProgressHandler? = nil
    ) throws(CheckpointError) -> PackedFile {
        try options.validate()
        return try pack(
            source: source, to: containerPath, fileName: fileName, options: options, progress: progress, digest: nil)
    }

    private static func pack(
        source: SafetensorsFile, to containerPath: String, fileName: String, options: PackOptions,
        progress: ProgressHandler?, digest: SourceDigest?
    ) throws(CheckpointError) -> PackedFile {
        let header = source.header
        progress?(.started(file: fileName, bytes: source.mapping.count))
        // The whole file's SHA-256 runs beside the encoding (one core) instead of before it.
        let digest = digest ?? SourceDigest(source.mapping)
        defer { digest.waitQuietly() }
        progress?(.advanced(bytes: header.dataStart))

        let pool = WorkerPool(workers: options.workers)
        let gpuEncoder = options.gpuEncoder
        // Every tensor's chunks, in file order.
        var pieces: [Range<Int>] = []
        var piecesOf = [Range<Int>](repeating: 0..<0, count: header.tensors.count)
        for (index, tensor) in header.tensors.enumerated() {
            let first = pieces.count
            let start = header.dataStart + tensor.dataOffsets.lowerBound
            for offset in stride(from: 0, to: tensor.byteCount, by: options.chunkSize) {
                let size = min(options.chunkSize, tensor.byteCount - offset)
                pieces.append((start + offset)..<(start + offset + size))
            }
            piecesOf[index] = first..<pieces.count
        }
        // Tensors whose bytes equal an earlier tensor's share its chunks. Equal tensors have equal chunk CRC-32s,
        // which the chunk records need anyway: computed once here, they are not computed again when encoding.
        var duplicateOf = [Int?](repeating: nil, count: header.tensors.count)
        var pieceCRCs: [UInt32] = []
        if options.deduplicate {
            pieceCRCs = [UInt32](repeating: 0, count: pieces.count)
            pieceCRCs.withUnsafeMutableBufferPointer { crcs in
                let crcs = UncheckedSendable(crcs)
                pool.run(jobs: pieces.count) { (index: Int, _: CodecScratch) -> Void in
                    crcs.value[index] = CRC32.checksum(
                        UnsafeRawBufferPointer(rebasing: source.mapping.bytes[pieces[index]]))
                }
            }
            var seen: [[Int]: [Int]] = [:]
            for (index, tensor) in header.tensors.enumerated() where tensor.byteCount > 0 {
                let bytes = source.bytes(of: tensor)
                let key = [tensor.byteCount] + piecesOf[index].map { Int(pieceCRCs[$0]) }
                if let earlier = seen[key, default: []].first(where: {
                    source.bytes(of: header.tensors[$0]).sameBytes(as: bytes)
                }) {
                    duplicateOf[index] = earlier
                    progress?(.advanced(bytes: tensor.byteCount))
                } else {
                    seen[key, default: []].append(index)
                }
            }
        }

        var jobs: [Job] = []
        var chunkRanges = [Range<Int>](repeating: 0..<0, count: header.tensors.count)
        var codecs = [ChunkCodec](repeating: .raw, count: header.tensors.count)
        for (index, tensor) in header.tensors.enumerated() {
            codecs[index] = options.codec.codec(for: tensor, gpu: gpuEncoder != nil)
            if let original = duplicateOf[index] {
                chunkRanges[index] = chunkRanges[original]
                continue
            }
            let first = jobs.count
            for piece in piecesOf[index] {
                jobs.append(
                    Job(
                        tensor: index, source: pieces[piece], codec: codecs[index], dtype: tensor.dtype,
                        rawCRC: pieceCRCs.isEmpty ? nil : pieceCRCs[piece]))
            }
            chunkRanges[index] = first..<jobs.count
        }

        let writer: ContainerFileWriter
        do {
            writer = try ContainerFileWriter(path: containerPath)
        }
        var completed = false
        defer { if !completed { writer.abandon() } }

        // A chunk's slot holds its encoding or, where that is not smaller, its raw bytes; the CPU codecs give up
        // on encodings larger than the raw size, the GPU's need their bound.
        var slotSizes = jobs.map(\.source.count)
        if let gpuEncoder {
            for (number, job) in jobs.enumerated() where !job.codec.runsOnCPU {
                slotSizes[number] = max(
                    slotSizes[number], try gpuEncoder.maxEncodedSize(job.codec, rawSize: job.source.count))
            }
        }
        // Within about 256 MiB of output buffers (512 MiB for the GPU, whose batches pay a fixed cost each).
        let layout = OutputWindows(
            slotSizes: slotSizes,
            targetBytes: OutputWindows.targetBytes(
                workers: pool.workers, chunkSize: options.chunkSize, totalBytes: slotSizes.reduce(0, +),
                memoryLimit: gpuEncoder == nil ? 256 << 20 : 512 << 20, spreadFile: gpuEncoder == nil))

        // Two output buffers: one window is written while the next is encoded.
        let outputs = (0..<2).map { _ in UncheckedSendable(WorkingMemory.allocate(layout.bufferBytes)) }
        let writing = DispatchGroup()
        let writeFailure = FailureBox()
        defer {
            writing.wait()
            for buffer in outputs { WorkingMemory.deallocate(buffer.value) }
        }
        let records = UncheckedSendable(RecordList())
        records.value.items.reserveCapacity(jobs.count)
        for (windowNumber, window) in layout.windows.enumerated() {
            let buffer = outputs[windowNumber % 2]
            func output(_ slot: Int) -> UnsafeMutableRawBufferPointer {
                let start = layout.slotOffsets[window.lowerBound + slot]
                return UnsafeMutableRawBufferPointer(
                    rebasing: buffer.value[start..<(start + slotSizes[window.lowerBound + slot])])
            }
            var encoded = [(size: Int, codec: ChunkCodec, rawCRC: UInt32, storedCRC: UInt32?)](
                repeating: (0, .raw, 0, nil), count: window.count)
            // The GPU's chunks in one batch; it computes their checksums too.
            let gpuSlots = (0..<window.count).filter { !jobs[window.lowerBound + $0].codec.runsOnCPU }
            if let gpuEncoder, !gpuSlots.isEmpty {
                let batch = gpuSlots.map { slot in
                    let job = jobs[window.lowerBound + slot]
                    return BatchChunk(
                        codec: job.codec, dtype: job.dtype,
                        input: UnsafeRawBufferPointer(rebasing: source.mapping.bytes[job.source]), output: output(slot))
                }
                let results = try gpuEncoder.encode(batch)
                for (slot, (chunk, result)) in zip(gpuSlots, zip(batch, results)) {
                    if result.size < chunk.input.count {
                        encoded[slot] = (result.size, chunk.codec, result.rawCRC, result.storedCRC)
                    } else {
                        chunk.output.copyMemory(from: chunk.input)
                        encoded[slot] = (chunk.input.count, .raw, result.rawCRC, result.rawCRC)
                    }
                }
            }
            encoded.withUnsafeMutableBufferPointer { results in
                let results = UncheckedSendable(results)
                let cpuSlots = (0..<window.count).filter { jobs[window.lowerBound + $0].codec.runsOnCPU }
                pool.run(jobs: cpuSlots.count) { (job: Int, scratch: CodecScratch) -> Void in
                    let slot = cpuSlots[job]
                    let job = jobs[window.lowerBound + slot]
                    let input = UnsafeRawBufferPointer(rebasing: source.mapping.bytes[job.source])
                    let output = output(slot)
                    let rawCRC = job.rawCRC ?? CRC32.checksum(input)
                    var codec = job.codec
                    var size = input.count
                    if codec != .raw,
                        let written = ChunkCoder.encode(codec, input, dtype: job.dtype, into: output, scratch: scratch),
                        written < input.count
                    {
                        size = written
                    } else {
                        codec = .raw
                        output.copyMemory(from: input)
                    }
                    results.value[slot] = (size, codec, rawCRC, nil)
                }
            }
            // Write this window while the next one is encoded.
            writing.wait()
            if let error = writeFailure.error { throw error }
            let jobSizes = window.map { jobs[$0].source.count }
            let starts = window.map { layout.slotOffsets[$0] }
            let written = UncheckedSendable((writer: writer, encoded: encoded))
            DispatchQueue.global().async(group: writing) {
                let (writer, encoded) = written.value
                do throws(CheckpointError) {
                    let stored = zip(starts, encoded).map { start, result in
                        UnsafeRawBufferPointer(rebasing: buffer.value[start..<(start + result.size)])
                    }
                    let offsets = try writer.appendChunks(stored, alignment: ContainerLayout.defaultChunkAlignment)
                    for (slot, result) in encoded.enumerated() {
                        records.value.items.append(
                            ChunkRecord(
                                offset: offsets[slot], storedSize: result.size, rawSize: jobSizes[slot],
                                storedCRC: result.storedCRC ?? CRC32.checksum(stored[slot]), rawCRC: result.rawCRC,
                                codec: result.codec))
                        progress?(.advanced(bytes: jobSizes[slot]))
                    }
                } catch {
                    writeFailure.record(error)
                }
            }
        }
        writing.wait()
        if let error = writeFailure.error { throw error }
        let sha256 = digest.value
        var codecVersions = Self.codecVersions
        for (codec, version) in gpuEncoder?.codecVersions ?? [:] { codecVersions[codec.name] = version }

        let tensors = header.tensors.enumerated().map { index, tensor in
            ContainerIndex.Tensor(
                name: tensor.name, dtype: tensor.dtype, shape: tensor.shape,
                dataOffsets: [tensor.dataOffsets.lowerBound, tensor.dataOffsets.upperBound],
                codec: codecs[index].name, firstChunk: chunkRanges[index].lowerBound,
                chunkCount: chunkRanges[index].count, duplicateOf: duplicateOf[index].map { header.tensors[$0].name })
        }
        let index = ContainerIndex(
            writer: .init(name: "torpor", version: torporVersion, codecs: codecVersions),
            checksum: "crc32-ieee", chunkSize: options.chunkSize, chunkAlignment: ContainerLayout.defaultChunkAlignment,
            source: .init(fileName: fileName, size: source.mapping.count, sha256: sha256),
            metadata: header.metadata, tensors: tensors)
        let size = try writer.finish(records: records.value.items, sourceHeader: source.headerBytes, index: index)
        completed = true
        let ratio = source.mapping.count > 0 ? Double(size) / Double(source.mapping.count) : 1
        progress?(
            .finished(
                file: fileName,
                summary:
                    "\(formatBytes(source.mapping.count)) → \(formatBytes(size)) (\(String(printf: "%.3f", ratio)))"))
        return PackedFile(
            sourceBytes: source.mapping.count, containerBytes: size, sha256: sha256, tensorCount: tensors.count,
            duplicateCount: duplicateOf.compactMap { $0 }.count)
    }
}

/// The SHA-256 of a mapped file, computed on its own thread from the moment it is created.
final class SourceDigest: @unchecked Sendable {
    private let done = DispatchGroup()
    private var digest = ""

    init(_ mapping: MappedFile) {
        DispatchQueue.global().async(group: done) { [self] in digest = FileDigest.sha256(mapping.bytes) }
    }

    /// The digest, once computed.
    var value: String {
        done.wait()
        return digest
    }

    /// Waits for the thread (a pack that failed must not leave it reading a file being removed).
    func waitQuietly() { done.wait() }
}

/// Chunk records appended by the writing thread, read after it finished.
private final class RecordList { var items: [ChunkRecord] = [] }

/// "45.4 MB", "1.2 GB": decimal units, as disk sizes and rates are usually quoted.
public func formatBytes(_ bytes: Int) -> String {
    let value = Double(bytes)
    if value >= 1e9 { return String(printf: "%.2f GB", value / 1e9) }
    if value >= 1e6 { return String(printf: "%.1f MB", value / 1e6) }
    if value >= 1e3 { return String(printf: "%.1f kB", value / 1e3) }
    return "\(bytes) B"
}
