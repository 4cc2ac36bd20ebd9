import Synchronization

/// Wakes everyone waiting for the scheduler's state to change; a waiter whose task is cancelled returns at once.
///
/// A wait is taken in two steps: `register()`, synchronously where the condition was just checked (on the actor
/// whose jobs call `notify()`), then `wait(_:)`. A change between the check and the suspension then still wakes the
/// waiter. Registering inside the async `wait` instead ran on the global executor, after the actor was free again:
/// a change in that window was lost, and the waiter slept until the next one (forever, with a manual clock).
final class ChangeSignal: Sendable {
    private enum Entry {
        case registered
        case notified
        case cancelled
        case waiting(CheckedContinuation<Void, Never>)
    }
    private struct State {
        var entries: [UInt64: Entry] = [:]
        var nextID: UInt64 = 0
    }
    private let state = Mutex(State())

    /// Starts a wait for the next `notify()`; hand the ticket to `wait(_:)`.
    func register() -> UInt64 {
        state.withLock { state in
            state.nextID += 1
            state.entries[state.nextID] = .registered
            return state.nextID
        }
    }

    /// Suspends until the first `notify()` after `register()` returned `ticket` (at once if there was one), or
    /// until the task is cancelled.
    func wait(_ ticket: UInt64) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    guard case .registered = state.entries[ticket], !Task.isCancelled else {
                        state.entries[ticket] = nil
                        return true
                    }
                    state.entries[ticket] = .waiting(continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
                switch state.entries[ticket] {
                case .waiting(let continuation):
                    state.entries[ticket] = nil
                    return continuation
                case .registered:
                    // Not waiting yet: a note the body reads.
                    state.entries[ticket] = .cancelled
                    return nil
                case .notified, .cancelled, nil:
                    return nil
                }
            }
            continuation?.resume()
        }
    }

    /// Resumes every waiter, and marks every wait registered but not yet suspended as done.
    func notify() {
        let waiters = state.withLock { state in
            var waiters: [CheckedContinuation<Void, Never>] = []
            for (ticket, entry) in state.entries {
                switch entry {
                case .registered:
                    state.entries[ticket] = .notified
                case .waiting(let continuation):
                    waiters.append(continuation)
                    state.entries[ticket] = nil
                case .notified, .cancelled:
                    break
                }
            }
            return waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
