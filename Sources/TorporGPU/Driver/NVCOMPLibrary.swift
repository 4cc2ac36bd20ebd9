public import CTorporNVCOMP
import FoundationEssentials
import Glibc
public import TorporCheckpoint

/// nvCOMP 6 (`libnvcomp.so.6`), loaded at run time, with the batched entry points Torpor uses.
///
/// It loads on machines without a GPU; its size and alignment queries work there too.
public final class NVCOMPLibrary: Sendable {
    /// Where the library was loaded from.
    public let path: String
    /// `major * 1000 + minor * 100 + patch`, e.g. 6000 for 6.0.0.
    public let version: Int
    private let library: SharedLibrary

    let ansCompressGetRequiredAlignments: CTorporNVCOMP_ANSCompressGetRequiredAlignments
    let ansCompressGetTempSize: CTorporNVCOMP_ANSCompressGetTempSize
    let ansCompressGetMaxOutputChunkSize: CTorporNVCOMP_ANSCompressGetMaxOutputChunkSize
    let ansCompressAsync: CTorporNVCOMP_ANSCompressAsync
    let ansDecompressGetRequiredAlignments: CTorporNVCOMP_ANSDecompressGetRequiredAlignments
    let ansDecompressGetTempSize: CTorporNVCOMP_ANSDecompressGetTempSize
    let ansDecompressAsync: CTorporNVCOMP_ANSDecompressAsync
    let zstdDecompressGetTempSize: CTorporNVCOMP_ZstdDecompressGetTempSize
    let zstdDecompressAsync: CTorporNVCOMP_ZstdDecompressAsync
    let bitcompCompressGetTempSize: CTorporNVCOMP_BitcompCompressGetTempSize
    let bitcompCompressGetMaxOutputChunkSize: CTorporNVCOMP_BitcompCompressGetMaxOutputChunkSize
    let bitcompCompressAsync: CTorporNVCOMP_BitcompCompressAsync
    let bitcompDecompressGetTempSize: CTorporNVCOMP_BitcompDecompressGetTempSize
    let bitcompDecompressAsync: CTorporNVCOMP_BitcompDecompressAsync
    let crc32Async: CTorporNVCOMP_CRC32Async
    let crc32GetHeuristicConfiguration: CTorporNVCOMP_CRC32GetHeuristicConfiguration

    /// The environment variable naming nvCOMP's library file or its folder.
    public static let environmentVariable = "TORPOR_NVCOMP_PATH"

    /// Loads nvCOMP from the first place that has it (see `candidates`).
    /// - Parameter explicitPath: a library file or a folder holding `libnvcomp.so.6`, tried first.
    /// - Throws: `GPUError` `.libraryNotFound` listing every place tried, `.symbolMissing` for an unexpected
    ///   version.
    public convenience init(explicitPath: String? = nil) throws(GPUError) {
        let candidates = Self.candidates(
            explicitPath: explicitPath, environment: ProcessInfo.processInfo.environment,
            sitePackages: Self.sitePackageFolders())
        var reasons: [String] = []
        var missingInPython = 0
        let named = Set(
            [explicitPath, ProcessInfo.processInfo.environment[Self.environmentVariable]].compactMap { $0 })
        for candidate in candidates {
            // A place that does not exist is skipped; the loader's own search comes last.
            if candidate.hasPrefix("/") && !FileManager.default.fileExists(atPath: candidate) {
                if named.contains(where: { candidate.hasPrefix($0) }) {
                    reasons.append("\(candidate): no such file")
                } else {
                    missingInPython += 1
                }
                continue
            }
            do {
                try self.init(library: SharedLibrary(candidate))
                return
            } catch let error where error.code == .libraryNotFound {
                reasons.append(error.message)
            }
        }
        if missingInPython > 0 {
            reasons.insert("\(missingInPython) Python site-packages folders: none has nvidia/libnvcomp/lib64", at: 0)
        }
        throw GPUError(
            .libraryNotFound,
            "nvCOMP (libnvcomp.so.6) was not found. Install it with `pip install nvidia-libnvcomp-cu13` or set "
                + "\(Self.environmentVariable) to its file or folder. Tried: " + reasons.joined(separator: "; "))
    }

