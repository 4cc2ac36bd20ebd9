import CTorporNVCOMP
import FoundationEssentials
import Glibc

/// A round trip of 16-bit float weights through nvCOMP's ANS on one GPU, measured against a pinned copy of the
/// same bytes: the first check that the CUDA driver and nvCOMP tables work on a machine, and the numbers behind
/// the loader.
public struct GPUSelfTest: Sendable {
    public struct Result: Sendable, Codable {
        public var device: String
        public var computeCapability: String
        public var driverVersion: Int
        public var nvcompVersion: String
        public var bytes: Int
        public var chunkBytes: Int
        /// nvCOMP's ANS options: the most sub-chunks per chunk and states per lane (0: nvCOMP's default).
        public var ansSubChunks: Int
        public var ansStatesPerLane: Int
        public var compressedBytes: Int
        public var ratio: Double
        public var pinnedCopyGBps: Double
        public var decodeGBps: Double
        public var compressGBps: Double
        public var bitExact: Bool
        /// GPU CRC-32 of every decoded chunk equal to the CPU's CRC-32 of the original chunk (nil: not checked).
        public var checksumsMatch: Bool?
        /// nvCOMP's batched CRC32 rate over the decoded bytes.
        public var crc32GBps: Double
    }

    public var chunkBytes = 1 << 20
    public var repeats = 5
    public var ansTuning = ANSTuning.default

    public init() {}

    /// Runs the round trip on `data` (16-bit floats).
    /// - Parameter cpuCRC32: the CPU's CRC-32, to check the GPU's checksums of the decoded chunks against.
    public func run(
        nvcomp: NVCOMPLibrary, device: GPUDevice, data: UnsafeRawBufferPointer,
        cpuCRC32: ((UnsafeRawBufferPointer) -> UInt32)? = nil
    ) throws(GPUError) -> Result {
        let count = data.count & ~1
        let stream = try GPUStream(device: device)
        let host = try PinnedBuffer(device: device, count: count)
        host.pointer.copyMemory(from: data.baseAddress!, byteCount: count)
        let original = try DeviceBuffer(device: device, count: count)
        let start = try GPUEvent(device: device, timing: true)
        let end = try GPUEvent(device: device, timing: true)

        // The baseline: what an uncompressed loader (and a vLLM level-1 wake) is bound by.
        var copyMilliseconds = Double.infinity
        for _ in 0..<repeats {
            try start.record(on: stream)
            try original.copy(from: host.pointer, count: count, on: stream)
            try end.record(on: stream)
            try end.synchronize()
            copyMilliseconds = min(copyMilliseconds, try end.milliseconds(since: start))
        }

        let codec = GPUANSCodec(
            nvcomp: nvcomp, device: device, dataType: CTorporNVCOMP_TypeFloat16, tuning: try ansTuning.validated())
        let compressStarted = ContinuousClock.now
        let compressed = try codec.compress(original, count: count, chunkBytes: chunkBytes, stream: stream)
        let compressSeconds = (ContinuousClock.now - compressStarted) / .seconds(1)

        let decoded = try DeviceBuffer(device: device, count: count)
        var decodeMilliseconds = Double.infinity
        for _ in 0..<repeats {
            decodeMilliseconds = min(
                decodeMilliseconds, try codec.decompress(compressed, into: decoded, stream: stream))
        }
        let (gpuCRCs, crcMilliseconds) = try GPUCRC32(nvcomp: nvcomp, device: device).checksums(
            of: decoded, plan: compressed.plan, stream: stream)
        let checksumsMatch = cpuCRC32.map { crc in
            compressed.plan.chunks.enumerated().allSatisfy { index, chunk in
                let original = UnsafeRawBufferPointer(rebasing: data[chunk.offset..<(chunk.offset + chunk.count)])
                return crc(original) == gpuCRCs[index]
            }
        }
        let back = try PinnedBuffer(device: device, count: count)
        try decoded.copy(to: back.pointer, count: count, on: stream)
        try stream.synchronize()
        let exact = memcmp(back.pointer, data.baseAddress!, count) == 0
        return Result(
            device: device.info.name, computeCapability: device.info.computeCapability,
            driverVersion: device.driver.driverVersion, nvcompVersion: nvcomp.versionString, bytes: count,
            chunkBytes: chunkBytes, ansSubChunks: ansTuning.subChunks, ansStatesPerLane: ansTuning.statesPerLane,
            compressedBytes: compressed.compressedBytes,
            ratio: Double(compressed.compressedBytes) / Double(count),
            pinnedCopyGBps: Double(count) / copyMilliseconds / 1e6,
            decodeGBps: Double(count) / decodeMilliseconds / 1e6,
            compressGBps: Double(count) / compressSeconds / 1e9, bitExact: exact, checksumsMatch: checksumsMatch,
            crc32GBps: Double(count) / crcMilliseconds / 1e6)
    }

    /// Synthetic bf16 weights: N(0, σ) with σ changing every 4 MiB (as tensors differ), deterministic.
    public static func syntheticBF16(bytes: Int, seed: UInt64 = 0x5eed) -> [UInt8] {
        var state = seed | 1
        func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        let count = bytes / 2
        var values = [UInt16](repeating: 0, count: count)
        let block = 2 << 20
        var sigma: Float = 0.02
        var index = 0
        while index < count {
            if index % block == 0 { sigma = 0.005 + Float(next() % 1000) / 1000 * 0.06 }
            let u1 = Float(next() >> 40 | 1) / Float(1 << 24)
            let u2 = Float(next() >> 40) / Float(1 << 24)
            let radius = (-2 * log(u1)).squareRoot() * sigma
            values[index] = bf16(radius * cos(2 * .pi * u2))
            if index + 1 < count { values[index + 1] = bf16(radius * sin(2 * .pi * u2)) }
            index += 2
        }
        return values.withUnsafeBytes { Array($0) }
    }

    /// `value` rounded to the nearest bf16 (ties to even).
    static func bf16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }
}
