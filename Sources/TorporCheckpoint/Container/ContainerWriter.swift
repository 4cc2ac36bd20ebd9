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

    struct Job {
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

        let records =
            if let gpuEncoder {
                try encodeInBatches(
                    jobs, source: source, gpuEncoder: gpuEncoder, pool: pool, chunkSize: options.chunkSize,
                    writer: writer, progress: progress)
            } else {
                try encodeInOrder(
                    jobs, source: source, workers: pool.workers, chunkSize: options.chunkSize, writer: writer,
                    progress: progress)
            }
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
        let size = try writer.finish(records: records, sourceHeader: source.headerBytes, index: index)
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

/// "45.4 MB", "1.2 GB": decimal units, as disk sizes and rates are usually quoted.
public func formatBytes(_ bytes: Int) -> String {
    let value = Double(bytes)
    if value >= 1e9 { return String(printf: "%.2f GB", value / 1e9) }
    if value >= 1e6 { return String(printf: "%.1f MB", value / 1e6) }
    if value >= 1e3 { return String(printf: "%.1f kB", value / 1e3) }
    return "\(bytes) B"
}
