import Foundation
import Synchronization
import TorporCheckpoint

/// The gateway's Prometheus metrics, rendered in the text exposition format at the admin API's `/metrics`.
///
/// Model states, transition durations by kind and level, queue depth and wait, requests by model and status,
/// GPU ledgers, host memory; per model the latency the gateway adds before an answer's head, time to first token,
/// tokens in and out, and requests in flight; and the build.
public final class GatewayMetrics: Sendable {
    private struct Histogram {
        var buckets: [Double]
        var counts: [Int]
        var sum = 0.0
        var count = 0

        init(buckets: [Double]) {
            self.buckets = buckets
            counts = Array(repeating: 0, count: buckets.count)
        }

        mutating func observe(_ value: Double) {
            for (index, bound) in buckets.enumerated() where value <= bound { counts[index] += 1 }
            sum += value
            count += 1
        }
    }

    private struct State {
        var phases: [String: String] = [:]
        var transitions: [String: Histogram] = [:]
        var queueDepth: [String: Int] = [:]
        var queueWait: [String: Histogram] = [:]
        var requests: [String: Int] = [:]
        var failures: [String: Int] = [:]
        var ledgers: [String: (awake: Int, residue: Int, capacity: Int)] = [:]
        var hostBytes = 0
        var hostBudget = 0
        var addedLatency: [String: Histogram] = [:]
        var firstToken: [String: Histogram] = [:]
        var promptTokens: [String: Int] = [:]
        var completionTokens: [String: Int] = [:]
        var inFlight: [String: Int] = [:]
    }

    /// From a tenth of a millisecond (the proxy alone) to the minutes a cold start takes.
    private static let latencyBuckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
    ]
    private static let secondsBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
    private let state = Mutex(State())

    public init() {}

    /// Starts every per-model series of `models` at zero (failures, queue depth) and their phase at `stopped`, so
    /// that a scrape sees them before anything happens and `increase()` sees the first failure.
    func register(models: [String]) {
        state.withLock { state in
            for model in models {
                state.failures[model] = state.failures[model] ?? 0
                state.queueDepth[model] = state.queueDepth[model] ?? 0
                state.phases[model] = state.phases[model] ?? "stopped"
                state.promptTokens[model] = state.promptTokens[model] ?? 0
                state.completionTokens[model] = state.completionTokens[model] ?? 0
                state.inFlight[model] = state.inFlight[model] ?? 0
            }
        }
    }

    func setPhase(_ model: String, _ phase: String) { state.withLock { $0.phases[model] = phase } }

    func observeTransition(kind: String, level: Int?, seconds: Double) {
        let key = "kind=\"\(kind)\",level=\"\(level.map(String.init) ?? "")\""
        state.withLock {
            $0.transitions[key, default: Histogram(buckets: Self.secondsBuckets)].observe(seconds)
        }
    }

    func setQueueDepth(_ model: String, _ depth: Int) { state.withLock { $0.queueDepth[model] = depth } }

    func observeQueueWait(_ model: String, seconds: Double) {
        state.withLock {
            $0.queueWait[model, default: Histogram(buckets: Self.secondsBuckets)].observe(seconds)
        }
    }

    /// Counts one answered client request.
    public func countRequest(model: String, status: Int) {
        let key = "model=\"\(escaped(model))\",status=\"\(status)\""
        state.withLock { $0.requests[key, default: 0] += 1 }
    }

    func countFailure(_ model: String) { state.withLock { $0.failures[model, default: 0] += 1 } }

    func setLedger(gpu: String, awakeBytes: Int, residueBytes: Int, capacityBytes: Int) {
        state.withLock { $0.ledgers[gpu] = (awakeBytes, residueBytes, capacityBytes) }
    }

    func setHostBytes(_ bytes: Int, budget: Int) {
        state.withLock {
            $0.hostBytes = bytes
            $0.hostBudget = budget
        }
    }

    /// What the gateway added before an answer's head reached the client: from the request's arrival to its
    /// sending upstream (the wait for a wake included), plus the time to pass the engine's head on.
    func observeAddedLatency(_ model: String, seconds: Double) {
        state.withLock { $0.addedLatency[model, default: Histogram(buckets: Self.latencyBuckets)].observe(seconds) }
    }

    /// From a streamed request's arrival to its first chunk of answer written to the client.
    func observeTimeToFirstToken(_ model: String, seconds: Double) {
        state.withLock { $0.firstToken[model, default: Histogram(buckets: Self.latencyBuckets)].observe(seconds) }
    }

    /// Tokens an engine reported in an answer's `usage`.
    func countTokens(_ model: String, prompt: Int, completion: Int) {
        state.withLock {
            $0.promptTokens[model, default: 0] += prompt
            $0.completionTokens[model, default: 0] += completion
        }
    }

    /// One more (or, with -1, one less) request of `model` on its engine.
    func addInFlight(_ model: String, _ delta: Int) { state.withLock { $0.inFlight[model, default: 0] += delta } }

    /// The Prometheus text exposition.
    public func render() -> String {
        let state = state.withLock { $0 }
        func byModel<Value>(_ values: [String: Value]) -> [(String, Value)] {
            values.sorted { $0.key < $1.key }.map { ("model=\"\(escaped($0.key))\"", $0.value) }
        }
        var out = family(
            "torpor_model_state", "1 for the state each model is in.", "gauge",
            byModel(state.phases).flatMap { labels, phase in
                ModelPhase.allNames.map { ("\(labels),state=\"\($0)\"", $0 == phase ? 1 : 0) }
            })
        out += histogram(
            "torpor_transition_seconds", "Duration of engine transitions by kind and sleep level.",
            state.transitions.map { ($0.key, $0.value) })
        out += family(
            "torpor_queue_depth", "Requests waiting for a model to wake.", "gauge", byModel(state.queueDepth))
        out += histogram(
            "torpor_queue_wait_seconds", "Time requests waited for their model to wake.",
            byModel(state.queueWait))
        out += family(
            "torpor_requests_total", "Client requests answered, by model and status.", "counter",
            state.requests.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        out += family(
            "torpor_engine_failures_total", "Engine failures (crashes, failed or hung transitions).", "counter",
            byModel(state.failures))
        out += family(
            "torpor_gpu_memory_bytes", "GPU memory by use, from the scheduler's ledger.", "gauge",
            state.ledgers.sorted { $0.key < $1.key }.flatMap { gpu, ledger in
                [("awake", ledger.awake), ("sleep_residue", ledger.residue), ("capacity", ledger.capacity)].map {
                    ("gpu=\"\(escaped(gpu))\",use=\"\($0)\"", $1)
                }
            })
        out += family(
            "torpor_host_memory_bytes", "Host RAM held by level-1 sleepers, and the budget.", "gauge",
            [("use=\"level1_weights\"", state.hostBytes), ("use=\"budget\"", state.hostBudget)])
        out += histogram(
            "torpor_added_latency_seconds",
            "Time the gateway adds before an answer's head reaches the client, waiting for a wake included.",
            byModel(state.addedLatency))
        out += histogram(
            "torpor_time_to_first_token_seconds", "From a streamed request's arrival to its first chunk of answer.",
            byModel(state.firstToken))
        out += family(
            "torpor_prompt_tokens_total", "Prompt tokens engines reported in their answers' usage.", "counter",
            byModel(state.promptTokens))
        out += family(
            "torpor_completion_tokens_total", "Generated tokens engines reported in their answers' usage.", "counter",
            byModel(state.completionTokens))
        out += family(
            "torpor_requests_in_flight", "Requests on their model's engine now.", "gauge", byModel(state.inFlight))
        out += family(
            "torpor_build_info", "The running build.", "gauge", [("version=\"\(escaped(torporVersion))\"", 1)])
        return out
    }

    /// One metric family: its HELP and TYPE lines, then a sample per `(labels, value)`, in the order given.
    private func family(_ name: String, _ help: String, _ type: String, _ samples: [(String, Int)]) -> String {
        var out = "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for (labels, value) in samples { out += "\(name){\(labels)} \(value)\n" }
        return out
    }

    private func histogram(_ name: String, _ help: String, _ series: [(String, Histogram)]) -> String {
        var out = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        for (labels, histogram) in series.sorted(by: { $0.0 < $1.0 }) {
            let prefix = labels.isEmpty ? "" : labels + ","
            for (bound, count) in zip(histogram.buckets, histogram.counts) {
                out += "\(name)_bucket{\(prefix)le=\"\(bound)\"} \(count)\n"
            }
            out += "\(name)_bucket{\(prefix)le=\"+Inf\"} \(histogram.count)\n"
            let braces = labels.isEmpty ? "" : "{\(labels)}"
            out += "\(name)_sum\(braces) \(histogram.sum)\n\(name)_count\(braces) \(histogram.count)\n"
        }
        return out
    }
}

