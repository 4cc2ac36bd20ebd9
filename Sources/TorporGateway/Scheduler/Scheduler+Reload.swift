import Foundation
import Logging
import TorporEngine

/// A configuration reload as the scheduler performs it: the new settings at once, new models added (started like
/// at start-up), and removed or changed ones retired by their GPU's worker — drained, their engines stopped, then
/// removed or replaced by a new state and engine that take over the queue.
extension Scheduler {
    /// Applies a reloaded configuration.
    /// - Parameters:
    ///   - change: what changed (`ConfigurationChange.between` the running configuration and `new`).
    ///   - made: the engines of the added and restarted models.
    func apply(
        _ new: GatewayConfiguration, change: ConfigurationChange, engines made: [String: EngineFactory.Made]
    ) {
        configuration = new
        policy = SchedulingPolicy(new)
        let configured = Dictionary(new.models.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        func fresh(_ model: GatewayConfiguration.Model) -> ModelState {
            var state = ModelState(config: model, weightsPath: model.wakePath(engineLoads: made[model.name]?.loads))
            if state.bootstrapSince != nil { state.bootstrapSince = clock.now }
            return state
        }
        for name in change.updated {
            guard let model = configured[name] else { continue }
            modify(name) { $0.update(config: model) }
        }
        for name in change.removed {
            modify(name) { $0.retirement = .remove }
            failQueue(name, GatewayError.removedModel(name))
        }
        for name in change.restarted {
            guard let model = configured[name], let engine = made[name]?.engine else { continue }
            modify(name) { $0.retirement = .replace }
            replacements[name] = (fresh(model), engine)
        }
        for name in change.added {
            guard let model = configured[name], let engine = made[name]?.engine else { continue }
            models[name] = fresh(model)
            engines[name] = engine
        }
        metrics.register(models: change.added)
        order = new.models.map(\.name) + order.filter { configured[$0] == nil }
        logger.info(
            "configuration reloaded",
            metadata: [
                "added": "\(change.added)", "removed": "\(change.removed)", "restarted": "\(change.restarted)",
                "updated": "\(change.updated)", "settings": "\(change.settings)",
            ])
        notifyChange()
        for id in gpus.keys { signal(id) }
    }

    /// Drains a retiring model (its requests in flight get the drain timeout), stops its engine, then removes it,
    /// or puts its replacement in its place with the requests that queued meanwhile.
    func retire(_ name: String, gpu id: String) async {
        guard let model = models[name], let retirement = model.retirement else { return }
        let from = model.phase
        if model.phase == .awake {
            setPhase(name, .draining)
            gpus[id]?.state.transition = "drain \(name)"
            let deadline = configuration.scheduler.drainTimeoutSeconds.map { clock.now + .seconds($0) }
            while let current = models[name], current.inFlight > 0, !Task.isCancelled,
                deadline.map({ clock.now < $0 }) ?? true
            {
                await nextChange()
            }
        }
        gpus[id]?.state.transition = "stop \(name)"
        await engines[name]?.stop()
        // Requests cut off by the stop release nothing of what takes the model's place.
        uses = uses.filter { $0.value != name }
        switch retirement {
        case .remove:
            emit(name, kind: "remove", from: from, to: .stopped, reason: "removed from the configuration")
            failQueue(name, GatewayError.removedModel(name))
            models[name] = nil
            engines[name] = nil
            order.removeAll { $0 == name }
            metrics.setPhase(name, "removed")
        case .replace:
            guard let replacement = replacements.removeValue(forKey: name) else { return }
            var state = replacement.state
            state.queue = models[name]?.queue ?? []
            models[name] = state
            engines[name] = replacement.engine
            metrics.setPhase(name, state.phase.name)
            emit(name, kind: "replace", from: from, to: .stopped, reason: "its engine changed in the configuration")
            signal(state.gpu)
        }
        notifyChange()
    }
}
