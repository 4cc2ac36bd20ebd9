import Synchronization

/// Wakes everyone waiting for the scheduler's state to change; a waiter whose task is cancelled returns at once.
final class ChangeSignal: Sendable {
    private struct State {
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextID: UInt64 = 0
        /// Waits cancelled before they were registered (the cancellation handler ran first).
        var cancelledEarly: Set<UInt64> = []
    }
    private let state = Mutex(State())

    /// Suspends until the next `notify()`, or until the task is cancelled.
    func wait() async {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.cancelledEarly.remove(id) != nil || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
                if let waiting = state.waiters.removeValue(forKey: id) { return waiting }
                // Not registered yet: a note the body reads. (A wait cancelled in the instant after its resume
                // leaves a note nobody reads: a few bytes, only ever at cancellation.)
                state.cancelledEarly.insert(id)
                return nil
            }
            continuation?.resume()
        }
    }

    /// Resumes every waiter.
    func notify() {
        let waiters = state.withLock { state in
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }
}
