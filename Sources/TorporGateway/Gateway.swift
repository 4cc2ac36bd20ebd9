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
public import UnixSignals

/// `torpor serve`: the client listener, the admin listener, the scheduler and the engines, as services of one
/// `ServiceGroup` (`serviceGroup(gracefulShutdownSignals:)`).
///
/// Graceful shutdown runs in a defined order, within `shutdownBound`: new requests are refused and queued ones
/// answered 503 with `Retry-After`, event streams end, requests in flight get `limits.shutdown_grace_seconds` to
/// finish (`ShutdownDrain`); the listeners close; the scheduler's workers stop (a transition in progress is
/// cancelled); every engine Torpor started is stopped and the host caches freed (`EngineSupervision`).
public final class Gateway: Sendable {
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
    /// The admin token: `TORPOR_ADMIN_TOKEN`, the configuration's, or generated.
    public let adminToken: String
    /// True when the token was generated (and must be shown to the operator once).
    public let adminTokenGenerated: Bool
    /// The read-only metrics credential, when one is configured.
    private let metricsToken: String?
    private let supervisor: Supervisor
    private let logger: Logger
    /// The one HTTP client: proxied requests and every engine's control calls.
    private let http: HTTPClient
    private let client: ClientAPI
    /// Makes models' engines: at start-up, and for the models a reload adds or changes.
    private let factory: EngineFactory
    /// Applies a re-read configuration: SIGHUP, `POST /admin/reload`, the file watch.
    public let reloader: ConfigurationReloader
    /// The configuration file, reloaded when its content changes; nil does not watch it.
    private let watchFile: String?
    private let onListening: @Sendable (Listening) async -> Void
    /// Held while this gateway exists: one gateway per state directory.
    private let stateLock: StateDirectoryLock
    /// Each engine gets this long after SIGTERM before SIGKILL at shutdown.
    static let engineStopGrace = Duration.seconds(10)

    /// Takes the state directory's lock (another gateway there is named and refused), stops engines a previous
    /// gateway on it left running, then makes the services.
    /// - Parameters:
    ///   - simulatorExecutable: the `torpor` binary that runs `sim-engine` for simulated models.
    ///   - environment: the process environment (`TORPOR_ADMIN_TOKEN`); by default this process's.
    ///   - clock: the scheduler's time.
    ///   - reloadSource: reads the configuration anew for a reload (nil: reloads are refused).
    ///   - watchFile: with `reloadSource`, the configuration file to reload from whenever its content changes.
    ///   - onListening: called once both listeners accept connections.
    public init(
        configuration: GatewayConfiguration, simulatorExecutable: String,
        environment: [String: String]? = nil, clock: any SchedulerClock = SystemClock(),
        reloadSource: ConfigurationReloader.Source? = nil, watchFile: String? = nil,
        logger: Logger, onListening: @escaping @Sendable (Listening) async -> Void = { _ in }
    ) async throws(ConfigurationError) {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        let environment = environment ?? ProcessInfo.processInfo.environment
        (adminToken, adminTokenGenerated) = try Self.adminToken(configuration, environment: environment)
        metricsToken = try Self.metricsToken(configuration, environment: environment)
        let state = configuration.stateDirectory
        let stateLock = try StateDirectoryLock(directory: state)
        self.stateLock = stateLock
        let listen = configuration.listen
        self.onListening = { listening in
            stateLock.record(
                clientPort: listening.clientPort, adminPort: listening.adminPort, clientHost: listen.client.host,
                adminHost: listen.admin.host)
            await onListening(listening)
        }
        do {
            supervisor = try Supervisor(
                stateDirectory: state + "/engines", logDirectory: state + "/logs", environment: environment,
                passEnvironment: configuration.passEnvironment, logger: logger)
        } catch {
            throw ConfigurationError("state_dir: \(error.message)")
        }
        for name in await supervisor.cleanUpPredecessors() {
            logger.info("stopped an engine a previous gateway left running", metadata: ["engine.name": "\(name)"])
        }
        // One client for proxying and engine control, set up for local engines: a refused connection is a dead
        // engine, which the proxy fails over to the restart path at once (ClientAPI); no idle timeout, which would
        // also cut off the wait for a long answer's head (proxied requests have their bounds in UpstreamDeadlines).
        var httpConfiguration = EngineClient.httpConfiguration
        httpConfiguration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 1024
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
        let sockets =
            configuration.engineTransport == .unixSocket ? try EngineSockets(stateDirectory: state) : nil
        factory = EngineFactory(
            supervisor: supervisor, http: http, sockets: sockets, simulatorExecutable: simulatorExecutable,
            logger: logger)
        let made = try factory.engines(for: configuration)
        let engines = made.mapValues(\.engine)
        let defaultPaths = made.compactMapValues(\.loads)
        scheduler = try Scheduler(
            configuration: configuration, engines: engines, defaultWeightsPaths: defaultPaths, clock: clock,
            metrics: metrics, events: events, logger: logger)
        let settings = LiveSettings(configuration)
        client = ClientAPI(settings: settings, scheduler: scheduler, metrics: metrics, http: http, logger: logger)
        reloader = ConfigurationReloader(
            running: configuration, source: reloadSource, factory: factory, scheduler: scheduler, settings: settings)
        self.watchFile = watchFile
    }

