import Logging
import ServiceLifecycle
import TorporEngine

/// The first step of graceful shutdown (it is the last service of the gateway's group, so it is told first):
/// refuse new requests, answer every queued one with 503 and `Retry-After`, end the admin event streams, give the
/// requests in flight `limits.shutdown_grace_seconds` to finish, then cut off the rest. The listeners that are told
/// next then have no request left to wait for.
struct ShutdownDrain: Service {
    let scheduler: Scheduler
    let connections: ConnectionWatch
    let graceSeconds: Double
    let logger: Logger

    func run() async throws {
        do {
            try await gracefulShutdown()
        } catch {
            // Cancelled: the group is going down without a graceful shutdown.
            return
        }
        await scheduler.beginShutdown()
        scheduler.events.finish()
        let left = await scheduler.waitUntilIdle(seconds: graceSeconds)
        if left > 0 {
            logger.warning(
                "shutting down: requests still in flight were cut off",
                metadata: ["requests": "\(left)", "grace_s": "\(graceSeconds)"])
            connections.cutOff()
        }
    }
}
