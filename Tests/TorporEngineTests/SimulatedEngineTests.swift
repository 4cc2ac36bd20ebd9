import AsyncHTTPClient
import Foundation
import Glibc
import NIOCore
import NIOHTTP1
import Testing
import TorporEngine

/// A `torpor sim-engine` process for one test, stopped (whole process group) when released.
final class SimulatedEngineProcess: @unchecked Sendable {
    let process: EngineProcess
    let client: EngineClient
    let model: String

    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("torpor").path
    }

    /// Starts an engine named `model` on the simulated GPU whose ledger is `ledger`, with extra `arguments`.
    init(model: String, ledger: String, arguments: [String] = [], waitUntilReady: Bool = true) async throws {
        self.model = model
        let port = try EngineProcess.freePort()
        process = try EngineProcess(
            executable: Self.binary,
            arguments: ["sim-engine", "--model", model, "--port", "\(port)", "--gpu-ledger", ledger] + arguments,
            environment: EngineEnvironment.inherited(from: ProcessInfo.processInfo.environment),
            logPath: NSTemporaryDirectory() + "/torpor-sim-\(model)-\(getpid())-\(port).log")
        client = EngineClient(
            name: model, baseURL: "http://127.0.0.1:\(port)", timeouts: EngineClient.Timeouts().scaled(by: 0.05),
            logger: Engines.logger)
        if waitUntilReady {
            do {
                try await process.waitUntilReady(client, deadline: .seconds(20))
            } catch {
                await process.stop()
                throw error
            }
        }
    }

    func stop() async { await process.stop(grace: .seconds(2)) }

    deinit { process.signalGroup(SIGKILL) }
}

/// The ledger of a fresh simulated GPU.
func freshLedger() -> String {
    NSTemporaryDirectory() + "/torpor-test-gpu-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json"
}

@Suite("Simulated engine: memory, latency and faults")
struct SimulatedEngineTests {
    /// 10 GiB GPU; each model needs 3 GB weights + 2 GiB KV cache + 1.2 GiB residue, so only one fits awake.
    static let small = [
        "--gpu-memory-gib", "10", "--weight-bytes", "3000000000", "--kv-cache-bytes", "\(2 << 30)", "--time-scale",
        "0.01",
        "--cold-start-seconds", "1",
    ]

    @Test("a wake without room on the shared GPU fails with 500 until the neighbour sleeps")
    func wakeNeedsRoom() async throws {
        let ledger = freshLedger()
        defer { unlink(ledger) }
        let a = try await SimulatedEngineProcess(model: "model-a", ledger: ledger, arguments: Self.small)
        try await a.client.sleep(level: .offloadWeights)
        let b = try await SimulatedEngineProcess(model: "model-b", ledger: ledger, arguments: Self.small)
        do {
            _ = try await a.client.wakeUp()
            Issue.record("model-a woke although model-b holds the GPU")
        } catch {
            #expect(error.code == .httpStatus && error.status == 500)
            #expect(error.message.contains("CUDA out of memory"), "\(error.message)")
        }
        #expect(try await a.client.isSleeping())
        try await b.client.sleep(level: .discardWeights)
        #expect(try await a.client.wakeUp() == .awake)
        #expect(try await a.client.sleepState() == .awake)
        // The ledger shows where every byte is: a level-1 sleeper holds its weights in host memory.
        try await a.client.sleep(level: .offloadWeights)
        let data = try #require(FileManager.default.contents(atPath: ledger))
        let engines = try #require(
            (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["engines"] as? [String: [String: Any]])
        let entryA = try #require(engines.values.first { $0["model"] as? String == "model-a" })
        #expect(entryA["hostBytes"] as? Int == 3_000_000_000)
        #expect(entryA["gpuBytes"] as? Int == 1_288_490_188)
        await a.stop()
        await b.stop()
    }

    @Test("an engine answering sleep and wake with an empty 200, as vLLM 0.25 does, goes through both levels")
    func emptyLifecycleAnswers() async throws {
        let ledger = freshLedger()
        defer { unlink(ledger) }
        let engine = try await SimulatedEngineProcess(
            model: "model-a", ledger: ledger, arguments: Self.small + ["--empty-lifecycle-answers"])
        let (_, body) = try await RawHTTP.send("POST", engine.client.baseURL + "/sleep?level=1")
        #expect(body.isEmpty, "the engine answered \(body)")
        #expect(try await engine.client.isSleeping())
        #expect(try await engine.client.wakeUp() == .awake)
        try await engine.client.sleep(level: .discardWeights)
        #expect(try await engine.client.isSleeping())
        #expect(try await engine.client.wakeUp(tags: [.weights]) == .partial(tags: []))
        #expect(try await engine.client.wakeUp(tags: [.kvCache]) == .awake)
        try await engine.client.sleep(level: .discardWeights)
        try await engine.client.wakeFromDiscard(model: "model-a", weightsPath: "model-a")
        #expect(try await !engine.client.isSleeping())
        await engine.stop()
    }