    /// The longest a graceful shutdown takes: the grace for requests in flight, then the engines' stop grace and a
    /// second for the rest. Past it the service group cancels what is left.
    public var shutdownBound: Duration { Self.shutdownBound(configuration) }

    /// `shutdownBound` of a gateway with `configuration` (what a unit's or a pod's stop timeout must outlast).
    public static func shutdownBound(_ configuration: GatewayConfiguration) -> Duration {
        .seconds(configuration.limits.shutdownGraceSeconds) + engineStopGrace + .seconds(1)
    }

    /// One group for the whole gateway, shut down gracefully on `gracefulShutdownSignals`.
    public func serviceGroup(gracefulShutdownSignals: [UnixSignal] = []) -> ServiceGroup {
        var group = ServiceGroupConfiguration(
            services: services(), gracefulShutdownSignals: gracefulShutdownSignals, logger: logger)
        group.maximumGracefulShutdownDuration = shutdownBound
        group.maximumCancellationDuration = .seconds(5)
        return ServiceGroup(configuration: group)
    }

    /// The services in start order; graceful shutdown tells them in reverse, each once the later ones have ended.
    private func services() -> [ServiceGroupConfiguration.ServiceConfiguration] {
        let (listeningStream, listeningContinuation) = AsyncStream<Listening>.makeStream()
        let ports = PortCollector(token: adminToken) { listeningContinuation.yield($0) }
        let client = self.client
        let readTimeout = TimeAmount.milliseconds(Int64(configuration.limits.requestReadTimeoutSeconds * 1000))
        let clientServer = Server(
            childChannelSetup: HTTP1Channel(
                responder: { request, writer, channel in
                    try await client.respond(to: request, writer: writer, channel: channel)
                },
                configuration: .init(
                    additionalChannelHandlers: [
                        InboundCloseHandler(watch: client.connections), RequestReadDeadline(timeout: readTimeout),
                        MalformedRequestAnswer(),
                    ],
                    idleTimeout: .seconds(300))),
            configuration: ServerConfiguration(
                address: .hostname(configuration.listen.client.host, port: configuration.listen.client.port),
                serverName: "torpor"),
            onServerRunning: { channel in await ports.client(channel.localAddress?.port ?? 0) },
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger)
        warnIfExposed(admin: configuration.listen.admin.host, logger: logger)
        let admin = AdminAPI(
            token: adminToken, metricsToken: metricsToken, scheduler: scheduler, metrics: metrics, events: events,
            reloader: reloader, http: http, logDirectory: configuration.stateDirectory + "/logs")
        let adminServer = Application(
            router: admin.makeRouter(),
            configuration: .init(
                address: .hostname(configuration.listen.admin.host, port: configuration.listen.admin.port),
                serverName: "torpor-admin"),
            onServerRunning: { channel in await ports.admin(channel.localAddress?.port ?? 0) },
            logger: logger)
        return [
            .init(
                service: EngineSupervision(
                    supervisor: supervisor, http: http, hostCaches: EngineSupervision.hostCaches(of: configuration),
                    logger: logger)),
            .init(service: scheduler),
            .init(service: ReloadTriggers(reloader: reloader, watchFile: watchFile, logger: logger)),
            .init(
                service: Listener(
                    name: "admin", host: configuration.listen.admin.host, port: configuration.listen.admin.port,
                    server: adminServer)),
            .init(
                service: Listener(
                    name: "client", host: configuration.listen.client.host, port: configuration.listen.client.port,
                    server: clientServer)),
            .init(
                service: ListeningReporter(listening: listeningStream, onListening: onListening),
                successTerminationBehavior: .ignore),
            .init(
                service: ShutdownDrain(
                    scheduler: scheduler, connections: client.connections,
                    graceSeconds: configuration.limits.shutdownGraceSeconds, logger: logger)),
        ]
    }

    /// `TORPOR_ADMIN_TOKEN` when set, else `admin_token`, else a new one (the one place either is read).
    static func adminToken(
        _ configuration: GatewayConfiguration, environment: [String: String]
    ) throws(ConfigurationError) -> (token: String, generated: Bool) {
        if let token = environment["TORPOR_ADMIN_TOKEN"], !token.isEmpty {
            guard token.count >= 16 else { throw ConfigurationError("TORPOR_ADMIN_TOKEN: use at least 16 characters") }
            return (token, false)
        }
        if let token = configuration.adminToken, !token.isEmpty { return (token, false) }
        var generator = SystemRandomNumberGenerator()
        let token = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }
            .joined()
        return (token, true)
    }

    /// `TORPOR_METRICS_TOKEN` when set, else `metrics_token`, else none (the one place either is read).
    static func metricsToken(
        _ configuration: GatewayConfiguration, environment: [String: String]
    ) throws(ConfigurationError) -> String? {
        if let token = environment["TORPOR_METRICS_TOKEN"], !token.isEmpty {
            guard token.count >= 16 else {
                throw ConfigurationError("TORPOR_METRICS_TOKEN: use at least 16 characters")
            }
            return token
        }
        return configuration.metricsToken.flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// Tells the caller where the listeners are, once both accept connections (the servers' start callbacks run
/// before they accept anything, so the report comes from here).
private struct ListeningReporter: Service {
    let listening: AsyncStream<Gateway.Listening>
    let onListening: @Sendable (Gateway.Listening) async -> Void

    func run() async throws {
        await cancelWhenGracefulShutdown {
            for await listening in listening {
                await onListening(listening)
                break
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
