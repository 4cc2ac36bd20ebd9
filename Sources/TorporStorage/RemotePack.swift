import Foundation
public import TorporCheckpoint

/// Packs in an S3-compatible store, under a prefix: every file of the pack directory as an object of the same
/// relative name, and last the index `torpor-objects.json` (every object's size and SHA-256). A prefix without
/// the index is not a pack: a push that stops part-way leaves none, so nothing that looks complete.
public enum RemotePack {
    public static let indexName = "torpor-objects.json"

    /// The index object: what a push wrote.
    public struct Index: Codable, Sendable, Equatable {
        public struct Object: Codable, Sendable, Equatable {
            public var path: String
            public var size: Int
            public var sha256: String
        }
        public var format = "torpor-remote-pack"
        public var version = 1
        public var objects: [Object]
    }

    public struct Report: Sendable {
        public var objects: Int
        public var bytes: Int
        /// Bytes actually moved (a resumed pull skips what it had).
        public var transferred: Int
        public var seconds: Double
    }

    /// Uploads the pack directory `directory` to `location`. An earlier pack there is replaced: its index goes
    /// first, so a reader never takes a mix of the two for a pack.
    public static func push(
        directory: String, to location: S3Location, client: S3Client, options: TransferOptions = TransferOptions(),
        progress: (@Sendable (Int) -> Void)? = nil
    ) async throws(StorageError) -> Report {
        let started = ContinuousClock.now
        let manifest: PackManifest
        do {
            manifest = try PackManifest.load(from: directory)
        } catch {
            throw StorageError(.invalidArgument, error.message)
        }
        let paths = [PackManifest.fileName] + manifest.files.map { $0.container ?? $0.path }
        try await client.checkBucket(location.bucket)
        try await client.delete(bucket: location.bucket, key: location.key(indexName))
        var objects: [Index.Object] = []
        for path in paths {
            let local = directory + "/" + path
            let digest = try sha256(ofFile: local)
            try await client.upload(
                file: local, bucket: location.bucket, key: location.key(path), options: options, progress: progress)
            objects.append(digest.object(path))
        }
        let index = Index(objects: objects)
        try await client.put(bucket: location.bucket, key: location.key(indexName), bytes: try encode(index))
        let bytes = objects.reduce(0) { $0 + $1.size }
        return Report(
            objects: objects.count, bytes: bytes, transferred: bytes,
            seconds: (ContinuousClock.now - started) / .seconds(1))
    }

    /// Downloads the pack at `location` into the new directory `directory`.
    ///
    /// The objects are fetched with parallel ranged GETs into `.NAME.pull-partial` beside `directory`, each
    /// checked against the index's SHA-256; only then is the partial directory renamed to `directory`. A pull
    /// that stops (an error, Ctrl-C, a crash) resumes from what that partial directory holds, as long as the pack
    /// in the store has not changed since.
    public static func pull(
        from location: S3Location, to directory: String, client: S3Client, options: TransferOptions = TransferOptions(),
        progress: (@Sendable (Int) -> Void)? = nil
    ) async throws(StorageError) -> Report {
        let started = ContinuousClock.now
        let destination = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let manager = FileManager.default
        if manager.fileExists(atPath: destination) {
            let contents = (try? manager.contentsOfDirectory(atPath: destination)) ?? ["?"]
            guard contents.isEmpty else {
                throw StorageError(
                    .invalidArgument,
                    "\(destination) already exists and is not an empty directory; choose another output or remove it")
            }
            try? manager.removeItem(atPath: destination)
        }
        let url = URL(fileURLWithPath: destination)
        let parent = url.deletingLastPathComponent().path
        guard manager.fileExists(atPath: parent) else {
            throw StorageError(.io, "cannot create \(destination): its parent directory \(parent) does not exist")
        }
        try await client.checkBucket(location.bucket)
        let (index, indexBytes) = try await fetchIndex(location, client: client)

        // The partial directory of an earlier pull of the same pack is resumed; of another pack, started over.
        let partial = parent + "/." + url.lastPathComponent + ".pull-partial"
        let state = partial + "/.torpor-pull"
        if let previous = manager.contents(atPath: state + "/" + indexName), Array(previous) != indexBytes {
            try? manager.removeItem(atPath: partial)
        }
        do {
            try manager.createDirectory(atPath: state, withIntermediateDirectories: true)
            try Data(indexBytes).write(to: URL(fileURLWithPath: state + "/" + indexName))
        } catch {
            throw StorageError(.io, "cannot create \(partial): \(error)")
        }

        // Several objects at once when there are many (a sharded model), the ranges of one at once when it is big.
        let objects = index.objects
        let concurrent = max(1, min(objects.count, options.parallelism))
        let perObject = TransferOptions(
            partSize: options.partSize, rangeSize: options.rangeSize,
            parallelism: max(1, options.parallelism / concurrent))
        let transferred = try await inParallel(count: objects.count, width: concurrent) { number throws(StorageError) in
            try await pullObject(
                objects[number], from: location, into: partial, state: state, client: client, options: perObject,
                progress: progress)
        }.reduce(0, +)

        try? manager.removeItem(atPath: state)
        do {
            try syncDirectory(partial)
            try manager.moveItem(atPath: partial, toPath: destination)
            try syncDirectory(parent)
        } catch {
            throw StorageError(.io, "cannot move \(partial) to \(destination): \(error)")
        }
        do {
            _ = try PackManifest.load(from: destination)
        } catch {
            throw StorageError(.incomplete, "\(location) was pulled, but it is not a valid pack: \(error.message)")
        }
        return Report(
            objects: index.objects.count, bytes: index.objects.reduce(0) { $0 + $1.size }, transferred: transferred,
            seconds: (ContinuousClock.now - started) / .seconds(1))
    }

