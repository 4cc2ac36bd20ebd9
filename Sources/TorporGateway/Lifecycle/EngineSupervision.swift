import AsyncHTTPClient
import Foundation
import Logging
import ServiceLifecycle
import TorporCheckpoint
import TorporEngine

/// The last step of graceful shutdown (the first service of the gateway's group): once the listeners and the
/// scheduler have stopped, every engine Torpor started is stopped (all at once, each SIGTERM then SIGKILL after
/// `stopGrace`) after the HTTP client is shut down, and the host caches' RAM is freed.
struct EngineSupervision: Service {
    let supervisor: Supervisor
    let http: HTTPClient
    let configuration: GatewayConfiguration
    let stopGrace: Duration
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        // Nothing calls an engine any more: closing the pooled connections first lets each engine's own graceful
        // shutdown end at once instead of waiting for idle keep-alive connections.
        try? await http.shutdown()
        await supervisor.stopAll(grace: stopGrace)
        removeHostCaches()
    }

    /// Frees the host RAM the host-cache models' checkpoints held, once their engines are gone.
    private func removeHostCaches() {
        for model in configuration.models where model.sleepLevel == .hostCache {
            for container in model.checkpoint?.containers ?? [] {
                let path = HostCachePath.for(container: container, directory: configuration.hostCacheDirectory)
                if unlink(path) == 0 {
                    logger.info("removed a host cache", metadata: ["model": "\(model.name)", "path": "\(path)"])
                }
            }
        }
    }
}
