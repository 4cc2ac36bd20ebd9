public import TorporEngine

/// Time as the scheduler sees it: a monotonic offset from the clock's start, and sleeping.
///
/// Injected, so that the scheduler runs in tests and simulations on time that only moves when they say so.
public protocol SchedulerClock: Sendable {
    /// Time since the clock's start.
    var now: Duration { get }
    /// Suspends for `duration` of this clock's time; throws `CancellationError` when cancelled.
    func sleep(for duration: Duration) async throws
}

/// The real monotonic clock.
public struct SystemClock: SchedulerClock {
    private let start = ContinuousClock.now
    public init() {}
    public var now: Duration { ContinuousClock.now - start }
    public func sleep(for duration: Duration) async throws { try await Task.sleep(for: duration) }
}

/// What the scheduler needs of one model's engine.
public protocol ModelEngine: Sendable {
    /// Where requests for the model go, e.g. `http://127.0.0.1:8001`.
    func baseURL() async -> String
    /// Starts the engine (a cold start); it is awake afterwards.
    func start() async throws(EngineError)
    /// Stops the engine and everything it started.
    func stop() async
    /// Whether its process is still running (engines Torpor did not start: true).
    func isAlive() async -> Bool
    func sleep(level: SleepLevel, mode: SleepMode) async throws(EngineError)
    /// Wakes it fully: a plain wake from level 1, the reload sequence from level 2.
    func wake(from level: SleepLevel, weightsPath: String) async throws(EngineError)
    func reloadWeights(from path: String) async throws(EngineError)
    /// What the engine itself says of its sleep (`/is_sleeping`, then the level from its sleep-state metric), or
    /// nil when it cannot tell: the liveness check deals with an engine that does not answer.
    func observedSleepState() async -> EngineSleepState?
    /// The engine's process, when Torpor started it and it runs.
    func processID() async -> Int32?
}

extension ModelEngine {
    public func processID() async -> Int32? { nil }
}

/// Where a model is in its life; the admin API shows `name`.
public enum ModelPhase: Sendable, Equatable, CustomStringConvertible {
    /// No engine process (before the start, or after a failure that will be retried).
    case stopped
    case starting
    case awake
    /// Put to sleep soon: no new requests, those in flight finish.
    case draining
    /// `/sleep` in progress.
    case sleeping(SleepLevel)
    case asleep(SleepLevel)
    case waking(SleepLevel)
    /// `reload_weights` in progress.
    case reloading
    /// Given up after repeated failures; requests get 503 until an admin wake.
    case failed(String)

    public var name: String {
        switch self {
        case .stopped: "stopped"
        case .starting: "starting"
        case .awake: "awake"
        case .draining: "draining"
        case .sleeping: "sleeping"
        case .asleep(let level): level == .discardWeights ? "L2" : "L1"
        case .waking: "waking"
        case .reloading: "reloading"
        case .failed: "failed"
        }
    }

    public var description: String { name }

    /// Awake or asleep, with no transition running: an engine that dies now is noticed only by a liveness check.
    var isSettled: Bool {
        switch self {
        case .awake, .asleep: true
        default: false
        }
    }

    static let allNames = [
        "stopped", "starting", "awake", "draining", "sleeping", "L1", "L2", "waking", "reloading", "failed",
    ]
}

/// Why a model is being put to sleep.
enum SleepReason: Sendable, Equatable, CustomStringConvertible {
    /// To make room for `target`.
    case eviction(for: String)
    case idle
    case admin
    case lease

    var description: String {
        switch self {
        case .eviction(let target): "room for \(target)"
        case .idle: "idle"
        case .admin: "admin"
        case .lease: "GPU lease"
        }
    }
}

/// What a GPU lease does to requests meanwhile.
public enum LeaseMode: String, Sendable, Codable {
    /// Requests wait (up to the queue timeout) until the lease is released.
    case queue
    /// Requests get 503 at once.
    case refuse
}

/// One transition, as the admin event stream and metrics report it.
public struct TransitionEvent: Sendable, Codable, Equatable {
    /// Seconds since the Unix epoch.
    public var time: Double
    public var model: String
    public var gpu: String
    /// `start`, `drain`, `sleep`, `wake`, `reload`, `fail`, `lease`, `release`, `cancel_drain`.
    public var kind: String
    public var from: String
    public var to: String
    public var level: Int?
    public var durationSeconds: Double?
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case time, model, gpu, kind, from, to, level, reason
        case durationSeconds = "duration_seconds"
    }
}
