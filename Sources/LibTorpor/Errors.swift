import CTorporABI
import Glibc
import TorporCheckpoint
import TorporGPU

/// The calling thread's last error message, as `torpor_last_error` returns it: a C string owned by the thread
/// (freed when the thread ends or the next error replaces it).
private let errorKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { free($0) }
    return key
}()

nonisolated(unsafe) private let noError: UnsafeMutablePointer<CChar> = strdup("")!

/// Records `message` as this thread's last error and returns `status`.
func fail(_ status: torpor_status, _ message: String) -> torpor_status {
    let previous = pthread_getspecific(errorKey)
    pthread_setspecific(errorKey, strdup(message))
    free(previous)
    return status
}

/// Records `error` as this thread's last error and returns its status.
func fail(_ error: any Error) -> torpor_status {
    switch error {
    case let error as CheckpointError: fail(status(of: error.code), error.message)
    case let error as GPUError: fail(status(of: error.code), error.message)
    default: fail(TORPOR_ERROR_INTERNAL, "\(error)")
    }
}

func status(of code: CheckpointError.Code) -> torpor_status {
    switch code {
    case .invalidArgument, .outputExists: TORPOR_ERROR_INVALID_ARGUMENT
    case .io: TORPOR_ERROR_IO
    case .corruptData, .mismatch: TORPOR_ERROR_CORRUPT
    case .invalidContainer, .invalidSafetensors, .invalidShardIndex: TORPOR_ERROR_INVALID_CONTAINER
    case .unsupported: TORPOR_ERROR_UNSUPPORTED
    }
}

func status(of code: GPUError.Code) -> torpor_status {
    switch code {
    case .libraryNotFound, .symbolMissing, .noDriver, .noDevice: TORPOR_ERROR_NO_GPU
    case .outOfMemory: TORPOR_ERROR_OUT_OF_MEMORY
    case .invalidArgument: TORPOR_ERROR_INVALID_ARGUMENT
    case .corruptData: TORPOR_ERROR_CORRUPT
    case .io: TORPOR_ERROR_IO
    case .unsupported: TORPOR_ERROR_UNSUPPORTED
    case .cuda, .nvcomp: TORPOR_ERROR_GPU
    }
}

@_cdecl("torpor_last_error")
public func torpor_last_error() -> UnsafePointer<CChar> {
    UnsafePointer(pthread_getspecific(errorKey)?.assumingMemoryBound(to: CChar.self) ?? noError)
}

nonisolated(unsafe) private let version: UnsafeMutablePointer<CChar> = strdup(torporVersion)!

@_cdecl("torpor_version")
public func torpor_version() -> UnsafePointer<CChar> { UnsafePointer(version) }

@_cdecl("torpor_abi_version")
public func torpor_abi_version() -> Int32 { TORPOR_ABI_VERSION }

/// A C string argument as a Swift string; nil for a null pointer.
func string(_ pointer: UnsafePointer<CChar>?) -> String? {
    pointer.map { String(cString: $0) }
}
