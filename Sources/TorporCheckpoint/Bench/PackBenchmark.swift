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
    public var floors: [Floor]
    public var rows: [Row]

    /// Runs the benchmark.
    /// - Parameters:
    ///   - model: a model directory or a `.safetensors` file.
    ///   - codecs: the codec choices to measure.
    ///   - workDirectory: scratch space for packs and restores; emptied afterwards.
    ///   - repeats: runs per measurement; the median is reported.
    public static func run(
        model: String, codecs: [CodecChoice], workDirectory: String, repeats: Int
    ) throws(CheckpointError) -> PackBenchmark {
        guard repeats >= 1 else { throw CheckpointError(.invalidArgument, "--repeat must be at least 1") }
        var result = PackBenchmark(
            model: model, machine: machineDescription(), cores: System.activeProcessorCount,
            date: Date.now.formatted(.iso8601), safetensorsBytes: 0, repeats: repeats, floors: [],
            rows: [])
        result.floors = try floors(of: model)
        for choice in codecs {
            var packTimes: [Double] = []
            var unpackTimes: [Double] = []
            var verifyTimes: [Double] = []
            var report: PackReport?
            for _ in 0..<repeats {
                let packDirectory = workDirectory + "/pack-\(choice)"
                let restoreDirectory = workDirectory + "/restore-\(choice)"
                try? FileManager.default.removeItem(atPath: packDirectory)
                try? FileManager.default.removeItem(atPath: restoreDirectory)
                let packed = try ModelPack.pack(model: model, to: packDirectory, options: PackOptions(codec: choice))
                packTimes.append(packed.seconds)
                report = packed
                unpackTimes.append(try ModelPack.unpack(pack: packDirectory, to: restoreDirectory).seconds)
                verifyTimes.append(try ModelPack.verify(pack: packDirectory).seconds)
                if choice != codecs.last || verifyTimes.count < repeats {
                    try? FileManager.default.removeItem(atPath: restoreDirectory)
                }
            }
            guard let report else { continue }
            result.safetensorsBytes = report.safetensorsBytes
            let floatRatio = try floatRatios(pack: workDirectory + "/pack-\(choice)")
            let megabytes = Double(report.sourceBytes) / 1e6
            result.rows.append(
                Row(
                    codec: choice.description,
                    ratio: Double(report.containerBytes) / Double(max(report.safetensorsBytes, 1)),
                    floatRatio: floatRatio,
                    packMBps: megabytes / median(packTimes),
                    unpackMBps: megabytes / median(unpackTimes),
                    verifyMBps: megabytes / median(verifyTimes)))
            try? FileManager.default.removeItem(atPath: workDirectory + "/pack-\(choice)")
            try? FileManager.default.removeItem(atPath: workDirectory + "/restore-\(choice)")
        }
        return result
    }

    /// The benchmark as a text table.
    public func table() -> String {
        var lines: [String] = []
        lines.append("model: \(model) (\(formatBytes(safetensorsBytes)) of safetensors)")
        lines.append("machine: \(machine), \(cores) cores; median of \(repeats) run(s); \(date)")
        for floor in floors {
            let bits = floor.planeBits.map { String(printf: "%.2f", $0) }.joined(separator: " / ")
            lines.append(
                "\(floor.dtype) byte-plane floor: \(String(printf: "%.4f", floor.floor)) (plane entropy, low→high byte: \(bits) bits)"
            )
        }
        let dtypes = floors.map(\.dtype)
        var header = pad("codec", 10) + pad("ratio", 8, right: true)
        for dtype in dtypes { header += pad("\(dtype) ratio", 12, right: true) + pad("vs floor", 10, right: true) }
        header +=
            pad("pack MB/s", 11, right: true) + pad("unpack MB/s", 13, right: true)
            + pad("verify MB/s", 13, right: true)
        lines.append(header)
        for row in rows {
            var line = pad(row.codec, 10) + pad(String(printf: "%.4f", row.ratio), 8, right: true)
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
        return lines.joined(separator: "\n")
    }

    private func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
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
        return original.reduce(into: [:]) { $0[$1.key] = Double(stored[$1.key]!) / Double(max($1.value, 1)) }
    }

    /// The byte-plane floor of every float dtype in the model.
    private static func floors(of model: String) throws(CheckpointError) -> [Floor] {
        let paths =
            isDirectory(model) == true
            ? try regularFiles(under: model).filter { $0.hasSuffix(".safetensors") }.map { model + "/" + $0 } : [model]
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
        return histograms.keys.sorted { $0.rawValue < $1.rawValue }.map { dtype in
            let bits = histograms[dtype]!.map { histogram -> Double in
                let total = Double(histogram.reduce(0, +))
                return histogram.reduce(0.0) { sum, count in
                    count == 0 ? sum : sum - Double(count) / total * log2(Double(count) / total)
                }
            }
            return Floor(
                dtype: dtype.rawValue, bytes: sizes[dtype]!, floor: bits.reduce(0, +) / Double(8 * bits.count),
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
