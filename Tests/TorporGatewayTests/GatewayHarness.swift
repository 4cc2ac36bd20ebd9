import AsyncHTTPClient
import Foundation
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Testing
import TorporEngine
import TorporTestSupport

@testable import TorporGateway

/// A gateway started in this process from a YAML configuration, with its engines as real processes.
final class GatewayUnderTest: Sendable {
    let gateway: Gateway
    let client: String
    let admin: String
    let token: String
    let stateDirectory: String
    /// The YAML file it was started from (listeners and state directory included); `reconfigure` rewrites it.
    let configFile: String
    private let header: String
    private let group: ServiceGroup
    private let running: Task<Void, any Error>

    /// The built `torpor` binary, which runs the simulated engines.
    static var torporBinary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("torpor")
            .path
    }

    /// Starts a gateway; `yaml` holds everything but listeners and the state directory. Waits until every model
    /// has left `starting` (unless `waitForEngines` is false: then only until it listens).
    static func start(
        _ yaml: String, token: String = "test-admin-token-0123456789", startTimeout: Duration = .seconds(120),
        waitForEngines: Bool = true
    ) async throws -> GatewayUnderTest {
        let state = NSTemporaryDirectory() + "/torpor-gateway-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        let header = """
            listen:
              client: 127.0.0.1:0
              admin: 127.0.0.1:0
            state_dir: \(state)
            admin_token: \(token)

            """
        let file = state + ".yaml"
        try (header + yaml).write(toFile: file, atomically: true, encoding: .utf8)
        let configuration = try GatewayConfiguration.parse(yaml: header + yaml)
        let (ports, continuation) = AsyncStream<Gateway.Listening>.makeStream()
        let gateway = try await Gateway(
            configuration: configuration, simulatorExecutable: torporBinary,
            reloadSource: { () async throws(ConfigurationError) in
                try GatewayConfiguration.parse(yaml: try GatewayConfiguration.text(file), source: file)
            }, logger: quietLogger
        ) { listening in continuation.yield(listening) }
        let group = gateway.serviceGroup()
        let running = Task {
            // A gateway that stops (or never starts) ends the wait for its ports.
            defer { continuation.finish() }
            try await group.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let listening = await iterator.next() else {
            let outcome = await running.result
            throw ConfigurationError("the gateway stopped before it listened: \(outcome)")
        }
        let result = GatewayUnderTest(
            gateway: gateway, client: "http://127.0.0.1:\(listening.clientPort)",
            admin: "http://127.0.0.1:\(listening.adminPort)", token: listening.adminToken, state: state,
            configFile: file, header: header, group: group, running: running)
        guard waitForEngines else { return result }
        do {
            try await result.waitUntil("every engine started", timeout: startTimeout) {
                let statuses = await gateway.scheduler.statuses()
                if statuses.contains(where: { $0.state == "failed" }) { throw ConfigurationError("a model failed") }
                return statuses.allSatisfy { $0.state != "starting" && $0.state != "stopped" }
            }
        } catch {
            // Say what each engine did (the last error carries the tail of the engine's log), then clean up.
            let states = await gateway.scheduler.statuses().map {
                "\($0.name): \($0.state)\($0.lastError.map { " (\($0))" } ?? "")"
            }
            await result.stop()
            throw ConfigurationError("\(error) — \(states.joined(separator: "; "))")
        }
        return result
    }

    private init(
        gateway: Gateway, client: String, admin: String, token: String, state: String, configFile: String,
        header: String, group: ServiceGroup, running: Task<Void, any Error>
    ) {
        self.configFile = configFile
        self.header = header
        self.gateway = gateway
        self.client = client
        self.admin = admin
        self.token = token
        stateDirectory = state
        self.group = group
        self.running = running
    }

    /// Shuts the gateway down (which stops its engines) and removes its state.
    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await running.value
        try? FileManager.default.removeItem(atPath: stateDirectory)
        try? FileManager.default.removeItem(atPath: configFile)
    }

    /// Rewrites the configuration file with `yaml` (under the same listeners and state directory).
    func reconfigure(_ yaml: String) throws {
        try (header + yaml).write(toFile: configFile, atomically: true, encoding: .utf8)
    }

    func state(_ model: String) async -> String {
        await gateway.scheduler.statuses().first { $0.name == model }?.state ?? "?"
    }

    func engineURL(_ model: String) async -> String {
        await gateway.scheduler.statuses().first { $0.name == model }?.engineURL ?? "?"
    }

    /// Polls `condition` until it holds; throws after `timeout`.
    func waitUntil(
        _ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool
    ) async throws {
        guard try await poll(timeout: timeout, until: condition) else {
            throw ConfigurationError("timed out after \(timeout) waiting for \(what)")
        }
    }

    /// A completion (or chat completion when `chat`) through the client API.
    func complete(
        _ model: String, prompt: String = "hello", maxTokens: Int = 4, chat: Bool = false, key: String? = nil
    ) async throws -> HTTPAnswer {
        var fields: [String: any Sendable] = ["model": model, "max_tokens": maxTokens, "temperature": 0]
        if chat {
            fields["messages"] = [["role": "user", "content": prompt]]
        } else {
            fields["prompt"] = prompt
        }
        return try await HTTPAnswer.send(
            "POST", client + (chat ? "/v1/chat/completions" : "/v1/completions"), json: fields,
            headers: key.map { ["Authorization": "Bearer \($0)"] } ?? [:])
    }

    /// An admin call with the token (or `token`).
    func adminCall(_ method: String, _ path: String, token: String? = nil) async throws -> HTTPAnswer {
        try await HTTPAnswer.send(method, admin + path, headers: ["Authorization": "Bearer \(token ?? self.token)"])
    }

    /// Injects a fault into a simulated engine.
    func fault(_ model: String, _ kind: String) async throws {
        let answer = try await HTTPAnswer.send(
            "POST", await engineURL(model) + "/sim/fault?kind=\(kind)", timeout: .seconds(5))
        #expect(answer.status == 200, "injecting \(kind) into \(model): \(answer.body)")
    }

    func events() -> [TransitionEvent] { gateway.events.recent() }
}

/// Runs `body` against a gateway started from `yaml`, and stops the gateway and its engines whatever happens.
func withGateway(
    _ yaml: String, startTimeout: Duration = .seconds(120), _ body: (GatewayUnderTest) async throws -> Void
) async throws {
    let gateway = try await GatewayUnderTest.start(yaml, startTimeout: startTimeout)
    do {
        try await body(gateway)
    } catch {
        await gateway.stop()
        throw error
    }
    await gateway.stop()
}

/// One HTTP exchange.
struct HTTPAnswer: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: String

    var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] }

    /// The OpenAI error object of an error answer.
    var error: [String: Any]? { json?["error"] as? [String: Any] }

    /// The generated text of a (chat) completion.
    var text: String? {
        guard let choice = (json?["choices"] as? [[String: Any]])?.first else { return nil }
        return choice["text"] as? String ?? (choice["message"] as? [String: Any])?["content"] as? String
    }

    static func send(
        _ method: String, _ url: String, json: [String: any Sendable]? = nil, body: [UInt8]? = nil,
        headers: [String: String] = [:], timeout: Duration = .seconds(60)
    ) async throws -> HTTPAnswer {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: Array(try JSONSerialization.data(withJSONObject: json))))
        } else if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await HTTPClient.shared.execute(
            request, timeout: .milliseconds(Int64(timeout / .milliseconds(1))))
        let collected = try await response.body.collect(upTo: 64 << 20)
        return HTTPAnswer(status: Int(response.status.code), headers: response.headers, body: String(buffer: collected))
    }
}

/// A server-sent event stream (a streamed completion, the admin events), read event by event in the background.
final class StreamReader: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [String] = []
    private var status: Int?
    private var finished = false
    private var failure: (any Error)?
    private var task: Task<Void, Never>?

    /// A streamed completion through the gateway at `url`.
    convenience init(_ url: String, model: String, maxTokens: Int, prompt: String = "hi") throws {
        let payload: [String: any Sendable] = [
            "model": model, "prompt": prompt, "max_tokens": maxTokens, "temperature": 0, "stream": true,
        ]
        var request = HTTPClientRequest(url: url + "/v1/completions")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: Array(try JSONSerialization.data(withJSONObject: payload))))
        self.init(request)
    }

    init(_ request: HTTPClientRequest) {
        task = Task { [self] in
            defer { lock.withLock { finished = true } }
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
                lock.withLock { status = Int(response.status.code) }
                var pending = ""
                for try await buffer in response.body {
                    pending += String(buffer: buffer)
                    while let range = pending.range(of: "\n\n") {
                        let event = String(pending[..<range.lowerBound])
                        pending.removeSubrange(..<range.upperBound)
                        lock.withLock { events.append(event) }
                    }
                }
            } catch {
                lock.withLock { failure = error }
            }
        }
    }

    var count: Int { lock.withLock { events.count } }
    var isFinished: Bool { lock.withLock { finished } }

    /// The JSON objects of the events' `data:` lines.
    var dataObjects: [[String: Any]] {
        all.compactMap { event in
            guard let line = event.split(separator: "\n").first(where: { $0.hasPrefix("data: ") }) else { return nil }
            return try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any]
        }
    }
    var all: [String] { lock.withLock { events } }
    var httpStatus: Int? { lock.withLock { status } }
    var error: (any Error)? { lock.withLock { failure } }

    /// The finish_reason of the last data event that has one.
    var finishReason: String? {
        for event in all.reversed() where event.hasPrefix("data: {") {
            let object = try? JSONSerialization.jsonObject(with: Data(event.dropFirst(6).utf8)) as? [String: Any]
            if let reason = (object?["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String {
                return reason
            }
        }
        return nil
    }

    func waitUntil(timeout: Duration = .seconds(60), _ condition: (StreamReader) -> Bool) async -> Bool {
        await poll(timeout: timeout) { condition(self) }
    }

    /// Closes the connection, as a client that goes away.
    func cancel() { task?.cancel() }
}

/// The YAML of `count` simulated models on one GPU that holds `awake` of them (each 3 GiB weights + 3 GiB KV cache
/// + 1.2 GiB residue), preloading the first `awake`; `modelLines` are added to every model.
func simulatedModels(
    _ count: Int, awake: Int, timeScale: Double = 0.01, tokensPerSecond: Double = 200, modelLines: [String] = []
) -> String {
    let gpuGiB = Double(awake) * 7.2 + Double(count - awake) * 1.2 + 0.5
    var lines = ["gpus:", "  - id: \"0\"", "    memory_gib: \(gpuGiB)", "models:"]
    for index in 0..<count {
        lines += [
            "  - name: m\(index)",
            "    preload: \(index < awake)",
            "    engine: {simulated: true, time_scale: \(timeScale), tokens_per_second: \(tokensPerSecond)}",
            "    weights_gib: 3",
            "    kv_cache_gib: 3",
        ]
        lines += modelLines.map { "    " + $0 }
    }
    return lines.joined(separator: "\n") + "\n"
}
