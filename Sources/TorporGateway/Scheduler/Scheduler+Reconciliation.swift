import Logging
import TorporEngine

/// Engines whose sleep someone changed behind the gateway's back (a `/sleep` or `/wake_up` sent to the engine
/// itself): the gateway notices at its next check and brings its records, or the engine, back in line.
extension Scheduler {
    /// Asks every settled model's engine for its sleep state (all at once: a slow engine delays no other) and
    /// applies the policy's reconciliation where the engine and the model disagree. An observation is dropped when
    /// the model changed phase while it was made: the gateway's own transition explains it.
    func reconcileEngines() async {
        let watched = order.compactMap { name -> (String, Int, any ModelEngine)? in
            guard let model = models[name], model.phase.isSettled, let engine = engines[name] else { return nil }
            return (name, model.phaseChanges, engine)
        }
        let observations = await withTaskGroup(of: (String, Int, EngineSleepState?).self) { group in
            for (name, changes, engine) in watched {
                group.addTask { (name, changes, await engine.observedSleepState()) }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        for (name, changes, observed) in observations {
            guard let observed, let model = models[name], model.phaseChanges == changes,
                let action = policy.reconciliation(of: model, observed: observed)
            else { continue }
            await reconcile(name, action, observed: observed)
        }
    }

    private func reconcile(
        _ name: String, _ action: SchedulingPolicy.Reconciliation, observed: EngineSleepState
    ) async {
        guard let model = models[name], let engine = engines[name] else { return }
        let from = model.phase
        logger.warning(
            "an engine's sleep changed behind the gateway's back",
            metadata: ["model": "\(name)", "phase": "\(from)", "engine.sleep_state": "\(observed.rawValue)"])
        switch action {
        case .recordAsleep(let level):
            setPhase(name, .asleep(level))
            emit(
                name, kind: "reconcile", from: from, to: .asleep(level), level: level.rawValue,
                reason: "its engine was found asleep (\(observed.rawValue)); the next request wakes it")
        case .putBackToSleep(let level):
            setPhase(name, .sleeping(level))
            do {
                try await watched("sleep \(name) at \(level)") { () async throws(EngineError) in
                    try await engine.sleep(level: level, mode: .abort)
                }
            } catch {
                await failUnlessShuttingDown(name, error)
                return
            }
            setPhase(name, .asleep(level))
            emit(
                name, kind: "reconcile", from: from, to: .asleep(level), level: level.rawValue,
                reason: "its engine was found awake; put back to sleep, as its GPU memory is promised to others")
        }
        publishLedger(gpu: model.gpu)
        signal(model.gpu)
    }
}
