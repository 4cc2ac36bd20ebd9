import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdCore
public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle
import TorporCheckpoint
import TorporEngine

/// `torpor serve`: the client listener, the admin listener, one scheduler worker per GPU and the engines, run as
/// one `Service`. Graceful shutdown stops the listeners, then every engine Torpor started.
public final class Gateway: Service {
    /// Where the listeners ended up (ports chosen by the system when the configuration says 0).
    public struct Listening: Sendable {
        public var clientPort: Int
        public var adminPort: Int
        public var adminToken: String
    }

    public let configuration: GatewayConfiguration
    public let scheduler: Scheduler
    public let metrics = GatewayMetrics()
    public let events = EventBus()
    /// The admin token: from the configuration, `TORPOR_ADMIN_TOKEN`, or generated.
    public let adminToken: String
    /// True when the token was generated (and must be shown to the operator once).
    public let adminTokenGenerated: Bool
    private let supervisor: Supervisor
    private let logger: Logger
    private let http: HTTPClient
    private let onListening: @Sendable (Listening) async -> Void

    /// - Parameters:
    ///   - simulatorExecutable: the `torpor` binary that runs `sim-engine` for simulated models.
    ///   - clock: the scheduler's time.
    ///   - onListening: called once both listeners accept connections.
    public init(
        configuration: GatewayConfiguration, simulatorExecutable: String, clock: any SchedulerClock = SystemClock(),
        logger: Logger, onListening: @escaping @Sendable (Listening) async -> Void = { _ in }
    ) throws(ConfigurationError) {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        self.onListening = onListening
        if let token = configuration.adminToken ?? ProcessInfo.processInfo.environment["TORPOR_ADMIN_TOKEN"],
            !token.isEmpty
        {
            adminToken = token
            adminTokenGenerated = false
        } else {
            var generator = SystemRandomNumberGenerator()
            adminToken = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }
                .joined()
            adminTokenGenerated = true
        }
        let state = configuration.stateDirectory
        do {
            supervisor = try Supervisor(
                stateDirectory: state + "/engines", logDirectory: state + "/logs", logger: logger)
        } catch {
            throw ConfigurationError("state_dir: \(error.message)")
        }
        var engines: [String: any ModelEngine] = [:]
        var defaultPaths: [String: String] = [:]
        for model in configuration.models {
            let gpu = configuration.gpus.first { $0.id == model.gpu }!
            let timeout = configuration.scheduler.transitionTimeoutSeconds
            if case .external(let url) = model.engine {
                engines[model.name] = ExternalEngine(
                    url: url, servedName: model.name, transitionTimeoutSeconds: timeout, logger: logger)
                continue
            }
            let port: Int
            do {
                port = try EngineProcess.freePort()
            } catch {
                throw ConfigurationError("models.\(model.name): \(error.message)")
            }
            let spec = model.engineSpec(
                port: port, gpu: gpu, stateDirectory: state, simulator: simulatorExecutable,
                hostCacheDirectory: configuration.hostCacheDirectory)!
            defaultPaths[model.name] = spec.model
            engines[model.name] = ManagedEngine(
                spec: spec, servedName: model.name, supervisor: supervisor, transitionTimeoutSeconds: timeout,
                logger: logger)
        }
        scheduler = Scheduler(
            configuration: configuration, engines: engines, defaultWeightsPaths: defaultPaths, clock: clock,
            metrics: metrics, events: events, logger: logger)
        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.timeout.connect = .seconds(5)
        httpConfiguration.timeout.read = .milliseconds(Int64(configuration.limits.upstreamReadTimeoutSeconds * 1000))
        httpConfiguration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 1024
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
    }

    public func run() async throws {
        for name in await supervisor.cleanUpPredecessors() {
            logger.info("stopped an engine a previous gateway left running", metadata: ["engine.name": "\(name)"])
        }
        let (listeningStream, listeningContinuation) = AsyncStream<Listening>.makeStream()
        let ports = PortCollector(token: adminToken) { listeningContinuation.yield($0) }
        let onListening = self.onListening
        let client = ClientAPI(
            configuration: configuration, scheduler: scheduler, metrics: metrics,
            keys: APIKeyTable(configuration.apiKeys),
            http: http, logger: logger)
        let clientServer = Server(
            childChannelSetup: HTTP1Channel(
                responder: { request, writer, channel in
                    try await client.respond(to: request, writer: writer, channel: channel)
                },
                configuration: .init(idleTimeout: .seconds(300))),
            configuration: ServerConfiguration(
                address: .hostname(configuration.listen.client.host, port: configuration.listen.client.port),
                serverName: "torpor"),
            onServerRunning: { channel in await ports.client(channel.localAddress?.port ?? 0) },
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger)
        let admin = AdminAPI(token: adminToken, scheduler: scheduler, metrics: metrics, events: events)
        let adminServer = Application(
            router: admin.makeRouter(),
            configuration: .init(
                address: .hostname(configuration.listen.admin.host, port: configuration.listen.admin.port),
                serverName: "torpor-admin"),
            onServerRunning: { channel in await ports.admin(channel.localAddress?.port ?? 0) },
            logger: logger)
        let scheduler = self.scheduler
        let gpus = configuration.gpus.map(\.id)
        let supervisor = self.supervisor
        do {
            try await withThrowingDiscardingTaskGroup { group in
                // Reported from here, not from the servers' start callbacks: they accept nothing until those return.
                group.addTask {
                    await cancelWhenGracefulShutdown {
                        for await listening in listeningStream {
                            await onListening(listening)
                            break
                        }
                    }
                }
                group.addTask { try await clientServer.run() }
                group.addTask { try await adminServer.run() }
                for gpu in gpus {
                    group.addTask { await cancelWhenGracefulShutdown { await scheduler.runGPU(gpu) } }
                }
                group.addTask {
                    await cancelWhenGracefulShutdown {
                        var ticks = 0
                        while !Task.isCancelled {
                            try? await Task.sleep(for: .milliseconds(100))
                            await scheduler.tick()
                            ticks += 1
                            if ticks % 10 == 0 { await scheduler.checkEngines() }
                        }
                    }
                }
            }
        } catch {
            await supervisor.stopAll()
            removeHostCaches()
            try? await http.shutdown()
            throw error
        }
        await supervisor.stopAll()
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

/// Collects the two listeners' ports and reports them once both are known.
private actor PortCollector {
    private var clientPort: Int?
    private var adminPort: Int?
    private let onListening: @Sendable (Gateway.Listening) -> Void
    private let token: String

    init(token: String, onListening: @escaping @Sendable (Gateway.Listening) -> Void) {
        self.onListening = onListening
        self.token = token
    }

    func client(_ port: Int) async {
        clientPort = port
        await report()
    }

    func admin(_ port: Int) async {
        adminPort = port
        await report()
    }

    private func report() async {
        guard let clientPort, let adminPort else { return }
        onListening(Gateway.Listening(clientPort: clientPort, adminPort: adminPort, adminToken: token))
    }
}
