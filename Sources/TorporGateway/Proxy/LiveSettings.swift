import Synchronization

/// What the client listener reads of the configuration for each request — limits, API keys, and which model a
/// name (or alias) sent by a client means — swapped whole by a configuration reload.
final class LiveSettings: Sendable {
    /// One consistent view: a request reads it once.
    struct Snapshot: Sendable {
        let limits: GatewayConfiguration.Limits
        let keys: APIKeyTable
        /// Every name and alias clients may send, to its model.
        let routes: [String: Route]
        /// The models with their aliases, in configuration order (what `/v1/models` lists).
        let models: [GatewayConfiguration.Model]
    }

    /// Where a request for one name goes.
    struct Route: Sendable, Equatable {
        /// The model's configured name: what the scheduler, API keys and metrics know it by.
        let model: String
        /// The name the engine serves, sent upstream as the body's `model`.
        let upstreamName: String
    }

    private let state: Mutex<Snapshot>

    init(_ configuration: GatewayConfiguration) { state = Mutex(Self.snapshot(of: configuration)) }

    var current: Snapshot { state.withLock { $0 } }

    /// Takes a reloaded configuration.
    func update(_ configuration: GatewayConfiguration) {
        let snapshot = Self.snapshot(of: configuration)
        state.withLock { $0 = snapshot }
    }

    private static func snapshot(of configuration: GatewayConfiguration) -> Snapshot {
        var routes: [String: Route] = [:]
        for model in configuration.models {
            let route = Route(model: model.name, upstreamName: model.upstreamName)
            for name in [model.name] + model.aliases { routes[name] = route }
        }
        return Snapshot(
            limits: configuration.limits, keys: APIKeyTable(configuration.apiKeys), routes: routes,
            models: configuration.models)
    }
}
