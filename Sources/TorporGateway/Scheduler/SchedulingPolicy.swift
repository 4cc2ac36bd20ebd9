import Foundation
import TorporEngine

/// The scheduler's decisions as pure functions of its state: which request is admitted, queued or refused, which
/// transition a GPU performs next (start, wake, eviction, drain, reload), at which level a model sleeps, which
/// requests have waited too long, which models have idled past their TTL, and when a failed engine may start again.
///
/// The same code decides at start-up, in steady state and while shutting down (the async-http-client
/// connection-pool pattern: state in, actions out). The `Scheduler` actor keeps the state and performs what comes
/// out; tests call these functions directly, without actors, engines or time.
struct SchedulingPolicy: Sendable {
    let settings: GatewayConfiguration.SchedulerSettings
    let limits: GatewayConfiguration.Limits
    let hostMemoryBytes: Int
    let restarts: RestartPolicy

    init(_ configuration: GatewayConfiguration) {
        settings = configuration.scheduler
        limits = configuration.limits
        hostMemoryBytes = configuration.hostMemoryBytes
        restarts = RestartPolicy(maximumConsecutiveFailures: configuration.scheduler.maxConsecutiveFailures)
    }

    /// One transition for a GPU's worker.
    enum Transition: Equatable, Sendable {
        case start(String)
        case wake(String)
        case drain(String, SleepLevel, SleepReason)
        case reload(String)
        /// Stop the engine of a model a reload removed or changed (`ModelState.retirement`), after a drain.
        case retire(String)
    }

    /// What happens to a request that the model cannot refuse outright.
    enum Admission: Equatable, Sendable {
        /// Awake: in flight at once.
        case admit
        /// Waits in the model's queue for a wake.
        case enqueue
        /// The queue is full.
        case queueFull
    }

    // MARK: - Requests

    /// Why a request for `model` is refused before it counts as demand, or nil.
    func refusal(of model: ModelState, on gpu: GPUState, shuttingDown: Bool) -> GatewayError? {
        if model.retirement == .remove {
            return GatewayError.removedModel(model.name)
        }
        if shuttingDown {
            return GatewayError(
                .unavailable, "The gateway is shutting down; `\(model.name)` takes no new requests.",
                retryAfterSeconds: limits.retryAfterSeconds)
        }
        if gpu.lease == .refuse {
            return GatewayError(
                .unavailable,
                "GPU \(gpu.id) is leased to another job; `\(model.name)` is asleep until the lease is released.",
                retryAfterSeconds: limits.retryAfterSeconds)
        }
        if case .failed = model.phase {
            return GatewayError(
                .unavailable,
                "The model `\(model.name)` has failed and is not being restarted. \(GatewayError.operatorsSeeWhy)",
                retryAfterSeconds: limits.retryAfterSeconds)
        }
        return nil
    }

    func admission(of model: ModelState, on gpu: GPUState) -> Admission {
        if model.phase == .awake && gpu.lease == nil && model.retirement == nil { return .admit }
        return model.queue.count < limits.queueDepth ? .enqueue : .queueFull
    }

    /// The request rate at `now`: the estimate decays with the configured half-life.
    func demand(of model: ModelState, at now: Duration) -> Double {
        let elapsed = (now - model.demandUpdated) / .seconds(1)
        return model.demandRate * exp(-elapsed * log(2) / settings.demandHalfLifeSeconds)
    }

    /// Counts one request in the model's demand.
    func recordRequest(_ model: inout ModelState, at now: Duration) {
        model.demandRate = demand(of: model, at: now) + log(2) / settings.demandHalfLifeSeconds
        model.demandUpdated = now
        model.lastUsed = now
    }

    // MARK: - Time

    /// The queued requests of `model` whose deadline has passed.
    func expiredRequests(of model: ModelState, at now: Duration) -> [UInt64] {
        model.queue.filter { $0.deadline <= now }.map(\.id)
    }

    /// The answer to a request that waited its whole queue timeout.
    func expiry(of model: ModelState) -> GatewayError {
        GatewayError(
            .unavailable,
            "`\(model.name)` could not be woken within \(limits.queueTimeoutSeconds) s (it is \(model.phase.name))."
                + (model.lastError == nil ? "" : " \(GatewayError.operatorsSeeWhy)"),
            retryAfterSeconds: limits.retryAfterSeconds)
    }

