import Foundation
import Testing
import TorporTestSupport

@testable import TorporGateway

/// deploy/: the Kubernetes manifests against Kubernetes' own schemas (offline), and the configuration, unit and image
/// they ship checked against what the gateway accepts and how long its shutdown takes.
@Suite struct DeploymentTests {
    static let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy")

    static let validator = InstalledTool("TORPOR_KUBERNETES_PYTHON", "kubernetes-validate")

    static func text(_ path: String) throws -> String {
        try String(contentsOf: deploy.appendingPathComponent(path), encoding: .utf8)
    }

    @Test(.enabled(if: validator.path != nil, Comment(rawValue: validator.skipReason)))
    func theKubernetesManifestsPassKubernetesSchemas() throws {
        let manifests = try FileManager.default.contentsOfDirectory(atPath: Self.deploy.path + "/kubernetes")
            .filter { $0.hasSuffix(".yaml") }.map { Self.deploy.path + "/kubernetes/" + $0 }
        #expect(!manifests.isEmpty)
        let (status, text) = try runToEnd(
            Self.validator.path ?? "python3", ["-m", "kubernetes_validate", "--strict"] + manifests, withErrors: true)
        #expect(status == 0, "\(text)")
        for kind in ["configmap", "secret", "daemonset", "service", "networkpolicy"] {
            #expect(text.contains("passed for resource \(kind)/"), "\(text)")
        }
    }

    @Test func theShippedGatewayConfigurationIsValidAndItsProbesNeverWake() throws {
        let manifest = try Self.text("kubernetes/torpor.yaml")
        // The ConfigMap's torpor.yaml: the block under `torpor.yaml: |`, four spaces in.
        let lines = manifest.components(separatedBy: "\n")
        let start = try #require(lines.firstIndex { $0.hasSuffix("torpor.yaml: |") })
        let block = lines[(start + 1)...].prefix { $0.hasPrefix("    ") || $0.isEmpty }.map { String($0.dropFirst(4)) }
        let configuration = try GatewayConfiguration.parse(yaml: block.joined(separator: "\n"))
        #expect(configuration.listen.client.port == 8080 && configuration.listen.admin.port == 8081)
        #expect(configuration.stateDirectory == "/var/lib/torpor")
        #expect(manifest.contains("path: /ready") && manifest.contains("path: /health"))
        #expect(manifest.contains("containerPort: 8080") && manifest.contains("containerPort: 8081"))
        #expect(manifest.contains(#"args: ["serve", "--config", "/etc/torpor/torpor.yaml", "--watch-config"]"#))
        // The pod's grace outlasts the gateway's shutdown.
        let grace = try #require(manifest.firstMatch(of: /terminationGracePeriodSeconds: (\d+)/)?.1).description
        #expect(try Double(#require(Int(grace))) > Self.shutdownBoundSeconds(configuration))
    }

    @Test func theSystemdUnitReloadsWithSIGHUPAndWaitsOutTheShutdown() throws {
        let unit = try Self.text("systemd/torpor.service")
        #expect(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"))
        #expect(unit.contains("ExecStart=/usr/local/bin/torpor serve --config /etc/torpor/torpor.yaml"))
        let timeout = try #require(unit.firstMatch(of: /TimeoutStopSec=(\d+)/)?.1).description
        #expect(try Double(#require(Int(timeout))) > Self.shutdownBoundSeconds(GatewayConfiguration()))
        let image = try Self.text("Containerfile")
        #expect(image.contains("--static-swift-stdlib"))
        #expect(
            image.contains(#"ENTRYPOINT ["/usr/local/bin/torpor", "serve", "--config", "/etc/torpor/torpor.yaml"]"#))
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze")))
    func systemdAcceptsTheUnit() throws {
        // The unit as installed, with the binary where this build has it (verify checks that ExecStart exists).
        let directory = NSTemporaryDirectory() + "/torpor-unit-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let unit = try Self.text("systemd/torpor.service").replacingOccurrences(
            of: "/usr/local/bin/torpor", with: GatewayUnderTest.torporBinary)
        try unit.write(toFile: directory + "/torpor.service", atomically: true, encoding: .utf8)
        let (status, output) = try runToEnd(
            "/usr/bin/systemd-analyze", ["verify", directory + "/torpor.service"], withErrors: true)
        #expect(status == 0 && output.isEmpty, "\(output)")
    }

    /// The gateway's bound on a graceful shutdown with `configuration`, in seconds.
    static func shutdownBoundSeconds(_ configuration: GatewayConfiguration) -> Double {
        Gateway.shutdownBound(configuration) / .seconds(1)
    }
}