    /// Pulls one object of a pack into `partial` (unless an earlier pull checked it already) and checks its
    /// SHA-256. Returns the bytes fetched now.
    static func pullObject(
        _ object: Index.Object, from location: S3Location, into partial: String, state: String, client: S3Client,
        options: TransferOptions, progress: (@Sendable (Int) -> Void)?
    ) async throws(StorageError) -> Int {
        let manager = FileManager.default
        let key = location.key(object.path)
        let local = partial + "/" + object.path
        let journal = state + "/" + object.path.replacing("/", with: "%") + ".ranges"
        let checked = state + "/" + object.path.replacing("/", with: "%") + ".checked"
        if manager.fileExists(atPath: checked) {
            progress?(object.size)
            return 0
        }
        let etag = try await openListed(object, in: location, client: client, options: options).etag
        do {
            try manager.createDirectory(
                atPath: URL(fileURLWithPath: local).deletingLastPathComponent().path,
                withIntermediateDirectories: true)
        } catch {
            throw StorageError(.io, "cannot create the directory of \(local): \(error)")
        }
        let fetched = try await client.download(
            bucket: location.bucket, key: key, size: object.size, etag: etag, to: local, journal: journal,
            options: options, progress: progress)
        let digest = try sha256(ofFile: local)
        guard digest.sha256 == object.sha256 else {
            let diagnosis = chunkDiagnosis(local: local)
            // Started over by the next pull: these bytes are not the pushed ones.
            try? manager.removeItem(atPath: local)
            try? manager.removeItem(atPath: journal)
            throw StorageError(
                .corrupt,
                "s3://\(location.bucket)/\(key) is corrupted: its SHA-256 is \(digest.sha256), but the pack's "
                    + "index says \(object.sha256)\(diagnosis)")
        }
        _ = manager.createFile(atPath: checked, contents: nil)
        return fetched
    }

    /// One container of a pack in the store, opened for loading by range.
    public struct RemoteContainer: Sendable {
        /// The original safetensors file's path in the model, and the container's in the pack.
        public var original: String
        public var path: String
        /// The container, opened from its metadata alone (`Container(metadataOf:)`).
        public var container: Container
        /// Where its chunks are: load with `LoadSource.ranges(object)`.
        public var object: RemoteObject
    }