    /// Whether an awake model has idled past its TTL and should be put to sleep.
    func idleSleepIsDue(_ model: ModelState, at now: Duration) -> Bool {
        guard let ttl = model.config.idleTTLSeconds else { return false }
        return model.phase == .awake && model.inFlight == 0 && model.queue.isEmpty && model.sleepIntent == nil
            && now - model.lastUsed >= .seconds(ttl)
    }

    // MARK: - Transitions

    /// The next transition for `gpu`, or nil when there is nothing to do now.
    ///
    /// In order: sleeps someone asked for (admin, lease, idle), admin reloads; then, unless the GPU is leased,
    /// requests waiting (the model waiting longest first: no request waits behind younger ones); engines to be
    /// started once and put to sleep (at start-up, after a failure), where they fit without evicting anyone; wakes
    /// asked for without a request (preloads, admin wakes, a lease's release). A start or wake that does not fit
    /// makes room by draining the awake model that is cheapest to lose.
    /// - Parameters:
    ///   - models: every model, in configuration order (host RAM is shared by all GPUs).
    func nextTransition(
        on gpu: GPUState, models: [ModelState], now: Duration, shuttingDown: Bool
    ) -> Transition? {
        guard !shuttingDown else { return nil }
        let local = models.filter { $0.gpu == gpu.id }
        if let model = local.first(where: { $0.retirement != nil }) {
            return .retire(model.name)
        }
        if let model = local.first(where: { $0.sleepIntent != nil && $0.phase == .awake }),
            let intent = model.sleepIntent
        {
            return .drain(model.name, intent.level ?? sleepLevel(for: model, among: models), intent.reason)
        }
        if let model = local.first(where: { $0.reloadIntent && $0.phase == .awake }) { return .reload(model.name) }
        guard gpu.lease == nil else { return nil }

        let startable = local.filter { ($0.isAsleep || $0.phase == .stopped) && $0.retirement == nil }
        let requested = startable.filter { !$0.queue.isEmpty }.sorted { oldestFirst($0, $1) }
        if let target = requested.first {
            return place(target, on: gpu, local: local, models: models, now: now, mayEvictPreloaded: true)
        }
        let used = local.reduce(0) { $0 + $1.gpuBytes }
        if let target = startable.first(where: {
            $0.phase == .stopped && $0.bootstrapSince != nil && mayRestart($0, at: now)
                && used + $0.config.awakeBytes <= gpu.config.memoryBytes
        }) {
            return .start(target.name)
        }
        let intended = startable.filter { $0.wakeIntent != nil && mayRestart($0, at: now) }.sorted {
            oldestFirst($0, $1)
        }
        if let target = intended.first {
            // A preload does not undo another model's preload.
            return place(
                target, on: gpu, local: local, models: models, now: now, mayEvictPreloaded: !target.preloading)
        }
        return nil
    }

    /// Starts or wakes `target` where it fits, else drains the victim that is cheapest to lose; nil when every
    /// model in the way is protected.
    private func place(
        _ target: ModelState, on gpu: GPUState, local: [ModelState], models: [ModelState], now: Duration,
        mayEvictPreloaded: Bool
    ) -> Transition? {
        let used = local.reduce(0) { $0 + $1.gpuBytes }
        if used + target.config.awakeBytes - target.gpuBytes <= gpu.config.memoryBytes {
            return target.phase == .stopped ? .start(target.name) : .wake(target.name)
        }
        let starving = now - (target.oldestWait ?? now) >= .seconds(settings.starvationBoundSeconds)
        let victims = local.filter { victim in
            // Residency protects a model only while it is serving: an idle one costs nothing to put to sleep.
            let resident = now - victim.awakeSince < .seconds(settings.minResidencySeconds) && victim.inFlight > 0
            return victim.name != target.name && victim.phase == .awake && !victim.config.pinned
                && (mayEvictPreloaded || !victim.config.preload) && (starving || !resident)
        }
        // The cheapest to lose: what waking it again would cost, times how often it is asked for.
        let cheapest = victims.min { a, b in
            (lossCost(a, among: models, at: now), a.lastUsed) < (lossCost(b, among: models, at: now), b.lastUsed)
        }
        guard let victim = cheapest else { return nil }
        return .drain(victim.name, sleepLevel(for: victim, among: models), .eviction(for: target.name))
    }

    private func lossCost(_ model: ModelState, among models: [ModelState], at now: Duration) -> Double {
        let level = sleepLevel(for: model, among: models)
        return (model.wakeSeconds[level] ?? 0) * (demand(of: model, at: now) + 1e-6)
    }