    private init(library: SharedLibrary) throws(GPUError) {
        self.library = library
        path = library.path
        let getProperties = try library.function("nvcompGetProperties", as: CTorporNVCOMP_GetProperties.self)
        var properties = CTorporNVCOMP_Properties()
        let status = getProperties(&properties)
        guard status == CTorporNVCOMP_Success else {
            throw GPUError(.nvcomp, "nvcompGetProperties failed with status \(status) (\(library.path))")
        }
        version = Int(properties.version)
        guard version / 1000 == 6 else {
            throw GPUError(
                .symbolMissing,
                "\(library.path) is nvCOMP \(Self.versionString(version)); Torpor needs nvCOMP 6 (its ANS format changed)"
            )
        }
        ansCompressGetRequiredAlignments = try library.function(
            "nvcompBatchedANSCompressGetRequiredAlignments", as: CTorporNVCOMP_ANSCompressGetRequiredAlignments.self)
        ansCompressGetTempSize = try library.function(
            "nvcompBatchedANSCompressGetTempSize", as: CTorporNVCOMP_ANSCompressGetTempSize.self)
        ansCompressGetMaxOutputChunkSize = try library.function(
            "nvcompBatchedANSCompressGetMaxOutputChunkSize", as: CTorporNVCOMP_ANSCompressGetMaxOutputChunkSize.self)
        ansCompressAsync = try library.function(
            "nvcompBatchedANSCompressAsync", as: CTorporNVCOMP_ANSCompressAsync.self)
        ansDecompressGetRequiredAlignments = try library.function(
            "nvcompBatchedANSDecompressGetRequiredAlignments",
            as: CTorporNVCOMP_ANSDecompressGetRequiredAlignments.self)
        ansDecompressGetTempSize = try library.function(
            "nvcompBatchedANSDecompressGetTempSize", as: CTorporNVCOMP_ANSDecompressGetTempSize.self)
        ansDecompressAsync = try library.function(
            "nvcompBatchedANSDecompressAsync", as: CTorporNVCOMP_ANSDecompressAsync.self)
        zstdDecompressGetTempSize = try library.function(
            "nvcompBatchedZstdDecompressGetTempSize", as: CTorporNVCOMP_ZstdDecompressGetTempSize.self)
        zstdDecompressAsync = try library.function(
            "nvcompBatchedZstdDecompressAsync", as: CTorporNVCOMP_ZstdDecompressAsync.self)
        bitcompCompressGetTempSize = try library.function(
            "nvcompBatchedBitcompCompressGetTempSize", as: CTorporNVCOMP_BitcompCompressGetTempSize.self)
        bitcompCompressGetMaxOutputChunkSize = try library.function(
            "nvcompBatchedBitcompCompressGetMaxOutputChunkSize",
            as: CTorporNVCOMP_BitcompCompressGetMaxOutputChunkSize.self)
        bitcompCompressAsync = try library.function(
            "nvcompBatchedBitcompCompressAsync", as: CTorporNVCOMP_BitcompCompressAsync.self)
        bitcompDecompressGetTempSize = try library.function(
            "nvcompBatchedBitcompDecompressGetTempSize", as: CTorporNVCOMP_BitcompDecompressGetTempSize.self)
        bitcompDecompressAsync = try library.function(
            "nvcompBatchedBitcompDecompressAsync", as: CTorporNVCOMP_BitcompDecompressAsync.self)
        crc32Async = try library.function("nvcompBatchedCRC32Async", as: CTorporNVCOMP_CRC32Async.self)
        crc32GetHeuristicConfiguration = try library.function(
            "nvcompBatchedCRC32GetHeuristicConf", as: CTorporNVCOMP_CRC32GetHeuristicConfiguration.self)
    }

    /// "6.0.0" for 6000.
    public static func versionString(_ version: Int) -> String {
        "\(version / 1000).\((version % 1000) / 100).\(version % 100)"
    }

    public var versionString: String { Self.versionString(version) }

    /// Where nvCOMP is looked for: only the explicit path when one is given, else only `TORPOR_NVCOMP_PATH` when
    /// it is set (a place someone named must not be silently replaced by another); otherwise the
    /// `nvidia/libnvcomp/lib64` folder of each Python installation, then the dynamic loader's own search
    /// (`libnvcomp.so.6`). A folder stands for the `libnvcomp.so.6` inside it.
    public static func candidates(explicitPath: String?, environment: [String: String], sitePackages: [String])
        -> [String]
    {
        func file(_ path: String) -> String {
            path.hasSuffix(".so") || path.contains(".so.") ? path : path + "/libnvcomp.so.6"
        }
        if let explicitPath, !explicitPath.isEmpty { return [file(explicitPath)] }
        if let variable = environment[environmentVariable], !variable.isEmpty { return [file(variable)] }
        var result: [String] = []
        for folder in sitePackages { result.append(folder + "/nvidia/libnvcomp/lib64/libnvcomp.so.6") }
        result.append("libnvcomp.so.6")
        var seen = Set<String>()
        return result.filter { seen.insert($0).inserted }
    }

