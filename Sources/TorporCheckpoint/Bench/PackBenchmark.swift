import FoundationEssentials
import Glibc

/// `torpor bench pack`: size and speed of every codec on one model, with the byte-plane entropy floor of its
/// float weights measured from the same bytes.
public struct PackBenchmark: Codable, Sendable {
    /// One codec's results.
    public struct Row: Codable, Sendable {
        public var codec: String
        /// Container bytes / safetensors bytes, containers' own tables included.
        public var ratio: Double
        /// Stored bytes of the float tensors / their original bytes, per dtype.
        public var floatRatio: [String: Double]
        public var packMBps: Double
        public var unpackMBps: Double
        public var verifyMBps: Double
    }

    /// The order-0 entropy floor of one float dtype's byte planes.
    public struct Floor: Codable, Sendable {
        public var dtype: String
        public var bytes: Int
        /// Σ over byte planes of the plane's order-0 entropy / (8 × element width).
        public var floor: Double
        /// Entropy of each plane in bits per byte, lowest byte first.
        public var planeBits: [Double]
    }

    public var model: String
    public var machine: String
    public var cores: Int
    public var date: String
    public var safetensorsBytes: Int
    public var repeats: Int
    /// "command": pack, unpack and verify timed as `torpor` commands, process start to exit; "in-process": the
    /// library calls alone.
    public var timing: String
    /// SHA-256 alone over the model's bytes on one core (swift-crypto's BoringSSL), in this run: no unpack or
    /// verify, which checks every file's SHA-256, can be faster.
    public var sha256MBps: Double
    public var floors: [Floor]
    public var rows: [Row]
    /// The peer's results, or why there are none (`peerNote`).
    public var peer: Peer?
    public var peerNote: String?

    /// Runs the benchmark.
    /// - Parameters:
    ///   - model: a model directory or a `.safetensors` file.
    ///   - codecs: the codec choices to measure.
    ///   - workDirectory: scratch space for packs and restores; emptied afterwards.
    ///   - repeats: runs per measurement; the median is reported.
    ///   - command: the `torpor` executable, to time pack, unpack and verify as commands (process start to exit);
    ///     nil times the library calls in this process.
    public static func run(
        model: String, codecs: [CodecChoice], workDirectory: String, repeats: Int, command: String? = nil
    ) throws(CheckpointError) -> PackBenchmark {
        guard repeats >= 1 else { throw CheckpointError(.invalidArgument, "--repeat must be at least 1") }
        var result = PackBenchmark(
            model: model, machine: machineDescription(), cores: System.activeProcessorCount,
            date: Date.now.formatted(.iso8601), safetensorsBytes: 0, repeats: repeats,
            timing: command == nil ? "in-process" : "command", sha256MBps: 0, floors: [], rows: [])
        result.floors = try floors(of: model)
        result.sha256MBps = try sha256Rate(of: model, repeats: repeats)
        let log = workDirectory + "/command.log"
        // Round-robin: each round runs every codec once, so that a slow stretch of the machine falls on every codec
        // alike (on a VM, memory that another process has just freed, a ZipNN run's, comes back slowly for
        // seconds). The first round is not timed.
        var times = [(pack: [Double], unpack: [Double], verify: [Double])](
            repeating: ([], [], []), count: codecs.count)
        for round in 0...repeats {
            for (number, choice) in codecs.enumerated() {
                let restoreDirectory = workDirectory + "/restore-\(choice)"
                let run = try timeRun(
                    choice, model: model, pack: workDirectory + "/pack-\(choice)", restore: restoreDirectory,
                    command: command, log: log)
                try? FileManager.default.removeItem(atPath: restoreDirectory)
                guard round > 0 else { continue }
                times[number].pack.append(run.pack)
                times[number].unpack.append(run.unpack)
                times[number].verify.append(run.verify)
            }
        }
        for (number, choice) in codecs.enumerated() {
            let packDirectory = workDirectory + "/pack-\(choice)"
            let manifest = try PackManifest.load(from: packDirectory)
            let packed = manifest.files.filter { $0.kind == .packed }
            let safetensorsBytes = packed.reduce(0) { $0 + $1.size }
            let containerBytes = packed.reduce(0) { $0 + ($1.containerSize ?? 0) }
            result.safetensorsBytes = safetensorsBytes
            let floatRatio = try floatRatios(pack: packDirectory)
            let megabytes = Double(manifest.files.reduce(0) { $0 + $1.size }) / 1e6
            result.rows.append(
                Row(
                    codec: choice.description,
                    ratio: Double(containerBytes) / Double(max(safetensorsBytes, 1)),
                    floatRatio: floatRatio,
                    packMBps: megabytes / median(times[number].pack),
                    unpackMBps: megabytes / median(times[number].unpack),
                    verifyMBps: megabytes / median(times[number].verify)))
            try? FileManager.default.removeItem(atPath: packDirectory)
        }
        return result
    }

