import ArgumentParser
import Foundation
import TorporCheckpoint
import TorporGPU

struct GPU: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpu",
        abstract: "The GPU path: what Torpor finds on this machine, and a round trip through nvCOMP on a GPU.",
        subcommands: [GPUInfo.self, GPUSelfTestCommand.self])
}

/// Options naming nvCOMP and the device (`pack --gpu`, and with NVRTC's every GPU command).
struct NVCOMPOptions: ParsableArguments {
    @Option(help: "nvCOMP's library file or folder (default: TORPOR_NVCOMP_PATH, Python installs, the loader path).")
    var nvcomp: String?

    @Option(help: "The GPU to use.")
    var device: Int = 0

    /// nvCOMP loaded and the device opened, or the reason either cannot be.
    func open() throws(GPUError) -> (NVCOMPLibrary, GPUDevice) {
        let nvcomp = try NVCOMPLibrary(explicitPath: nvcomp)
        return (nvcomp, try GPUDevice(driver: CUDADriver(), ordinal: device))
    }
}

/// Options naming nvCOMP, the device and NVRTC.
struct GPUOptions: ParsableArguments {
    @OptionGroup var target: NVCOMPOptions

    var nvcomp: String? { target.nvcomp }
    var device: Int { target.device }

    @Option(
        help:
            "NVRTC's library file or folder, for the byte-plane kernel (default: TORPOR_NVRTC_PATH, Python installs, the CUDA toolkit, the loader path)."
    )
    var nvrtc: String?
}

/// nvCOMP ANS encoder options (`pack --gpu`, `gpu selftest`).
struct ANSTuningOptions: ParsableArguments {
    @Option(
        name: .customLong("ans-sub-chunks"),
        help: "ANS: the most sub-chunks per chunk, each with its own table (4-64, a power of 2; 0: nvCOMP's 8).")
    var subChunks: Int = ANSTuning.default.subChunks

    @Option(
        name: .customLong("ans-states"),
        help:
            "ANS: interleaved rANS states per lane (1 or 2; 0: nvCOMP's 2). Each extra state costs 128 bytes per sub-chunk."
    )
    var statesPerLane: Int = ANSTuning.default.statesPerLane

    func tuning() throws(GPUError) -> ANSTuning {
        try ANSTuning(subChunks: subChunks, statesPerLane: statesPerLane).validated()
    }
}

struct GPUInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show the CUDA driver, the GPUs and nvCOMP as Torpor finds them.")

    @OptionGroup var gpu: GPUOptions

    func run() throws {
        var failed = false
        do {
            let nvcomp = try NVCOMPLibrary(explicitPath: gpu.nvcomp)
            print("nvCOMP \(nvcomp.versionString) from \(nvcomp.path)")
        } catch {
            print("nvCOMP: \(error.message)")
            failed = true
        }
        do {
            let nvrtc = try NVRTCLibrary(explicitPath: gpu.nvrtc)
            print("NVRTC \(nvrtc.version) from \(nvrtc.path)")
        } catch {
            // Only byteplane packs need it: reported, not a failure.
            print("NVRTC: \(error.message)")
        }
        do {
            let driver = try CUDADriver()
            print("CUDA driver \(driver.driverVersion / 1000).\((driver.driverVersion % 1000) / 10)")
            for ordinal in 0..<(try driver.deviceCount()) {
                let info = try driver.deviceInfo(ordinal)
                print(
                    "GPU \(ordinal): \(info.name), \(info.memoryBytes >> 20) MiB, compute capability "
                        + info.computeCapability)
            }
        } catch {
            print("CUDA: \(error.message)")
            failed = true
        }
        if failed { throw ExitCode.failure }
    }
}

struct GPUSelfTestCommand: ParsableCommand {
    /// What `--json` prints.
    struct Report: Codable {
        var ans: GPUSelfTest.Result
        var zstd: GPUSelfTest.ZstdResult?
    }