/// A label value escaped for the Prometheus text format.
private func escaped(_ value: String) -> String {
    value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        .replacingOccurrences(of: "\n", with: "\\n")
}

/// Broadcasts transition events to every admin subscriber of `/admin/events`.
public final class EventBus: Sendable {
    private struct State {
        var subscribers: [UInt64: AsyncStream<TransitionEvent>.Continuation] = [:]
        var nextID: UInt64 = 0
        /// The last events, for subscribers that ask for what already happened.
        var recent: [TransitionEvent] = []
        /// Set by `finish()`: every stream has ended and new ones end at once.
        var finished = false
    }
    private let state = Mutex(State())

    public init() {}

    func publish(_ event: TransitionEvent) {
        let subscribers = state.withLock { state in
            state.recent.append(event)
            if state.recent.count > 200 { state.recent.removeFirst(state.recent.count - 200) }
            return Array(state.subscribers.values)
        }
        for subscriber in subscribers { subscriber.yield(event) }
    }

    /// A stream of events from now on (and the recent ones first when `replay`), ending when the caller stops.
    public func subscribe(replay: Bool = false) -> AsyncStream<TransitionEvent> {
        let (stream, continuation) = AsyncStream<TransitionEvent>.makeStream(bufferingPolicy: .bufferingNewest(1000))
        let id = state.withLock { state -> UInt64? in
            if replay { for event in state.recent { continuation.yield(event) } }
            guard !state.finished else { return nil }
            state.nextID += 1
            state.subscribers[state.nextID] = continuation
            return state.nextID
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Ends every stream (at shutdown); later subscribers get the recent events they ask for, then the end.
    func finish() {
        let subscribers = state.withLock { state in
            state.finished = true
            defer { state.subscribers = [:] }
            return Array(state.subscribers.values)
        }
        for subscriber in subscribers { subscriber.finish() }
    }

    /// The recent events, oldest first.
    public func recent() -> [TransitionEvent] { state.withLock { $0.recent } }
}
