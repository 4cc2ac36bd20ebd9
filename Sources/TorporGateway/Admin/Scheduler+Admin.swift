import Foundation
public import TorporEngine

/// What the admin API asks of the scheduler: sleeps, wakes and reloads on demand, and GPU leases. Each records an
/// intent that the policy turns into transitions, then waits for the outcome.
extension Scheduler {
    /// Puts `name` to sleep (at `level`, or the level host RAM allows) and waits until it sleeps.
    public func sleep(_ name: String, level: SleepLevel?) async throws(GatewayError) -> ModelPhase {
        let model = try existing(name)
        if model.isAsleep { return model.phase }
        modify(name) { model in
            model.sleepIntent = .init(reason: .admin, level: level)
            model.wakeIntent = nil
        }
        signal(model.gpu)
        return try await waitUntil(name, "asleep") { phase in
            switch phase {
            case .asleep, .stopped, .failed: true
            default: false
            }
        }
    }

    /// Wakes `name` (starting it if it is stopped or failed) and waits until it is awake.
    public func wake(_ name: String) async throws(GatewayError) -> ModelPhase {
        let model = try existing(name)
        if model.phase == .awake { return .awake }
        if let lease = gpus[model.gpu]?.state.lease {
            throw GatewayError(.unavailable, "GPU \(model.gpu) is leased (\(lease.rawValue)); release it first")
        }
        if case .failed = model.phase {
            modify(name) { model in
                model.consecutiveFailures = 0
                model.restartNotBefore = nil
            }
            setPhase(name, .stopped)
        }
        let now = clock.now
        modify(name) { model in
            model.sleepIntent = nil
            model.wakeIntent = model.wakeIntent ?? now
        }
        signal(model.gpu)
        return try await waitUntil(name, "awake") { phase in
            switch phase {
            case .awake, .failed: true
            default: false
            }
        }
    }

    /// Reloads `name`'s weights from `path`: at once when awake, on the next wake when asleep.
    public func reload(_ name: String, path: String) async throws(GatewayError) -> ModelPhase {
        let model = try existing(name)
        modify(name) { $0.weightsPath = path }
        switch model.phase {
        case .awake, .draining, .waking, .starting:
            modify(name) { $0.reloadIntent = true }
            signal(model.gpu)
            try await waitFor(name, "reloaded") { model in !model.reloadIntent && model.phase != .reloading }
            return models[name]?.phase ?? model.phase
        case .asleep(.offloadWeights):
            modify(name) { $0.reloadOnWake = true }
            return model.phase
        default:
            return model.phase
        }
    }

    /// Leases a GPU (or every GPU) to another job: every model on it sleeps; requests queue or are refused until
    /// `releaseLease`.
    public func lease(gpu: String?, mode: LeaseMode) async throws(GatewayError) -> [Ledger] {
        let ids = try leaseTargets(gpu)
        for id in ids {
            let local = order.filter { models[$0]?.gpu == id }
            if gpus[id]?.state.lease == nil {
                gpus[id]?.state.leasedAwake = local.filter { models[$0]?.phase == .awake }
            }
            gpus[id]?.state.lease = mode
            for name in local {
                modify(name) { model in
                    model.wakeIntent = nil
                    if model.phase == .awake || model.isTransitioning { model.sleepIntent = .init(reason: .lease) }
                }
                if mode == .refuse {
                    failQueue(
                        name,
                        GatewayError(
                            .unavailable, "GPU \(id) was leased to another job.",
                            retryAfterSeconds: configuration.limits.retryAfterSeconds))
                }
            }
            emitGPU(id, kind: "lease", reason: mode.rawValue)
            signal(id)
        }
        for name in order where ids.contains(models[name]?.gpu ?? "") {
            _ = try await waitUntil(name, "asleep for the lease") { phase in
                switch phase {
                case .asleep, .stopped, .failed: true
                default: false
                }
            }
        }
        return ids.compactMap { ledger(gpu: $0) }
    }

    /// Ends a lease: the models awake before it wake again and waiting requests are served.
    public func releaseLease(gpu: String?) throws(GatewayError) -> [Ledger] {
        let ids = try leaseTargets(gpu)
        let now = clock.now
        for id in ids where gpus[id]?.state.lease != nil {
            gpus[id]?.state.lease = nil
            for name in gpus[id]?.state.leasedAwake ?? [] { modify(name) { $0.wakeIntent = now } }
            gpus[id]?.state.leasedAwake = []
            emitGPU(id, kind: "release", reason: nil)
            signal(id)
        }
        return ids.compactMap { ledger(gpu: $0) }
    }

    private func existing(_ name: String) throws(GatewayError) -> ModelState {
        guard let model = models[name] else { throw GatewayError(.notFound, "no model `\(name)`") }
        return model
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

    /// Waits until `name`'s phase satisfies `done`, at most three transition timeouts plus the drain timeout.
    private func waitUntil(
        _ name: String, _ goal: String, _ done: (ModelPhase) -> Bool
    ) async throws(GatewayError) -> ModelPhase {
        try await waitFor(name, goal) { done($0.phase) }
        let phase = models[name]?.phase ?? .stopped
        if case .failed(let reason) = phase, goal != "asleep" {
            throw GatewayError(.unavailable, "`\(name)` failed: \(reason)")
        }
        return phase
    }

    private func waitFor(_ name: String, _ goal: String, _ done: (ModelState) -> Bool) async throws(GatewayError) {
        let limit =
            configuration.scheduler.transitionTimeoutSeconds * 3 + (configuration.scheduler.drainTimeoutSeconds ?? 600)
        let deadline = clock.now + .seconds(limit)
        while let model = models[name], !done(model) {
            guard !shuttingDown else {
                throw GatewayError(
                    .unavailable, "The gateway is shutting down; `\(name)` is \(model.phase.name).",
                    retryAfterSeconds: configuration.limits.retryAfterSeconds)
            }
            guard clock.now < deadline, !Task.isCancelled else {
                throw GatewayError(
                    .unavailable, "`\(name)` is not \(goal) after \(Int(limit)) s; it is \(model.phase.name)")
            }
            await nextChange()
        }
    }
}