    @Test("a cold start without room fails with the reason in the engine's log")
    func coldStartWithoutRoom() async throws {
        let ledger = freshLedger()
        defer { unlink(ledger) }
        let a = try await SimulatedEngineProcess(model: "model-a", ledger: ledger, arguments: Self.small)
        do {
            _ = try await SimulatedEngineProcess(model: "model-b", ledger: ledger, arguments: Self.small)
            Issue.record("model-b started on a full GPU")
        } catch let error as EngineError {
            #expect(error.code == .processFailed)
            #expect(
                error.message.contains("exited with status 1") && error.message.contains("CUDA out of memory"),
                "\(error.message)")
        }
        await a.stop()
    }

    @Test("a transition while a neighbour is mid-transition fails like vLLM's memory assert")
    func neighbourTransitionConflict() async throws {
        let ledger = freshLedger()
        defer { unlink(ledger) }
        let arguments = ["--time-scale", "0.01", "--cold-start-seconds", "1", "--weight-bytes", "1000000000"]
        let a = try await SimulatedEngineProcess(model: "model-a", ledger: ledger, arguments: arguments)
        let b = try await SimulatedEngineProcess(model: "model-b", ledger: ledger, arguments: arguments)
        try await a.client.sleep(level: .offloadWeights)
        // model-a's wake now takes 2000 times longer (about 4.4 s, under the client's 6 s wake deadline):
        // model-b's sleep lands in the middle of it.
        _ = try await RawHTTP.send("POST", a.client.baseURL + "/sim/fault?kind=slow_wake&factor=2000")
        let wake = Task { try await a.client.wakeUp() }
        // Wait until the ledger shows model-a mid-transition, however slowly this machine runs the wake request.
        let deadline = ContinuousClock.now + .seconds(10)
        var midTransition = false
        while ContinuousClock.now < deadline && !midTransition {
            let data = FileManager.default.contents(atPath: ledger) ?? Data()
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            midTransition = object?["transition"] != nil
            if !midTransition { try await Task.sleep(for: .milliseconds(5)) }
        }
        try #require(midTransition, "the ledger never showed model-a's wake in progress")
        do {
            try await b.client.sleep(level: .offloadWeights)
            Issue.record("model-b slept while model-a was waking on the same GPU")
        } catch {
            #expect(error.status == 500)
            #expect(error.message.contains("Memory usage increased after sleeping"), "\(error.message)")
        }
        #expect(try await wake.value == .awake)
        try await b.client.sleep(level: .offloadWeights)
        #expect(try await b.client.isSleeping())
        await a.stop()
        await b.stop()
    }

    @Test("wakes take the time the latency model gives them")
    func latencyModel() async throws {
        let ledger = freshLedger()
        defer { unlink(ledger) }
        // The defaults (1.2 GB of weights, the rates real vLLM measured on an H100/H200) in real time: a level-1
        // wake copies the weights at 40 GB/s (30 ms) and maps the KV cache (50 ms); a level-2 reload runs at
        // 5.5 GB/s (218 ms).
        let engine = try await SimulatedEngineProcess(
            model: "qwen", ledger: ledger, arguments: ["--cold-start-seconds", "0.5"])
        try await engine.client.sleep(level: .offloadWeights)
        var started = ContinuousClock.now
        _ = try await engine.client.wakeUp()
        #expect(ContinuousClock.now - started >= .milliseconds(78))
        try await engine.client.sleep(level: .discardWeights)
        _ = try await engine.client.wakeUp(tags: [.weights])
        started = ContinuousClock.now
        try await engine.client.reloadWeights(from: "qwen")
        #expect(ContinuousClock.now - started >= .milliseconds(215))
        _ = try await engine.client.wakeUp(tags: [.kvCache])
        await engine.stop()
    }

    @Test("injected faults: 500 on the next sleep, a hung wake hits the client's deadline, a crash ends the process")
    func faults() async throws {
        let ledger = freshLedger()
        defer { unlink(ledger) }
        let engine = try await SimulatedEngineProcess(
            model: "faulty", ledger: ledger,
            arguments: [
                "--time-scale", "0.01", "--cold-start-seconds", "1", "--fault", "fail_next_sleep", "--admin-token",
                "s3cret",
            ])
        do {
            try await engine.client.sleep(level: .offloadWeights)
            Issue.record("the injected sleep failure did not happen")
        } catch {
            #expect(error.status == 500 && error.message.contains("Injected fault"))
        }
        try await engine.client.sleep(level: .offloadWeights)
        // The fault endpoint wants the admin token.
        let denied = try await RawHTTP.send("POST", engine.client.baseURL + "/sim/fault?kind=hang_next_wake")
        #expect(denied.status == 401)
        let armed = try await RawHTTP.sendAuthorized(
            "POST", engine.client.baseURL + "/sim/fault?kind=hang_next_wake", token: "s3cret")
        #expect(armed.status == 200)
        var client = engine.client
        client.timeouts.wake = .milliseconds(300)
        do {
            _ = try await client.wakeUp()
            Issue.record("a hung wake returned")
        } catch {
            #expect(error.code == .timeout)
            #expect(error.message.contains("faulty") && error.message.contains("wake up"), "\(error.message)")
        }
        _ = try? await RawHTTP.sendAuthorized("POST", engine.client.baseURL + "/sim/fault?kind=crash", token: "s3cret")
        let deadline = ContinuousClock.now + .seconds(5)
        while engine.process.exitStatus() == nil && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(engine.process.exitStatus() != nil, "the engine did not exit after an injected crash")
        do {
            _ = try await engine.client.isHealthy()
            Issue.record("a crashed engine answered")
        } catch {
            #expect(error.code == .transport)
        }
    }
}

extension RawHTTP {
    static func sendAuthorized(_ method: String, _ url: String, token: String) async throws -> (
        status: Int, body: String
    ) {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: body))
    }
}
