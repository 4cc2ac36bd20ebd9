import Foundation
import Testing
import TorporCheckpoint

/// A fresh temporary directory, removed when the value is released.
final class TemporaryDirectory {
    let path: String

    init() {
        let template = NSTemporaryDirectory() + "/torpor-test-XXXXXX"
        var bytes = Array(template.utf8CString)
        path = bytes.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A deterministic pseudo-random generator (SplitMix64), so failures reproduce.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum Fixtures {
    /// The shared fixtures folder: `TORPOR_FIXTURES`, else `../shared/fixtures` beside the repository.
    static var directory: String {
        if let path = ProcessInfo.processInfo.environment["TORPOR_FIXTURES"] { return path }
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return repository.deletingLastPathComponent().appendingPathComponent("shared/fixtures").path
    }

    static var miniLM: String { directory + "/minilm-l6-bf16.safetensors" }
    static var tinyLlama: String { directory + "/tiny-llama" }
}

/// Bytes of `count` values drawn like trained weights: normal with standard deviation `sigma`, as `dtype`.
func weightBytes(_ dtype: DType, count: Int, sigma: Double, generator: inout SeededGenerator) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(count * dtype.bitWidth / 8)
    for _ in 0..<count {
        // Box-Muller.
        let u1 = max(Double.leastNonzeroMagnitude, Double.random(in: 0..<1, using: &generator))
        let u2 = Double.random(in: 0..<1, using: &generator)
        let value = Float(sigma * (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
        switch dtype {
        case .f32:
            withUnsafeBytes(of: value.bitPattern.littleEndian) { out.append(contentsOf: $0) }
        case .bf16:
            let bits = value.bitPattern
            let rounded = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
            withUnsafeBytes(of: rounded.littleEndian) { out.append(contentsOf: $0) }
        case .f16:
            withUnsafeBytes(of: Float16(value).bitPattern.littleEndian) { out.append(contentsOf: $0) }
        default:
            fatalError("weightBytes supports F32, BF16 and F16")
        }
    }
    return out
}

/// Random bytes.
func randomBytes(_ count: Int, generator: inout SeededGenerator) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

/// A safetensors file holding one tensor of every dtype, plus empty and 0-d tensors and metadata.
func everyDTypeModel(seed: UInt64 = 1) -> SafetensorsBuilder {
    var generator = SeededGenerator(seed: seed)
    var builder = SafetensorsBuilder()
    builder.metadata = ["format": "pt", "note": "every \"dtype\""]
    for dtype in DType.allCases {
        let elements = dtype.bitWidth < 8 ? 96 : 300
        let shape = [elements / 12, 12]
        let bytes: [UInt8]
        if dtype == .bf16 || dtype == .f16 || dtype == .f32 {
            bytes = weightBytes(dtype, count: elements * 20, sigma: 0.02, generator: &generator)
            builder.add("weights.\(dtype.rawValue)", dtype: dtype, shape: [elements, 20], bytes: bytes)
            continue
        }
        bytes = randomBytes(dtype.byteCount(elements: elements)!, generator: &generator)
        builder.add("tensor.\(dtype.rawValue)", dtype: dtype, shape: shape, bytes: bytes)
    }
    builder.add("empty", dtype: .f32, shape: [0, 4], bytes: [])
    builder.add("scalar", dtype: .i64, shape: [], bytes: [42, 0, 0, 0, 0, 0, 0, 0])
    return builder
}

/// The bytes of a file.
func contents(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Writes bytes to a file.
func write(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// Runs `body` and returns the `CheckpointError` it throws; records an issue when it throws nothing.
func checkpointError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> CheckpointError? {
    do {
        try body()
        Issue.record("expected a CheckpointError, nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as CheckpointError {
        return error
    } catch {
        Issue.record("expected a CheckpointError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
