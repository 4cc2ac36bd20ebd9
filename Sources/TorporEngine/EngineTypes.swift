/// vLLM's sleep levels.
public enum SleepLevel: Int, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Pause scheduling only; nothing leaves the GPU.
    case pause = 0
    /// Weights copied to pinned host memory, KV cache dropped.
    case offloadWeights = 1
    /// Weights and KV cache dropped; a wake needs the weights reloaded.
    case discardWeights = 2

    public var description: String { "level \(rawValue)" }
}

/// What `/sleep` does with requests in flight.
public enum SleepMode: String, Sendable, Codable, CaseIterable {
    /// End them now with `finish_reason: "abort"` (vLLM's default).
    case abort
    /// Let them finish first.
    case wait
    /// Freeze them and resume them after the wake.
    case keep
}

/// What `/wake_up` restores; none means everything.
public enum WakeTag: String, Sendable, Codable, CaseIterable {
    case weights
    case kvCache = "kv_cache"
}

/// The sleep state vLLM reports in `/metrics` as `vllm:engine_sleep_state{sleep_state=...}`.
public enum EngineSleepState: String, Sendable, Codable, CaseIterable {
    case awake
    case weightsOffloaded = "weights_offloaded"
    case discardAll = "discard_all"
}

/// The answer to `/wake_up`.
public enum WakeResult: Sendable, Equatable {
    /// Fully awake: the scheduler runs again.
    case awake
    /// A partial wake (only some tags restored): the engine still counts as sleeping.
    case partial(tags: [String])
}

/// A failure talking to an engine. The message names the engine and the step.
public struct EngineError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is:
    /// - `timeout`: the call did not finish within its deadline
    /// - `transport`: the connection failed (refused, reset, closed)
    /// - `httpStatus`: the engine answered with an unexpected HTTP status
    /// - `invalidResponse`: the engine answered something that does not follow the contract
    /// - `invalidArgument`: the caller asked for something invalid
    /// - `processFailed`: an engine process could not be started or died
    public enum Code: String, Sendable, CustomStringConvertible {
        case timeout, transport, httpStatus, invalidResponse, invalidArgument, processFailed

        public var description: String { rawValue }
    }

    public let code: Code
    public let message: String
    /// The HTTP status, for `.httpStatus`.
    public let status: Int?

    public init(_ code: Code, _ message: String, status: Int? = nil) {
        self.code = code
        self.message = message
        self.status = status
    }

    public var description: String { message }
}
