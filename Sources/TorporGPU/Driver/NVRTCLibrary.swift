import CTorporCUDA
import FoundationEssentials
import Glibc
public import TorporCheckpoint

/// NVRTC, the CUDA C++ compiler as a library, loaded at run time: it compiles Torpor's own kernels (the
/// byte-plane decoder) for the GPU at hand. It needs no GPU, and ships in the `nvidia-cuda-nvrtc` wheel that
/// PyTorch installs beside itself.
public final class NVRTCLibrary: Sendable {
    private let library: SharedLibrary
    /// NVRTC's builtins library, opened first from the same folder: NVRTC opens it by name when it compiles,
    /// which the dynamic loader would look for only on its own search path.
    private let builtins: [SharedLibrary]
    public let path: String
    /// "13.0".
    public let version: String
    private let getErrorString: CTorporNVRTC_GetErrorString
    private let createProgram: CTorporNVRTC_CreateProgram
    private let compileProgram: CTorporNVRTC_CompileProgram
    private let getProgramLogSize: CTorporNVRTC_GetSize
    private let getProgramLog: CTorporNVRTC_GetBytes
    private let getCUBINSize: CTorporNVRTC_GetSize
    private let getCUBIN: CTorporNVRTC_GetBytes
    private let destroyProgram: CTorporNVRTC_DestroyProgram

    /// The environment variable naming NVRTC's library file or its folder.
    public static let environmentVariable = "TORPOR_NVRTC_PATH"

    /// Loads NVRTC from the first place that has it (see `candidates`).
    /// - Throws: `GPUError` `.libraryNotFound` listing every place tried.
    public convenience init(explicitPath: String? = nil) throws(GPUError) {
        let environment = ProcessInfo.processInfo.environment
        let candidates = Self.candidates(
            explicitPath: explicitPath, environment: environment,
            sitePackages: NVCOMPLibrary.sitePackageFolders(environment: environment))
        var reasons: [String] = []
        for candidate in candidates {
            if candidate.hasPrefix("/") && !FileManager.default.fileExists(atPath: candidate) { continue }
            do {
                var builtins: [SharedLibrary] = []
                if candidate.hasPrefix("/") {
                    let folder = String(candidate[..<candidate.lastIndex(of: "/")!])
                    let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
                    for name in names.sorted()
                    where name.hasPrefix("libnvrtc-builtins.so.") && !name.contains(".alt.") {
                        builtins.append(try SharedLibrary(folder + "/" + name))
                    }
                }
                try self.init(library: SharedLibrary(candidate), builtins: builtins)
                return
            } catch {
                reasons.append("\(candidate): \(error.message)")
            }
        }
        throw GPUError(
            .libraryNotFound,
            "NVRTC (libnvrtc.so.13 or .12), which compiles the byte-plane decoder for the GPU, was not found. Install "
                + "it with `pip install nvidia-cuda-nvrtc` or set \(Self.environmentVariable) to its file or folder. "
                + "Tried: \(candidates.joined(separator: ", "))"
                + (reasons.isEmpty ? "" : "; " + reasons.joined(separator: "; ")))
    }

    private init(library: SharedLibrary, builtins: [SharedLibrary]) throws(GPUError) {
        self.library = library
        self.builtins = builtins
        path = library.path
        let versionFunction = try library.function("nvrtcVersion", as: CTorporNVRTC_Version.self)
        var major: Int32 = 0
        var minor: Int32 = 0
        _ = versionFunction(&major, &minor)
        version = "\(major).\(minor)"
        getErrorString = try library.function("nvrtcGetErrorString", as: CTorporNVRTC_GetErrorString.self)
        createProgram = try library.function("nvrtcCreateProgram", as: CTorporNVRTC_CreateProgram.self)
        compileProgram = try library.function("nvrtcCompileProgram", as: CTorporNVRTC_CompileProgram.self)
        getProgramLogSize = try library.function("nvrtcGetProgramLogSize", as: CTorporNVRTC_GetSize.self)
        getProgramLog = try library.function("nvrtcGetProgramLog", as: CTorporNVRTC_GetBytes.self)
        getCUBINSize = try library.function("nvrtcGetCUBINSize", as: CTorporNVRTC_GetSize.self)
        getCUBIN = try library.function("nvrtcGetCUBIN", as: CTorporNVRTC_GetBytes.self)
        destroyProgram = try library.function("nvrtcDestroyProgram", as: CTorporNVRTC_DestroyProgram.self)
    }

    /// Where NVRTC is looked for: only the explicit path when one is given, else only `TORPOR_NVRTC_PATH` when it
    /// is set; otherwise the NVRTC wheels of each Python installation (`nvidia/cu13/lib`, `nvidia/cuda_nvrtc/lib`),
    /// the CUDA toolkit's folder, then the dynamic loader's own search. A folder stands for the library inside it.
    public static func candidates(explicitPath: String?, environment: [String: String], sitePackages: [String])
        -> [String]
    {
        func files(_ path: String) -> [String] {
            path.hasSuffix(".so") || path.contains(".so.")
                ? [path] : [path + "/libnvrtc.so.13", path + "/libnvrtc.so.12", path + "/libnvrtc.so"]
        }
        if let explicitPath, !explicitPath.isEmpty { return files(explicitPath) }
        if let variable = environment[environmentVariable], !variable.isEmpty { return files(variable) }
        var result: [String] = []
        for folder in sitePackages {
            result.append(folder + "/nvidia/cu13/lib/libnvrtc.so.13")
            result.append(folder + "/nvidia/cuda_nvrtc/lib/libnvrtc.so.12")
        }
        result += files("/usr/local/cuda/lib64")
        result += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
        var seen = Set<String>()
        return result.filter { seen.insert($0).inserted }
    }

    /// Compiles CUDA C++ `source` to a cubin for `architecture` (e.g. "sm_90").
    /// - Throws: `GPUError` `.cuda` with the compiler's log.
    public func compile(_ source: String, name: String, architecture: String) throws(GPUError) -> [UInt8] {
        var program: CTorporNVRTC_Program?
        try check(createProgram(&program, source, name, 0, nil, nil), "nvrtcCreateProgram(\(name))")
        defer { _ = destroyProgram(&program) }
        let options = ["--gpu-architecture=\(architecture)", "--std=c++17", "-default-device"]
        var pointers = options.map { strdup($0) }
        defer { for pointer in pointers { free(pointer) } }
        let result = pointers.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) {
                compileProgram(program, Int32(options.count), $0)
            }
        }
        guard result == 0 else {
            var size = 0
            _ = getProgramLogSize(program, &size)
            var log = [CChar](repeating: 0, count: max(size, 1))
            _ = getProgramLog(program, &log)
            let text = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw GPUError(
                .cuda,
                "NVRTC \(version) (\(path)) could not compile \(name) for \(architecture): "
                    + "\(errorText(result)): \(text)")
        }
        var size = 0
        try check(getCUBINSize(program, &size), "nvrtcGetCUBINSize(\(name))")
        var cubin = [CChar](repeating: 0, count: size)
        try check(getCUBIN(program, &cubin), "nvrtcGetCUBIN(\(name))")
        return cubin.map { UInt8(bitPattern: $0) }
    }

    private func check(_ result: CTorporNVRTC_Result, _ call: String) throws(GPUError) {
        guard result == 0 else {
            throw GPUError(.cuda, "\(call) failed: \(errorText(result))")
        }
    }

    private func errorText(_ result: CTorporNVRTC_Result) -> String {
        getErrorString(result).map { String(cString: $0) } ?? "NVRTC error \(result)"
    }
}
