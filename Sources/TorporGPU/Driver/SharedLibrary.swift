import FoundationEssentials
import Glibc
import TorporCheckpoint

/// A shared library opened with `dlopen`, closed when the last reference goes.
final class SharedLibrary: @unchecked Sendable {
    /// The path or name it was opened from.
    let path: String
    private let handle: UnsafeMutableRawPointer

    /// Opens `path` (a file, or a name the dynamic loader resolves).
    /// - Throws: `GPUError` `.libraryNotFound` with `dlerror()`'s reason.
    init(_ path: String) throws(GPUError) {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown reason"
            throw GPUError(.libraryNotFound, "cannot load \(path): \(reason)")
        }
        self.path = path
        self.handle = handle
    }

    deinit { dlclose(handle) }

    /// The function `name`, as the C function-pointer type `T`.
    /// - Throws: `GPUError` `.symbolMissing` naming the library and the function.
    func function<T>(_ name: String, as type: T.Type) throws(GPUError) -> T {
        guard let symbol = dlsym(handle, name) else {
            throw GPUError(.symbolMissing, "\(path) has no function \(name); is it the expected version?")
        }
        return unsafeBitCast(symbol, to: type)
    }
}
