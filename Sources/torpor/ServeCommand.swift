import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TorporGateway
import UnixSignals

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway: OpenAI-compatible routing in front of sleeping and waking engines.",
        discussion: """
            The configuration is a YAML file documented key by key in docs/gateway-config.md. The client API \
            listens on listen.client (default 0.0.0.0:8080), the admin API on listen.admin (default \
            127.0.0.1:8081) with a bearer token from admin_token or TORPOR_ADMIN_TOKEN; without either a token is \
            generated and printed once. SIGINT or SIGTERM answers queued requests with 503, lets those in flight \
            finish (limits.shutdown_grace_seconds), closes the listeners and then stops every engine.
            """)

    @Option(help: "The YAML configuration file.")
    var config: String

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let configuration: GatewayConfiguration
        do {
            // The file is read once; checkpoints in object storage are pulled (or found in the local cache) before
            // it is decoded.
            let yaml = try GatewayConfiguration.text(config)
            var packs: [String: String] = [:]
            for pack in GatewayConfiguration.remoteCheckpoints(yaml: yaml) {
                packs[pack] = try await localPack(pack)
            }
            configuration = try GatewayConfiguration.parse(
                yaml: yaml, packs: packs, environment: environment, source: config)
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
            throw ExitCode.failure
        }
        try await runGateway(configuration, environment: environment, logLevel: logLevel) { listening, gateway in
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

/// Runs a gateway until SIGINT or SIGTERM; `onListening` runs once both listeners accept connections.
func runGateway(
    _ configuration: GatewayConfiguration, environment: [String: String], logLevel: String,
    onListening: @escaping @Sendable (Gateway.Listening, Gateway) async -> Void
) async throws {
    guard let level = Logger.Level(rawValue: logLevel) else {
        throw ValidationError("--log-level \(logLevel): use trace, debug, info, notice, warning or error")
    }
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    let logger = Logger(label: "torpor.gateway")
    let box = GatewayBox()
    let gateway: Gateway
    do {
        gateway = try await Gateway(
            configuration: configuration, simulatorExecutable: currentExecutable(), environment: environment,
            logger: logger
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
