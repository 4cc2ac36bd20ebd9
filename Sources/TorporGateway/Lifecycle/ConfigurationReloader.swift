import Foundation
import Logging
import TorporEngine

/// Re-reads the configuration and applies what changed without a restart (SIGHUP, `POST /admin/reload`, or a change
/// of the file when watched): unchanged models keep their engines, state and queues; added ones are started, removed
/// ones drained and stopped, changed ones replaced. A configuration that does not parse or validate, or that changes
/// what only a restart applies, is refused with its error and the running one goes on. One reload at a time.
public actor ConfigurationReloader {
    /// Reads the configuration anew: the file, its `s3://` checkpoints, parsing and checks.
    public typealias Source = @Sendable () async throws(ConfigurationError) -> GatewayConfiguration

    private var running: GatewayConfiguration
    private let source: Source?
    private let factory: EngineFactory
    private let scheduler: Scheduler
    private let settings: LiveSettings

    /// Refusals are logged with the scheduler's logger.
    init(
        running: GatewayConfiguration, source: Source?, factory: EngineFactory, scheduler: Scheduler,
        settings: LiveSettings
    ) {
        (self.running, self.source, self.factory) = (running, source, factory)
        (self.scheduler, self.settings) = (scheduler, settings)
    }

    /// The configuration in force.
    public var configuration: GatewayConfiguration { running }

    /// Reads and applies the configuration.
    /// - Parameter trigger: what asked for it, for the log (`SIGHUP`, `admin API`, `file watch`).
    /// - Throws: `ConfigurationError` when there is no file to read, or the new configuration is refused; nothing
    ///   changed then.
    @discardableResult
    public func reload(trigger: String) async throws(ConfigurationError) -> ConfigurationChange {
        do throws(ConfigurationError) {
            guard let source else {
                throw ConfigurationError(
                    "this gateway was not started from a configuration file; there is nothing to reload")
            }
            let new = try await source()
            return try await apply(new)
        } catch {
            scheduler.logger.error(
                "configuration reload refused; the running configuration goes on",
                metadata: ["trigger": "\(trigger)", "error": "\(error.message)"])
            throw error
        }
    }

    /// Applies `new` (already parsed and checked by the source).
    private func apply(_ new: GatewayConfiguration) async throws(ConfigurationError) -> ConfigurationChange {
        let change = try ConfigurationChange.between(running, new)
        var made: [String: EngineFactory.Made] = [:]
        let fresh = Set(change.added + change.restarted)
        for (index, model) in new.models.enumerated() where fresh.contains(model.name) {
            let (engine, loads) = try factory.engine(for: model, index: index, in: new)
            made[model.name] = EngineFactory.Made(engine: engine, loads: loads)
        }
        // The scheduler first: a name the client listener starts routing is one the scheduler knows.
        await scheduler.apply(new, change: change, engines: made)
        settings.update(new)
        running = new
        return change
    }
}
