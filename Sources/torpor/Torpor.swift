import ArgumentParser
import Foundation
import TorporCheckpoint
import TorporGPU
import TorporStorage

@main
struct Torpor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "torpor",
        abstract: "One GPU, many LLMs: a sleep-aware OpenAI gateway, compressed checkpoints, a simulated vLLM engine.",
        version: torporVersion,
        subcommands: [
            Serve.self, Demo.self, Admin.self, Pack.self, Unpack.self, Inspect.self, Verify.self, Load.self, Push.self,
            Pull.self,
            Bench.self, GPU.self, SimEngine.self,
        ]
    )
}

/// `error` as the command ends with it: a Torpor error (checkpoint, GPU, object storage) is printed as
/// `PREFIX: message` and becomes exit status 1; any other error goes on as it is.
func commandFailure(_ error: any Error, prefix: String) -> any Error {
    guard let error = error as? any ExplainedError else { return error }
    FileHandle.standardError.write(Data("\(prefix): \(error.message)\n".utf8))
    return ExitCode.failure
}

/// Runs `body`, ending the command with the message of a Torpor error it throws (`commandFailure`).
func reportingErrors<T>(prefix: String = "error", _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch {
        throw commandFailure(error, prefix: prefix)
    }
}

/// Runs `body`, ending the command with the message of a Torpor error it throws (`commandFailure`).
func reportingErrors<T>(prefix: String = "error", _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch {
        throw commandFailure(error, prefix: prefix)
    }
}

/// "1 file", "2 files".
func plural(_ count: Int, _ noun: String) -> String {
    "\(count) \(noun)\(count == 1 ? "" : "s")"
}

/// Options of every command that does work on every core and reports progress.
struct WorkOptions: ParsableArguments {
    @Option(help: "Worker threads (default: every core).")
    var threads: Int?

    @Flag(name: [.short, .long], help: "Print nothing but errors.")
    var quiet = false

    /// The elapsed seconds and rate of `bytes` as "1.23 s, 456 MB/s".
    static func rate(bytes: Int, seconds: Double) -> String {
        String(format: "%.2f s, %.0f MB/s", seconds, Double(bytes) / 1e6 / max(seconds, 1e-9))
    }
}

struct Pack: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack",
        abstract: "Pack a model directory's safetensors files into .torpor containers and copy every other file.")

    @Argument(help: "A model directory (or one .safetensors file).")
    var model: String

    @Argument(help: "The pack directory to create; it must not exist or be empty.")
    var output: String

    @Option(help: "Codec: \(CodecChoice.names.joined(separator: ", ")). auto picks per tensor.")
    var codec: String = "auto"

    @Option(help: "Uncompressed bytes per chunk (multiple of 16, 4 KiB to 16 MiB).")
    var chunkSize: Int = 1 << 20

    @OptionGroup var work: WorkOptions

    @Flag(
        help:
            "Encode on the GPU with nvCOMP (16-bit floats: ANS FLOAT16; F32: ANS FLOAT32). Such packs load only on a GPU."
    )
    var gpu = false

    @OptionGroup(title: "With --gpu") var target: NVCOMPOptions

    @OptionGroup var ans: ANSTuningOptions

    func validate() throws {
        guard CodecChoice(name: codec) != nil else {
            throw ValidationError(
                "unknown codec \"\(codec)\"; use one of: \(CodecChoice.names.joined(separator: ", "))")
        }
        if !gpu, (ans.subChunks, ans.statesPerLane) != (ANSTuning.default.subChunks, ANSTuning.default.statesPerLane) {
            throw ValidationError("--ans-sub-chunks and --ans-states tune the GPU's ANS encoder: add --gpu")
        }
    }

    func run() throws {
        guard let choice = CodecChoice(name: codec) else { throw ValidationError("unknown codec \"\(codec)\"") }
        var options = PackOptions(codec: choice, chunkSize: chunkSize, workers: work.threads)
        if gpu {
            do {
                let (nvcomp, device) = try target.open()
                options.gpuEncoder = try GPUBatchEncoder(
                    nvcomp: nvcomp, device: device, maxChunkBytes: chunkSize, ansTuning: try ans.tuning())
            } catch {
                FileHandle.standardError.write(Data("error: pack --gpu: \(error.message)\n".utf8))
                throw ExitCode.failure
            }
        }
        let renderer = ProgressRenderer(quiet: work.quiet)
        let report = try reportingErrors {
            try ModelPack.pack(model: model, to: output, options: options, progress: renderer.handler)
        }
        if !work.quiet {
            let ratio = Double(report.containerBytes) / Double(max(report.safetensorsBytes, 1))
            print(
                "packed \(plural(report.manifest.files.count, "file")) into \(output): safetensors \(formatBytes(report.safetensorsBytes))"
                    + " → \(formatBytes(report.containerBytes)) (\(String(format: "%.4f", ratio))) in "
                    + WorkOptions.rate(bytes: report.sourceBytes, seconds: report.seconds))
        }
    }
}

