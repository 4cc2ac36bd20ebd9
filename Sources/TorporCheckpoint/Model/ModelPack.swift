import FoundationEssentials
import Glibc

/// The result of packing a model directory.
public struct PackReport: Sendable {
    public var manifest: PackManifest
    /// Bytes of every original file.
    public var sourceBytes: Int
    /// Bytes of the pack directory's files (containers and copies, without the manifest).
    public var packedBytes: Int
    /// Bytes of the safetensors files alone, and of their containers.
    public var safetensorsBytes: Int
    public var containerBytes: Int
    public var seconds: Double
}

/// Packs, restores, verifies and inspects model directories.
public enum ModelPack {
    /// The container path for a safetensors path: `x.safetensors` → `x.torpor`.
    static func containerPath(for relative: String) -> String {
        String(relative.dropLast(".safetensors".count)) + ".torpor"
    }

    /// Packs every safetensors file of `model` (a directory, or one `.safetensors` file) into `output`, and
    /// copies every other file verbatim, then writes the manifest. `output` appears only when complete.
    public static func pack(
        model: String, to output: String, options: PackOptions = PackOptions(), progress: ProgressHandler? = nil
    ) throws(CheckpointError) -> PackReport {
        try options.validate()
        let started = ContinuousClock.now
        guard let modelIsDirectory = isDirectory(model) else {
            throw CheckpointError(.invalidArgument, "\(model) does not exist")
        }
        let root: String
        let files: [String]
        if modelIsDirectory {
            root = model
            files = try regularFiles(under: model)
        } else {
            guard model.hasSuffix(".safetensors") else {
                throw CheckpointError(.invalidArgument, "\(model) is neither a model directory nor a .safetensors file")
            }
            let url = URL(fileURLWithPath: model)
            root = url.deletingLastPathComponent().path
            files = [url.lastPathComponent]
        }
        let safetensors = files.filter { $0.hasSuffix(".safetensors") }
        guard !safetensors.isEmpty else {
            throw CheckpointError(.invalidArgument, "\(model) holds no .safetensors file to pack")
        }
        let taken = Set(files)
        for file in safetensors where taken.contains(containerPath(for: file)) {
            throw CheckpointError(
                .invalidArgument,
                "\(model): \(containerPath(for: file)) exists beside \(file), so its container would overwrite it")
        }

        // Validate every shard and any shard index before writing anything. The validated mappings are the ones
        // hashed and packed: mapping a file again would fault in every page of it again.
        var shards: [String: SafetensorsFile] = [:]
        var shardTensors: [String: Set<String>] = [:]
        for file in safetensors {
            let parsed = try SafetensorsFile(path: root + "/" + file)
            shards[file] = parsed
            shardTensors[file] = Set(parsed.header.tensors.map(\.name))
        }
        for indexFile in files where indexFile.hasSuffix(".safetensors.index.json") {
            let directory = indexFile.contains("/") ? String(indexFile[..<indexFile.lastIndex(of: "/")!]) + "/" : ""
            var local: [String: Set<String>] = [:]
            for (shard, names) in shardTensors where shard.hasPrefix(directory) {
                local[String(shard.dropFirst(directory.count))] = names
            }
            try ShardIndex(path: root + "/" + indexFile).check(indexPath: root + "/" + indexFile, shards: local)
        }

        let stage = try StagedDirectory(destination: output, marker: PackManifest.fileName)
        defer { stage.discard() }
        progress?(.job(files: files.count, bytes: totalSize(of: files.map { root + "/" + $0 })))
        var entries: [PackManifest.File] = []
        var report = PackReport(
            manifest: PackManifest(
                writer: "torpor \(torporVersion)", codec: options.codec.description, chunkSize: options.chunkSize,
                files: []),
            sourceBytes: 0, packedBytes: 0, safetensorsBytes: 0, containerBytes: 0, seconds: 0)
        // Shards' SHA-256s run on their own cores, up to three shards ahead of the packing (hashing one core's
        // worth at a time would bound a GPU pack; hashing further ahead would evict what the packer reads next).
        var digests: [String: SourceDigest] = [:]
        defer { for digest in digests.values { digest.waitQuietly() } }
        for file in files {
            let source = root + "/" + file
            if let shard = shards[file], let next = safetensors.firstIndex(of: file) {
                for ahead in safetensors[next..<min(next + 3, safetensors.count)] where digests[ahead] == nil {
                    if let mapping = shards[ahead]?.mapping { digests[ahead] = SourceDigest(mapping) }
                }
                let digest = digests[file] ?? SourceDigest(shard.mapping)
                let container = containerPath(for: file)
                let packed = try ContainerPacker.pack(
                    source: shard, to: try stage.path(for: container), fileName: file, options: options,
                    progress: progress, digest: digest)
                // Done with it: its pages may go.
                shards[file] = nil
                digests[file] = nil
                entries.append(
                    PackManifest.File(
                        path: file, size: packed.sourceBytes, sha256: packed.sha256, kind: .packed,
                        container: container,
                        containerSize: packed.containerBytes))
                report.safetensorsBytes += packed.sourceBytes
                report.containerBytes += packed.containerBytes
                report.packedBytes += packed.containerBytes
            } else {
                let mapped = try MappedFile(path: source)
                progress?(.started(file: file, bytes: mapped.count))
                let sha256 = try writeNewFile(try stage.path(for: file), mapped.bytes)
                progress?(.advanced(bytes: mapped.count))
                progress?(.finished(file: file, summary: "copied \(formatBytes(mapped.count))"))
                entries.append(PackManifest.File(path: file, size: mapped.count, sha256: sha256, kind: .copied))
                report.packedBytes += mapped.count
            }
            report.sourceBytes += entries.last!.size
        }
        report.manifest.files = entries
        try writeManifest(report.manifest, to: try stage.path(for: PackManifest.fileName))
        try stage.commit()
        report.seconds = (ContinuousClock.now - started) / .seconds(1)
        return report
    }