    /// Opens every container of the pack at `location` for loading straight from the store, with no local copy:
    /// the index and manifest are read, then each container's preamble and metadata (two ranged GETs each, the
    /// containers several at once). Chunks are fetched later, by the loader, and checked there by their CRC-32s;
    /// each object's size must match the index, and reads only proceed while its ETag is unchanged.
    /// - Throws: `StorageError` as `pull`, and `.corrupt` for a container whose metadata fails its checks.
    public static func openForLoading(
        _ location: S3Location, client: S3Client, options: TransferOptions = TransferOptions()
    ) async throws(StorageError) -> (manifest: PackManifest, containers: [RemoteContainer]) {
        try options.check()
        try await client.checkBucket(location.bucket)
        let (index, _) = try await fetchIndex(location, client: client)
        guard
            let (manifestBytes, _) = try await client.get(
                bucket: location.bucket, key: location.key(PackManifest.fileName))
        else {
            throw StorageError(
                .incomplete, "\(location): the index lists \(PackManifest.fileName), but the store does not have it")
        }
        let manifest: PackManifest
        do {
            manifest = try PackManifest.decode(manifestBytes, name: "\(location)/\(PackManifest.fileName)")
        } catch {
            throw StorageError(.corrupt, error.message)
        }
        let listed = Dictionary(index.objects.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
        let packed = manifest.files.compactMap { file in file.container.map { (original: file.path, path: $0) } }
        let containers = try await inParallel(count: packed.count, width: options.parallelism) {
            number throws(StorageError) in
            let (original, path) = packed[number]
            guard let entry = listed[path] else {
                throw StorageError(
                    .incomplete, "\(location): the manifest names \(path), which the index \(indexName) does not list")
            }
            let object = try await openListed(entry, in: location, client: client, options: options)
            let container = try await blocking { () throws(CheckpointError) in try Container(metadataOf: object) }
            return RemoteContainer(original: original, path: path, container: container, object: object)
        }
        return (manifest, containers)
    }

    /// Opens the object the index lists as `object` (a HEAD), which must be there with the size the index gives.
    /// - Throws: `.incomplete` when the store lacks it, `.changed` when its size differs (pushed again meanwhile).
    static func openListed(
        _ object: Index.Object, in location: S3Location, client: S3Client, options: TransferOptions
    ) async throws(StorageError) -> RemoteObject {
        let key = location.key(object.path)
        guard let (size, etag) = try await client.head(bucket: location.bucket, key: key) else {
            throw StorageError(
                .incomplete,
                "\(location): the index lists \(object.path), but the store has no s3://\(location.bucket)/\(key)")
        }
        guard size == object.size else {
            throw StorageError(
                .changed,
                "\(location): s3://\(location.bucket)/\(key) holds \(size) bytes, but the index says \(object.size) "
                    + "(it is being pushed again?)")
        }
        return RemoteObject(
            client: client, bucket: location.bucket, key: key, size: size, etag: etag, options: options)
    }

    /// The index of the pack at `location`, and its bytes.
    public static func fetchIndex(_ location: S3Location, client: S3Client) async throws(StorageError)
        -> (Index, [UInt8])
    {
        guard let (bytes, _) = try await client.get(bucket: location.bucket, key: location.key(indexName)) else {
            throw StorageError(
                .incomplete,
                "\(location) is not a complete torpor pack: it has no \(indexName) (nothing was pushed there, or a "
                    + "push stopped part-way)")
        }
        let index: Index
        do {
            index = try JSONDecoder().decode(Index.self, from: Data(bytes))
        } catch {
            throw StorageError(.corrupt, "\(location)/\(indexName) is not a valid pack index (\(error))")
        }
        guard index.format == "torpor-remote-pack", index.version == 1 else {
            throw StorageError(
                .invalidArgument, "\(location)/\(indexName): format \(index.format) version \(index.version) is unknown"
            )
        }
        for object in index.objects where !isSafeRelativePath(object.path) || object.size < 0 {
            throw StorageError(.corrupt, "\(location)/\(indexName) names an unsafe path \"\(object.path)\"")
        }
        return (index, bytes)
    }

    /// The local copy of a pack named by `text`: `text` itself when it is a local path; for `s3://bucket/prefix`,
    /// a pull into `cacheDirectory` (`TORPOR_S3_CACHE`, else `~/.cache/torpor/s3`), reused while the pack's index in
    /// the store is unchanged.
    public static func localPath(
        for text: String, environment: [String: String],
        cacheDirectory: String? = nil, progress: (@Sendable (Int) -> Void)? = nil
    ) async throws(StorageError) -> String {
        guard let location = try S3Location(text) else { return text }
        let configuration = try S3Configuration.fromEnvironment(environment)
        return try await cachedPull(
            location, client: S3Client(configuration: configuration),
            cache: cacheDirectory ?? environment["TORPOR_S3_CACHE"]
                ?? (environment["HOME"] ?? "/root") + "/.cache/torpor/s3",
            progress: progress)
    }

    static func cachedPull(
        _ location: S3Location, client: S3Client, cache: String, progress: (@Sendable (Int) -> Void)?
    ) async throws(StorageError) -> String {
        let (_, indexBytes) = try await fetchIndex(location, client: client)
        let digest = indexBytes.withUnsafeBytes { FileDigest.sha256($0) }.prefix(16)
        let name = location.prefix.isEmpty ? "_" : location.prefix.replacing("/", with: "%")
        let directory = "\(cache)/\(location.bucket)/\(name)@\(digest)"
        if (try? PackManifest.load(from: directory)) != nil { return directory }
        do {
            try FileManager.default.createDirectory(
                atPath: "\(cache)/\(location.bucket)", withIntermediateDirectories: true)
        } catch {
            throw StorageError(.io, "cannot create the S3 cache \(cache): \(error)")
        }
        // One pull per pack at a time: another process pulling the same pack into this cache is waited for (the
        // kernel drops its lock if it dies), and its copy used.
        let lockPath = "\(cache)/\(location.bucket)/.\(name)@\(digest).lock"
        let lock = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0 else { throw StorageError(.io, "cannot open \(lockPath): \(errorText())") }
        defer { close(lock) }
        let locked = try await blocking { () throws(CheckpointError) -> Int32 in flock(lock, LOCK_EX) == 0 ? 0 : errno }
        guard locked == 0 else { throw StorageError(.io, "cannot lock \(lockPath): \(errorText(locked))") }
        if (try? PackManifest.load(from: directory)) != nil { return directory }
        _ = try await pull(from: location, to: directory, client: client, progress: progress)
        return directory
    }

    /// For a container whose SHA-256 failed: the first chunk whose checksum fails, if one does.
    static func chunkDiagnosis(local: String) -> String {
        guard local.hasSuffix(".torpor") else { return "" }
        do {
            try Container(path: local).restore { _, _ throws(CheckpointError) in }
            return ""
        } catch {
            return error.code == .unsupported ? "" : " (\(error.message))"
        }
    }

    static func encode(_ index: Index) throws(StorageError) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            return Array(try encoder.encode(index))
        } catch {
            throw StorageError(.invalidArgument, "cannot encode the pack index: \(error)")
        }
    }

    struct Digest {
        var size: Int
        var sha256: String
        func object(_ path: String) -> Index.Object { Index.Object(path: path, size: size, sha256: sha256) }
    }

    static func sha256(ofFile path: String) throws(StorageError) -> Digest {
        let file = try LocalFile(reading: path)
        defer { file.close() }
        var digest = FileDigest()
        var offset = 0
        while offset < file.size {
            let bytes = try file.read(offset..<min(file.size, offset + (8 << 20)))
            bytes.withUnsafeBytes { digest.update($0) }
            offset += bytes.count
        }
        return Digest(size: file.size, sha256: digest.finalize())
    }

    /// Runs `body`, which blocks its thread (a `ByteRangeSource` read), on a Dispatch thread rather than on Swift
    /// concurrency's pool, and maps its `CheckpointError` to a `StorageError`.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () throws(CheckpointError) -> T)
        async throws(StorageError) -> T
    {
        let result: Result<T, CheckpointError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                do throws(CheckpointError) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        switch result {
        case .success(let value): return value
        case .failure(let error):
            throw StorageError(
                error.code == .corruptData || error.code == .invalidContainer ? .corrupt : .io, error.message)
        }
    }

    static func syncDirectory(_ path: String) throws {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw StorageError(.io, "cannot open \(path): \(errorText())") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw StorageError(.io, "cannot fsync \(path): \(errorText())") }
    }
}
