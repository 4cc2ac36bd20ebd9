public import AsyncHTTPClient
import Foundation
public import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// Speaks vLLM's sleep-mode contract (DESIGN.md §2) to one engine, with a deadline on every call.
///
/// Every call names the engine and the step in its errors and logs each state transition with its duration.
/// The dev endpoints are unauthenticated in vLLM: engines must listen on loopback only.
public struct EngineClient: Sendable {
    /// Deadlines for each kind of call.
    public struct Timeouts: Sendable {
        /// Reads: `/health`, `/is_sleeping`, `/metrics`, `/v1/models`.
        public var probe: Duration = .seconds(5)
        /// `/sleep` (a level-1 sleep copies every weight to host memory).
        public var sleep: Duration = .seconds(120)
        /// `/wake_up`.
        public var wake: Duration = .seconds(120)
        /// `/collective_rpc`, e.g. `reload_weights`.
        public var rpc: Duration = .seconds(600)
        /// A generation request (the warm-up).
        public var generate: Duration = .seconds(60)

        public init() {}

        /// Every deadline multiplied by `factor`, for tests with fast simulated engines.
        public func scaled(by factor: Double) -> Timeouts {
            var copy = self
            copy.probe = probe * factor
            copy.sleep = sleep * factor
            copy.wake = wake * factor
            copy.rpc = rpc * factor
            copy.generate = generate * factor
            return copy
        }
    }

    /// The engine's name in messages and logs (usually its model).
    public let name: String
    /// The base URL, e.g. `http://127.0.0.1:8001`.
    public let baseURL: String
    public var timeouts: Timeouts
    private let http: HTTPClient
    private let logger: Logger

    public init(
        name: String, baseURL: String, http: HTTPClient = EngineClient.sharedHTTP, timeouts: Timeouts = Timeouts(),
        logger: Logger
    ) {
        self.name = name
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.http = http
        self.timeouts = timeouts
        var logger = logger
        logger[metadataKey: "engine.name"] = "\(name)"
        self.logger = logger
    }

