import Synchronization

/// The three bounds on one proxied request, each configured apart (`limits`):
/// - the whole request, from its arrival to its last byte, waiting for a wake included (`request_timeout_seconds`);
/// - the engine's answer head, counted from the moment the request is sent to the engine
///   (`upstream_head_timeout_seconds`; for a request that is not streamed, the head comes with the whole answer);
/// - each silence between two chunks of the answer once its head arrived (`upstream_read_timeout_seconds`).
///
/// `bounding` races the forwarding against a watchdog that sleeps until the nearest deadline; when one passes, the
/// forwarding is cancelled — which closes the upstream connection, so the engine aborts the generation instead of
/// finishing it for nobody — and `UpstreamTimeout` names the bound.
final class UpstreamDeadlines: Sendable {
    private enum Stage { case waiting, head, body }

    private struct State {
        var stage = Stage.waiting
        var stageDeadline: ContinuousClock.Instant?
        var expired: UpstreamTimeout?
        /// The watchdog's current sleep, cut short when a new stage may bring its deadline closer.
        var sleep: Task<Void, Never>?
    }

    private let state = Mutex(State())
    private let end: ContinuousClock.Instant
    private let limits: GatewayConfiguration.Limits
    private let model: String

    init(model: String, arrived: ContinuousClock.Instant, limits: GatewayConfiguration.Limits) {
        self.model = model
        self.limits = limits
        end = arrived + .seconds(limits.requestTimeoutSeconds)
    }

    /// The request went to the engine: its answer's head is due within the head bound.
    func sent() {
        enter(.head, bound: limits.upstreamHeadTimeoutSeconds)
    }

    /// The head or a chunk of the answer arrived: the next is due within the gap bound.
    func received() {
        enter(.body, bound: limits.upstreamReadTimeoutSeconds)
    }

    private func enter(_ stage: Stage, bound: Double) {
        let interrupted = state.withLock { state -> Task<Void, Never>? in
            let changed = state.stage != stage
            state.stage = stage
            state.stageDeadline = .now + .seconds(bound)
            // Within a stage the deadline only moves later; a new stage may bring it closer.
            return changed ? state.sleep : nil
        }
        interrupted?.cancel()
    }

    /// The bound that passed, once one has.
    var expired: UpstreamTimeout? { state.withLock { $0.expired } }

    /// Runs `operation`, cancelled and replaced by `UpstreamTimeout` when a bound passes first.
    func bounding<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await self.watch()
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            throw CancellationError()
        }
    }

    /// Sleeps until the nearest deadline, again while the answer keeps coming, and throws once one has passed.
    private func watch() async throws {
        while true {
            let sleep = state.withLock { state in
                let deadline = min(end, state.stageDeadline ?? end)
                let sleep = Task { _ = try? await Task.sleep(until: deadline, clock: .continuous) }
                state.sleep = sleep
                return sleep
            }
            await withTaskCancellationHandler {
                await sleep.value
            } onCancel: {
                sleep.cancel()
            }
            try Task.checkCancellation()
            if let timeout = check(at: .now) { throw timeout }
        }
    }

    /// The bound passed at `now`, if any (recorded, so that the forwarding can say why it was cancelled).
    func check(at now: ContinuousClock.Instant) -> UpstreamTimeout? {
        state.withLock { state in
            if state.expired == nil {
                if now >= end {
                    state.expired = UpstreamTimeout(
                        model: model, bound: .request, seconds: limits.requestTimeoutSeconds)
                } else if let deadline = state.stageDeadline, now >= deadline {
                    state.expired =
                        state.stage == .head
                        ? UpstreamTimeout(model: model, bound: .head, seconds: limits.upstreamHeadTimeoutSeconds)
                        : UpstreamTimeout(model: model, bound: .gap, seconds: limits.upstreamReadTimeoutSeconds)
                }
            }
            return state.expired
        }
    }
}

/// A proxied request that ran past one of its bounds; it was cancelled upstream.
struct UpstreamTimeout: Error, Equatable, Sendable {
    enum Bound: String, Sendable {
        case request = "request_timeout_seconds"
        case head = "upstream_head_timeout_seconds"
        case gap = "upstream_read_timeout_seconds"
    }

    let model: String
    let bound: Bound
    let seconds: Double

    /// What the client is told: 504, naming the bound and its setting.
    var error: GatewayError {
        let limit = "\(formatSeconds(seconds)) (limits.\(bound.rawValue))"
        let what =
            switch bound {
            case .request: "The request for `\(model)` took longer than \(limit)"
            case .head: "The engine of `\(model)` did not begin its answer within \(limit)"
            case .gap: "The engine of `\(model)` sent nothing for \(limit) in the middle of its answer"
            }
        return GatewayError(.timeout, what + "; it was cancelled.")
    }

    private func formatSeconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }
}
