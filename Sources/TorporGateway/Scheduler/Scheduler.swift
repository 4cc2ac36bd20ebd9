import Foundation
public import Logging
public import TorporEngine

/// Decides which models are awake on each GPU, puts the others to sleep at the right level, and hands requests
/// to awake engines.
///
/// Requests call `acquire` and `release`. One worker per GPU (`runGPU`) performs transitions one at a time — vLLM
/// fails when a neighbour allocates during a sleep — choosing each next step in `nextAction`. `tick()` moves time
/// based decisions along (queue timeouts, idle TTLs, dead engines); the gateway calls it every 100 ms, tests call
/// it after advancing their clock.
public actor Scheduler {
    /// A model and everything the scheduler knows about it.
    struct ModelRuntime {
        let config: GatewayConfiguration.Model
        let engine: any ModelEngine
        var phase = ModelPhase.stopped
        var inFlight = 0
        var waiters: [Waiter] = []
        var awakeSince = Duration.zero
        var lastUsed = Duration.zero
        /// Requests per second, decayed with the configured half-life.
        var demandRate = 0.0
        var demandUpdated = Duration.zero
        /// Measured (else estimated) seconds to wake from level 1 and level 2.
        var wakeSeconds: [SleepLevel: Double]
        var consecutiveFailures = 0
        var weightsPath: String
        /// Reload `weightsPath` on the next wake (set while asleep at level 1 by an admin reload).
        var reloadOnWake = false
        /// A sleep someone asked for (admin, lease, idle), with the level when they named one.
        var sleepIntent: (reason: SleepReason, level: SleepLevel?)?
        /// A wake someone asked for without a request (admin, preload, lease release), with when they asked.
        var wakeIntent: Duration?
        /// An admin reload of an awake model.
        var reloadIntent = false
        var lastError: String?

        /// GPU memory held in this phase.
        var gpuBytes: Int {
            switch phase {
            case .stopped, .failed: 0
            case .asleep: config.sleepResidueBytes
            case .starting, .awake, .draining, .sleeping, .waking, .reloading: config.awakeBytes
            }
        }

        /// Host RAM held (or reserved) in this phase: level-1 weights; a host-cache model's checkpoint in every
        /// phase (its worker fills the cache at its first load and keeps it pinned, so it is reserved from the start
        /// and level-1 decisions never promise that RAM to another model).
        var hostBytes: Int {
            switch phase {
            case .asleep(.offloadWeights), .sleeping(.offloadWeights), .waking(.offloadWeights): config.weightsBytes
            default: config.hostCacheBytes
            }
        }

        /// When the oldest request or wake intent for this model began waiting.
        var oldestWait: Duration? {
            [waiters.first?.enqueued, wakeIntent].compactMap { $0 }.min()
        }
    }

    struct Waiter {
        let id: UInt64
        let enqueued: Duration
        let deadline: Duration
        let continuation: CheckedContinuation<Void, any Error>
    }

    struct GPURuntime {
        let config: GatewayConfiguration.GPU
        var lease: LeaseMode?
        /// Models awake when the lease began, woken again on release.
        var leasedAwake: [String] = []
        var transition: String?
        let signal: AsyncStream<Void>.Continuation
        let signals: AsyncStream<Void>
    }

    enum Action: Equatable {
        case start(String)
        case wake(String)
        case drain(String, SleepLevel, SleepReason)
        case reload(String)
    }

    private let configuration: GatewayConfiguration
    private let clock: any SchedulerClock
    private let logger: Logger
    private let metrics: GatewayMetrics
    private let events: EventBus
    private var models: [String: ModelRuntime] = [:]
    /// Model names in configuration order.
    private let order: [String]
    private var gpus: [String: GPURuntime] = [:]
    private var nextWaiterID: UInt64 = 0
    /// GPUs whose engines have all been started once.
    private var gpusStartedUp: Set<String> = []
    /// Suspended until the next change of state (`notifyChange`).
    private var changeWaiters: [CheckedContinuation<Void, Never>] = []

    public init(
        configuration: GatewayConfiguration, engines: [String: any ModelEngine],
        defaultWeightsPaths: [String: String] = [:], clock: any SchedulerClock, metrics: GatewayMetrics,
        events: EventBus, logger: Logger
    ) {
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        self.metrics = metrics
        self.events = events
        order = configuration.models.map(\.name)
        for model in configuration.models {
            guard let engine = engines[model.name] else { preconditionFailure("no engine for \(model.name)") }
            models[model.name] = ModelRuntime(
                config: model, engine: engine,
                wakeSeconds: WakeCostModel.initialSeconds(for: model),
                weightsPath: model.weightsPath ?? model.checkpoint?.path ?? defaultWeightsPaths[model.name]
                    ?? model.name)
        }
        for gpu in configuration.gpus {
            let (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            gpus[gpu.id] = GPURuntime(config: gpu, signal: signal, signals: signals)
        }
    }

    // MARK: - Requests

    /// Waits until `name` is awake and counts one request in flight on it.
    /// - Returns: the engine's base URL. Call `release(name)` when the request is over.
    /// - Throws: `GatewayError`: 404 unknown model, 429 full queue, 503 a model that cannot be woken in time.
    public func acquire(_ name: String) async throws(GatewayError) -> String {
        guard var model = models[name] else {
            throw GatewayError(.notFound, "The model `\(name)` does not exist or you do not have access to it.")
        }
        let gpu = gpus[model.config.gpu]!
        if gpu.lease == .refuse {
            throw GatewayError(
                .unavailable,
                "GPU \(gpu.config.id) is leased to another job; `\(name)` is asleep until the lease is released.",
                retryAfterSeconds: configuration.limits.retryAfterSeconds)
        }
        if case .failed(let reason) = model.phase {
            throw GatewayError(
                .unavailable, "The model `\(name)` has failed and is not being restarted: \(reason)",
                retryAfterSeconds: configuration.limits.retryAfterSeconds)
        }
        noteDemand(&model)
        if model.phase == .awake && gpu.lease == nil {
            model.inFlight += 1
            models[name] = model
            metrics.observeQueueWait(name, seconds: 0)
            return await model.engine.baseURL()
        }
        guard model.waiters.count < configuration.limits.queueDepth else {
            models[name] = model
            throw GatewayError(
                .queueFull,
                "The queue for `\(name)` is full (\(configuration.limits.queueDepth) requests wait for it to wake).",
                retryAfterSeconds: configuration.limits.retryAfterSeconds)
        }
        models[name] = model
        nextWaiterID += 1
        let id = nextWaiterID
        let waitStarted = clock.now
        do {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    guard !Task.isCancelled else {
                        continuation.resume(throwing: CancellationError())
                        return
                    }
                    let now = clock.now
                    let deadline = now + .seconds(configuration.limits.queueTimeoutSeconds)
                    models[name]!.waiters.append(
                        Waiter(id: id, enqueued: now, deadline: deadline, continuation: continuation))
                    metrics.setQueueDepth(name, models[name]!.waiters.count)
                    signal(gpu.config.id)
                }
            } onCancel: {
                Task { await self.removeWaiter(name, id) }
            }
        } catch let error as GatewayError {
            metrics.observeQueueWait(name, seconds: (clock.now - waitStarted).seconds)
            throw error
        } catch {
            metrics.observeQueueWait(name, seconds: (clock.now - waitStarted).seconds)
            throw GatewayError(.cancelled, "The request for `\(name)` was cancelled while it waited.")
        }
        metrics.observeQueueWait(name, seconds: (clock.now - waitStarted).seconds)
        return await models[name]!.engine.baseURL()
    }

    /// Ends one request on `name` that `acquire` admitted.
    public func release(_ name: String) {
        guard models[name] != nil else { return }
        models[name]!.inFlight = max(0, models[name]!.inFlight - 1)
        models[name]!.lastUsed = clock.now
        if models[name]!.inFlight == 0 { notifyChange() }
    }

    private func removeWaiter(_ name: String, _ id: UInt64) {
        guard let index = models[name]?.waiters.firstIndex(where: { $0.id == id }) else { return }
        let waiter = models[name]!.waiters.remove(at: index)
        waiter.continuation.resume(throwing: CancellationError())
        metrics.setQueueDepth(name, models[name]!.waiters.count)
        notifyChange()
        signal(models[name]!.config.gpu)
    }

    private func noteDemand(_ model: inout ModelRuntime) {
        let now = clock.now
        model.demandRate = decayedDemand(model, at: now) + log(2) / configuration.scheduler.demandHalfLifeSeconds
        model.demandUpdated = now
        model.lastUsed = now
    }

    private func decayedDemand(_ model: ModelRuntime, at now: Duration) -> Double {
        let elapsed = (now - model.demandUpdated).seconds
        return model.demandRate * exp(-elapsed * log(2) / configuration.scheduler.demandHalfLifeSeconds)
    }

    /// Admits every waiter of an awake model.
    private func admitWaiters(_ name: String) {
        guard var model = models[name], model.phase == .awake, gpus[model.config.gpu]!.lease == nil else { return }
        let waiters = model.waiters
        model.waiters = []
        model.inFlight += waiters.count
        model.wakeIntent = nil
        models[name] = model
        metrics.setQueueDepth(name, 0)
        for waiter in waiters { waiter.continuation.resume() }
    }

    /// Answers every waiter of `name` with `error`.
    private func failWaiters(_ name: String, _ error: GatewayError) {
        let waiters = models[name]?.waiters ?? []
        models[name]?.waiters = []
        metrics.setQueueDepth(name, 0)
        for waiter in waiters { waiter.continuation.resume(throwing: error) }
    }

    // MARK: - Time

    /// Expires waiters past their deadline, schedules idle sleeps, notices dead engines, and wakes the workers.
    public func tick() async {
        let now = clock.now
        for name in order {
            guard var model = models[name] else { continue }
            let expired = model.waiters.filter { $0.deadline <= now }
            if !expired.isEmpty {
                model.waiters.removeAll { $0.deadline <= now }
                models[name] = model
                metrics.setQueueDepth(name, model.waiters.count)
                let error = GatewayError(
                    .unavailable,
                    "`\(name)` could not be woken within \(configuration.limits.queueTimeoutSeconds) s (it is "
                        + "\(model.phase.name)\(model.lastError.map { "; last error: \($0)" } ?? "")).",
                    retryAfterSeconds: configuration.limits.retryAfterSeconds)
                for waiter in expired { waiter.continuation.resume(throwing: error) }
            }
            if let ttl = model.config.idleTTLSeconds, model.phase == .awake, model.inFlight == 0,
                model.waiters.isEmpty, model.sleepIntent == nil, now - model.lastUsed >= .seconds(ttl)
            {
                models[name]!.sleepIntent = (.idle, nil)
            }
        }
        notifyChange()
        for id in gpus.keys { signal(id) }
    }

    /// Fails models whose engine process has died.
    public func checkEngines() async {
        for name in order {
            guard let model = models[name] else { continue }
            switch model.phase {
            case .awake, .asleep:
                if !(await model.engine.isAlive()), models[name]?.phase == model.phase {
                    await fail(name, "its engine exited", stopEngine: true)
                }
            default: break
            }
        }
    }

    private func notifyChange() {
        let waiting = changeWaiters
        changeWaiters = []
        for continuation in waiting { continuation.resume() }
    }

    /// Suspends until the next change of state or tick.
    private func nextChange() async {
        await withCheckedContinuation { changeWaiters.append($0) }
    }

    private func signal(_ gpu: String) { gpus[gpu]?.signal.yield() }

    // MARK: - The GPU workers

    /// Starts the engines of one GPU, then performs its transitions one at a time until cancelled.
    public func runGPU(_ id: String) async {
        guard let signals = gpus[id]?.signals else { return }
        await startUp(gpu: id)
        gpusStartedUp.insert(id)
        notifyChange()
        for await _ in signals {
            if Task.isCancelled { break }
            while !Task.isCancelled, let action = nextAction(gpu: id) {
                await perform(action, gpu: id)
            }
        }
    }

    /// Starts every engine of the GPU: those not preloaded first, each put to sleep at once, so that the
    /// preloaded ones find room.
    private func startUp(gpu id: String) async {
        let names = order.filter { models[$0]!.config.gpu == id }
        let sleepers = names.filter { !(models[$0]!.config.preload || models[$0]!.config.pinned) }
        for name in sleepers + names.filter({ !sleepers.contains($0) }) {
            guard !Task.isCancelled else { return }
            await startRetrying(name, gpu: id)
            if sleepers.contains(name), models[name]?.phase == .awake, models[name]!.waiters.isEmpty {
                await perform(.drain(name, sleepLevel(for: name), .idle), gpu: id)
            }
        }
    }

    /// A cold start at start-up, tried again after 1 s, 2 s, 4 s … until it succeeds or the model has failed
    /// `max_consecutive_failures` times in a row: an engine that lost a race for a port, say, must not stay down
    /// until somebody asks for it.
    private func startRetrying(_ name: String, gpu id: String) async {
        await perform(.start(name), gpu: id)
        var delay = 1.0
        while !Task.isCancelled, models[name]!.phase == .stopped, models[name]!.consecutiveFailures > 0 {
            logger.warning(
                "retrying a failed start",
                metadata: [
                    "model": "\(name)", "attempt": "\(models[name]!.consecutiveFailures + 1)",
                    "delay_s": "\(delay)",
                ])
            do { try await clock.sleep(for: .seconds(delay)) } catch { return }
            delay *= 2
            await perform(.start(name), gpu: id)
        }
    }

    /// The next transition for a GPU, or nil when there is nothing to do now.
    func nextAction(gpu id: String) -> Action? {
        guard let gpu = gpus[id] else { return nil }
        let names = order.filter { models[$0]!.config.gpu == id }
        // Sleeps asked for (admin, lease, idle).
        for name in names {
            guard let intent = models[name]!.sleepIntent else { continue }
            if models[name]!.phase == .awake {
                return .drain(name, intent.level ?? sleepLevel(for: name), intent.reason)
            }
            if !isTransitioning(models[name]!.phase) { models[name]!.sleepIntent = nil }
        }
        if let name = names.first(where: { models[$0]!.reloadIntent }) {
            if models[name]!.phase == .awake { return .reload(name) }
            models[name]!.reloadIntent = false
        }
        guard gpu.lease == nil else { return nil }
        // The model waiting longest goes first: no request waits behind younger ones.
        let candidates = names.filter {
            let model = models[$0]!
            guard model.oldestWait != nil else { return false }
            switch model.phase {
            case .asleep, .stopped: return true
            default: return false
            }
        }.sorted { models[$0]!.oldestWait! < models[$1]!.oldestWait! }
        guard let target = candidates.first else { return nil }
        let model = models[target]!
        let needed = model.config.awakeBytes - model.gpuBytes
        let used = names.reduce(0) { $0 + models[$1]!.gpuBytes }
        if used + needed <= gpu.config.memoryBytes {
            return model.phase == .stopped ? .start(target) : .wake(target)
        }
        let now = clock.now
        let starving = now - model.oldestWait! >= .seconds(configuration.scheduler.starvationBoundSeconds)
        let victims = names.filter { name in
            let victim = models[name]!
            // Residency protects a model only while it is serving: an idle one costs nothing to put to sleep.
            let resident =
                now - victim.awakeSince < .seconds(configuration.scheduler.minResidencySeconds) && victim.inFlight > 0
            return name != target && victim.phase == .awake && !victim.config.pinned && (starving || !resident)
        }
        // The cheapest to lose: what waking it again would cost, times how often it is asked for.
        let costs = victims.map { name -> (String, Double, Duration) in
            let victim = models[name]!
            let level = sleepLevel(for: name)
            let cost = victim.wakeSeconds[level]! * (decayedDemand(victim, at: now) + 1e-6)
            return (name, cost, victim.lastUsed)
        }
        guard let victim = costs.min(by: { ($0.1, $0.2) < ($1.1, $1.2) })?.0 else { return nil }
        return .drain(victim, sleepLevel(for: victim), .eviction(for: target))
    }

    private func isTransitioning(_ phase: ModelPhase) -> Bool {
        switch phase {
        case .starting, .draining, .sleeping, .waking, .reloading: true
        default: false
        }
    }

    /// Level 1 where the host RAM budget holds the weights (and the policy allows), else level 2.
    func sleepLevel(for name: String) -> SleepLevel {
        let model = models[name]!
        if model.config.sleepLevel == .level2 || model.config.sleepLevel == .hostCache { return .discardWeights }
        let held = models.values.reduce(0) { $0 + ($1.config.name == name ? 0 : $1.hostBytes) }
        return held + model.config.weightsBytes <= configuration.hostMemoryBytes ? .offloadWeights : .discardWeights
    }

    private func perform(_ action: Action, gpu id: String) async {
        switch action {
        case .start(let name): await start(name, gpu: id)
        case .wake(let name): await wake(name, gpu: id)
        case .drain(let name, let level, let reason): await drainAndSleep(name, level: level, reason: reason, gpu: id)
        case .reload(let name): await reload(name, gpu: id)
        }
        publishLedger(gpu: id)
    }

    private func start(_ name: String, gpu id: String) async {
        let from = models[name]!.phase
        setPhase(name, .starting)
        gpus[id]!.transition = "start \(name)"
        defer { gpus[id]!.transition = nil }
        let started = clock.now
        let engine = models[name]!.engine
        do {
            // A cold start has its own deadline (the engine's readiness timeout), longer than a sleep or wake.
            let timeout = max(
                configuration.scheduler.transitionTimeoutSeconds, models[name]!.config.startTimeoutSeconds)
            try await watched("start \(name)", timeout: timeout) { () async throws(EngineError) in
                try await engine.start()
            }
        } catch {
            guard !Task.isCancelled else {
                // Shutting down: not a failure.
                await engine.stop()
                setPhase(name, .stopped)
                return
            }
            await fail(name, error.message, stopEngine: true)
            return
        }
        let seconds = (clock.now - started).seconds
        metrics.observeTransition(kind: "start", level: nil, seconds: seconds)
        models[name]!.consecutiveFailures = 0
        models[name]!.lastError = nil
        models[name]!.awakeSince = clock.now
        models[name]!.lastUsed = clock.now
        setPhase(name, .awake)
        emit(name, kind: "start", from: from, to: .awake, seconds: seconds)
        admitWaiters(name)
    }

    private func wake(_ name: String, gpu id: String) async {
        guard case .asleep(let level) = models[name]!.phase else { return }
        let from = models[name]!.phase
        setPhase(name, .waking(level))
        gpus[id]!.transition = "wake \(name)"
        defer { gpus[id]!.transition = nil }
        let started = clock.now
        let model = models[name]!
        let engine = model.engine
        let path = model.weightsPath
        let reload = model.reloadOnWake && level == .offloadWeights
        do {
            try await watched("wake \(name) from \(level)") { () async throws(EngineError) in
                try await engine.wake(from: level, weightsPath: path)
                if reload { try await engine.reloadWeights(from: path) }
            }
        } catch {
            await fail(name, error.message, stopEngine: true)
            return
        }
        let seconds = (clock.now - started).seconds
        metrics.observeTransition(kind: "wake", level: level.rawValue, seconds: seconds)
        models[name]!.wakeSeconds[level] = 0.5 * models[name]!.wakeSeconds[level]! + 0.5 * seconds
        models[name]!.consecutiveFailures = 0
        models[name]!.reloadOnWake = false
        models[name]!.awakeSince = clock.now
        setPhase(name, .awake)
        emit(name, kind: "wake", from: from, to: .awake, level: level.rawValue, seconds: seconds)
        admitWaiters(name)
    }

    /// Stops new requests to `name`, lets those in flight finish (up to the drain timeout), then sleeps it.
    private func drainAndSleep(_ name: String, level: SleepLevel, reason: SleepReason, gpu id: String) async {
        guard models[name]!.phase == .awake else { return }
        setPhase(name, .draining)
        gpus[id]!.transition = "drain \(name)"
        defer { gpus[id]!.transition = nil }
        emit(name, kind: "drain", from: .awake, to: .draining, level: level.rawValue, reason: reason.description)
        let drainStarted = clock.now
        let timeout = configuration.scheduler.drainTimeoutSeconds.map { Duration.seconds($0) }
        var timedOut = false
        // Woken by every release, queue change and tick (`tick()` runs every 100 ms), which also checks the deadline.
        while models[name]!.inFlight > 0 {
            if drainIsMoot(name, reason: reason) {
                setPhase(name, .awake)
                models[name]!.sleepIntent = nil
                emit(name, kind: "cancel_drain", from: .draining, to: .awake, reason: "no longer needed")
                admitWaiters(name)
                return
            }
            if let timeout, clock.now - drainStarted >= timeout {
                timedOut = true
                break
            }
            await nextChange()
        }
        if drainIsMoot(name, reason: reason) && reason != .idle {
            setPhase(name, .awake)
            emit(name, kind: "cancel_drain", from: .draining, to: .awake, reason: "no longer needed")
            admitWaiters(name)
            return
        }
        // Requests that arrived for an idle model while it drained cancel its sleep.
        if reason == .idle && !models[name]!.waiters.isEmpty {
            setPhase(name, .awake)
            models[name]!.sleepIntent = nil
            emit(name, kind: "cancel_drain", from: .draining, to: .awake, reason: "requests arrived")
            admitWaiters(name)
            return
        }
        let level = level == .discardWeights ? level : sleepLevel(for: name)
        setPhase(name, .sleeping(level))
        gpus[id]!.transition = "sleep \(name)"
        let mode: SleepMode = timedOut ? .abort : .wait
        let engine = models[name]!.engine
        let started = clock.now
        do {
            try await watched("sleep \(name) at \(level)") { () async throws(EngineError) in
                try await engine.sleep(level: level, mode: mode)
            }
        } catch {
            await fail(name, error.message, stopEngine: true)
            return
        }
        let seconds = (clock.now - started).seconds
        metrics.observeTransition(kind: "sleep", level: level.rawValue, seconds: seconds)
        models[name]!.sleepIntent = nil
        setPhase(name, .asleep(level))
        emit(
            name, kind: "sleep", from: .draining, to: .asleep(level), level: level.rawValue, seconds: seconds,
            reason: reason.description + (timedOut ? "; requests still running were aborted" : ""))
    }

    /// A drain for `reason` that nobody needs any more.
    private func drainIsMoot(_ name: String, reason: SleepReason) -> Bool {
        switch reason {
        case .eviction(let target): models[target]?.oldestWait == nil
        case .idle: !(models[name]?.waiters.isEmpty ?? true)
        case .admin, .lease: false
        }
    }

    private func reload(_ name: String, gpu id: String) async {
        models[name]!.reloadIntent = false
        guard models[name]!.phase == .awake else { return }
        setPhase(name, .draining)
        while models[name]!.inFlight > 0 { await nextChange() }
        setPhase(name, .reloading)
        gpus[id]!.transition = "reload \(name)"
        defer { gpus[id]!.transition = nil }
        let engine = models[name]!.engine
        let path = models[name]!.weightsPath
        let started = clock.now
        do {
            try await watched("reload \(name)") { () async throws(EngineError) in
                try await engine.reloadWeights(from: path)
            }
        } catch {
            await fail(name, error.message, stopEngine: true)
            return
        }
        let seconds = (clock.now - started).seconds
        metrics.observeTransition(kind: "reload", level: nil, seconds: seconds)
        setPhase(name, .awake)
        emit(name, kind: "reload", from: .reloading, to: .awake, seconds: seconds, reason: path)
        admitWaiters(name)
    }

    /// Runs one engine call under the watchdog: past the transition timeout it is cancelled and reported.
    private func watched(
        _ step: String, timeout: Double? = nil, _ operation: @escaping @Sendable () async throws(EngineError) -> Void
    ) async throws(EngineError) {
        let timeout = timeout ?? configuration.scheduler.transitionTimeoutSeconds
        let clock = self.clock
        let result: Result<Void, EngineError> = await withTaskGroup(of: Result<Void, EngineError>?.self) { group in
            group.addTask {
                do throws(EngineError) {
                    try await operation()
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                do { try await clock.sleep(for: .seconds(timeout)) } catch { return nil }
                return .failure(
                    EngineError(.timeout, "\(step) did not finish within \(timeout) s; the watchdog stopped it"))
            }
            defer { group.cancelAll() }
            while let next = await group.next() {
                if let next { return next }
            }
            return .failure(EngineError(.timeout, "\(step) was cancelled"))
        }
        try result.get()
    }

    /// Marks `name` failed: its engine is stopped (freeing its memory); waiting requests stay queued for a restart,
    /// unless it failed too often in a row, when they get 503.
    private func fail(_ name: String, _ reason: String, stopEngine: Bool) async {
        let from = models[name]!.phase
        logger.error("model failed", metadata: ["model": "\(name)", "error": "\(reason)", "phase": "\(from)"])
        if stopEngine { await models[name]!.engine.stop() }
        models[name]!.consecutiveFailures += 1
        models[name]!.lastError = reason
        models[name]!.sleepIntent = nil
        metrics.countFailure(name)
        if models[name]!.consecutiveFailures >= configuration.scheduler.maxConsecutiveFailures {
            setPhase(name, .failed(reason))
            failWaiters(
                name,
                GatewayError(
                    .unavailable,
                    "The model `\(name)` failed \(models[name]!.consecutiveFailures) times in a row and is not being "
                        + "restarted: \(reason)",
                    retryAfterSeconds: configuration.limits.retryAfterSeconds))
        } else {
            setPhase(name, .stopped)
        }
        emit(name, kind: "fail", from: from, to: models[name]!.phase, reason: reason)
        notifyChange()
    }

    private func setPhase(_ name: String, _ phase: ModelPhase) {
        models[name]!.phase = phase
        metrics.setPhase(name, phase.name)
        notifyChange()
    }

    private func emit(
        _ name: String, kind: String, from: ModelPhase, to: ModelPhase, level: Int? = nil, seconds: Double? = nil,
        reason: String? = nil
    ) {
        let event = TransitionEvent(
            time: Date().timeIntervalSince1970, model: name, gpu: models[name]!.config.gpu, kind: kind,
            from: from.name, to: to.name, level: level, durationSeconds: seconds, reason: reason)
        logger.info(
            "transition",
            metadata: [
                "model": "\(name)", "transition.kind": "\(kind)", "transition.from": "\(from.name)",
                "transition.to": "\(to.name)",
                "transition.duration_ms": "\(seconds.map { String(Int(($0 * 1000).rounded())) } ?? "-")",
            ])
        events.publish(event)
    }

    private func publishLedger(gpu id: String) {
        let ledger = self.ledger(gpu: id)
        metrics.setLedger(
            gpu: id, awakeBytes: ledger.awakeBytes, residueBytes: ledger.residueBytes,
            capacityBytes: ledger.capacityBytes)
        metrics.setHostBytes(models.values.reduce(0) { $0 + $1.hostBytes }, budget: configuration.hostMemoryBytes)
    }

    // MARK: - Admin

    /// What the admin API shows of one model.
    public struct ModelStatus: Sendable, Codable {
        public var name: String
        public var gpu: String
        public var state: String
        public var inFlight: Int
        public var queued: Int
        public var pinned: Bool
        public var gpuBytes: Int
        public var hostBytes: Int
        public var requestsPerSecond: Double
        public var wakeSeconds: [String: Double]
        public var weightsPath: String
        /// Where the gateway sends this model's requests.
        public var engineURL: String
        public var lastError: String?

        enum CodingKeys: String, CodingKey {
            case name, gpu, state, pinned
            case inFlight = "in_flight"
            case queued
            case gpuBytes = "gpu_bytes"
            case hostBytes = "host_bytes"
            case requestsPerSecond = "requests_per_second"
            case wakeSeconds = "wake_seconds"
            case weightsPath = "weights_path"
            case engineURL = "engine_url"
            case lastError = "last_error"
        }
    }

    /// One GPU's ledger.
    public struct Ledger: Sendable, Codable {
        public var gpu: String
        public var capacityBytes: Int
        public var awakeBytes: Int
        public var residueBytes: Int
        public var freeBytes: Int
        public var lease: String?
        public var transition: String?

        enum CodingKeys: String, CodingKey {
            case gpu, lease, transition
            case capacityBytes = "capacity_bytes"
            case awakeBytes = "awake_bytes"
            case residueBytes = "residue_bytes"
            case freeBytes = "free_bytes"
        }
    }

    public func statuses() async -> [ModelStatus] {
        let now = clock.now
        var result: [ModelStatus] = []
        for name in order {
            let model = models[name]!
            let url = await model.engine.baseURL()
            result.append(
                ModelStatus(
                    name: name, gpu: model.config.gpu, state: model.phase.name, inFlight: model.inFlight,
                    queued: model.waiters.count, pinned: model.config.pinned, gpuBytes: model.gpuBytes,
                    hostBytes: model.hostBytes, requestsPerSecond: decayedDemand(model, at: now),
                    wakeSeconds: ["1": model.wakeSeconds[.offloadWeights]!, "2": model.wakeSeconds[.discardWeights]!],
                    weightsPath: model.weightsPath, engineURL: url, lastError: model.lastError))
        }
        return result
    }

    public func ledger(gpu id: String) -> Ledger {
        let gpu = gpus[id]!
        let onGPU = models.values.filter { $0.config.gpu == id }
        let awake = onGPU.filter { if case .asleep = $0.phase { false } else { true } }.reduce(0) { $0 + $1.gpuBytes }
        let residue = onGPU.filter { if case .asleep = $0.phase { true } else { false } }.reduce(0) { $0 + $1.gpuBytes }
        return Ledger(
            gpu: id, capacityBytes: gpu.config.memoryBytes, awakeBytes: awake, residueBytes: residue,
            freeBytes: gpu.config.memoryBytes - awake - residue, lease: gpu.lease?.rawValue, transition: gpu.transition)
    }

    public func ledgers() -> [Ledger] { configuration.gpus.map { ledger(gpu: $0.id) } }

    public func hostMemoryInUse() -> Int { models.values.reduce(0) { $0 + $1.hostBytes } }

    public func state(of name: String) -> ModelPhase? { models[name]?.phase }

    public func modelNames() -> [String] { order }

    /// Puts `name` to sleep (at `level`, or the level host RAM allows) and waits until it sleeps.
    public func sleep(_ name: String, level: SleepLevel?) async throws(GatewayError) -> ModelPhase {
        guard models[name] != nil else { throw GatewayError(.notFound, "no model `\(name)`") }
        if case .asleep = models[name]!.phase { return models[name]!.phase }
        models[name]!.sleepIntent = (.admin, level)
        models[name]!.wakeIntent = nil
        signal(models[name]!.config.gpu)
        return try await waitUntil(name, "asleep") { phase in
            switch phase {
            case .asleep, .stopped, .failed: true
            default: false
            }
        }
    }

    /// Wakes `name` (starting it if it is stopped or failed) and waits until it is awake.
    public func wake(_ name: String) async throws(GatewayError) -> ModelPhase {
        guard models[name] != nil else { throw GatewayError(.notFound, "no model `\(name)`") }
        if models[name]!.phase == .awake { return .awake }
        if let lease = gpus[models[name]!.config.gpu]!.lease {
            throw GatewayError(
                .unavailable, "GPU \(models[name]!.config.gpu) is leased (\(lease.rawValue)); release it first")
        }
        if case .failed = models[name]!.phase {
            models[name]!.consecutiveFailures = 0
            setPhase(name, .stopped)
        }
        models[name]!.sleepIntent = nil
        models[name]!.wakeIntent = models[name]!.wakeIntent ?? clock.now
        signal(models[name]!.config.gpu)
        return try await waitUntil(name, "awake") { phase in
            switch phase {
            case .awake, .failed: true
            default: false
            }
        }
    }

    /// Reloads `name`'s weights from `path`: at once when awake, on the next wake when asleep.
    public func reload(_ name: String, path: String) async throws(GatewayError) -> ModelPhase {
        guard models[name] != nil else { throw GatewayError(.notFound, "no model `\(name)`") }
        models[name]!.weightsPath = path
        switch models[name]!.phase {
        case .awake, .draining, .waking, .starting:
            models[name]!.reloadIntent = true
            signal(models[name]!.config.gpu)
            try await waitFor(name, "reloaded") { model in !model.reloadIntent && model.phase != .reloading }
            return models[name]!.phase
        case .asleep(.offloadWeights):
            models[name]!.reloadOnWake = true
            return models[name]!.phase
        default:
            return models[name]!.phase
        }
    }

    /// Leases a GPU (or every GPU) to another job: every model on it sleeps; requests queue or are refused until
    /// `releaseLease`.
    public func lease(gpu: String?, mode: LeaseMode) async throws(GatewayError) -> [Ledger] {
        let ids = try leaseTargets(gpu)
        for id in ids {
            if gpus[id]!.lease == nil {
                gpus[id]!.leasedAwake = order.filter { models[$0]!.config.gpu == id && models[$0]!.phase == .awake }
            }
            gpus[id]!.lease = mode
            for name in order where models[name]!.config.gpu == id {
                models[name]!.wakeIntent = nil
                if models[name]!.phase == .awake || isTransitioning(models[name]!.phase) {
                    models[name]!.sleepIntent = (.lease, nil)
                }
                if mode == .refuse {
                    failWaiters(
                        name,
                        GatewayError(
                            .unavailable, "GPU \(id) was leased to another job.",
                            retryAfterSeconds: configuration.limits.retryAfterSeconds))
                }
            }
            emitGPU(id, kind: "lease", reason: mode.rawValue)
            signal(id)
        }
        for name in order where ids.contains(models[name]!.config.gpu) {
            _ = try await waitUntil(name, "asleep for the lease") { phase in
                switch phase {
                case .asleep, .stopped, .failed: true
                default: false
                }
            }
        }
        return ids.map { ledger(gpu: $0) }
    }

    /// Ends a lease: the models awake before it wake again and waiting requests are served.
    public func releaseLease(gpu: String?) throws(GatewayError) -> [Ledger] {
        let ids = try leaseTargets(gpu)
        for id in ids where gpus[id]!.lease != nil {
            gpus[id]!.lease = nil
            let now = clock.now
            for name in gpus[id]!.leasedAwake { models[name]!.wakeIntent = now }
            gpus[id]!.leasedAwake = []
            emitGPU(id, kind: "release", reason: nil)
            signal(id)
        }
        return ids.map { ledger(gpu: $0) }
    }

    private func leaseTargets(_ gpu: String?) throws(GatewayError) -> [String] {
        guard let gpu else { return configuration.gpus.map(\.id) }
        guard gpus[gpu] != nil else { throw GatewayError(.notFound, "no GPU `\(gpu)`") }
        return [gpu]
    }

    private func emitGPU(_ id: String, kind: String, reason: String?) {
        events.publish(
            TransitionEvent(
                time: Date().timeIntervalSince1970, model: "", gpu: id, kind: kind, from: "", to: "", reason: reason))
    }

    /// Waits until `name`'s phase satisfies `done`, at most a transition timeout plus the drain timeout.
    private func waitUntil(
        _ name: String, _ goal: String, _ done: (ModelPhase) -> Bool
    ) async throws(GatewayError) -> ModelPhase {
        try await waitFor(name, goal) { done($0.phase) }
        if case .failed(let reason) = models[name]!.phase, goal != "asleep" {
            throw GatewayError(.unavailable, "`\(name)` failed: \(reason)")
        }
        return models[name]!.phase
    }

    private func waitFor(
        _ name: String, _ goal: String, _ done: (ModelRuntime) -> Bool
    ) async throws(GatewayError) {
        let limit =
            configuration.scheduler.transitionTimeoutSeconds * 3 + (configuration.scheduler.drainTimeoutSeconds ?? 600)
        let deadline = clock.now + .seconds(limit)
        while !done(models[name]!) {
            guard clock.now < deadline, !Task.isCancelled else {
                throw GatewayError(
                    .unavailable, "`\(name)` is not \(goal) after \(Int(limit)) s; it is \(models[name]!.phase.name)")
            }
            await nextChange()
        }
    }

    /// True once every engine has been started once (awake or put to sleep), or failed.
    public var isStartedUp: Bool { gpusStartedUp.count == gpus.count }

    /// Returns once every engine has been started once (awake or put to sleep), or failed.
    public func waitUntilStartedUp() async {
        while gpusStartedUp.count < gpus.count && !Task.isCancelled { await nextChange() }
    }

    /// Marks models to wake after start (preloaded models are started awake by `startUp`).
    public func wakeIntent(_ name: String) {
        models[name]?.wakeIntent = clock.now
        if let gpu = models[name]?.config.gpu { signal(gpu) }
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
