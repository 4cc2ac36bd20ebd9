import ArgumentParser
import Foundation
import Logging
import TorporGateway

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the gateway with three simulated engines on one simulated GPU that holds two of them awake.",
        discussion: """
            No GPU or vLLM needed: each model is a `torpor sim-engine` process with vLLM's sleep-mode contract and \
            latencies 20 times faster than real vLLM's on an H100. Prints ready-to-paste curl and Python examples.
            """)

    @Option(help: "Client API port.")
    var port: Int = 8080

    @Option(help: "Admin API port (loopback only).")
    var adminPort: Int = 8081

    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .notice

    func validate() throws {
        for value in [port, adminPort] where !(0...65535).contains(value) {
            throw ValidationError("ports must be between 0 and 65535")
        }
    }

    /// Three 6 GiB models (3 GiB weights, 3 GiB KV cache, 1.2 GiB sleep residue) on a 16 GiB GPU: two fit awake.
    static func configuration(port: Int, adminPort: Int) throws(ConfigurationError) -> GatewayConfiguration {
        let state = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("torpor-demo-\(getuid())").path
        let yaml = """
            listen:
              client: 127.0.0.1:\(port)
              admin: 127.0.0.1:\(adminPort)
            state_dir: \(state)
            host_memory_gib: 8
            scheduler:
              min_residency_seconds: 2
              drain_timeout_seconds: 10
              transition_timeout_seconds: 30
            gpus:
              - id: "0"
                memory_gib: 16
            models:
              - name: qwen3-0.6b
                preload: true
                engine: {simulated: true, time_scale: 0.05, tokens_per_second: 50}
                weights_gib: 3
                kv_cache_gib: 3
              - name: llama-3.2-1b
                preload: true
                engine: {simulated: true, time_scale: 0.05, tokens_per_second: 50}
                weights_gib: 3
                kv_cache_gib: 3
              - name: mistral-7b
                engine: {simulated: true, time_scale: 0.05, tokens_per_second: 50}
                weights_gib: 3
                kv_cache_gib: 3
                sleep_level: 2
            """
        return try GatewayConfiguration.parse(yaml: yaml)
    }

    func run() async throws {
        let configuration: GatewayConfiguration
        do {
            configuration = try Self.configuration(port: port, adminPort: adminPort)
        } catch {
            FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
            throw ExitCode.failure
        }
        try await runGateway(
            configuration, environment: ProcessInfo.processInfo.environment, logLevel: logLevel
        ) { listening, gateway in
            FileHandle.standardOutput.write(Data("torpor demo: starting three simulated engines ...\n".utf8))
            await gateway.scheduler.waitUntilStartedUp()
            FileHandle.standardOutput.write(
                Data(
                    Self.examples(client: listening.clientPort, admin: listening.adminPort, token: listening.adminToken)
                        .utf8))
        }
    }

    static func examples(client: Int, admin: Int, token: String) -> String {
        """
        torpor demo: a gateway on http://127.0.0.1:\(client) with three simulated models on one 16 GiB GPU
        (qwen3-0.6b and llama-3.2-1b awake, mistral-7b asleep at level 2). Asking for a sleeping model puts the
        least needed awake one to sleep and wakes it. Stop with Ctrl-C.

        admin token (shown once): \(token)

        # the models and their states
        curl -s http://127.0.0.1:\(client)/v1/models

        # a chat completion from the sleeping model: it is woken first
        curl -s http://127.0.0.1:\(client)/v1/chat/completions -H 'Content-Type: application/json' \\
            -d '{"model": "mistral-7b", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}'

        # a streamed completion, token by token
        curl -sN http://127.0.0.1:\(client)/v1/completions -H 'Content-Type: application/json' \\
            -d '{"model": "qwen3-0.6b", "prompt": "Once upon a time", "max_tokens": 16, "stream": true}'

        # embeddings (a simulated engine's are deterministic 32-number unit vectors)
        curl -s http://127.0.0.1:\(client)/v1/embeddings -H 'Content-Type: application/json' \\
            -d '{"model": "llama-3.2-1b", "input": ["a sleepy GPU", "a busy GPU"]}'

        # states, GPU ledger, transitions and metrics on the admin API
        curl -s http://127.0.0.1:\(admin)/admin/models -H 'Authorization: Bearer \(token)'
        curl -sN 'http://127.0.0.1:\(admin)/admin/events?replay=1' -H 'Authorization: Bearer \(token)'
        curl -s -X POST 'http://127.0.0.1:\(admin)/admin/switch?to=llama-3.2-1b' -H 'Authorization: Bearer \(token)'
        curl -s http://127.0.0.1:\(admin)/metrics -H 'Authorization: Bearer \(token)'

        # Python, with the openai package in a virtual environment (Debian's own python3 refuses pip install):
        #   python3 -m venv ~/.venvs/openai && ~/.venvs/openai/bin/pip install openai
        ~/.venvs/openai/bin/python - <<'EOF'
        from openai import OpenAI
        client = OpenAI(base_url="http://127.0.0.1:\(client)/v1", api_key="unused")
        for model in ["mistral-7b", "qwen3-0.6b", "llama-3.2-1b"]:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0)
            print(model, "->", reply.choices[0].message.content)
        EOF

        """
    }
}