    private func oldestFirst(_ a: ModelState, _ b: ModelState) -> Bool {
        (a.oldestWait ?? .zero) < (b.oldestWait ?? .zero)
    }

    /// A stopped model after a failure waits out its restart delay unless requests wait for it.
    private func mayRestart(_ model: ModelState, at now: Duration) -> Bool {
        guard model.phase == .stopped, let notBefore = model.restartNotBefore else { return true }
        return now >= notBefore || !model.queue.isEmpty
    }

    /// Level 1 where the host RAM budget holds the weights (and the model's policy allows), else level 2.
    func sleepLevel(for model: ModelState, among models: [ModelState]) -> SleepLevel {
        if model.config.sleepLevel == .level2 || model.config.sleepLevel == .hostCache { return .discardWeights }
        let held = models.reduce(0) { $0 + ($1.name == model.name ? 0 : $1.hostBytes) }
        return held + model.config.weightsBytes <= hostMemoryBytes ? .offloadWeights : .discardWeights
    }

    // MARK: - Drains

    /// What a drain does next.
    enum DrainStep: Equatable, Sendable {
        /// Requests are still in flight: wait for the next change.
        case wait
        /// Nobody needs the sleep any more: the model stays awake.
        case cancel(String)
        /// Put it to sleep: `.wait` once nothing is in flight, `.abort` past the drain timeout.
        case sleep(SleepMode)
    }

    /// The next step of a drain of `model` for `reason` that began at `started`.
    /// - Parameters:
    ///   - models: every model (an eviction is moot once its target no longer waits).
    func drainStep(
        _ model: ModelState, reason: SleepReason, models: [ModelState], started: Duration, now: Duration
    ) -> DrainStep {
        let moot: Bool
        switch reason {
        case .eviction(let target): moot = models.first { $0.name == target }?.oldestWait == nil
        // Requests that arrived for an idle model while it drained cancel its sleep.
        case .idle: moot = !model.queue.isEmpty
        case .admin, .lease: moot = false
        }
        if model.inFlight > 0 {
            if moot { return .cancel("no longer needed") }
            if let timeout = settings.drainTimeoutSeconds, now - started >= .seconds(timeout) { return .sleep(.abort) }
            return .wait
        }
        if moot { return .cancel(reason == .idle ? "requests arrived" : "no longer needed") }
        return .sleep(.wait)
    }

    // MARK: - Engines changed behind the gateway's back

    /// What to do about an engine whose own sleep state disagrees with the model's.
    enum Reconciliation: Equatable, Sendable {
        /// Asleep although the model is awake (someone called `/sleep`): recorded asleep at this level, so that
        /// the next request wakes it (reloading the weights at level 2) instead of being sent to a sleeping engine.
        case recordAsleep(SleepLevel)
        /// Awake although the model is asleep (someone called `/wake_up`): put back to sleep at the model's level,
        /// since its GPU memory is promised to others.
        case putBackToSleep(SleepLevel)
    }

    /// The reconciliation of `model` with what its engine says (`observed`), nil when they agree. Only settled
    /// models are compared: in any other phase the gateway itself is changing the engine's state.
    func reconciliation(of model: ModelState, observed: EngineSleepState) -> Reconciliation? {
        switch (model.phase, observed) {
        case (.awake, .weightsOffloaded): .recordAsleep(.offloadWeights)
        case (.awake, .discardAll), (.asleep(.offloadWeights), .discardAll): .recordAsleep(.discardWeights)
        case (.asleep(let level), .awake): .putBackToSleep(level)
        default: nil
        }
    }

    // MARK: - Failures

    /// What a failure does to `model`: given up (`.failed`, requests answered 503) after too many in a row, else
    /// stopped, to be started again after the restart policy's delay (at once when requests wait).
    func failing(_ model: ModelState, reason: String, at now: Duration) -> ModelState {
        var model = model
        model.consecutiveFailures += 1
        model.lastError = reason
        if restarts.givesUp(afterFailures: model.consecutiveFailures) {
            model.enter(.failed(reason))
            model.restartNotBefore = nil
            model.bootstrapSince = nil
            model.wakeIntent = nil
        } else {
            model.enter(.stopped)
            model.restartNotBefore = now + restarts.delay(afterFailures: model.consecutiveFailures)
            // Brought back to sleep, unless someone wants it awake.
            if model.wakeIntent == nil { model.bootstrapSince = model.bootstrapSince ?? now }
        }
        return model
    }
}
