import Synchronization

/// Runs `work` and gives up on it after `deadline` without waiting for it to notice: a call that ignores
/// cancellation (an HTTP request stuck in a connection pool, say) is cancelled and left to end on its own, and the
/// caller gets `timedOut()` on time. A task group cannot give that guarantee: it waits for every child.
/// - Throws: what `work` throws, `timedOut()` at the deadline, or `CancellationError` when the caller is cancelled.
func withDeadline<T: Sendable>(
    _ deadline: Duration, timedOut: @escaping @Sendable () -> any Error,
    _ work: @escaping @Sendable () async throws -> T
) async throws -> T {
    let outcome = FirstOutcome<T>()
    let worker = Task {
        do {
            outcome.settle(.success(try await work()))
        } catch {
            outcome.settle(.failure(error))
        }
    }
    let timer = Task {
        do { try await Task.sleep(for: deadline) } catch { return }
        outcome.settle(.failure(timedOut()))
        worker.cancel()
    }
    defer { timer.cancel() }
    return try await withTaskCancellationHandler {
        try await outcome.value()
    } onCancel: {
        worker.cancel()
        outcome.settle(.failure(CancellationError()))
    }
}

/// The first of several outcomes, handed to one waiter; later ones are dropped.
private final class FirstOutcome<T: Sendable>: Sendable {
    private enum State {
        case empty
        case waiting(CheckedContinuation<T, any Error>)
        case settled(Result<T, any Error>)
        case delivered
    }

    private let state = Mutex(State.empty)

    func settle(_ result: Result<T, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<T, any Error>? in
            switch state {
            case .empty:
                state = .settled(result)
                return nil
            case .waiting(let continuation):
                state = .delivered
                return continuation
            case .settled, .delivered:
                return nil
            }
        }
        waiter?.resume(with: result)
    }

    func value() async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<T, any Error>? in
                switch state {
                case .empty:
                    state = .waiting(continuation)
                    return nil
                case .settled(let result):
                    state = .delivered
                    return result
                case .waiting, .delivered:
                    return .failure(CancellationError())
                }
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
