import AsyncHTTPClient
import Logging
import TorporEngine

/// Makes the engine of one configured model: an `ExternalEngine` for `engine.url`, else a `ManagedEngine` that the
/// supervisor starts, listening on its socket in `state_dir/sockets` (or a free loopback port). The gateway makes
/// every model's engine with it at start-up, and a configuration reload those of models added or changed.
struct EngineFactory: Sendable {
    let supervisor: Supervisor
    let http: HTTPClient
    let sockets: EngineSockets?
    let simulatorExecutable: String
    let logger: Logger

    /// One model's engine, and the path its engine loads (a level-2 wake reloads it when the configuration names
    /// no `weights_path`); nil path for an external engine.
    func engine(
        for model: GatewayConfiguration.Model, index: Int, in configuration: GatewayConfiguration
    ) throws(ConfigurationError) -> (engine: any ModelEngine, loads: String?) {
        guard let gpu = configuration.gpus.first(where: { $0.id == model.gpu }) else {
            throw ConfigurationError("\(configuration.key(model.name, "gpu")): no GPU `\(model.gpu)` is configured")
        }
        let timeout = configuration.scheduler.transitionTimeoutSeconds
        if case .external(let url) = model.engine {
            let engine = ExternalEngine(
                url: url, servedName: model.upstreamName, http: http, transitionTimeoutSeconds: timeout, logger: logger)
            return (engine, nil)
        }
        let listening: EngineSpec.Listening
        if let sockets {
            listening = .unixSocket(try sockets.path(forModel: model.name, index: index))
        } else {
            do {
                listening = .port(try EngineProcess.freePort())
            } catch {
                throw ConfigurationError("\(configuration.key(model.name)): \(error.message)")
            }
        }
        guard
            let spec = model.engineSpec(
                listening: listening, gpu: gpu, stateDirectory: configuration.stateDirectory,
                simulator: simulatorExecutable, hostCacheDirectory: configuration.hostCacheDirectory)
        else {
            throw ConfigurationError("\(configuration.key(model.name, "engine")): no engine can be made for it")
        }
        let engine = ManagedEngine(
            spec: spec, servedName: model.name, supervisor: supervisor, http: http, transitionTimeoutSeconds: timeout,
            logger: logger)
        return (engine, spec.model)
    }

    /// Every model's engine.
    func engines(for configuration: GatewayConfiguration) throws(ConfigurationError) -> [String: Made] {
        var made: [String: Made] = [:]
        for (index, model) in configuration.models.enumerated() {
            let (engine, loads) = try engine(for: model, index: index, in: configuration)
            made[model.name] = Made(engine: engine, loads: loads)
        }
        return made
    }

    /// A model's engine and the path it loads.
    struct Made: Sendable {
        let engine: any ModelEngine
        let loads: String?
    }
}
