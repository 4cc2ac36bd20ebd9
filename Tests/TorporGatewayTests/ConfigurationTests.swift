import Foundation
import Testing
import TorporCheckpoint
import TorporEngine

@testable import TorporGateway

@Suite struct ConfigurationTests {
    static let full = """
        listen:
          client: 0.0.0.0:9000
          admin: 127.0.0.1:9001
        admin_token: a-long-enough-admin-token
        api_keys:
          - name: team-a
            key: sk-0123456789
            models: [qwen]
        limits:
          max_request_bytes: 1024
          queue_depth: 8
          queue_timeout_seconds: 30
          retry_after_seconds: 5
          upstream_read_timeout_seconds: 60
          upstream_head_timeout_seconds: 90
          request_timeout_seconds: 900
          shutdown_grace_seconds: 5
        scheduler:
          min_residency_seconds: 3
          starvation_bound_seconds: 20
          drain_timeout_seconds: null
          transition_timeout_seconds: 90
          demand_half_life_seconds: 30
          max_consecutive_failures: 2
        host_memory_gib: 32
        state_dir: /tmp/torpor-config-test
        engine_transport: tcp
        gpus:
          - id: "0"
            memory_gib: 24
        models:
          - name: qwen
            engine:
              command: [vllm, serve, /models/qwen, --enable-sleep-mode]
              environment: {VLLM_LOGGING_LEVEL: WARNING}
              ready_timeout_seconds: 120
            weights_gib: 1.5
            kv_cache_gib: 4
            sleep_residue_gib: 1
            sleep_level: 2
            pinned: true
            idle_ttl_seconds: 600
            weights_path: /models/qwen-step-2
          - name: sim
            preload: true
            engine: {simulated: true, time_scale: 0.1}
            weights_gib: 2
            kv_cache_gib: 2
          - name: outside
            engine: {url: "http://127.0.0.1:8000"}
            weights_gib: 1
            kv_cache_gib: 1
        """