    /// The site-packages folders of the Python installations on this machine: the active virtual or conda
    /// environment, `PYTHONPATH`, the user's, pyenv's and the system's.
    static func sitePackageFolders(environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        var roots: [String] = []
        for prefix in [environment["VIRTUAL_ENV"], environment["CONDA_PREFIX"]].compactMap({ $0 }) {
            roots += pythonFolders(under: prefix + "/lib")
        }
        roots += (environment["PYTHONPATH"] ?? "").split(separator: ":").map(String.init)
        if let home = environment["HOME"] {
            roots += pythonFolders(under: home + "/.local/lib")
            let pyenv = home + "/.pyenv/versions"
            for version in (try? FileManager.default.contentsOfDirectory(atPath: pyenv))?.sorted() ?? [] {
                roots += pythonFolders(under: pyenv + "/" + version + "/lib")
            }
        }
        roots += pythonFolders(under: "/usr/local/lib") + pythonFolders(under: "/usr/lib")
        roots.append("/usr/lib/python3/dist-packages")
        return roots
    }

    /// `FOLDER/pythonX.Y/site-packages` and `dist-packages` for every `pythonX.Y` in `folder`.
    private static func pythonFolders(under folder: String) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        var result: [String] = []
        for entry in entries.sorted() where entry.hasPrefix("python3") {
            let base: String = folder + "/" + entry
            result.append(base + "/site-packages")
            result.append(base + "/dist-packages")
        }
        return result
    }

    // MARK: - Queries that need no GPU

    /// The alignments nvCOMP's ANS codec needs of inputs, outputs and temporary memory.
    public func ansAlignment(compress: Bool, dataType: CTorporNVCOMP_DataType) throws(GPUError)
        -> CTorporNVCOMP_AlignmentRequirements
    {
        var requirements = CTorporNVCOMP_AlignmentRequirements()
        let status =
            compress
            ? ansCompressGetRequiredAlignments(Self.ansCompressOptions(dataType), &requirements)
            : ansDecompressGetRequiredAlignments(Self.ansDecompressOptions(dataType), &requirements)
        try Self.check(status, "nvcompBatchedANS\(compress ? "Compress" : "Decompress")GetRequiredAlignments")
        return requirements
    }

    /// The largest ANS output for a chunk of `chunkBytes`.
    public func ansMaxCompressedChunkBytes(
        chunkBytes: Int, dataType: CTorporNVCOMP_DataType, tuning: ANSTuning = .default
    ) throws(GPUError) -> Int {
        var bytes = 0
        let status = ansCompressGetMaxOutputChunkSize(chunkBytes, Self.ansCompressOptions(dataType, tuning), &bytes)
        try Self.check(status, "nvcompBatchedANSCompressGetMaxOutputChunkSize(\(chunkBytes))")
        return bytes
    }

    /// The largest Bitcomp output for a chunk of `chunkBytes`.
    public func bitcompMaxCompressedChunkBytes(chunkBytes: Int, dataType: CTorporNVCOMP_DataType) throws(GPUError)
        -> Int
    {
        var bytes = 0
        let status = bitcompCompressGetMaxOutputChunkSize(chunkBytes, Self.bitcompCompressOptions(dataType), &bytes)
        try Self.check(status, "nvcompBatchedBitcompCompressGetMaxOutputChunkSize(\(chunkBytes))")
        return bytes
    }

    static func bitcompCompressOptions(_ dataType: CTorporNVCOMP_DataType) -> CTorporNVCOMP_BitcompCompressOptions {
        var options = CTorporNVCOMP_BitcompCompressOptions()
        options.dataType = dataType
        return options
    }

    static func ansCompressOptions(_ dataType: CTorporNVCOMP_DataType, _ tuning: ANSTuning = .default)
        -> CTorporNVCOMP_ANSCompressOptions
    {
        var options = CTorporNVCOMP_ANSCompressOptions()
        options.dataType = dataType
        options.maxSubChunkCount = UInt8(tuning.subChunks)
        options.statesPerLane = UInt8(tuning.statesPerLane)
        return options
    }

    static func ansDecompressOptions(_ dataType: CTorporNVCOMP_DataType) -> CTorporNVCOMP_ANSDecompressOptions {
        var options = CTorporNVCOMP_ANSDecompressOptions()
        options.backend = Int32(CTorporNVCOMP_BackendDefault)
        options.dataType = dataType
        return options
    }

    static func check(_ status: CTorporNVCOMP_Status, _ call: String) throws(GPUError) {
        guard status == CTorporNVCOMP_Success else {
            throw GPUError(.nvcomp, "\(call) failed: \(statusName(status))")
        }
    }

    /// nvCOMP's name for a status.
    public static func statusName(_ status: CTorporNVCOMP_Status) -> String {
        let names: [Int32: String] = [
            0: "success", 10: "invalid value", 11: "not supported", 12: "cannot decompress", 13: "bad checksum",
            14: "cannot verify checksums", 15: "output buffer too small", 16: "wrong header length",
            17: "alignment", 18: "chunk size too large", 19: "cannot compress", 20: "wrong input length",
            21: "batch size too large", 1000: "CUDA error", 10000: "internal error",
        ]
        return "\(names[status] ?? "status") (\(status))"
    }
}
