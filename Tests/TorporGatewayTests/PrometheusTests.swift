import Foundation
import Testing
import TorporEngine
import TorporTestSupport

@testable import TorporGateway

/// The metrics as Prometheus itself takes them: `promtool check metrics` on the gateway's exposition and on an
/// engine's (through the gateway), and a real Prometheus server scraping both with the read-only metrics token.
@Suite(.serialized) struct PrometheusTests {
    static let prometheus = InstalledTool("TORPOR_PROMETHEUS_BIN", "Prometheus (prometheus and promtool)")

    static let token = "prometheus-reader-0123456789"

    /// Runs one of Prometheus' commands to its end.
    static func run(_ command: String, _ arguments: [String], input: String? = nil) throws -> (Int32, String) {
        try runToEnd((prometheus.path ?? "/usr/bin") + "/" + command, arguments, input: input, withErrors: true)
    }

    @Test(.enabled(if: prometheus.path != nil, Comment(rawValue: prometheus.skipReason)))
    func promtoolAcceptsTheGatewaysAndTheEnginesMetrics() async throws {
        try await withGateway(simulatedModels(2, awake: 1) + "metrics_token: \(Self.token)\n") { gateway in
            #expect(try await gateway.complete("m1").status == 200)
            let headers = ["Authorization": "Bearer \(Self.token)"]
            for path in ["/metrics", "/admin/models/m0/metrics"] {
                let metrics = try await HTTPAnswer.send("GET", gateway.admin + path, headers: headers)
                #expect(metrics.status == 200)
                let (status, output) = try Self.run("promtool", ["check", "metrics"], input: metrics.body)
                if path == "/metrics" {
                    #expect(status == 0, "promtool on the gateway's metrics: \(output)")
                } else {
                    // vLLM names its metrics `vllm:*`, which promtool's lint (exit 3) flags and Prometheus takes;
                    // passed through as the engine wrote them, that is the only finding.
                    let findings = output.split(separator: "\n").filter { !$0.contains("should not contain ':'") }
                    #expect(status == 0 || (status == 3 && findings.isEmpty), "promtool on \(path): \(output)")
                }
            }
        }
    }

    @Test(.enabled(if: prometheus.path != nil, Comment(rawValue: prometheus.skipReason)))
    func aRealPrometheusScrapesTheGatewayAndAnEngineWithTheMetricsToken() async throws {
        try await withGateway(simulatedModels(2, awake: 1) + "metrics_token: \(Self.token)\n") { gateway in
            #expect(try await gateway.complete("m0", maxTokens: 3).status == 200)
            let scratch = NSTemporaryDirectory() + "/torpor-prometheus-\(getpid())-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let admin = try #require(URL(string: gateway.admin)?.port)
            try Self.token.write(toFile: scratch + "/token", atomically: true, encoding: .utf8)
            try """
            global: {scrape_interval: 1s}
            scrape_configs:
              - job_name: torpor
                authorization: {credentials_file: \(scratch)/token}
                static_configs: [{targets: ["127.0.0.1:\(admin)"]}]
              - job_name: engine-m0
                metrics_path: /admin/models/m0/metrics
                authorization: {credentials_file: \(scratch)/token}
                static_configs: [{targets: ["127.0.0.1:\(admin)"]}]
            """.write(toFile: scratch + "/prometheus.yml", atomically: true, encoding: .utf8)
            let (checked, output) = try Self.run("promtool", ["check", "config", scratch + "/prometheus.yml"])
            #expect(checked == 0, "\(output)")
            let port = try EngineProcess.freePort()
            let server = Process()
            server.executableURL = URL(fileURLWithPath: (Self.prometheus.path ?? "/usr/bin") + "/prometheus")
            server.arguments = [
                "--config.file=\(scratch)/prometheus.yml", "--storage.tsdb.path=\(scratch)/data",
                "--web.listen-address=127.0.0.1:\(port)",
            ]
            server.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            server.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try server.run()
            defer {
                server.terminate()
                server.waitUntilExit()
            }
            func query(_ expression: String) async -> [[String: Any]] {
                let url =
                    "http://127.0.0.1:\(port)/api/v1/query?query="
                    + (expression.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? expression)
                let answer = try? await HTTPAnswer.send("GET", url, timeout: .seconds(5))
                return ((answer?.json?["data"] as? [String: Any])?["result"] as? [[String: Any]]) ?? []
            }
            let scraped = await poll(timeout: .seconds(60), every: .milliseconds(500)) {
                let up = await query("up == 1")
                let tokens = await query(#"torpor_completion_tokens_total{model="m0"} > 0"#)
                let engine = await query("vllm:num_requests_running")
                return up.count == 2 && !tokens.isEmpty && !engine.isEmpty
            }
            let targets = await query("up")
            #expect(scraped, "targets: \(targets)")
            let build = await query("torpor_build_info")
            #expect(!build.isEmpty)
        }
    }
}
