import Foundation
import Glibc
import Testing
import TorporEngine
import TorporTestSupport

@Suite("Supervisor")
struct SupervisorTests {
    final class Fixture {
        let directory: String
        let ledger: String
        let supervisor: Supervisor

        init(directory: String? = nil) throws {
            self.directory =
                directory ?? NSTemporaryDirectory()
                + "/torpor-supervisor-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            ledger = self.directory + "/gpu.json"
            supervisor = try Supervisor(
                stateDirectory: self.directory + "/state", logDirectory: self.directory + "/logs",
                logger: Engines.logger)
        }

        /// A simulated engine run through `sh`, which first starts a background `sleep`: a worker in the group.
        func spec(_ name: String) -> EngineSpec {
            var spec = EngineSpec(name: name, model: name)
            spec.executable = "/bin/sh"
            spec.arguments = [
                "-c",
                "sleep 300 & exec \"$0\" sim-engine --model \(name) --time-scale 0.01 --cold-start-seconds 1 --gpu-ledger \(ledger) \"$@\"",
                SimulatedEngineProcess.binary,
            ]
            spec.readinessDeadline = .seconds(20)
            return spec
        }

        /// Starts `spec` and tracks its process, so a failing test leaves no engine behind.
        @discardableResult
        func start(_ spec: EngineSpec) async throws -> Supervisor.RunningEngine {
            let engine = try await supervisor.start(spec)
            Engines.track(engine.process)
            return engine
        }

        deinit { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// True while any process of group `pgid` exists.
    static func groupAlive(_ pgid: Int32) -> Bool { kill(-pgid, 0) == 0 }

    static func waitUntil(_ condition: () -> Bool, timeout: Duration = .seconds(10)) async -> Bool {
        await poll(timeout: timeout, every: .milliseconds(20), until: condition)
    }

    @Test("the default command is vllm serve with sleep mode, bound to loopback, with per-engine GPU settings")
    func defaultCommand() {
        var spec = EngineSpec(name: "qwen", model: "Qwen/Qwen3-0.6B")
        spec.cudaVisibleDevices = "1"
        spec.gpuMemoryUtilization = 0.45
        #expect(spec.executable == "vllm")
        #expect(
            spec.commandArguments(port: 8001) == [
                "serve", "Qwen/Qwen3-0.6B", "--enable-sleep-mode", "--host", "127.0.0.1", "--port", "8001",
                "--gpu-memory-utilization", "0.45",
            ])
        #expect(spec.commandEnvironment(parent: [:]) == ["VLLM_SERVER_DEV_MODE": "1", "CUDA_VISIBLE_DEVICES": "1"])
    }

    @Test("an engine gets what it needs of Torpor's environment, what its model names, and no secret")
    func explicitEnvironment() {
        var spec = EngineSpec(name: "qwen", model: "Qwen/Qwen3-0.6B")
        spec.environment = ["EXTRA": "1"]
        spec.passEnvironment = ["AWS_PROFILE"]
        let parent = [
            "PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C", "PYTHONPATH": "/opt/py", "HF_HOME": "/hf",
            "VLLM_CPU_KVCACHE_SPACE": "1", "TORPOR_LIBRARY": "/lib/libtorpor.so", "CUDA_HOME": "/cuda",
            "TORPOR_ADMIN_TOKEN": "secret-admin-token", "OPENAI_API_KEY": "sk-x", "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_PROFILE": "models", "MY_DB_PASSWORD": "z",
        ]
        let environment = spec.commandEnvironment(parent: parent)
        for name in [
            "PATH", "HOME", "LC_ALL", "PYTHONPATH", "HF_HOME", "VLLM_CPU_KVCACHE_SPACE", "TORPOR_LIBRARY", "CUDA_HOME",
            "AWS_PROFILE",
        ] {
            #expect(environment[name] == parent[name], "\(name)")
        }
        for name in ["TORPOR_ADMIN_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "MY_DB_PASSWORD"] {
            #expect(environment[name] == nil, "\(name) reached the engine")
        }
        #expect(environment["EXTRA"] == "1")
        #expect(environment["VLLM_SERVER_DEV_MODE"] == "1")
    }

    @Test("start waits for readiness, logs to a file; stop takes the whole process group down")
    func startAndStop() async throws {
        let fixture = try Fixture()
        let engine = try await fixture.start(fixture.spec("alpha"))
        #expect(try await engine.client.isHealthy())
        #expect(Self.groupAlive(engine.process.pid))
        #expect(FileManager.default.fileExists(atPath: fixture.directory + "/state/alpha.engine.json"))
        let log = try String(contentsOfFile: fixture.directory + "/logs/alpha.log", encoding: .utf8)
        #expect(log.contains("listening on http://127.0.0.1:\(engine.port)"))
        await fixture.supervisor.stop("alpha")
        #expect(await Self.waitUntil { !Self.groupAlive(engine.process.pid) }, "the background worker outlived stop")
        #expect(!FileManager.default.fileExists(atPath: fixture.directory + "/state/alpha.engine.json"))
    }

