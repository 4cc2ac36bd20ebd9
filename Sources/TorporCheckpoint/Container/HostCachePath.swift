import Glibc

/// Where a container's host cache lives: the rule every party shares — the GPU loader that fills and maps it, a
/// vLLM worker loading through libtorpor, and the gateway that accounts for it and removes it.
public enum HostCachePath {
    /// The cache file for `containerPath` in `directory`: named after the container's file name and a hash of its
    /// absolute, normalized path (repeated slashes and `.` components removed), so two models never share one and
    /// every spelling of one path finds the same file.
    public static func `for`(container containerPath: String, directory: String = "/dev/shm") -> String {
        var absolute = containerPath
        if !absolute.hasPrefix("/") {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let cwd =
                getcwd(&buffer, buffer.count) != nil
                ? buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : "/"
            absolute = cwd + "/" + absolute
        }
        let components = absolute.split(separator: "/").filter { $0 != "." }
        let normalized = "/" + components.joined(separator: "/")
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for byte in normalized.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        let name = components.last.map(String.init) ?? "container"
        return "\(directory)/torpor-\(name)-\(String(hash, radix: 16)).cache"
    }
}