    private static func totalSize(of paths: [String]) -> Int {
        paths.reduce(0) { sum, path in
            var info = stat()
            return sum + (stat(path, &info) == 0 ? Int(info.st_size) : 0)
        }
    }

    private static func writeManifest(_ manifest: PackManifest, to path: String) throws(CheckpointError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        do {
            data = try encoder.encode(manifest)
        } catch {
            throw CheckpointError(.invalidArgument, "cannot encode the manifest: \(error)")
        }
        try Array(data).withBytes { (bytes) throws(CheckpointError) in _ = try writeNewFile(path, bytes) }
    }

    /// The result of restoring or verifying a pack.
    public struct CheckReport: Sendable {
        public var files: Int
        public var bytes: Int
        public var chunks: Int
        public var seconds: Double
    }

    /// Restores every original file of the pack `pack` into `output`, byte for byte.
    ///
    /// Every chunk is checked before it is written and every file's SHA-256 is compared with the manifest before
    /// `output` appears; on any mismatch nothing is left at `output`.
    public static func unpack(
        pack: String, to output: String, workers: Int? = nil, progress: ProgressHandler? = nil
    ) throws(CheckpointError) -> CheckReport {
        let started = ContinuousClock.now
        let manifest = try PackManifest.load(from: pack)
        let stage = try StagedDirectory(destination: output)
        defer { stage.discard() }
        progress?(.job(files: manifest.files.count, bytes: manifest.files.reduce(0) { $0 + $1.size }))
        var report = CheckReport(files: 0, bytes: 0, chunks: 0, seconds: 0)
        for entry in manifest.files {
            let target = try FileDescriptor.create(try stage.path(for: entry.path))
            defer { target.close() }
            try target.reserve(entry.size)
            let output = UncheckedSendable(target)
            let (digest, chunks) = try restore(entry, in: pack, workers: workers, progress: progress) {
                (bytes, offset) throws(CheckpointError) in
                try output.value.write(bytes, at: offset)
                output.value.startWriteback(offset: offset, count: bytes.count)
            }
            try target.sync()
            try check(entry, digest: digest, pack: pack)
            report.files += 1
            report.bytes += entry.size
            report.chunks += chunks
            progress?(.finished(file: entry.path, summary: "restored \(formatBytes(entry.size)), SHA-256 matches"))
        }
        try stage.commit()
        report.seconds = (ContinuousClock.now - started) / .seconds(1)
        return report
    }