    @Test("an engine can serve on a unix socket instead of a port")
    func unixSocket() async throws {
        let fixture = try Fixture()
        var spec = fixture.spec("epsilon")
        spec.unixSocketPath = fixture.directory + "/epsilon.sock"
        #expect(spec.commandArguments(port: 0).suffix(2) == ["--uds", fixture.directory + "/epsilon.sock"])
        let engine = try await fixture.start(spec)
        #expect(engine.client.baseURL.hasPrefix("http+unix://"))
        #expect(try await engine.client.isHealthy())
        try await engine.client.sleep(level: .offloadWeights)
        #expect(try await engine.client.wakeUp() == .awake)
        let log = try String(contentsOfFile: fixture.directory + "/logs/epsilon.log", encoding: .utf8)
        #expect(log.contains("listening on unix:" + fixture.directory + "/epsilon.sock"))
        await fixture.supervisor.stopAll()
    }

    @Test("a crashed engine shows its exit status and starts again on its port once stopped")
    func crashedEngineStartsAgain() async throws {
        // Whether and when it restarts is the gateway's restart policy (SchedulerTests, ScenarioTests).
        let fixture = try Fixture()
        var spec = fixture.spec("beta")
        spec.port = try EngineProcess.freePort()
        let first = try await fixture.start(spec)
        _ = try? await RawHTTP.send("POST", first.client.baseURL + "/sim/fault?kind=crash")
        #expect(await Self.waitUntil { first.process.exitStatus() != nil })
        #expect(first.process.exitStatus() == 137)
        await #expect(throws: EngineError.self) { try await fixture.supervisor.start(spec) }
        await fixture.supervisor.stop("beta")
        let second = try await fixture.start(spec)
        #expect(second.port == first.port && second.process.pid != first.process.pid)
        #expect(try await second.client.isHealthy())
        await fixture.supervisor.stopAll()
        var seen: [SupervisorEvent] = []
        for await event in fixture.supervisor.eventStream {
            seen.append(event)
            if seen.count == 4 { break }
        }
        #expect(
            seen.map { if case .started = $0 { "started" } else { "stopped" } } == [
                "started", "stopped", "started", "stopped",
            ])
    }

    @Test("a new supervisor stops the engines a killed predecessor left running")
    func cleansUpPredecessors() async throws {
        let old = try Fixture()
        let orphan = try await old.start(old.spec("gamma"))
        // The old supervisor is "killed": it never stops its engine. A new one takes over the same state.
        let successor = try Supervisor(
            stateDirectory: old.directory + "/state", logDirectory: old.directory + "/logs", logger: Engines.logger)
        #expect(await successor.cleanUpPredecessors() == ["gamma"])
        // This test process is the orphan's parent, so it reaps it; a killed supervisor's init would.
        #expect(await Self.waitUntil { orphan.process.exitStatus() != nil && !Self.groupAlive(orphan.process.pid) })
        // Nothing is recorded any more, so a second clean-up stops nothing.
        #expect(await successor.cleanUpPredecessors() == [])
    }

    @Test("an engine that is not ready by its deadline is stopped and reported")
    func readinessDeadline() async throws {
        let fixture = try Fixture()
        var spec = fixture.spec("slow")
        // An hour-long cold start: the engine can never be ready, however slowly this machine runs.
        spec.arguments![1] = spec.arguments![1].replacingOccurrences(
            of: "--cold-start-seconds 1", with: "--cold-start-seconds 360000")
        spec.readinessDeadline = .milliseconds(500)
        do {
            try await fixture.supervisor.start(spec)
            Issue.record("an hour-long cold start was ready within 0.5 s")
        } catch {
            #expect(error.code == .timeout)
            #expect(error.message.contains("slow") && error.message.contains("not ready within"), "\(error.message)")
        }
        #expect(await fixture.supervisor.engine("slow") == nil)
        #expect(!FileManager.default.fileExists(atPath: fixture.directory + "/state/slow.engine.json"))
    }

    @Test("run() as a service stops every engine when cancelled")
    func runsAsService() async throws {
        let fixture = try Fixture()
        let engine = try await fixture.start(fixture.spec("delta"))
        let service = Task { try await fixture.supervisor.run() }
        try await Task.sleep(for: .milliseconds(300))
        service.cancel()
        try await service.value
        #expect(await Self.waitUntil { !Self.groupAlive(engine.process.pid) })
    }
}
