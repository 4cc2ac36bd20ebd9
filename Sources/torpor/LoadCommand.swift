import ArgumentParser
import Foundation
import TorporCheckpoint
import TorporGPU
import TorporStorage

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Load a pack into GPU memory with the pipelined loader, check every chunk, and print the rate.",
        discussion: """
            Every container of the pack goes into its own device buffer, laid out as its safetensors data section. \
            Each chunk's stored and decoded CRC-32, decoder status and size are checked on the GPU; a load that \
            fails any check reports the tensor and chunk and exits non-zero. The rate is decoded bytes delivered \
            into GPU memory per second.

            An s3://bucket/prefix pack is loaded straight from the store: each container's metadata is read with \
            two ranged GETs, then every batch of chunks is fetched with parallel ranged GETs into the loader's \
            pinned buffers while the batches before it are copied and decoded; nothing is written to disk. \
            --pull loads a local copy instead (pulled into the cache once, reused while the pack is unchanged).
            """)

    @Argument(
        help:
            "A pack directory made by `torpor pack`, one .torpor container, or s3://bucket/prefix (streamed from the store)."
    )
    var pack: String

    @OptionGroup var gpu: GPUOptions

    @Option(
        help: ArgumentHelp(
            "Where the stored bytes come from: file (parallel reads into pinned buffers) or host-cache (a pinned copy under --cache-dir, filled on first use)."
        ))
    var source: String = "file"

    @Flag(help: "For an s3:// pack: pull it into the local cache first and load the files, instead of streaming it.")
    var pull = false

    @Option(help: "For an s3:// pack: megabytes per ranged GET.")
    var rangeMegabytes: Int = 32

    @Option(help: "For an s3:// pack: ranged GETs in flight at once (the read-ahead window).")
    var parallelism: Int = 16

    @Flag(help: "Read the files with O_DIRECT (bypassing the page cache).")
    var direct = false

    @Flag(help: "Evict the files from the page cache before every load (posix_fadvise), for cold reads.")
    var dropCache = false

    @Option(help: "Load this many times, reporting each.")
    var `repeat`: Int = 1

    @Option(help: "The folder holding host caches.")
    var cacheDir: String = "/dev/shm"

    @Option(help: "Stored megabytes per batch.")
    var batchMegabytes: Int = 64

    @Option(help: "Threads reading each batch.")
    var readThreads: Int = 8

    @Option(help: "Streams decoding byte-plane batches in turn (1-4): up to this many decode at once.")
    var decodeStreams: Int = GPULoadOptions().decodeStreams

    @Flag(
        help: ArgumentHelp(
            "The argument is an uncompressed model (directory or .safetensors): load its data sections through the same pipeline without decoding, as a baseline."
        ))
    var uncompressed = false

    @Option(
        help: ArgumentHelp(
            "The original model (directory or .safetensors): after loading, copy GPU memory back and compare it byte for byte."
        ))
    var verifyAgainst: String?

    @Flag(help: "Print JSON.")
    var json = false

    struct Report: Codable {
        var device: String
        var source: String
        var direct: Bool
        var uncompressed: Bool
        var files: Int
        var bytes: Int
        var storedBytes: Int
        var chunks: Int
        var cacheFillSeconds: Double?
        var cacheRegisterSeconds: Double?
        var seconds: [Double]
        var gigabytesPerSecond: [Double]
        var verified: Bool?
    }

    func validate() throws {
        guard ["file", "host-cache"].contains(source) else {
            throw ValidationError("unknown --source \"\(source)\"; use file or host-cache")
        }
        guard `repeat` >= 1 else { throw ValidationError("--repeat must be at least 1") }
        guard batchMegabytes >= 1, batchMegabytes <= 1024 else {
            throw ValidationError("--batch-megabytes must be between 1 and 1024")
        }
        guard readThreads >= 1 else { throw ValidationError("--read-threads must be at least 1") }
        guard (1...4).contains(decodeStreams) else { throw ValidationError("--decode-streams must be 1 to 4") }
        if uncompressed && source == "host-cache" {
            throw ValidationError("--uncompressed reads files; it has no host cache")
        }
        guard rangeMegabytes >= 1, rangeMegabytes <= 1024 else {
            throw ValidationError("--range-megabytes must be between 1 and 1024")
        }
        guard parallelism >= 1 else { throw ValidationError("--parallelism must be at least 1") }
        if pack.hasPrefix("s3://") && !pull {
            for (given, flag) in [(uncompressed, "--uncompressed"), (direct, "--direct"), (dropCache, "--drop-cache")]
            where given {
                throw ValidationError("\(flag) reads local files; an s3:// pack streams from the store (or add --pull)")
            }
            guard source == "file" else {
                throw ValidationError("--source host-cache copies local files; with an s3:// pack, add --pull")
            }
        }
    }

    mutating func run() async throws {
        var remote: [RemotePack.RemoteContainer] = []
        if pack.hasPrefix("s3://") && !pull {
            let transfer = TransferOptions(rangeSize: rangeMegabytes << 20, parallelism: parallelism)
            remote = try await reportingErrors {
                let (location, client) = try StoreOptions().connect(pack)
                return try await RemotePack.openForLoading(location, client: client, options: transfer).containers
            }
        } else {
            pack = try await localPack(pack)
        }
        // On a thread of its own: the loader blocks while it waits for reads, which run on Swift concurrency.
        try await reportingErrors(prefix: "torpor load") {
            try await onOwnThread { [self, remote] in try load(remote: remote) }
        }
    }

    /// The files to load, with the original safetensors file each came from (relative path).
    private func files() throws -> [(path: String, original: String)] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: pack, isDirectory: &isDirectory) else {
            throw CheckpointError(.invalidArgument, "\(pack) does not exist")
        }
        if !isDirectory.boolValue {
            return [(pack, URL(fileURLWithPath: pack).lastPathComponent)]
        }
        if uncompressed {
            let names = try FileManager.default.subpathsOfDirectory(atPath: pack).filter {
                $0.hasSuffix(".safetensors")
            }.sorted()
            guard !names.isEmpty else { throw CheckpointError(.invalidArgument, "\(pack) holds no .safetensors file") }
            return names.map { (pack + "/" + $0, $0) }
        }
        let manifest = try PackManifest.load(from: pack)
        return manifest.files.compactMap { file in file.container.map { (pack + "/" + $0, file.path) } }
    }

    private func load(remote: [RemotePack.RemoteContainer]) throws {
        let firstStreams = ReadAhead.chain(remote.map(\.object))
        firstStreams.first?.start()
        let (nvcomp, device) = try gpu.target.open()
        var options = GPULoadOptions()
        options.batchBytes = batchMegabytes << 20
        options.readThreads = readThreads
        options.decodeStreams = decodeStreams
        options.nvrtcPath = gpu.nvrtc
        let loader = GPULoader(nvcomp: nvcomp, device: device, options: options)
        let files = remote.isEmpty ? try files() : remote.map { ($0.object.name, $0.original) }

        // Everything allocated and opened once; the timed loads only read, copy and decode.
        var containers: [Container?] = []
        var dataRanges: [Range<Int>] = []
        var arenas: [DeviceBuffer] = []
        var caches: [HostCache] = []
        for (number, file) in files.enumerated() {
            if number < remote.count {
                let container = remote[number].container
                containers.append(container)
                dataRanges.append(0..<0)
                arenas.append(try DeviceBuffer(device: device, count: GPULoader.arenaBytes(for: container)))
            } else if uncompressed {
                let safetensors = try SafetensorsFile(path: file.path)
                let range = safetensors.header.dataStart..<safetensors.mapping.count
                containers.append(nil)
                dataRanges.append(range)
                arenas.append(try DeviceBuffer(device: device, count: range.count))
            } else {
                let container = try Container(path: file.path)
                containers.append(container)
                dataRanges.append(0..<0)
                arenas.append(try DeviceBuffer(device: device, count: GPULoader.arenaBytes(for: container)))
                if source == "host-cache" {
                    caches.append(
                        try HostCache(
                            container: container,
                            path: HostCache.defaultPath(for: file.path, directory: cacheDir), device: device))
                }
            }
        }

        var seconds: [Double] = []
        var bytes = 0
        var stored = 0
        var chunks = 0
        for run in 1...`repeat` {
            if dropCache { for file in files { try LoadChecks.evictFromPageCache(file.path) } }
            var runSeconds = 0.0
            bytes = 0
            stored = 0
            chunks = 0
            // The containers of an s3:// pack are read in order with read-ahead running on from one to the next.
            // The first run's started before the GPU did.
            let streams = run == 1 ? firstStreams : ReadAhead.chain(remote.map(\.object))
            streams.first?.start()
            for (number, file) in files.enumerated() {
                let report: LoadReport
                if let container = containers[number] {
                    let from: LoadSource =
                        number < remote.count
                        ? .ranges(streams[number])
                        : caches.isEmpty ? .file(direct: direct) : .hostCache(caches[number])
                    report = try loader.load(container, from: from, into: .arena(arenas[number]))
                } else {
                    report = try loader.loadUncompressed(
                        path: file.path, range: dataRanges[number], into: arenas[number], direct: direct)
                }
                runSeconds += report.seconds
                bytes += report.bytes
                stored += report.storedBytes
                chunks += report.chunks
            }
            seconds.append(runSeconds)
            if !json {
                print(
                    "load \(run): \(formatBytes(bytes)) into GPU \(gpu.device) in "
                        + String(format: "%.3f s, %.2f GB/s", runSeconds, Double(bytes) / 1e9 / runSeconds)
                        + " (read \(formatBytes(stored)))")
            }
        }

        var verified: Bool?
        if let reference = verifyAgainst {
            for (number, file) in files.enumerated() {
                try compare(arenas[number], against: reference, original: file.original)
            }
            verified = true
            if !json { print("verified: GPU memory equals \(reference) byte for byte") }
        }
        if json {
            let report = Report(
                device: device.info.name,
                source: uncompressed ? "uncompressed-file" : remote.isEmpty ? source : "s3-ranges", direct: direct,
                uncompressed: uncompressed, files: files.count, bytes: bytes, storedBytes: stored, chunks: chunks,
                cacheFillSeconds: caches.isEmpty ? nil : caches.reduce(0) { $0 + $1.fillSeconds },
                cacheRegisterSeconds: caches.isEmpty ? nil : caches.reduce(0) { $0 + $1.registerSeconds },
                seconds: seconds, gigabytesPerSecond: seconds.map { Double(bytes) / 1e9 / $0 }, verified: verified)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        }
    }

    /// Compares `arena` with the original file's data section.
    private func compare(_ arena: DeviceBuffer, against reference: String, original: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: reference, isDirectory: &isDirectory) else {
            throw CheckpointError(.invalidArgument, "--verify-against \(reference) does not exist")
        }
        let path = isDirectory.boolValue ? reference + "/" + original : reference
        let safetensors = try SafetensorsFile(path: path)
        try LoadChecks.compare(
            arena,
            with: UnsafeRawBufferPointer(
                rebasing: safetensors.mapping.bytes[safetensors.header.dataStart..<safetensors.mapping.count]),
            source: "\(path)'s data section")
    }

    /// Runs `body` on a Dispatch thread, off Swift concurrency's pool.
    private func onOwnThread(_ body: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}
