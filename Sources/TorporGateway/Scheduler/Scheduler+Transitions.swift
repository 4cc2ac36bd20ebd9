import Foundation
import Logging
import TorporEngine

/// The transitions a GPU's worker performs — start, wake, drain and sleep, reload — each engine call under the
/// watchdog, and what a failure does.
extension Scheduler {
    /// Performs the transitions of one GPU, one at a time, as the policy chooses them, until cancelled.
    public func runGPU(_ id: String) async {
        guard let signals = gpus[id]?.signals else { return }
        signal(id)
        for await _ in signals {
            if Task.isCancelled { break }
            while !Task.isCancelled, let transition = nextTransition(gpu: id) {
                await perform(transition, gpu: id)
            }
        }
    }

    /// The next transition for a GPU, as the policy sees the scheduler's state now.
    func nextTransition(gpu id: String) -> SchedulingPolicy.Transition? {
        guard let gpu = gpus[id]?.state else { return nil }
        return policy.nextTransition(
            on: gpu, models: order.compactMap { models[$0] }, now: clock.now, shuttingDown: shuttingDown)
    }

    private func perform(_ transition: SchedulingPolicy.Transition, gpu id: String) async {
        switch transition {
        case .start(let name): await start(name, gpu: id)
        case .wake(let name): await wake(name, gpu: id)
        case .drain(let name, let level, let reason): await drainAndSleep(name, level: level, reason: reason, gpu: id)
        case .reload(let name): await reload(name, gpu: id)
        case .retire(let name): await retire(name, gpu: id)
        }
        gpus[id]?.state.transition = nil
        publishLedger(gpu: id)
    }

