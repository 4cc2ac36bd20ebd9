import Foundation
import TorporEngine

/// Everything the scheduler knows about one model, as a plain value: what `SchedulingPolicy` decides over.
///
/// The scheduler actor holds one per model and the continuations of its queued requests beside it; nothing here
/// refers to an engine, a task or a clock.
struct ModelState: Sendable {
    /// One request waiting for the model to wake.
    struct QueuedRequest: Sendable, Equatable {
        let id: UInt64
        let enqueued: Duration
        let deadline: Duration
    }

    private(set) var config: GatewayConfiguration.Model
    private(set) var phase = ModelPhase.stopped
    /// How many times `phase` has been entered: an observation made across an await is stale when it changed.
    private(set) var phaseChanges = 0
    var inFlight = 0
    var queue: [QueuedRequest] = []
    var awakeSince = Duration.zero
    var lastUsed = Duration.zero
    /// Requests per second, decayed with the configured half-life (see `SchedulingPolicy.demand`).
    var demandRate = 0.0
    var demandUpdated = Duration.zero
    /// Measured (else estimated) seconds to wake from level 1 and level 2.
    var wakeSeconds: [SleepLevel: Double]
    var consecutiveFailures = 0
    /// Whether its engine has been started once since the gateway began.
    var startedOnce = false
    /// After a failure, the engine is not started again before this (unless requests wait for it).
    var restartNotBefore: Duration?
    var weightsPath: String
    /// Reload `weightsPath` on the next wake (set while asleep at level 1 by an admin reload).
    var reloadOnWake = false
    /// Since when the engine waits to be started once and put to sleep (at start-up, and after a failure): it
    /// must exist, asleep, before anyone asks for it, so that the first request pays a wake, not a cold start.
    var bootstrapSince: Duration?
    /// A sleep someone asked for (admin, lease, idle), with the level when they named one.
    var sleepIntent: SleepIntent?
    /// A wake someone asked for without a request (admin, preload, lease release), with when they asked.
    var wakeIntent: Duration?
    /// Wanted awake because it is preloaded (or pinned) and not yet started: such a wake does not evict another
    /// preloaded model.
    var preloading = false
    /// An admin reload of an awake model.
    var reloadIntent = false
    var lastError: String?
    /// Set by a configuration reload that removed or changed the model: its engine is stopped at the GPU worker's
    /// next turn (after a drain), and the model removed or replaced.
    var retirement: Retirement?

    enum Retirement: Sendable, Equatable {
        /// No longer configured.
        case remove
        /// Configured with another engine: a new state and engine take its place, with its queue.
        case replace
    }

    struct SleepIntent: Sendable, Equatable {
        var reason: SleepReason
        var level: SleepLevel?
    }

    init(config: GatewayConfiguration.Model, weightsPath: String) {
        self.config = config
        self.weightsPath = weightsPath
        wakeSeconds = WakeCostModel.initialSeconds(for: config)
        // Preloaded and pinned models are wanted awake from the start; the others are started once and put to
        // sleep.
        if config.preload || config.pinned {
            wakeIntent = .zero
            preloading = true
        } else {
            bootstrapSince = .zero
        }
    }

    /// Its engine came up (a first start or a restart): past failures are forgotten, and a model started only
    /// to exist asleep goes back to sleep unless someone asked for it meanwhile.
    mutating func recordStarted(at now: Duration) {
        consecutiveFailures = 0
        restartNotBefore = nil
        lastError = nil
        awakeSince = now
        lastUsed = now
        startedOnce = true
        preloading = false
        if bootstrapSince != nil, queue.isEmpty, wakeIntent == nil {
            sleepIntent = .init(reason: .idle)
        }
        bootstrapSince = nil
    }

    /// Takes a reloaded configuration of the same engine (`Model.engineIdentity`): names, TTL, pins, preloads and
    /// `weights_path` change; a model newly preloaded or pinned is wanted awake.
    mutating func update(config new: GatewayConfiguration.Model) {
        let wantedAwake = !(config.preload || config.pinned) && (new.preload || new.pinned)
        if new.weightsPath != config.weightsPath, let path = new.weightsPath ?? new.checkpoint?.path {
            weightsPath = path
        }
        config = new
        if wantedAwake, phase != .awake, wakeIntent == nil { wakeIntent = .zero }
    }

    var name: String { config.name }
    var gpu: String { config.gpu }

    /// GPU memory held in this phase.
    var gpuBytes: Int {
        switch phase {
        case .stopped, .failed: 0
        case .asleep: config.sleepResidueBytes
        case .starting, .awake, .draining, .sleeping, .waking, .reloading: config.awakeBytes
        }
    }

    /// Host RAM held (or reserved) in this phase: level-1 weights; a host-cache model's checkpoint in every phase
    /// (its worker fills the cache at its first load and keeps it pinned, so it is reserved from the start and
    /// level-1 decisions never promise that RAM to another model).
    var hostBytes: Int {
        switch phase {
        case .asleep(.offloadWeights), .sleeping(.offloadWeights), .waking(.offloadWeights): config.weightsBytes
        default: config.hostCacheBytes
        }
    }

    /// When the oldest request or wake intent for this model began waiting.
    var oldestWait: Duration? {
        [queue.first?.enqueued, wakeIntent].compactMap { $0 }.min()
    }

    var isAsleep: Bool {
        if case .asleep = phase { true } else { false }
    }

    var isTransitioning: Bool {
        switch phase {
        case .starting, .draining, .sleeping, .waking, .reloading: true
        default: false
        }
    }

    /// Asleep, stopped or failed: no engine call is in progress and nothing runs on its GPU memory.
    var isAtRest: Bool {
        switch phase {
        case .asleep, .stopped, .failed: true
        default: false
        }
    }

    /// Moves to `phase`, dropping intents that the new phase has made moot.
    mutating func enter(_ newPhase: ModelPhase) {
        phase = newPhase
        phaseChanges += 1
        switch newPhase {
        case .asleep, .stopped, .failed:
            sleepIntent = nil
            reloadIntent = false
        default: break
        }
    }
}

/// One GPU as the scheduler sees it.
struct GPUState: Sendable {
    let config: GatewayConfiguration.GPU
    var lease: LeaseMode?
    /// Models awake when the lease began, woken again on release.
    var leasedAwake: [String] = []
    /// What its worker is doing now, for the admin API.
    var transition: String?

    var id: String { config.id }
}
