import CTorporNVCOMP
import Foundation
import Testing
import TorporCheckpoint

@testable import TorporGPU

/// What the GPU path does without a GPU: planning, the library search, typed errors, nvCOMP's CPU entry points.
@Suite struct GPUPathTests {
    @Test func chunkPlansCutAlignAndPlaceSlots() throws {
        let plan = try ChunkPlan(
            totalBytes: 2_500_000, chunkBytes: 1 << 20, elementBytes: 2, alignment: 16,
            maxCompressedChunkBytes: 1_050_001)
        #expect(plan.chunks.count == 3)
        #expect(plan.sizes == [1 << 20, 1 << 20, 2_500_000 - 2 << 20])
        #expect(plan.slotBytes == 1_050_016)
        #expect(plan.chunks.map(\.slotOffset) == [0, 1_050_016, 2_100_032])
        #expect(plan.outputBytes == 3 * 1_050_016)
        #expect(plan.inputPointers(base: 0x1000) == [0x1000, 0x1000 + (1 << 20), 0x1000 + (2 << 20)])
        #expect(plan.slotPointers(base: 0x10).allSatisfy { $0 % 16 == 0 })
        #expect(try ChunkPlan(totalBytes: 0, chunkBytes: 4096, maxCompressedChunkBytes: 5000).chunks.isEmpty)
    }

