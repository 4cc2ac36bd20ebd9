import AsyncHTTPClient
import Foundation
import Logging
import ServiceLifecycle
import TorporCheckpoint
import TorporEngine

/// The last step of graceful shutdown (the first service of the gateway's group): once the listeners and the
/// scheduler have stopped, every engine Torpor started is stopped (all at once, each SIGTERM then SIGKILL after
/// `stopGrace`), the host caches' RAM is freed and the HTTP client is shut down.
struct EngineSupervision: Service {
    let supervisor: Supervisor
    let http: HTTPClient
    let configuration: GatewayConfiguration
    let stopGrace: Duration
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        await supervisor.stopAll(grace: stopGrace)
        removeHostCaches()
        try? await http.shutdown()
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