    /// One zstd frame of `bytes`, as the CPU packer writes zstd chunks.
    static func zstdFrame(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        guard let frame = ChunkCodec.zstdChunk(bytes) else {
            preconditionFailure("zstd failed on a \(bytes.count)-byte chunk")
        }
        return frame
    }

    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract:
            "Round-trip 16-bit float weights through nvCOMP ANS on a GPU against a pinned copy of the same bytes.",
        discussion: """
            Uses the BF16/F16 tensors of a safetensors file, or synthetic bf16 weights. Prints the size ratio, the \
            pinned host-to-device copy rate, the ANS decode rate and whether the round trip is bit-exact.
            """)

    @OptionGroup var gpu: GPUOptions

    @Option(help: "A safetensors file whose BF16/F16 tensors are the data (default: synthetic bf16).")
    var file: String?

    @Option(help: "Synthetic data size in MiB.")
    var megabytes: Int = 512

    @Option(help: "Chunk size in bytes.")
    var chunkSize: Int = 1 << 20

    @OptionGroup var ans: ANSTuningOptions

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Also decode CPU-written zstd frames of the first 256 MiB on the GPU (nvCOMP Zstd).")
    var zstd = false

    func run() throws {
        do {
            let (nvcomp, device) = try gpu.target.open()
            var data: [UInt8]
            if let file {
                let safetensors = try SafetensorsFile(path: file)
                data = []
                for tensor in safetensors.header.tensors where tensor.dtype == .bf16 || tensor.dtype == .f16 {
                    data += Array(safetensors.bytes(of: tensor))
                }
                guard !data.isEmpty else {
                    throw ValidationError("\(file) has no BF16 or F16 tensors")
                }
            } else {
                data = GPUSelfTest.syntheticBF16(bytes: megabytes << 20)
            }
            var test = GPUSelfTest()
            test.chunkBytes = chunkSize
            test.ansTuning = try ans.tuning()
            let result = try data.withUnsafeBytes { bytes throws(GPUError) in
                try test.run(nvcomp: nvcomp, device: device, data: bytes) { CRC32.checksum($0) }
            }
            let zstdResult =
                try zstd
                ? data.withUnsafeBytes { bytes throws(GPUError) in
                    try test.runZstd(
                        nvcomp: nvcomp, device: device, data: UnsafeRawBufferPointer(rebasing: bytes.prefix(256 << 20)),
                        compressFrame: Self.zstdFrame)
                } : nil
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(Report(ans: result, zstd: zstdResult)), as: UTF8.self))
            } else {
                print(
                    """
                    \(result.device) (compute \(result.computeCapability)), nvCOMP \(result.nvcompVersion)
                    data: \(result.bytes >> 20) MiB in \(result.chunkBytes >> 10) KiB chunks (ANS: \(test.ansTuning))
                    ANS ratio: \(String(format: "%.4f", result.ratio))
                    pinned host-to-device copy: \(String(format: "%.1f", result.pinnedCopyGBps)) GB/s
                    ANS decode on the GPU: \(String(format: "%.1f", result.decodeGBps)) GB/s (uncompressed bytes)
                    ANS encode: \(String(format: "%.1f", result.compressGBps)) GB/s
                    bit-exact: \(result.bitExact)
                    GPU CRC-32 of every decoded chunk equals the CPU's: \(result.checksumsMatch ?? false) \
                    (\(String(format: "%.0f", result.crc32GBps)) GB/s)
                    """)
            }
            if let zstdResult, !json {
                print(
                    "zstd frames (CPU, level 3) decoded on the GPU: ratio "
                        + "\(String(format: "%.4f", zstdResult.ratio)), \(String(format: "%.1f", zstdResult.decodeGBps)) GB/s, "
                        + "bit-exact: \(zstdResult.bitExact)")
            }
            if !result.bitExact || result.checksumsMatch != true || zstdResult?.bitExact == false {
                throw ExitCode.failure
            }
        } catch {
            throw commandFailure(error, prefix: "error")
        }
    }
}