    @Test func everyKeyIsRead() throws {
        let configuration = try GatewayConfiguration.parse(yaml: Self.full)
        #expect(configuration.listen.client == .init(host: "0.0.0.0", port: 9000))
        #expect(configuration.listen.admin == .init(host: "127.0.0.1", port: 9001))
        #expect(configuration.apiKeys == [.init(name: "team-a", key: "sk-0123456789", models: ["qwen"])])
        #expect(configuration.limits.maxRequestBytes == 1024)
        #expect(configuration.limits.queueDepth == 8)
        #expect(configuration.limits.retryAfterSeconds == 5)
        #expect(configuration.limits.shutdownGraceSeconds == 5)
        #expect(configuration.limits.upstreamReadTimeoutSeconds == 60)
        #expect(configuration.limits.upstreamHeadTimeoutSeconds == 90)
        #expect(configuration.limits.requestTimeoutSeconds == 900)
        #expect(configuration.scheduler.drainTimeoutSeconds == nil)
        #expect(configuration.scheduler.maxConsecutiveFailures == 2)
        #expect(configuration.hostMemoryBytes == 32 << 30)
        #expect(configuration.gpus == [.init(id: "0", memoryBytes: 24 << 30)])
        let qwen = configuration.models[0]
        #expect(
            qwen.engine
                == .command(
                    arguments: ["vllm", "serve", "/models/qwen", "--enable-sleep-mode"],
                    environment: ["VLLM_LOGGING_LEVEL": "WARNING"], readyTimeoutSeconds: 120))
        #expect(qwen.weightsBytes == 1_610_612_736)
        #expect(qwen.sleepLevel == .level2)
        #expect(qwen.pinned && !qwen.preload)
        #expect(qwen.idleTTLSeconds == 600)
        #expect(qwen.weightsPath == "/models/qwen-step-2")
        #expect(configuration.models[1].engine == .simulated(timeScale: 0.1, tokensPerSecond: 100))
        #expect(configuration.models[2].engine == .external(url: "http://127.0.0.1:8000"))
        let spec = try #require(
            qwen.engineSpec(
                listening: .port(8123), gpu: configuration.gpus[0], stateDirectory: "/tmp", simulator: "torpor"))
        #expect(configuration.engineTransport == .loopbackTCP)
        #expect(spec.model == "/models/qwen")
        #expect(
            spec.commandArguments(port: 8123).suffix(6) == [
                "--served-model-name", "qwen", "--host", "127.0.0.1", "--port", "8123",
            ])
    }

    @Test func theExampleThatServePrintsIsAValidConfiguration() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: GatewayUnderTest.torporBinary)
        process.arguments = ["serve", "--example-config"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let yaml = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let configuration = try GatewayConfiguration.parse(yaml: yaml)
        #expect(configuration.models.map(\.name) == ["qwen3-8b", "llama-3.1-8b"])
        #expect(configuration.models[0].aliases == ["default"] && configuration.models[0].preload)
    }

    @Test func defaultsNeedOnlyModels() throws {
        let configuration = try GatewayConfiguration.parse(
            yaml: "models:\n  - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n")
        #expect(configuration.listen.client.port == 8080)
        #expect(configuration.listen.admin == .init(host: "127.0.0.1", port: 8081))
        #expect(configuration.scheduler.drainTimeoutSeconds == 30)
        #expect(configuration.models[0].sleepLevel == .auto)
        #expect(configuration.engineTransport == .unixSocket)
    }

    @Test(arguments: [
        ("models: []\n", "at least one model"),
        ("modles: []\n", "modles: unknown key"),
        ("models:\n  - {name: a, engine: {simulated: true}, weights_gib: 1}\n", "kv_cache_gib is missing"),
        (
            "models:\n  - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1, colour: red}\n",
            "models[0].colour: unknown key"
        ),
        (
            "models:\n  - {name: a, engine: {simulated: true, command: [x]}, weights_gib: 1, kv_cache_gib: 1}\n",
            "exactly one of command, simulated or url"
        ),
        (
            "models:\n  - {name: a, engine: {url: 'http://10.0.0.5:8000'}, weights_gib: 1, kv_cache_gib: 1}\n",
            "not on loopback"
        ),
        (
            "models:\n  - {name: a, engine: {simulated: true}, weights_gib: 100, kv_cache_gib: 1}\n",
            "more than GPU 0's 80.00 GiB"
        ),
        (
            "models:\n  - {name: a, gpu: '1', engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "no GPU \"1\""
        ),
        (
            "models:\n  - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1, sleep_level: 3}\n",
            "sleep_level: \"3\" is not auto, 1, 2 or host-cache"
        ),
        (
            "listen: {client: 'localhost:99999'}\nmodels:\n  - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "is not an address"
        ),
        (
            "limits: {queue_depth: -1}\nmodels:\n  - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "limits.queue_depth: expected a whole number of at least 1, not \"-1\""
        ),
        (
            "api_keys: [{key: short}]\nmodels:\n  - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "at least 8 characters"
        ),
        ("models: [\n", "invalid YAML"),
        (
            "models:\n  - {name: a, preload: maybe, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "models[0].preload: expected true or false, not \"maybe\""
        ),
        (
            "models:\n  - {name: a, engine: {simulated: true}, weights_gib: [1], kv_cache_gib: 1}\n",
            "models[0].weights_gib: expected a number of at least 0.0, not a list"
        ),
        (
            "models:\n  - {name: a, gpu: '7', engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "models[0].gpu (model \"a\"): no GPU \"7\""
        ),
        (
            "engine_transport: udp\nmodels:\n  - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "engine_transport: expected unix (the default) or tcp, not \"udp\""
        ),
        (
            "models:\n  - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1, sleep_level: host-cache}\n",
            "host-cache wakes from the model's Torpor pack; set checkpoint"
        ),
        (
            "models:\n  - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1, checkpoint: /nowhere/pack}\n",
            "models[0].checkpoint: /nowhere/pack"
        ),
        (
            "models:\n  - {name: a, aliases: [b], engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n"
                + "  - {name: b, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "configured twice"
        ),
        (
            "models:\n  - {name: a, aliases: [x], engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n"
                + "  - {name: b, aliases: [x], engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "models[1].aliases (model \"b\"): \"x\" is already the name or an alias of another model"
        ),
        (
            "models:\n  - {name: a, served_name: q, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}\n",
            "models[0].served_name (model \"a\"): \"q\" is only for an external engine"
        ),
    ])
    func badConfigurationsNameTheKey(yaml: String, message: String) {
        #expect {
            _ = try GatewayConfiguration.parse(yaml: yaml)
        } throws: { error in
            (error as? ConfigurationError)?.message.contains(message) == true
        }
    }

    @Test func aReloadIsSortedIntoWhatKeepsItsEngineAndWhatDoesNot() throws {
        func configuration(_ models: String, extra: String = "") throws -> GatewayConfiguration {
            try GatewayConfiguration.parse(yaml: extra + "gpus: [{id: '0', memory_gib: 40}]\nmodels:\n" + models)
        }
        let line = { (name: String, rest: String) in
            "  - {name: \(name), engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1\(rest)}\n"
        }
        let old = try configuration(line("a", "") + line("b", "") + line("c", "") + line("d", ""))
        let new = try configuration(
            line("a", "") + line("c", ", sleep_residue_gib: 0.5")
                + line("d", ", aliases: [x], idle_ttl_seconds: 9, pinned: true")
                + line("e", ""), extra: "limits: {queue_depth: 3}\n")
        let change = try ConfigurationChange.between(old, new)
        #expect(change.unchanged == ["a"] && change.removed == ["b"] && change.restarted == ["c"])
        #expect(change.updated == ["d"] && change.added == ["e"] && change.settings == ["limits"])
        #expect(try ConfigurationChange.between(old, old).isEmpty)

        let moved = try configuration(line("a", ""), extra: "listen: {client: ':9000'}\nstate_dir: /tmp/elsewhere\n")
        #expect {
            _ = try ConfigurationChange.between(old, moved)
        } throws: { error in
            (error as? ConfigurationError)?.message.hasPrefix("listen, state_dir changed, which only a restart applies")
                == true
        }
    }

    @Test func keysFromTheEnvironmentComeFromTheOneTheCallerPasses() throws {
        let yaml = """
            api_keys: [{name: team, key_env: TEAM_KEY}]
            models: [{name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}]
            """
        let configuration = try GatewayConfiguration.parse(yaml: yaml, environment: ["TEAM_KEY": "team-key-0123"])
        #expect(configuration.apiKeys.map(\.key) == ["team-key-0123"])
        #expect {
            _ = try GatewayConfiguration.parse(yaml: yaml, environment: [:], source: "/etc/torpor.yaml")
        } throws: { error in
            (error as? ConfigurationError)?.message
                == "/etc/torpor.yaml: api_keys[0].key_env: the environment variable TEAM_KEY is not set"
        }
    }

    @Test func theAdminTokenFromTheEnvironmentOverridesTheFile() throws {
        var configuration = try GatewayConfiguration.parse(
            yaml: "models: [{name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1}]")
        configuration.adminToken = "token-from-the-file-0123"
        let fromEnvironment = try Gateway.adminToken(
            configuration, environment: ["TORPOR_ADMIN_TOKEN": "token-from-the-environment"])
        #expect(fromEnvironment.token == "token-from-the-environment" && !fromEnvironment.generated)
        let fromFile = try Gateway.adminToken(configuration, environment: ["TORPOR_ADMIN_TOKEN": ""])
        #expect(fromFile.token == "token-from-the-file-0123" && !fromFile.generated)
        configuration.adminToken = nil
        let generated = try Gateway.adminToken(configuration, environment: [:])
        #expect(generated.generated && generated.token.count == 64)
        #expect {
            _ = try Gateway.adminToken(configuration, environment: ["TORPOR_ADMIN_TOKEN": "short"])
        } throws: { error in
            (error as? ConfigurationError)?.message == "TORPOR_ADMIN_TOKEN: use at least 16 characters"
        }
    }

    /// A real pack of the tiny Llama fixture, made as `torpor pack` makes it.
    static func tinyPack() throws -> (path: String, containerBytes: Int) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "torpor-gateway-pack-\(getpid())-\(UInt64.random(in: 0..<UInt64.max))"
        ).path
        let report = try ModelPack.pack(model: RealVLLM.tinyLlama, to: directory)
        return (directory, report.containerBytes)
    }

    @Test func aCheckpointIsReadAndGivesTheEngineTheTorporLoadFormat() throws {
        let pack = try Self.tinyPack()
        defer { try? FileManager.default.removeItem(atPath: pack.path) }
        let yaml = """
            host_cache_dir: /dev/shm/torpor-test
            models:
              - name: tiny
                engine: {command: [vllm, serve, \(pack.path)]}
                weights_gib: 0.01
                kv_cache_gib: 0.1
                checkpoint: \(pack.path)/
                sleep_level: host-cache
              - name: plain
                engine: {command: [vllm, serve, \(pack.path), --load-format, torpor]}
                weights_gib: 0.01
                kv_cache_gib: 0.1
                checkpoint: \(pack.path)
            """
        let configuration = try GatewayConfiguration.parse(yaml: yaml)
        let tiny = configuration.models[0]
        #expect(tiny.checkpoint?.path == pack.path)
        #expect(tiny.checkpoint?.storedBytes == pack.containerBytes)
        #expect(tiny.checkpoint?.containers == [pack.path + "/model.torpor"])
        #expect(tiny.hostCacheBytes == pack.containerBytes)
        #expect(configuration.models[1].hostCacheBytes == 0)
        let spec = try #require(
            tiny.engineSpec(
                listening: .port(8123), gpu: configuration.gpus[0], stateDirectory: "/tmp", simulator: "torpor",
                hostCacheDirectory: configuration.hostCacheDirectory))
        #expect(
            spec.arguments == [
                "serve", pack.path, "--served-model-name", "tiny", "--load-format", "torpor",
                "--model-loader-extra-config", #"{"cache_dir":"/dev/shm/torpor-test","source":"host-cache"}"#,
            ])
        // A command that names its own load format keeps it, and only host-cache models get the cache option.
        let plain = try #require(
            configuration.models[1].engineSpec(
                listening: .port(8124), gpu: configuration.gpus[0], stateDirectory: "/tmp", simulator: "torpor"))
        #expect(plain.arguments == ["serve", pack.path, "--load-format", "torpor", "--served-model-name", "plain"])
    }

    @Test func hostCacheCheckpointsMustFitTheHostBudget() throws {
        let pack = try Self.tinyPack()
        defer { try? FileManager.default.removeItem(atPath: pack.path) }
        let yaml = """
            host_memory_gib: 0.0001
            models:
              - {name: a, engine: {simulated: true}, weights_gib: 1, kv_cache_gib: 1, checkpoint: \(pack.path),
                 sleep_level: host-cache}
            """
        #expect {
            _ = try GatewayConfiguration.parse(yaml: yaml)
        } throws: { error in
            (error as? ConfigurationError)?.message.contains("the host-cache models' checkpoints need") == true
        }
    }

    @Test func preloadedModelsMustFitTogether() {
        let yaml = """
            gpus: [{id: "0", memory_gib: 10}]
            models:
              - {name: a, preload: true, engine: {simulated: true}, weights_gib: 3, kv_cache_gib: 1}
              - {name: b, preload: true, engine: {simulated: true}, weights_gib: 3, kv_cache_gib: 1}
            """
        #expect {
            _ = try GatewayConfiguration.parse(yaml: yaml)
        } throws: { error in
            (error as? ConfigurationError)?.message.contains("the preloaded and pinned models (a, b)") == true
        }
    }
}