    private func start(_ name: String, gpu id: String) async {
        guard let model = models[name], let engine = engines[name] else { return }
        let from = model.phase
        setPhase(name, .starting)
        gpus[id]?.state.transition = "start \(name)"
        let started = clock.now
        do {
            // A cold start has its own deadline (the engine's readiness timeout), longer than a sleep or wake.
            let timeout = max(configuration.scheduler.transitionTimeoutSeconds, model.config.startTimeoutSeconds)
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
        let seconds = (clock.now - started) / .seconds(1)
        metrics.observeTransition(kind: "start", level: nil, seconds: seconds)
        let now = clock.now
        modify(name) { model in model.recordStarted(at: now) }
        setPhase(name, .awake)
        emit(name, kind: "start", from: from, to: .awake, seconds: seconds)
        admitQueue(name)
    }

    private func wake(_ name: String, gpu id: String) async {
        guard let model = models[name], case .asleep(let level) = model.phase, let engine = engines[name] else {
            return
        }
        setPhase(name, .waking(level))
        gpus[id]?.state.transition = "wake \(name)"
        let started = clock.now
        let path = model.weightsPath
        let reload = model.reloadOnWake && level == .offloadWeights
        do {
            try await watched("wake \(name) from \(level)") { () async throws(EngineError) in
                try await engine.wake(from: level, weightsPath: path)
                if reload { try await engine.reloadWeights(from: path) }
            }
        } catch {
            await failUnlessShuttingDown(name, error)
            return
        }
        let seconds = (clock.now - started) / .seconds(1)
        metrics.observeTransition(kind: "wake", level: level.rawValue, seconds: seconds)
        let now = clock.now
        modify(name) { model in
            model.wakeSeconds[level] = 0.5 * (model.wakeSeconds[level] ?? seconds) + 0.5 * seconds
            model.consecutiveFailures = 0
            model.reloadOnWake = false
            model.awakeSince = now
        }
        setPhase(name, .awake)
        emit(name, kind: "wake", from: model.phase, to: .awake, level: level.rawValue, seconds: seconds)
        admitQueue(name)
    }

    /// Stops new requests to `name`, lets those in flight finish (up to the drain timeout), then sleeps it.
    private func drainAndSleep(_ name: String, level: SleepLevel, reason: SleepReason, gpu id: String) async {
        guard models[name]?.phase == .awake, let engine = engines[name] else { return }
        setPhase(name, .draining)
        gpus[id]?.state.transition = "drain \(name)"
        emit(name, kind: "drain", from: .awake, to: .draining, level: level.rawValue, reason: reason.description)
        let drainStarted = clock.now
        var mode = SleepMode.wait
        // Woken by every release, queue change and tick (every 100 ms), which also moves the drain deadline along.
        drain: while let model = models[name] {
            switch policy.drainStep(
                model, reason: reason, models: order.compactMap { models[$0] }, started: drainStarted, now: clock.now)
            {
            case .wait:
                // Shutting down: the engine is about to be stopped, asleep or not.
                guard !Task.isCancelled else { return }
                await nextChange()
            case .cancel(let why):
                modify(name) { $0.sleepIntent = nil }
                setPhase(name, .awake)
                emit(name, kind: "cancel_drain", from: .draining, to: .awake, reason: why)
                admitQueue(name)
                return
            case .sleep(let chosen):
                mode = chosen
                break drain
            }
        }
        // The level may have changed while it drained (another model took the host RAM).
        let level =
            level == .discardWeights
            ? level : models[name].map { policy.sleepLevel(for: $0, among: order.compactMap { models[$0] }) } ?? level
        setPhase(name, .sleeping(level))
        gpus[id]?.state.transition = "sleep \(name)"
        let started = clock.now
        let sleepMode = mode
        do {
            try await watched("sleep \(name) at \(level)") { () async throws(EngineError) in
                try await engine.sleep(level: level, mode: sleepMode)
            }
        } catch {
            await failUnlessShuttingDown(name, error)
            return
        }
        let seconds = (clock.now - started) / .seconds(1)
        metrics.observeTransition(kind: "sleep", level: level.rawValue, seconds: seconds)
        setPhase(name, .asleep(level))
        emit(
            name, kind: "sleep", from: .draining, to: .asleep(level), level: level.rawValue, seconds: seconds,
            reason: reason.description + (mode == .abort ? "; requests still running were aborted" : ""))
    }

    private func reload(_ name: String, gpu id: String) async {
        modify(name) { $0.reloadIntent = false }
        guard models[name]?.phase == .awake, let engine = engines[name] else { return }
        setPhase(name, .draining)
        while let model = models[name], model.inFlight > 0, !Task.isCancelled { await nextChange() }
        setPhase(name, .reloading)
        gpus[id]?.state.transition = "reload \(name)"
        let path = models[name]?.weightsPath ?? name
        let started = clock.now
        do {
            try await watched("reload \(name)") { () async throws(EngineError) in
                try await engine.reloadWeights(from: path)
            }
        } catch {
            await failUnlessShuttingDown(name, error)
            return
        }
        let seconds = (clock.now - started) / .seconds(1)
        metrics.observeTransition(kind: "reload", level: nil, seconds: seconds)
        setPhase(name, .awake)
        emit(name, kind: "reload", from: .reloading, to: .awake, seconds: seconds, reason: path)
        admitQueue(name)
    }

    /// Runs one engine call under the watchdog: past the transition timeout it is cancelled and reported.
    func watched(
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

    /// A failed engine call: a failure, unless it was cancelled because the gateway is shutting down (the engine is
    /// stopped then anyway).
    func failUnlessShuttingDown(_ name: String, _ error: EngineError) async {
        guard !(Task.isCancelled && shuttingDown) else { return }
        await fail(name, error.message, stopEngine: true)
    }

    /// Marks `name` failed: its engine is stopped (freeing its memory); the restart policy decides when it starts
    /// again, or gives it up, when its queued requests get 503.
    func fail(_ name: String, _ reason: String, stopEngine: Bool) async {
        guard let model = models[name] else { return }
        logger.error("model failed", metadata: ["model": "\(name)", "error": "\(reason)", "phase": "\(model.phase)"])
        if stopEngine { await engines[name]?.stop() }
        guard let current = models[name] else { return }
        let failed = policy.failing(current, reason: reason, at: clock.now)
        models[name] = failed
        metrics.countFailure(name)
        metrics.setPhase(name, failed.phase.name)
        if case .failed = failed.phase {
            failQueue(
                name,
                GatewayError(
                    .unavailable,
                    "The model `\(name)` failed \(failed.consecutiveFailures) times in a row and is not being "
                        + "restarted. \(GatewayError.operatorsSeeWhy)",
                    retryAfterSeconds: configuration.limits.retryAfterSeconds))
        } else {
            logger.warning(
                "restarting a failed engine",
                metadata: [
                    "model": "\(name)", "attempt": "\(failed.consecutiveFailures + 1)",
                    "delay_s": "\(policy.restarts.delay(afterFailures: failed.consecutiveFailures) / .seconds(1))",
                ])
        }
        emit(name, kind: "fail", from: model.phase, to: failed.phase, reason: reason)
        notifyChange()
    }

    /// Applies `change` to `name`'s state when the model exists.
    func modify(_ name: String, _ change: (inout ModelState) -> Void) {
        guard var model = models[name] else { return }
        change(&model)
        models[name] = model
    }

    func setPhase(_ name: String, _ phase: ModelPhase) {
        modify(name) { $0.enter(phase) }
        metrics.setPhase(name, phase.name)
        notifyChange()
    }

    func emit(
        _ name: String, kind: String, from: ModelPhase, to: ModelPhase, level: Int? = nil, seconds: Double? = nil,
        reason: String? = nil
    ) {
        let event = TransitionEvent(
            time: Date().timeIntervalSince1970, model: name, gpu: models[name]?.gpu ?? "", kind: kind,
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

    func publishLedger(gpu id: String) {
        guard let ledger = ledger(gpu: id) else { return }
        metrics.setLedger(
            gpu: id, awakeBytes: ledger.awakeBytes, residueBytes: ledger.residueBytes,
            capacityBytes: ledger.capacityBytes)
        metrics.setHostBytes(hostMemoryInUse(), budget: configuration.hostMemoryBytes)
    }
}