    /// Checks every checksum of the pack: each chunk's CRC-32s, the padding, and every restored file's SHA-256;
    /// with `against`, also compares every restored byte with the original model directory.
    public static func verify(
        pack: String, against original: String? = nil, workers: Int? = nil, progress: ProgressHandler? = nil
    ) throws(CheckpointError) -> CheckReport {
        let started = ContinuousClock.now
        let manifest = try PackManifest.load(from: pack)
        // Against a directory: every file of the pack is compared with its namesake there. Against one file: that
        // file is compared with the pack's file of the same name, the others only with their checksums.
        var original = original
        var only: String?
        if let path = original {
            guard let pathIsDirectory = isDirectory(path) else {
                throw CheckpointError(.invalidArgument, "\(path) (given to --against) does not exist")
            }
            if !pathIsDirectory {
                let name = URL(fileURLWithPath: path).lastPathComponent
                guard let match = manifest.files.first(where: { $0.path == name || $0.path.hasSuffix("/" + name) })
                else {
                    let names = manifest.files.map(\.path)
                    throw CheckpointError(
                        .invalidArgument,
                        "\(path) (given to --against) is not one of the pack's files (\(names.prefix(8).joined(separator: ", "))"
                            + (names.count > 8 ? ", …" : "") + "): give the model directory the pack was made from, "
                            + "or one of those files")
                }
                only = match.path
                original = URL(fileURLWithPath: path).deletingLastPathComponent().path
            }
        }
        var report = CheckReport(files: 0, bytes: 0, chunks: 0, seconds: 0)
        progress?(.job(files: manifest.files.count, bytes: manifest.files.reduce(0) { $0 + $1.size }))
        for entry in manifest.files {
            var reference: MappedFile?
            if let original, only == nil || only == entry.path {
                let path = original + "/" + (only.map { URL(fileURLWithPath: $0).lastPathComponent } ?? entry.path)
                guard isDirectory(path) == false else {
                    throw CheckpointError(
                        .mismatch,
                        "\(original) has no file \(entry.path), which the pack holds: is it the model the pack was "
                            + "made from?")
                }
                reference = try MappedFile(path: path)
                guard reference!.count == entry.size else {
                    throw CheckpointError(
                        .mismatch,
                        "\(path) is \(reference!.count) bytes but the pack restores it to \(entry.size) bytes")
                }
            }
            let referenceFile = UncheckedSendable(reference)
            let (digest, chunks) = try restore(entry, in: pack, workers: workers, progress: progress) {
                [original] (bytes, offset) throws(CheckpointError) in
                guard let reference = referenceFile.value else { return }
                let expected = UnsafeRawBufferPointer(rebasing: reference.bytes[offset..<(offset + bytes.count)])
                if !expected.sameBytes(as: bytes) {
                    let first = (0..<bytes.count).first { expected[$0] != bytes[$0] } ?? 0
                    throw CheckpointError(
                        .mismatch,
                        "\(original!)/\(entry.path) differs from the pack's restored bytes at byte \(offset + first)")
                }
            }
            try check(entry, digest: digest, pack: pack)
            report.files += 1
            report.bytes += entry.size
            report.chunks += chunks
            progress?(.finished(file: entry.path, summary: "ok"))
        }
        report.seconds = (ContinuousClock.now - started) / .seconds(1)
        return report
    }

    private static func check(_ entry: PackManifest.File, digest: String, pack: String) throws(CheckpointError) {
        guard digest == entry.sha256 else {
            throw CheckpointError(
                .corruptData,
                "\(pack): \(entry.path) restores to bytes whose SHA-256 \(digest) differs from the manifest's \(entry.sha256)"
            )
        }
    }

    /// Hands every range of one manifest entry's original bytes to `each` (on any thread, in any order), checking
    /// everything on the way, while the SHA-256 of the whole file runs in file order on the calling thread.
    /// - Returns: the SHA-256 of the restored bytes and the number of chunks decoded.
    private static func restore(
        _ entry: PackManifest.File, in pack: String, workers: Int?, progress: ProgressHandler?,
        each: @Sendable (UnsafeRawBufferPointer, Int) throws(CheckpointError) -> Void
    ) throws(CheckpointError) -> (String, Int) {
        var digest = FileDigest()
        var streamed = 0
        progress?(.started(file: entry.path, bytes: entry.size))
        switch entry.kind {
        case .copied:
            let file = try MappedFile(path: pack + "/" + entry.path)
            guard file.count == entry.size else {
                throw CheckpointError(
                    .corruptData, "\(pack)/\(entry.path) is \(file.count) bytes, the manifest says \(entry.size)")
            }
            try each(file.bytes, 0)
            digest.update(file.bytes)
            progress?(.advanced(bytes: file.count))
            return (digest.finalize(), 0)
        case .packed:
            let path = pack + "/" + entry.container!
            let container = try Container(path: path)
            guard container.index.source.sha256 == entry.sha256, container.index.source.size == entry.size else {
                throw CheckpointError(
                    .corruptData,
                    "\(path) restores \(container.index.source.fileName), not the manifest's \(entry.path)")
            }
            try container.checkPadding()
            try container.restore(workers: workers, progress: progress, each: each) {
                (bytes, offset) throws(CheckpointError) in
                guard offset == streamed else {
                    throw CheckpointError(.invalidContainer, "\(path): restored bytes are not contiguous at \(offset)")
                }
                digest.update(bytes)
                streamed += bytes.count
            }
            guard streamed == entry.size else {
                throw CheckpointError(
                    .corruptData, "\(path) restores \(streamed) bytes, the manifest says \(entry.size)")
            }
            return (digest.finalize(), container.chunks.count)
        }
    }
}