struct Unpack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unpack",
        abstract: "Restore every original file of a pack, byte for byte, into a new directory.")

    @OptionGroup var source: PackSource

    @Argument(help: "The directory to create; it must not exist or be empty.")
    var output: String

    @OptionGroup var work: WorkOptions

    func run() async throws {
        let pack = try await source.local()
        let renderer = ProgressRenderer(quiet: work.quiet)
        let report = try reportingErrors {
            try ModelPack.unpack(pack: pack, to: output, workers: work.threads, progress: renderer.handler)
        }
        if !work.quiet {
            print(
                "restored \(plural(report.files, "file")) (\(formatBytes(report.bytes))) into \(output) in "
                    + WorkOptions.rate(bytes: report.bytes, seconds: report.seconds))
        }
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every checksum of a pack; with --against, compare every restored byte with the original.")

    @OptionGroup var source: PackSource

    @Option(help: "The original model directory (or .safetensors file) to compare against, byte for byte.")
    var against: String?

    @OptionGroup var work: WorkOptions

    func run() async throws {
        let pack = try await source.local()
        let renderer = ProgressRenderer(quiet: work.quiet)
        let report = try reportingErrors {
            try ModelPack.verify(pack: pack, against: against, workers: work.threads, progress: renderer.handler)
        }
        if !work.quiet {
            var isFolder: ObjCBool = false
            let what =
                against.map { path in
                    FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && !isFolder.boolValue
                        ? "every checksum matches, and every byte of \(path)" : "every byte matches \(path)"
                } ?? "every checksum matches"
            print(
                "verified \(plural(report.files, "file")), \(plural(report.chunks, "chunk")), \(formatBytes(report.bytes)): \(what) ("
                    + WorkOptions.rate(bytes: report.bytes, seconds: report.seconds) + ")")
        }
    }
}

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show every tensor of a pack: dtype, shape, codec, size before and after, and totals.")

    @Argument(
        help:
            "A pack directory made by `torpor pack`, one .torpor file (as torpor.save writes them), or s3://bucket/prefix."
    )
    var pack: String

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        let inspection: PackInspection
        if pack.hasPrefix("s3://") {
            // Only each container's metadata is read: two ranged GETs, no download.
            let (manifest, containers) = try await reportingErrors {
                let (location, client) = try StoreOptions().connect(pack)
                return try await RemotePack.openForLoading(location, client: client)
            }
            let byPath = Dictionary(uniqueKeysWithValues: containers.map { ($0.path, $0.container) })
            inspection = try reportingErrors {
                try PackInspection(pack: pack, manifest: manifest) { (relative) throws(CheckpointError) in
                    guard let container = byPath[relative] else {
                        throw CheckpointError(
                            .invalidContainer, "\(pack): the manifest names \(relative), which was not opened")
                    }
                    return container
                }
            }
        } else {
            let pack = try await localPack(pack)
            inspection = try reportingErrors { try PackInspection(pack: pack) }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(inspection), as: UTF8.self))
            return
        }
        print(InspectionTable(inspection).render())
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks that print a table and write JSON.", subcommands: [BenchPack.self])
}

struct BenchPack: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack",
        abstract: "Size ratio and pack, unpack and verify throughput of each codec on a model, against its floor.")

    @Argument(help: "A model directory or a .safetensors file.")
    var model: String

    @Option(help: "Comma-separated codecs to measure.")
    var codecs: String = "auto,byteplane,zstd,raw"

    @Option(name: .customLong("repeat"), help: "Runs per measurement (the median is reported).")
    var repeats: Int = 3

    @Option(help: "Where to write the JSON results.")
    var json: String = "torpor-bench-pack.json"

    @Option(help: "Scratch directory for packs and restores.")
    var workDir: String?

    @Option(
        help: ArgumentHelp(
            "The Python whose zipnn package is measured beside torpor (default: $TORPOR_ZIPNN_PYTHON, else python3).",
            valueName: "python"))
    var zipnnPython: String?

    @Flag(help: "Time the library calls in this process instead of `torpor pack|unpack|verify` commands.")
    var inProcess = false

    /// The codecs `--codecs` names.
    private var choices: [CodecChoice] {
        get throws {
            try codecs.split(separator: ",").map { name in
                guard let choice = CodecChoice(name: String(name)) else {
                    throw ValidationError(
                        "unknown codec \"\(name)\"; use: \(CodecChoice.names.joined(separator: ", "))")
                }
                return choice
            }
        }
    }

    func validate() throws { _ = try choices }

    func run() throws {
        let choices = try choices
        let scratch =
            workDir
            ?? URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("torpor-bench-\(ProcessInfo.processInfo.processIdentifier)").path
        // Where the results and the scratch files go is checked before the benchmark, not after it.
        try reportingErrors {
            if let reason = whyNotWritable(json) {
                throw CheckpointError(.io, "cannot write the results to \(json): \(reason)")
            }
            do {
                try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            } catch {
                throw CheckpointError(
                    .io, "cannot create the work directory \(scratch): \(whyNotWritable(scratch) ?? "\(error)")")
            }
        }
        defer { if workDir == nil { try? FileManager.default.removeItem(atPath: scratch) } }
        let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var result = try reportingErrors {
            try PackBenchmark.run(
                model: model, codecs: choices, workDirectory: scratch, repeats: repeats,
                command: inProcess ? nil : executable)
        }
        let files = try reportingErrors { try PackBenchmark.safetensorsPaths(of: model) }
        switch ZipNNPeer.measure(
            files: files, workDirectory: scratch, repeats: repeats, threads: result.cores,
            python: ZipNNPeer.python(zipnnPython))
        {
        case .success(let peer): result.peer = peer
        case .failure(let unavailable): result.peerNote = unavailable.reason
        }
        print(result.table())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try reportingErrors {
            do {
                try encoder.encode(result).write(to: URL(fileURLWithPath: json), options: .atomic)
            } catch {
                throw CheckpointError(.io, "cannot write the results to \(json): \(whyNotWritable(json) ?? "\(error)")")
            }
        }
        print("wrote \(json)")
    }
}