    /// Packs `model` with `choice` into `pack`, unpacks it into `restore` and verifies it, as commands of
    /// `command` or (nil) as library calls; the seconds each took. Each step starts with nothing left to write
    /// back: pack and unpack fsync, and would otherwise also wait for the disk to take the previous run's files.
    private static func timeRun(
        _ choice: CodecChoice, model: String, pack: String, restore: String, command: String?, log: String
    ) throws(CheckpointError) -> (pack: Double, unpack: Double, verify: Double) {
        try? FileManager.default.removeItem(atPath: pack)
        try? FileManager.default.removeItem(atPath: restore)
        if let command {
            sync()
            let packing = try CommandTiming.seconds(
                command, ["pack", model, pack, "--codec", choice.description, "--quiet"], logPath: log)
            sync()
            let unpacking = try CommandTiming.seconds(command, ["unpack", pack, restore, "--quiet"], logPath: log)
            sync()
            let verifying = try CommandTiming.seconds(command, ["verify", pack, "--quiet"], logPath: log)
            return (packing, unpacking, verifying)
        }
        sync()
        let packing = try ModelPack.pack(model: model, to: pack, options: PackOptions(codec: choice)).seconds
        sync()
        let unpacking = try ModelPack.unpack(pack: pack, to: restore).seconds
        sync()
        return (packing, unpacking, try ModelPack.verify(pack: pack).seconds)
    }

    /// MB/s of SHA-256 over every safetensors file of `model`, on one core, median of `repeats`.
    private static func sha256Rate(of model: String, repeats: Int) throws(CheckpointError) -> Double {
        let files = try safetensorsPaths(of: model).map { (path) throws(CheckpointError) in try MappedFile(path: path) }
        let bytes = files.reduce(0) { $0 + $1.count }
        for file in files { _ = FileDigest.sha256(file.bytes) }  // pages in, once
        var times: [Double] = []
        for _ in 0..<repeats {
            let started = ContinuousClock.now
            for file in files { _ = FileDigest.sha256(file.bytes) }
            times.append((ContinuousClock.now - started) / .seconds(1))
        }
        return Double(bytes) / 1e6 / median(times)
    }

    /// The safetensors files the benchmark measures: `model` itself, or every one under the directory `model`.
    public static func safetensorsPaths(of model: String) throws(CheckpointError) -> [String] {
        isDirectory(model) == true
            ? try regularFiles(under: model).filter { $0.hasSuffix(".safetensors") }.map { model + "/" + $0 } : [model]
    }

