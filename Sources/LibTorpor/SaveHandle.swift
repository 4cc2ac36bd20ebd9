public import CTorporABI
import Dispatch
import Synchronization
import TorporCheckpoint

/// What a `torpor_save *` points to: a save whose bytes are captured and whose encoding and writing run on a
/// background thread.
final class SaveHandle: Sendable {
    private struct Outcome {
        var finished = false
        var status = TORPOR_OK
        var message = ""
        var sourceBytes = 0
        var containerBytes = 0
    }

    private let outcome = Mutex(Outcome())
    private let finished = DispatchSemaphore(value: 0)
    /// How the bytes were captured, before the handle was made.
    let capture: torpor_save_info

    /// Runs `work` on a background thread, recording how it ends.
    init(capture: torpor_save_info, _ work: @escaping @Sendable () throws -> PackedFile) {
        self.capture = capture
        DispatchQueue.global(qos: .utility).async { [self] in
            var result = Outcome(finished: true)
            do {
                let packed = try work()
                result.sourceBytes = packed.sourceBytes
                result.containerBytes = packed.containerBytes
            } catch {
                result.status = fail(error)
                result.message = String(cString: torpor_last_error())
            }
            outcome.withLock { $0 = result }
            finished.signal()
        }
    }

    var isFinished: Bool { outcome.withLock { $0.finished } }

    /// Waits for the end; the status, with the message recorded as the caller thread's last error on failure.
    func wait() -> torpor_status {
        if !isFinished {
            finished.wait()
            finished.signal()  // later waits return at once
        }
        let (status, message) = outcome.withLock { ($0.status, $0.message) }
        return status == TORPOR_OK ? TORPOR_OK : fail(status, message)
    }

    var sizes: (source: Int, container: Int) { outcome.withLock { ($0.sourceBytes, $0.containerBytes) } }

    static func from(_ pointer: OpaquePointer?) -> SaveHandle? {
        pointer.map { Unmanaged<SaveHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
    }
}

@_cdecl("torpor_save_done")
public func torpor_save_done(_ save: OpaquePointer?) -> Int32 {
    SaveHandle.from(save)?.isFinished ?? true ? 1 : 0
}

@_cdecl("torpor_save_wait")
public func torpor_save_wait(_ save: OpaquePointer?) -> torpor_status {
    guard let handle = SaveHandle.from(save) else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_save_wait: the save is null")
    }
    return handle.wait()
}

@_cdecl("torpor_save_sizes")
public func torpor_save_sizes(
    _ save: OpaquePointer?, _ sourceBytes: UnsafeMutablePointer<Int64>?, _ containerBytes: UnsafeMutablePointer<Int64>?
) -> torpor_status {
    guard let handle = SaveHandle.from(save) else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_save_sizes: the save is null")
    }
    let status = handle.wait()
    guard status == TORPOR_OK else { return status }
    let sizes = handle.sizes
    sourceBytes?.pointee = Int64(sizes.source)
    containerBytes?.pointee = Int64(sizes.container)
    return TORPOR_OK
}

@_cdecl("torpor_save_get_info")
public func torpor_save_get_info(_ save: OpaquePointer?, _ info: UnsafeMutablePointer<torpor_save_info>?)
    -> torpor_status
{
    guard let handle = SaveHandle.from(save), let info else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_save_get_info: the save and info must not be null")
    }
    info.pointee = handle.capture
    return TORPOR_OK
}

@_cdecl("torpor_save_release_memory")
public func torpor_save_release_memory() -> Int64 {
    Int64(SaveMemory.shared.releaseIdle())
}

@_cdecl("torpor_save_free")
public func torpor_save_free(_ save: OpaquePointer?) {
    guard let save, let handle = SaveHandle.from(save) else { return }
    _ = handle.wait()
    Unmanaged<SaveHandle>.fromOpaque(UnsafeRawPointer(save)).release()
}
