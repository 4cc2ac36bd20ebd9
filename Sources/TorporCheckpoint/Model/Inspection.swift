import Glibc

/// What `torpor inspect` shows: every tensor of every container in a pack, with sizes before and after.
public struct PackInspection: Codable, Sendable {
    public struct Tensor: Codable, Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var codec: String
        /// How many of the tensor's chunks the codec stored raw because coding did not pay.
        public var rawChunks: Int
        public var chunks: Int
        public var bytes: Int
        public var storedBytes: Int
        public var duplicateOf: String?
    }

    public struct File: Codable, Sendable {
        public var path: String
        public var kind: PackManifest.Kind
        public var container: String?
        public var bytes: Int
        public var storedBytes: Int
        public var writer: String?
        public var chunkSize: Int?
        public var tensors: [Tensor]
    }

    public struct Totals: Codable, Sendable {
        public var files: Int
        public var tensors: Int
        public var bytes: Int
        public var storedBytes: Int
        /// Bytes of the safetensors files, and of their containers.
        public var safetensorsBytes: Int
        public var containerBytes: Int
        public var ratio: Double
    }

    public var pack: String
    public var files: [File]
    public var totals: Totals

    /// Reads the manifest and every container's index of the pack at `pack` (no chunk is decoded).
    /// A single container file (`torpor.save` writes them) is shown as a pack of that one file.
    public init(pack: String) throws(CheckpointError) {
        var status = stat()
        let manifest: PackManifest
        var base = pack
        if stat(pack, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG {
            let container = try Container(path: pack)
            let slash = pack.lastIndex(of: "/")
            base = slash.map { String(pack[..<$0]) } ?? "."
            let name = slash.map { String(pack[pack.index(after: $0)...]) } ?? pack
            manifest = PackManifest(
                writer: "\(container.index.writer.name) \(container.index.writer.version)", codec: "",
                chunkSize: container.index.chunkSize,
                files: [
                    .init(
                        path: container.index.source.fileName, size: container.index.source.size,
                        sha256: container.index.source.sha256, kind: .packed, container: name,
                        containerSize: container.fileSize)
                ])
        } else {
            manifest = try PackManifest.load(from: pack)
        }
        try self.init(pack: pack, manifest: manifest) { (relative) throws(CheckpointError) in
            try Container(path: base + "/" + relative)
        }
    }

    /// The inspection of the pack named `pack` with `manifest`, whose containers `open` opens by their path in
    /// the pack: for a pack in object storage, from their metadata alone (`Container(metadataOf:)`).
    public init(
        pack: String, manifest: PackManifest, open: (String) throws(CheckpointError) -> Container
    ) throws(CheckpointError) {
        self.pack = pack
        var files: [File] = []
        var totals = Totals(
            files: 0, tensors: 0, bytes: 0, storedBytes: 0, safetensorsBytes: 0, containerBytes: 0, ratio: 1)
        for entry in manifest.files {
            var file = File(
                path: entry.path, kind: entry.kind, container: entry.container, bytes: entry.size,
                storedBytes: entry.size, tensors: [])
            if entry.kind == .packed, let relative = entry.container {
                let container = try open(relative)
                file.storedBytes = container.fileSize
                file.writer = "\(container.index.writer.name) \(container.index.writer.version)"
                file.chunkSize = container.index.chunkSize
                file.tensors = container.index.tensors.map { tensor in
                    let records = container.chunks[tensor.firstChunk..<(tensor.firstChunk + tensor.chunkCount)]
                    return Tensor(
                        name: tensor.name, dtype: tensor.dtype, shape: tensor.shape, codec: tensor.codec,
                        rawChunks: tensor.codec == "raw" ? 0 : records.filter { $0.codec == .raw }.count,
                        chunks: tensor.chunkCount, bytes: tensor.byteCount,
                        storedBytes: tensor.duplicateOf == nil ? container.storedBytes(of: tensor) : 0,
                        duplicateOf: tensor.duplicateOf)
                }
                totals.safetensorsBytes += entry.size
                totals.containerBytes += container.fileSize
            }
            totals.files += 1
            totals.tensors += file.tensors.count
            totals.bytes += file.bytes
            totals.storedBytes += file.storedBytes
            files.append(file)
        }
        totals.ratio = totals.safetensorsBytes > 0 ? Double(totals.containerBytes) / Double(totals.safetensorsBytes) : 1
        self.files = files
        self.totals = totals
    }
}
