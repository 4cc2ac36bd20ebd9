import AsyncHTTPClient
import Foundation
import Logging
import ServiceLifecycle
import TorporCheckpoint
import TorporEngine

/// The last step of graceful shutdown (the first service of the gateway's group): once the listeners and the
/// scheduler have stopped, every engine Torpor started is stopped (all at once, each SIGTERM then SIGKILL after
/// `Gateway.engineStopGrace`) after the HTTP client is shut down, and the host caches' RAM is freed.
struct EngineSupervision: Service {
    let supervisor: Supervisor
    let http: HTTPClient
    /// The host-cache files (`HostCachePath`) of the models that wake from one, to remove once their engines are gone.
    let hostCaches: [(model: String, path: String)]
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        // Nothing calls an engine any more: closing the pooled connections first lets each engine's own graceful
        // shutdown end at once instead of waiting for idle keep-alive connections.
        try? await http.shutdown()
        await supervisor.stopAll(grace: Gateway.engineStopGrace)
        removeHostCaches()
    }

    /// Frees the host RAM the host-cache models' checkpoints held.
    private func removeHostCaches() {
        for (model, path) in hostCaches where unlink(path) == 0 {
            logger.info("removed a host cache", metadata: ["model": "\(model)", "path": "\(path)"])
        }
    }

    /// Every host-cache file the configuration's models wake from.
    static func hostCaches(of configuration: GatewayConfiguration) -> [(model: String, path: String)] {
        configuration.models.filter { $0.sleepLevel == .hostCache }.flatMap { model in
            (model.checkpoint?.containers ?? []).map { container in
                (model.name, HostCachePath.for(container: container, directory: configuration.hostCacheDirectory))
            }
        }
    }
}