    /// How an HTTP client that talks to local engines is set up: a refused connection fails at once — a local engine
    /// that refuses is dead, and retrying it until the call's deadline only turns that into a timeout — and no
    /// idle read timeout (every call has its own deadline).
    public static var httpConfiguration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(5)
        configuration.timeout.read = nil
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }

    /// The HTTP client of engine clients that are given none (`httpConfiguration`).
    public static let sharedHTTP = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)

    /// The base URL of an engine listening on a unix socket (AsyncHTTPClient's `http+unix` scheme).
    public static func baseURL(unixSocket path: String) -> String {
        "http+unix://" + (path.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? path)
    }

    /// The socket path of an `http+unix` base URL, nil for any other URL.
    public static func unixSocket(of baseURL: String) -> String? {
        guard baseURL.hasPrefix("http+unix://") else { return nil }
        let host = baseURL.dropFirst("http+unix://".count).prefix { $0 != "/" }
        return String(host).removingPercentEncoding
    }

    // MARK: - The contract

    /// `POST /sleep?level=L&mode=M`. vLLM answers `{"status": "sleeping"}`, or (0.25) an empty 200 once asleep.
    public func sleep(level: SleepLevel, mode: SleepMode = .abort) async throws(EngineError) {
        let started = ContinuousClock.now
        let body = try await json(
            .POST, "/sleep?level=\(level.rawValue)&mode=\(mode.rawValue)", step: "sleep at \(level) (\(mode.rawValue))",
            deadline: timeouts.sleep, emptyMeans: ["status": "sleeping"])
        guard body["status"] as? String == "sleeping" else {
            throw invalid("sleep at \(level)", "answered \(body) instead of {\"status\":\"sleeping\"}")
        }
        logTransition(
            "sleep", started, ["engine.sleep.level": "\(level.rawValue)", "engine.sleep.mode": "\(mode.rawValue)"])
    }

    /// `POST /wake_up` with each tag as its own `tags` parameter (a comma-joined value would be one unknown tag).
    /// vLLM answers `{"status": "awake"}` or `{"status": "sleeping", "tags": [...]}`, or (0.25) an empty 200 once
    /// the tags are awake: then `/is_sleeping` tells whether anything still sleeps.
    /// - Parameter tags: what to restore; nil restores everything.
    public func wakeUp(tags: [WakeTag]? = nil) async throws(EngineError) -> WakeResult {
        let started = ContinuousClock.now
        let query = tags.map { "?" + $0.map { "tags=\($0.rawValue)" }.joined(separator: "&") } ?? ""
        let step = "wake up" + (tags.map { " (\($0.map(\.rawValue).joined(separator: ", ")))" } ?? "")
        let body: [String: Any]
        if let answered = try await jsonOrEmpty(.POST, "/wake_up" + query, step: step, deadline: timeouts.wake) {
            body = answered
        } else {
            body = ["status": try await isSleeping() ? "sleeping" : "awake"]
        }
        let result: WakeResult
        switch body["status"] as? String {
        case "awake": result = .awake
        case "sleeping": result = .partial(tags: body["tags"] as? [String] ?? [])
        default: throw invalid(step, "answered \(body) without a status of \"awake\" or \"sleeping\"")
        }
        logTransition("wake", started, ["engine.wake.tags": "\(tags?.map(\.rawValue) ?? ["all"])"])
        return result
    }

    /// `GET /is_sleeping`: true while asleep, partly awake or paused.
    public func isSleeping() async throws(EngineError) -> Bool {
        let body = try await json(.GET, "/is_sleeping", step: "is_sleeping", deadline: timeouts.probe)
        guard let sleeping = body["is_sleeping"] as? Bool else {
            throw invalid("is_sleeping", "answered \(body) without a boolean \"is_sleeping\"")
        }
        return sleeping
    }

    /// `POST /collective_rpc`: runs `method` on every worker and returns each worker's result.
    public func collectiveRPC(
        method: String, args: [any Sendable] = [], kwargs: [String: any Sendable] = [:], timeoutSeconds: Double? = nil
    ) async throws(EngineError) -> [Any] {
        var payload: [String: Any] = ["method": method, "args": args, "kwargs": kwargs]
        if let timeoutSeconds { payload["timeout"] = timeoutSeconds }
        // vLLM answers an empty 200 when the call returned nothing at all.
        let body = try await json(
            .POST, "/collective_rpc", body: payload, step: "collective_rpc \(method)", deadline: timeouts.rpc,
            emptyMeans: ["results": [Any]()])
        guard let results = body["results"] as? [Any] else {
            throw invalid("collective_rpc \(method)", "answered \(body) without \"results\"")
        }
        return results
    }

    /// Reloads the weights from `path` on every worker (after a level-2 wake of the weights).
    public func reloadWeights(from path: String) async throws(EngineError) {
        let started = ContinuousClock.now
        _ = try await collectiveRPC(method: "reload_weights", kwargs: ["weights_path": path])
        logTransition("reload_weights", started, ["engine.weights.path": "\(path)"])
    }

    /// `POST /reset_prefix_cache`, retried while the engine answers false (blocks still held), until `deadline`.
    /// vLLM 0.25 answers an empty 200 and does not say whether the reset happened: that counts as done.
    public func resetPrefixCache(deadline: Duration = .seconds(10)) async throws(EngineError) {
        let end = ContinuousClock.now + deadline
        var delay = Duration.milliseconds(10)
        while true {
            let body = try await json(
                .POST, "/reset_prefix_cache", step: "reset_prefix_cache", deadline: timeouts.probe,
                emptyMeans: ["success": true])
            if body["success"] as? Bool == true { return }
            guard ContinuousClock.now + delay < end, !Task.isCancelled else {
                throw EngineError(.timeout, "engine \(name): reset_prefix_cache still answered false after \(deadline)")
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .milliseconds(500))
        }
    }

    /// `POST /pause`: new requests get 503 until `resume()`.
    public func pause() async throws(EngineError) {
        _ = try await raw(.POST, "/pause", step: "pause", deadline: timeouts.probe, expect: [200])
    }

    /// `POST /resume`.
    public func resume() async throws(EngineError) {
        _ = try await raw(.POST, "/resume", step: "resume", deadline: timeouts.probe, expect: [200])
    }

    /// `GET /is_paused`.
    public func isPaused() async throws(EngineError) -> Bool {
        let body = try await json(.GET, "/is_paused", step: "is_paused", deadline: timeouts.probe)
        guard let paused = body["is_paused"] as? Bool else {
            throw invalid("is_paused", "answered \(body) without a boolean \"is_paused\"")
        }
        return paused
    }

    /// `GET /health`: true on 200 (also while asleep), false on 503 (the engine is dead).
    public func isHealthy() async throws(EngineError) -> Bool {
        let (status, _) = try await raw(.GET, "/health", step: "health", deadline: timeouts.probe, expect: [200, 503])
        return status == 200
    }

    /// The sleep state from `/metrics` (`vllm:engine_sleep_state`).
    public func sleepState() async throws(EngineError) -> EngineSleepState {
        let (_, body) = try await raw(.GET, "/metrics", step: "metrics", deadline: timeouts.probe, expect: [200])
        guard let state = Self.parseSleepState(metrics: String(decoding: body, as: UTF8.self)) else {
            throw invalid("metrics", "has no vllm:engine_sleep_state sample with value 1")
        }
        return state
    }

    /// The model ids from `/v1/models`.
    public func models() async throws(EngineError) -> [String] {
        let body = try await json(.GET, "/v1/models", step: "list models", deadline: timeouts.probe)
        guard let data = body["data"] as? [[String: Any]] else {
            throw invalid("list models", "answered \(body) without \"data\"")
        }
        return data.compactMap { $0["id"] as? String }
    }

    /// A one-token completion, so that the first real request after a wake is not the slow one.
    public func warmUp(model: String) async throws(EngineError) {
        let started = ContinuousClock.now
        let payload: [String: Any] = ["model": model, "prompt": "warm-up", "max_tokens": 1, "temperature": 0]
        _ = try await json(.POST, "/v1/completions", body: payload, step: "warm-up", deadline: timeouts.generate)
        logTransition("warm-up", started, [:])
    }

    /// The level-2 wake: weights, then (optionally) `reload_weights`, then the KV cache, a prefix-cache reset
    /// and a warm-up request.
    /// - Parameters:
    ///   - weightsPath: where to reload the weights from; nil reuses the path the engine loaded at start.
    public func wakeFromDiscard(model: String, weightsPath: String?) async throws(EngineError) {
        let started = ContinuousClock.now
        _ = try await wakeUp(tags: [.weights])
        if let weightsPath { try await reloadWeights(from: weightsPath) }
        let result = try await wakeUp(tags: [.kvCache])
        guard result == .awake else {
            throw invalid("wake up (kv_cache)", "is still sleeping after weights and KV cache were woken")
        }
        try await resetPrefixCache()
        try await warmUp(model: model)
        logTransition("level-2 wake", started, [:])
    }

    /// Reads the state whose `vllm:engine_sleep_state` sample is 1 from Prometheus text.
    public static func parseSleepState(metrics: String) -> EngineSleepState? {
        for line in metrics.split(separator: "\n") where line.hasPrefix("vllm:engine_sleep_state{") {
            guard let close = line.lastIndex(of: "}"),
                let value = Double(line[line.index(after: close)...].trimmingCharacters(in: .whitespaces)), value == 1
            else { continue }
            for state in EngineSleepState.allCases where line.contains("sleep_state=\"\(state.rawValue)\"") {
                return state
            }
        }
        return nil
    }

    // MARK: - HTTP

    private func logTransition(_ kind: String, _ started: ContinuousClock.Instant, _ metadata: Logger.Metadata) {
        var metadata = metadata
        metadata["engine.transition"] = "\(kind)"
        metadata["engine.duration_ms"] = "\(Int(((ContinuousClock.now - started) / .milliseconds(1)).rounded()))"
        logger.info("engine transition", metadata: metadata)
    }

    private func invalid(_ step: String, _ reason: String) -> EngineError {
        EngineError(.invalidResponse, "engine \(name): \(step) \(reason)")
    }

    /// Sends a request and decodes a JSON object answer; an empty answer is `emptyMeans` where one is given.
    private func json(
        _ method: HTTPMethod, _ path: String, body: [String: Any]? = nil, step: String, deadline: Duration,
        emptyMeans: [String: Any]? = nil
    ) async throws(EngineError) -> [String: Any] {
        if let object = try await jsonOrEmpty(method, path, body: body, step: step, deadline: deadline) {
            return object
        }
        guard let emptyMeans else { throw invalid(step, "answered with an empty body instead of a JSON object") }
        return emptyMeans
    }

    /// Sends a request and decodes a JSON object answer; nil for an empty answer (as vLLM 0.25's dev API gives).
    private func jsonOrEmpty(
        _ method: HTTPMethod, _ path: String, body: [String: Any]? = nil, step: String, deadline: Duration
    ) async throws(EngineError) -> [String: Any]? {
        let (_, bytes) = try await raw(method, path, body: body, step: step, deadline: deadline, expect: [200])
        guard !bytes.isEmpty else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw invalid(
                step,
                "answered something that is not a JSON object: \(String(decoding: bytes.prefix(200), as: UTF8.self))")
        }
        return object
    }

    /// Sends a request with a deadline; a status outside `expect` is an error carrying the engine's message.
    private func raw(
        _ method: HTTPMethod, _ path: String, body: [String: Any]? = nil, step: String, deadline: Duration,
        expect: Set<Int>
    ) async throws(EngineError) -> (Int, [UInt8]) {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        // A fresh loopback connection per call (about 0.1 ms): uvicorn may close a kept-alive connection after an
        // error answer, and a non-idempotent /sleep must never meet a stale pooled connection.
        request.headers.add(name: "Connection", value: "close")
        if let body {
            guard let data = try? JSONSerialization.data(withJSONObject: body) else {
                throw EngineError(
                    .invalidArgument, "engine \(name): \(step): the request body is not JSON-serializable")
            }
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: data))
        }
        let timeout = TimeAmount.nanoseconds(Int64(deadline / .nanoseconds(1)))
        // uvicorn may close a kept-alive connection after an error answer; an idempotent probe that meets a
        // connection reset on a pooled connection is sent once more on a fresh one.
        var attemptsLeft = method == .GET ? 2 : 1
        while true {
            attemptsLeft -= 1
            do {
                return try await send(
                    request, step: step, deadline: deadline, timeout: timeout, expect: expect, path: path)
            } catch let error where error.code == .transport && attemptsLeft > 0 {
                logger.debug(
                    "retrying after a transport error", metadata: ["engine.step": "\(step)", "error": "\(error)"])
            }
        }
    }

    private func send(
        _ request: HTTPClientRequest, step: String, deadline: Duration, timeout: TimeAmount, expect: Set<Int>,
        path: String
    ) async throws(EngineError) -> (Int, [UInt8]) {
        do {
            let http = self.http
            // The HTTP client's own deadline is the first line; this one holds whatever the client does internally
            // (a request left waiting in its connection pool does not end when cancelled).
            let (status, bytes) = try await withDeadline(
                deadline + .milliseconds(100), timedOut: { HTTPClientError.deadlineExceeded }
            ) {
                let response = try await http.execute(request, timeout: timeout)
                let collected = try await response.body.collect(upTo: 64 << 20)
                return (Int(response.status.code), Array(buffer: collected))
            }
            guard expect.contains(status) else {
                let text = String(decoding: bytes.prefix(500), as: UTF8.self)
                throw EngineError(
                    .httpStatus, "engine \(name): \(step) failed with HTTP \(status): \(text)", status: status)
            }
            return (status, bytes)
        } catch let error as EngineError {
            throw error
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            throw EngineError(.timeout, "engine \(name): \(step) did not answer within \(deadline) (\(baseURL + path))")
        } catch {
            throw EngineError(.transport, "engine \(name): \(step) failed: \(error) (\(baseURL + path))")
        }
    }
}