    @Test(arguments: [
        (100, 0, 1, "use 1 byte to 16 MiB"), (100, 32 << 20, 1, "use 1 byte to 16 MiB"),
        (100, 1000, 1, "do not keep 16-byte alignment"), (101, 1024, 2, "2-byte elements"),
    ])
    func badPlansNameTheProblem(total: Int, chunk: Int, element: Int, message: String) {
        #expect {
            _ = try ChunkPlan(totalBytes: total, chunkBytes: chunk, elementBytes: element, maxCompressedChunkBytes: 10)
        } throws: { error in
            (error as? GPUError)?.code == .invalidArgument && (error as? GPUError)?.message.contains(message) == true
        }
    }

    @Test func nvcompIsLookedForInOrder() {
        let sites = ["/venv/lib/python3.12/site-packages", "/usr/lib/python3/dist-packages"]
        // A place someone named is the only place tried.
        #expect(
            NVCOMPLibrary.candidates(
                explicitPath: "/opt/nvcomp/lib", environment: ["TORPOR_NVCOMP_PATH": "/env/libnvcomp.so.6"],
                sitePackages: sites) == ["/opt/nvcomp/lib/libnvcomp.so.6"])
        #expect(
            NVCOMPLibrary.candidates(
                explicitPath: nil, environment: ["TORPOR_NVCOMP_PATH": "/env/libnvcomp.so.6"], sitePackages: sites)
                == ["/env/libnvcomp.so.6"])
        #expect(
            NVCOMPLibrary.candidates(explicitPath: nil, environment: [:], sitePackages: sites) == [
                "/venv/lib/python3.12/site-packages/nvidia/libnvcomp/lib64/libnvcomp.so.6",
                "/usr/lib/python3/dist-packages/nvidia/libnvcomp/lib64/libnvcomp.so.6", "libnvcomp.so.6",
            ])
        #expect(NVCOMPLibrary.candidates(explicitPath: nil, environment: [:], sitePackages: []) == ["libnvcomp.so.6"])
    }

    @Test func aVirtualEnvironmentsSitePackagesAreSearched() throws {
        let root = NSTemporaryDirectory() + "/torpor-venv-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/lib/python3.12", withIntermediateDirectories: true)
        let folders = NVCOMPLibrary.sitePackageFolders(environment: ["VIRTUAL_ENV": root])
        #expect(folders.prefix(2) == [root + "/lib/python3.12/site-packages", root + "/lib/python3.12/dist-packages"])
    }

    @Test func aMissingLibraryIsATypedErrorNamingWhereItLooked() {
        #expect {
            _ = try NVCOMPLibrary(explicitPath: "/nonexistent/nvcomp")
        } throws: { error in
            let error = error as? GPUError
            return error?.code == .libraryNotFound
                && error?.message.contains("/nonexistent/nvcomp/libnvcomp.so.6: no such file") == true
                && error?.message.contains("pip install nvidia-libnvcomp-cu13") == true
        }
        #expect {
            _ = try CUDADriver(path: "/nonexistent/libcuda.so.1")
        } throws: { error in
            (error as? GPUError)?.code == .noDriver
        }
    }

    @Test func aLibraryThatIsNotNVCOMPIsRefused() {
        #expect {
            _ = try NVCOMPLibrary(explicitPath: "libz.so.1")
        } throws: { error in
            (error as? GPUError)?.code == .symbolMissing
                && (error as? GPUError)?.message.contains("nvcompGetProperties") == true
        }
    }

    @Test func syntheticWeightsAreDeterministicBF16() {
        let a = GPUSelfTest.syntheticBF16(bytes: 1 << 16)
        #expect(a == GPUSelfTest.syntheticBF16(bytes: 1 << 16))
        #expect(a.count == 1 << 16)
        // bf16 of N(0, σ ≤ 0.065): exponents well below 1.0 (0x3F80), both signs.
        let values = a.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        #expect(values.allSatisfy { $0 & 0x7FFF < 0x3F80 })
        #expect(values.contains { $0 & 0x8000 != 0 } && values.contains { $0 & 0x8000 == 0 })
    }

    @Suite(
        "nvCOMP's entry points that need no GPU",
        .enabled(
            if: ProcessInfo.processInfo.environment["TORPOR_NVCOMP_PATH"] != nil,
            "TORPOR_NVCOMP_PATH is not set; scripts/test.sh sets it after fetching the nvidia-libnvcomp-cu13 wheel"))
    struct NVCOMPOnTheCPU {
        @Test func versionAlignmentsAndSizes() throws {
            let nvcomp = try NVCOMPLibrary()
            #expect(nvcomp.version / 1000 == 6)
            let alignment = try nvcomp.ansAlignment(compress: false, dataType: CTorporNVCOMP_TypeFloat16)
            #expect(alignment.input == 16)
            let compressAlignment = try nvcomp.ansAlignment(compress: true, dataType: CTorporNVCOMP_TypeFloat16)
            #expect(compressAlignment.input >= 2)
            let maximum = try nvcomp.ansMaxCompressedChunkBytes(
                chunkBytes: 1 << 20, dataType: CTorporNVCOMP_TypeFloat16)
            #expect(maximum >= 1 << 20)
            #expect(maximum < 2 << 20)
            let bitcomp = try nvcomp.bitcompMaxCompressedChunkBytes(
                chunkBytes: 1 << 20, dataType: CTorporNVCOMP_TypeUShort)
            #expect(bitcomp >= 1 << 20)
            #expect(bitcomp < 2 << 20)
            // Every ANS tuning Torpor accepts is one nvCOMP accepts; one state per lane never needs more room.
            for subChunks in [0, 4, 8, 16, 32, 64] {
                for states in [0, 1, 2] {
                    let tuning = try ANSTuning(subChunks: subChunks, statesPerLane: states).validated()
                    let bound = try nvcomp.ansMaxCompressedChunkBytes(
                        chunkBytes: 1 << 20, dataType: CTorporNVCOMP_TypeFloat16, tuning: tuning)
                    #expect(bound >= 1 << 20, "\(tuning)")
                }
            }
            // An over-large chunk is nvCOMP's error, reported with its name.
            #expect {
                _ = try nvcomp.ansMaxCompressedChunkBytes(chunkBytes: 1 << 30, dataType: CTorporNVCOMP_TypeFloat16)
            } throws: { error in
                (error as? GPUError)?.code == .nvcomp
                    && (error as? GPUError)?.message.contains("GetMaxOutputChunkSize") == true
            }
        }
    }

    @Test func ansTuningIsCheckedAndReachesNVCOMPsOptions() throws {
        #expect(MemoryLayout<CTorporNVCOMP_ANSCompressOptions>.size == 64)
        #expect(MemoryLayout<CTorporNVCOMP_ANSCompressOptions>.offset(of: \.maxSubChunkCount) == 8)
        let options = NVCOMPLibrary.ansCompressOptions(
            CTorporNVCOMP_TypeFloat16, ANSTuning(subChunks: 4, statesPerLane: 1))
        #expect(options.maxSubChunkCount == 4)
        #expect(options.statesPerLane == 1)
        #expect(options.histogramReductionLog2 == 0)
        #expect(options.dataType == CTorporNVCOMP_TypeFloat16)
        let defaults = NVCOMPLibrary.ansCompressOptions(CTorporNVCOMP_TypeFloat16, .nvcompDefault)
        #expect(defaults.maxSubChunkCount == 0 && defaults.statesPerLane == 0)
        #expect("\(ANSTuning.default)" == "at most 4 sub-chunks, 1 state per lane")
        for (subChunks, states, named) in [(3, 1, "sub-chunks"), (128, 1, "sub-chunks"), (4, 3, "states per lane")] {
            #expect {
                _ = try ANSTuning(subChunks: subChunks, statesPerLane: states).validated()
            } throws: { error in
                (error as? GPUError)?.code == .invalidArgument
                    && (error as? GPUError)?.message.contains(named) == true
            }
        }
    }

    @Test func nvrtcIsLookedForInOrder() {
        let sites = ["/venv/lib/python3.12/site-packages"]
        #expect(
            NVRTCLibrary.candidates(explicitPath: "/opt/nvrtc/libnvrtc.so.13", environment: [:], sitePackages: sites)
                == ["/opt/nvrtc/libnvrtc.so.13"])
        #expect(
            NVRTCLibrary.candidates(explicitPath: nil, environment: ["TORPOR_NVRTC_PATH": "/env"], sitePackages: sites)
                == ["/env/libnvrtc.so.13", "/env/libnvrtc.so.12", "/env/libnvrtc.so"])
        #expect(
            NVRTCLibrary.candidates(explicitPath: nil, environment: [:], sitePackages: sites) == [
                "/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13",
                "/venv/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
                "/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so.12",
                "/usr/local/cuda/lib64/libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so",
            ])
    }

    @Test func aMissingNVRTCIsATypedErrorSayingHowToGetIt() {
        #expect {
            _ = try NVRTCLibrary(explicitPath: "/nonexistent/nvrtc")
        } throws: { error in
            guard let error = error as? GPUError else { return false }
            return error.code == .libraryNotFound && error.message.contains("pip install nvidia-cuda-nvrtc")
                && error.message.contains("/nonexistent/nvrtc/libnvrtc.so.13")
        }
    }

    @Suite(
        "NVRTC compiles the byte-plane kernel (no GPU needed)",
        .enabled(
            if: ProcessInfo.processInfo.environment["TORPOR_NVRTC_PATH"] != nil,
            "TORPOR_NVRTC_PATH is not set; scripts/test.sh sets it after fetching the nvidia-cuda-nvrtc wheel"))
    struct NVRTCOnTheCPU {
        @Test(arguments: ["sm_80", "sm_90"])
        func theKernelCompilesToACubin(architecture: String) throws {
            let nvrtc = try NVRTCLibrary()
            let cubin = try nvrtc.compile(
                GPUBytePlaneDecoder.source, name: "torpor_byteplane.cu", architecture: architecture)
            #expect(Array(cubin.prefix(4)) == [0x7F, 0x45, 0x4C, 0x46], "an ELF image")
            #expect(cubin.count > 1000)
        }

        @Test func aCompileErrorCarriesTheCompilersLog() throws {
            let nvrtc = try NVRTCLibrary()
            #expect {
                _ = try nvrtc.compile(
                    "__global__ void broken() { undeclared(); }", name: "broken.cu", architecture: "sm_90")
            } throws: { error in
                guard let error = error as? GPUError else { return false }
                return error.code == .cuda && error.message.contains("broken.cu")
                    && error.message.contains("undeclared")
            }
        }
    }
}
