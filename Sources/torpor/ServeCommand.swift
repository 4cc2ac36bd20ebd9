public import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TorporCheckpoint
import TorporGateway
import TorporStorage
import UnixSignals

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the gateway: OpenAI-compatible routing in front of sleeping and waking engines.",
        discussion: """
            The configuration is a YAML file: `torpor serve --example-config` prints a complete one, commented \
            (gateway-config.md in Torpor's documentation has every key). The client API \
            listens on listen.client (default 0.0.0.0:8080), the admin API on listen.admin (default \
            127.0.0.1:8081) with a bearer token from admin_token or TORPOR_ADMIN_TOKEN; without either a token is \
            generated and printed once. SIGINT or SIGTERM answers queued requests with 503, lets those in flight \
            finish (limits.shutdown_grace_seconds), closes the listeners and then stops every engine. SIGHUP (and, \
            with --watch-config, a change of the file) reloads the configuration: models added, removed or changed \
            are started, drained or replaced, the others keep their engines.
            """)

    @Option(help: "The YAML configuration file.")
    var config: String?

    @Flag(help: "Print a complete example configuration, commented, and exit.")
    var exampleConfig = false

    @Flag(
        help: """
            Reload the configuration whenever the file's content changes, as SIGHUP and POST /admin/reload do: \
            models added, removed or changed are started, drained or replaced; the others keep their engines.
            """)
    var watchConfig = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard config != nil || exampleConfig else {
            throw ValidationError("Missing expected argument '--config <config>' (or --example-config for a start)")
        }
    }

    func run() async throws {
        guard let path = config, !exampleConfig else {
            print(ExampleConfiguration.yaml, terminator: "")
            return
        }
        let environment = ProcessInfo.processInfo.environment
        let source: ConfigurationReloader.Source = { () async throws(ConfigurationError) in
            try await loadConfiguration(path, environment: environment)
        }
        let configuration: GatewayConfiguration
        do {
            configuration = try await source()
        } catch {
            FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
            throw ExitCode.failure
        }
        try await runGateway(
            configuration, environment: environment, logLevel: logLevel, reloadSource: source,
            watchFile: watchConfig ? path : nil
        ) { listening, gateway in
            var lines = [
                "torpor: client API on http://\(configuration.listen.client.host):\(listening.clientPort)",
                "torpor: admin API on http://\(configuration.listen.admin.host):\(listening.adminPort)",
            ]
            if gateway.adminTokenGenerated {
                lines.append("torpor: admin token (shown once): \(listening.adminToken)")
            }
            FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
    }
}

/// Reads a configuration file: the file once, then the checkpoints in object storage it names (pulled, or found in
/// the local cache) before it is decoded and checked. `serve` and every reload read it this way.
func loadConfiguration(
    _ path: String, environment: [String: String]
) async throws(ConfigurationError) -> GatewayConfiguration {
    let yaml = try GatewayConfiguration.text(path)
    var packs: [String: String] = [:]
    for pack in GatewayConfiguration.remoteCheckpoints(yaml: yaml) {
        do {
            packs[pack] = try await RemotePack.localPath(for: pack, environment: environment)
        } catch {
            throw ConfigurationError("\(path): checkpoint \(pack): \(error.message)")
        }
    }
    return try GatewayConfiguration.parse(yaml: yaml, packs: packs, environment: environment, source: path)
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Runs a gateway until SIGINT or SIGTERM; `onListening` runs once both listeners accept connections.
func runGateway(
    _ configuration: GatewayConfiguration, environment: [String: String], logLevel: Logger.Level,
    reloadSource: ConfigurationReloader.Source? = nil, watchFile: String? = nil,
    onListening: @escaping @Sendable (Gateway.Listening, Gateway) async -> Void
) async throws {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = logLevel
        return handler
    }
    let logger = Logger(label: "torpor.gateway")
    let box = GatewayBox()
    let gateway: Gateway
    do {
        gateway = try await Gateway(
            configuration: configuration, simulatorExecutable: currentExecutable(), environment: environment,
            reloadSource: reloadSource, watchFile: watchFile, logger: logger
        ) { listening in
            guard let gateway = box.gateway else { return }
            await onListening(listening, gateway)
        }
    } catch {
        FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
        throw ExitCode.failure
    }
    box.gateway = gateway
    let group = gateway.serviceGroup(gracefulShutdownSignals: [.sigterm, .sigint])
    do {
        try await group.run()
    } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode.failure
    }
}

/// Hands the gateway to its own listening callback.
private final class GatewayBox: @unchecked Sendable {
    var gateway: Gateway?
}

/// The path of the running `torpor` binary (it runs `sim-engine` for simulated models).
func currentExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}
