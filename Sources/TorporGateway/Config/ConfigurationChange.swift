/// What a configuration reload changes, decided from the running configuration and the new one alone.
///
/// Models keep their engine (same process, same state, same queue) unless what the engine depends on changed
/// (`Model.engineIdentity`); settings the running listeners, state directory or GPUs were made from need a restart,
/// and a reload that changes one of them is refused whole.
public struct ConfigurationChange: Sendable, Equatable, Codable {
    /// New models: their engines are started (and put to sleep unless preloaded).
    public var added: [String] = []
    /// Models no longer configured: drained, their engines stopped, their queued requests answered 404.
    public var removed: [String] = []
    /// Models whose engine changed: drained and stopped, then started anew; their queued requests wait for that.
    public var restarted: [String] = []
    /// Models whose other settings changed (aliases, TTL, pins, preloads, `weights_path`): same engine.
    public var updated: [String] = []
    public var unchanged: [String] = []
    /// Top-level settings applied at once: `limits`, `scheduler`, `api_keys`, `host_memory_gib`.
    public var settings: [String] = []

    public var isEmpty: Bool {
        added.isEmpty && removed.isEmpty && restarted.isEmpty && updated.isEmpty && settings.isEmpty
    }

    /// The change from `old` to `new`.
    /// - Throws: `ConfigurationError` naming every setting that needs a restart, when one changed.
    public static func between(
        _ old: GatewayConfiguration, _ new: GatewayConfiguration
    ) throws(ConfigurationError) -> ConfigurationChange {
        let needRestart = [
            ("listen", old.listen == new.listen), ("admin_token", old.adminToken == new.adminToken),
            ("metrics_token", old.metricsToken == new.metricsToken),
            ("state_dir", old.stateDirectory == new.stateDirectory),
            ("engine_transport", old.engineTransport == new.engineTransport), ("gpus", old.gpus == new.gpus),
            ("host_cache_dir", old.hostCacheDirectory == new.hostCacheDirectory),
            ("pass_environment", old.passEnvironment == new.passEnvironment),
        ].filter { !$0.1 }.map(\.0)
        guard needRestart.isEmpty else {
            throw ConfigurationError(
                "\(needRestart.joined(separator: ", ")) changed, which only a restart applies; nothing was changed "
                    + "(restart the gateway, or put \(needRestart.count == 1 ? "it" : "them") back and reload)")
        }
        var change = ConfigurationChange()
        change.settings = [
            ("limits", old.limits == new.limits), ("scheduler", old.scheduler == new.scheduler),
            ("api_keys", old.apiKeys == new.apiKeys), ("host_memory_gib", old.hostMemoryBytes == new.hostMemoryBytes),
        ].filter { !$0.1 }.map(\.0)
        let before = Dictionary(old.models.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for model in new.models {
            guard let previous = before[model.name] else {
                change.added.append(model.name)
                continue
            }
            if previous == model {
                change.unchanged.append(model.name)
            } else if previous.engineIdentity == model.engineIdentity {
                change.updated.append(model.name)
            } else {
                change.restarted.append(model.name)
            }
        }
        let names = Set(new.models.map(\.name))
        change.removed = old.models.map(\.name).filter { !names.contains($0) }
        return change
    }
}