    /// The benchmark as a text table.
    public func table() -> String {
        var lines: [String] = []
        lines.append("model: \(model) (\(formatBytes(safetensorsBytes)) of safetensors)")
        lines.append("machine: \(machine), \(cores) cores; median of \(repeats) run(s) after an untimed one; \(date)")
        lines.append(
            timing == "command"
                ? "pack, unpack and verify: `torpor` commands timed from process start to exit (unpack fsyncs)"
                : "pack, unpack and verify: the library calls, timed in this process")
        for floor in floors {
            let bits = floor.planeBits.map { String(printf: "%.2f", $0) }.joined(separator: " / ")
            lines.append(
                "\(floor.dtype) byte-plane floor: \(String(printf: "%.4f", floor.floor)) (plane entropy, low→high byte: \(bits) bits)"
            )
        }
        let dtypes = floors.map(\.dtype)
        var header = pad("codec", 12) + pad("ratio", 8, right: true)
        for dtype in dtypes { header += pad("\(dtype) ratio", 12, right: true) + pad("vs floor", 10, right: true) }
        header +=
            pad("pack MB/s", 11, right: true) + pad("unpack MB/s", 13, right: true)
            + pad("verify MB/s", 13, right: true)
        lines.append(header)
        for row in rows {
            var line = pad(row.codec, 12) + pad(String(printf: "%.4f", row.ratio), 8, right: true)
            for floor in floors {
                let ratio = row.floatRatio[floor.dtype] ?? .nan
                line += pad(String(printf: "%.4f", ratio), 12, right: true)
                line += pad(String(printf: "%+.1f%%", (ratio / floor.floor - 1) * 100), 10, right: true)
            }
            line += pad(String(printf: "%.0f", row.packMBps), 11, right: true)
            line += pad(String(printf: "%.0f", row.unpackMBps), 13, right: true)
            line += pad(String(printf: "%.0f", row.verifyMBps), 13, right: true)
            lines.append(line)
        }
        if let peer {
            lines += peerLines(peer)
        } else if let peerNote {
            lines.append("zipnn: \(peerNote)")
        }
        lines.append(
            "SHA-256 alone, one core: \(String(printf: "%.0f", sha256MBps)) MB/s (every pack records each file's "
                + "SHA-256 and every unpack and verify checks it, so neither of these two can be faster)")
        return lines.joined(separator: "\n")
    }

    func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(1, width - text.count))
        return right ? fill + text : text + fill
    }

    private static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted[sorted.count / 2]
    }

    /// Per float dtype, the stored bytes of its (non-duplicate) tensors over their original bytes.
    private static func floatRatios(pack: String) throws(CheckpointError) -> [String: Double] {
        let inspection = try PackInspection(pack: pack)
        var original: [String: Int] = [:]
        var stored: [String: Int] = [:]
        for file in inspection.files {
            for tensor in file.tensors where tensor.dtype.isPlaneSplittableFloat && tensor.duplicateOf == nil {
                original[tensor.dtype.rawValue, default: 0] += tensor.bytes
                stored[tensor.dtype.rawValue, default: 0] += tensor.storedBytes
            }
        }
        return original.reduce(into: [:]) { $0[$1.key] = Double(stored[$1.key, default: 0]) / Double(max($1.value, 1)) }
    }

    /// The byte-plane floor of every float dtype in the model.
    private static func floors(of model: String) throws(CheckpointError) -> [Floor] {
        let paths = try safetensorsPaths(of: model)
        var histograms: [DType: [[Int]]] = [:]
        var sizes: [DType: Int] = [:]
        let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: 256)
        defer { counts.deallocate() }
        for path in paths {
            let file = try SafetensorsFile(path: path)
            for tensor in file.header.tensors where tensor.dtype.isPlaneSplittableFloat {
                let width = tensor.dtype.bitWidth / 8
                let bytes = file.bytes(of: tensor)
                let planes = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
                defer { planes.deallocate() }
                BytePlaneCodec.split(bytes, width: width, transform: .plain, into: planes)
                let count = bytes.count / width
                var planeHistograms =
                    histograms[tensor.dtype] ?? Array(repeating: Array(repeating: 0, count: 256), count: width)
                for plane in 0..<width {
                    BytePlaneCodec.histogram(
                        UnsafeRawBufferPointer(rebasing: planes[(plane * count)..<((plane + 1) * count)]), into: counts)
                    for symbol in 0..<256 { planeHistograms[plane][symbol] += counts[symbol] }
                }
                histograms[tensor.dtype] = planeHistograms
                sizes[tensor.dtype, default: 0] += bytes.count
            }
        }
        return histograms.sorted { $0.key.rawValue < $1.key.rawValue }.map { dtype, planeHistograms in
            let bits = planeHistograms.map { BytePlaneCodec.entropyBits($0) }
            return Floor(
                dtype: dtype.rawValue, bytes: sizes[dtype, default: 0],
                floor: bits.reduce(0, +) / Double(8 * bits.count),
                planeBits: bits)
        }
    }

    /// The CPU model from /proc/cpuinfo and the kernel.
    static func machineDescription() -> String {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { line in
                let value = line.split(separator: ":", maxSplits: 1).last ?? ""
                return String(value.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
            } ?? "unknown CPU"
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return "\(model), Linux \(release)"
    }
}
