import Foundation
import Glibc
import Testing
import TorporTestSupport

/// `torpor demo` and `torpor serve` as a user runs them.
@Suite(.serialized) struct GatewayCLITests {
    /// The built binary, started in the background with its output in files.
    final class Running {
        let process = Process()
        let scratch = Scratch()
        var outPath: String { scratch.path + "/stdout" }
        var errPath: String { scratch.path + "/stderr" }

        init(_ arguments: [String]) throws {
            _ = FileManager.default.createFile(atPath: outPath, contents: nil)
            _ = FileManager.default.createFile(atPath: errPath, contents: nil)
            process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("torpor")
            process.arguments = arguments
            process.standardOutput = FileHandle(forWritingAtPath: outPath)
            process.standardError = FileHandle(forWritingAtPath: errPath)
            process.standardInput = FileHandle.nullDevice
            try process.run()
        }

        var stdout: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
        var stderr: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

        /// Waits until standard output contains `text`.
        func waitFor(_ text: String, timeout: Duration = .seconds(90)) async -> Bool {
            _ = await poll(timeout: timeout, every: .milliseconds(20)) { stdout.contains(text) || !process.isRunning }
            return stdout.contains(text)
        }

        /// A test that stops early (a failed `#require`) leaves nothing running: SIGTERM, SIGKILL after 10 s.
        deinit {
            guard process.isRunning else { return }
            kill(process.processIdentifier, SIGTERM)
            let end = ContinuousClock.now + .seconds(10)
            while process.isRunning && ContinuousClock.now < end { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }

        /// SIGTERM, then the exit status (SIGKILL after `timeout`).
        func terminate(timeout: Duration = .seconds(30)) async -> Int32 {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            let end = ContinuousClock.now + timeout
            while process.isRunning && ContinuousClock.now < end { try? await Task.sleep(for: .milliseconds(20)) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    /// Runs `curl` (a real client) and returns its output.
    func curl(_ arguments: String...) async throws -> String {
        let process = Process()
        let scratch = Scratch()
        let out = scratch.path + "/out"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-s", "--max-time", "60"] + arguments
        process.standardOutput = FileHandle(forWritingAtPath: out)
        try process.run()
        while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        process.waitUntilExit()
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    @Test("torpor demo serves three simulated models, prints working examples and stops its engines on SIGTERM")
    func demo() async throws {
        let demo = try Running(["demo", "--port", "0", "--admin-port", "0"])
        #expect(await demo.waitFor("EOF\n"), "no examples printed; stderr: \(demo.stderr)")
        let output = demo.stdout
        let client = try #require(output.firstMatch(of: /http:\/\/127\.0\.0\.1:(\d+)\/v1\/models/)?.1)
        let token = try #require(output.firstMatch(of: /admin token \(shown once\): ([0-9a-f]{64})/)?.1)
        let admin = try #require(output.firstMatch(of: /http:\/\/127\.0\.0\.1:(\d+)\/admin\/models/)?.1)
        // URLs with `?` are quoted (zsh would glob them), and the Python example runs in a virtual environment.
        #expect(output.contains("'http://127.0.0.1:\(admin)/admin/events?replay=1'"), "\(output)")
        #expect(output.contains("'http://127.0.0.1:\(admin)/admin/switch?to=llama-3.2-1b'"))
        #expect(output.contains("python3 -m venv"))
        #expect(!output.contains("//torpor-demo") && !demo.stderr.contains("//torpor-demo"))
        let models = try await curl("http://127.0.0.1:\(client)/v1/models")
        #expect(models.contains("\"id\":\"mistral-7b\""))
        // The example the demo prints for the sleeping model works as printed.
        let chat = try await curl(
            "http://127.0.0.1:\(client)/v1/chat/completions", "-H", "Content-Type: application/json", "-d",
            #"{"model": "mistral-7b", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}"#)
        #expect(chat.contains("\"finish_reason\":\"length\""), "\(chat)")
        // So does the embeddings example (the README lists /v1/embeddings).
        #expect(output.contains("/v1/embeddings"))
        let embeddings = try await curl(
            "http://127.0.0.1:\(client)/v1/embeddings", "-H", "Content-Type: application/json", "-d",
            #"{"model": "llama-3.2-1b", "input": ["a sleepy GPU", "a busy GPU"]}"#)
        let vectors = try #require(
            (try? JSONSerialization.jsonObject(with: Data(embeddings.utf8)) as? [String: Any])?["data"]
                as? [[String: Any]], "\(embeddings)")
        #expect(vectors.count == 2)
        #expect((vectors.first?["embedding"] as? [Double])?.count == 32)
        let states = try await curl("http://127.0.0.1:\(admin)/admin/models", "-H", "Authorization: Bearer \(token)")
        #expect(states.contains("\"state\" : \"awake\""))
        // Two of three fit: waking mistral put one of the others to sleep.
        #expect(states.components(separatedBy: "\"state\" : \"awake\"").count - 1 == 2)
        #expect(await demo.terminate() == 0, "stderr: \(demo.stderr)")
        let left = try await curl("http://127.0.0.1:\(client)/v1/models")
        #expect(left.isEmpty)
    }

    @Test("torpor serve with a broken configuration says which key is wrong")
    func serveBadConfiguration() throws {
        let scratch = Scratch()
        let path = scratch.path + "/torpor.yaml"
        try "models:\n  - {name: a, engine: {simulated: true}, weight_gib: 1, kv_cache_gib: 1}\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        let result = try torpor("serve", "--config", path, timeout: .seconds(60))
        #expect(result.status == 1)
        #expect(result.stderr.contains("models[0].weight_gib: unknown key"), "\(result.stderr)")
        let missing = try torpor("serve", "--config", scratch.path + "/absent.yaml", timeout: .seconds(60))
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("cannot read the configuration file"))
    }

    @Test("torpor serve on a port that is taken names the listener and the address")
    func serveOnABusyPort() throws {
        let scratch = Scratch()
        // This test holds a loopback port.
        let holder = try #require(LoopbackPort(listening: true))
        let port = holder.port
        let path = scratch.path + "/torpor.yaml"
        try """
        listen: {client: "127.0.0.1:\(port)", admin: "127.0.0.1:0"}
        state_dir: \(scratch.path)/state
        models:
          - {name: tiny, engine: {simulated: true, time_scale: 0.01}, weights_gib: 1, kv_cache_gib: 1}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try withExtendedLifetime(holder) { try torpor("serve", "--config", path, timeout: .seconds(60)) }
        #expect(result.status == 1)
        #expect(
            result.stderr.contains("the client listener cannot listen on 127.0.0.1:\(port): the address is in use"),
            "\(result.stderr)")
        #expect(!result.stderr.contains("errno: 98"), "\(result.stderr)")
    }

    @Test("torpor serve prints where it listens and a generated admin token")
    func serve() async throws {
        let scratch = Scratch()
        let path = scratch.path + "/torpor.yaml"
        try """
        listen: {client: "127.0.0.1:0", admin: "127.0.0.1:0"}
        state_dir: \(scratch.path)/state
        models:
          - {name: tiny, preload: true, engine: {simulated: true, time_scale: 0.01}, weights_gib: 1, kv_cache_gib: 1}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let serve = try Running(["serve", "--config", path])
        #expect(await serve.waitFor("admin token (shown once)"), "stderr: \(serve.stderr)")
        let client = try #require(serve.stdout.firstMatch(of: /client API on http:\/\/127\.0\.0\.1:(\d+)/)?.1)
        var reply = ""
        for _ in 0..<200 where !reply.contains("\"text\"") {
            reply = try await curl(
                "http://127.0.0.1:\(client)/v1/completions", "-H", "Content-Type: application/json", "-d",
                #"{"model": "tiny", "prompt": "hi", "max_tokens": 3}"#)
            if !reply.contains("\"text\"") { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(reply.contains("\"text\""), "\(reply)")
        #expect(await serve.terminate() == 0)
    }

    @Test("torpor serve reloads its configuration on SIGHUP and, with --watch-config, when the file changes")
    func reload() async throws {
        let scratch = Scratch()
        let path = scratch.path + "/torpor.yaml"
        func write(_ models: String) throws {
            try """
            listen: {client: "127.0.0.1:0", admin: "127.0.0.1:0"}
            state_dir: \(scratch.path)/state
            models:
            \(models)
            """.write(toFile: path, atomically: true, encoding: .utf8)
        }
        let tiny =
            "  - {name: tiny, preload: true, engine: {simulated: true, time_scale: 0.01}, weights_gib: 1, kv_cache_gib: 1}"
        func model(_ name: String) -> String {
            "  - {name: \(name), engine: {simulated: true, time_scale: 0.01}, weights_gib: 1, kv_cache_gib: 1}"
        }
        try write(tiny)
        let serve = try Running(["serve", "--config", path, "--watch-config"])
        #expect(await serve.waitFor("admin token (shown once)"), "stderr: \(serve.stderr)")
        let client = try #require(serve.stdout.firstMatch(of: /client API on http:\/\/127\.0\.0\.1:(\d+)/)?.1)
        func ids() async throws -> String { try await curl("http://127.0.0.1:\(client)/v1/models") }

        // The file watch.
        try write(tiny + "\n" + model("second"))
        #expect(await poll(timeout: .seconds(30)) { (try? await ids())?.contains("\"id\":\"second\"") == true })
        // A broken file is refused and logged; the gateway goes on with what it runs.
        try "models: [".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(await poll(timeout: .seconds(30)) { serve.stderr.contains("configuration reload refused") })
        #expect(try await ids().contains("\"id\":\"second\""))
        // SIGHUP (the file watch sees this change too; either reload leaves the same result).
        try write(tiny + "\n" + model("third"))
        kill(serve.process.processIdentifier, SIGHUP)
        #expect(await poll(timeout: .seconds(30)) { (try? await ids())?.contains("\"id\":\"third\"") == true })
        #expect(try await !ids().contains("\"id\":\"second\""))
        #expect(serve.process.isRunning, "SIGHUP does not stop the gateway")
        #expect(await serve.terminate() == 0)
    }

    @Test("torpor admin shows, sleeps, wakes, switches, reloads, leases and tails logs of a running gateway")
    func admin() async throws {
        let scratch = Scratch()
        let path = scratch.path + "/torpor.yaml"
        let token = "admin-cli-token-0123456789"
        try """
        listen: {client: "127.0.0.1:0", admin: "127.0.0.1:0"}
        state_dir: \(scratch.path)/state
        admin_token: \(token)
        gpus: [{id: "0", memory_gib: 10}]
        models:
          - {name: a, preload: true, engine: {simulated: true, time_scale: 0.01}, weights_gib: 3, kv_cache_gib: 3}
          - {name: b, aliases: [bee], engine: {simulated: true, time_scale: 0.01}, weights_gib: 3, kv_cache_gib: 3}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let serve = try Running(["serve", "--config", path])
        defer { _ = serve.process.isRunning ? kill(serve.process.processIdentifier, SIGKILL) : 0 }
        #expect(await serve.waitFor("admin API on"), "stderr: \(serve.stderr)")
        let port = try #require(serve.stdout.firstMatch(of: /admin API on http:\/\/127\.0\.0\.1:(\d+)/)?.1)
        let connection = ["--url", "http://127.0.0.1:\(port)", "--token", token]
        func admin(_ arguments: String...) throws -> CommandResult {
            try torpor(["admin"] + arguments + connection, timeout: .seconds(120))
        }
        #expect(
            await poll(timeout: .seconds(60)) {
                let table = (try? admin("status"))?.stdout ?? ""
                return table.contains(/b\s+L[12]\s/) && table.contains(/a\s+awake\s/)
            })
        let status = try admin("status")
        #expect(status.status == 0)
        #expect(status.stdout.hasPrefix("MODEL"), "\(status.stdout)")
        #expect(status.stdout.contains(/a\s+awake\s+0\s/) && status.stdout.contains("bee"), "\(status.stdout)")
        #expect(status.stdout.contains(/\nGPU\s+AWAKE/), "\(status.stdout)")

        #expect(try admin("switch", "b", "--from", "a").stdout.contains(/b\s+awake/))
        #expect(try admin("sleep", "b", "--level", "2").stdout == "b: L2\n")
        #expect(try admin("wake", "a").stdout == "a: awake\n")
        let leased = try admin("lease", "0", "--mode", "refuse")
        #expect(leased.stdout.contains(/0\s.*refuse/), "\(leased.stdout)")
        let released = try admin("lease", "0", "--release")
        #expect(released.status == 0 && !released.stdout.contains("refuse"), "\(released.stdout)")
        #expect(try admin("reload").stdout == "nothing changed\n")
        let logs = try admin("logs", "b", "--lines", "2")
        #expect(logs.status == 0 && logs.stdout.split(separator: "\n").count == 2, "\(logs.stdout)")

        // Errors name the problem.
        let unknown = try admin("wake", "zzz")
        #expect(unknown.status == 1 && unknown.stderr.contains("no model `zzz`"), "\(unknown.stderr)")
        let refused = try torpor([
            "admin", "status", "--url", "http://127.0.0.1:\(port)", "--token", "wrong-token-0123",
        ])
        #expect(refused.status == 1 && refused.stderr.contains("refused the admin token"))
        let nobody = try torpor(["admin", "status", "--url", "http://127.0.0.1:1", "--token", token])
        #expect(nobody.status == 1 && nobody.stderr.contains("no gateway answers at http://127.0.0.1:1"))
        #expect(await serve.terminate() == 0)
    }

    /// `curl` started in the background, its output (with headers) in a file.
    final class BackgroundCurl {
        let process = Process()
        let scratch = Scratch()
        var outPath: String { scratch.path + "/out" }

        init(_ arguments: [String]) throws {
            _ = FileManager.default.createFile(atPath: outPath, contents: nil)
            process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            process.arguments = ["-s", "-i", "--max-time", "120"] + arguments
            process.standardOutput = FileHandle(forWritingAtPath: outPath)
            try process.run()
        }

        var output: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }

        func waitUntilExit(timeout: Duration = .seconds(30)) async -> Bool {
            await poll(timeout: timeout, every: .milliseconds(20)) { !process.isRunning }
        }
    }

    @Test("SIGTERM with queued requests, one streaming and an open event stream: 503s, a bounded exit, no engine left")
    func sigtermWithQueuedRequests() async throws {
        let scratch = Scratch()
        let path = scratch.path + "/torpor.yaml"
        let grace = 2.0
        try """
        listen: {client: "127.0.0.1:0", admin: "127.0.0.1:0"}
        state_dir: \(scratch.path)/state
        limits: {shutdown_grace_seconds: \(grace)}
        gpus: [{id: "0", memory_gib: 9}]
        models:
          - {name: a, preload: true, engine: {simulated: true, time_scale: 0.01, tokens_per_second: 5}, weights_gib: 3, kv_cache_gib: 3}
          - {name: b, engine: {simulated: true, time_scale: 0.01}, weights_gib: 3, kv_cache_gib: 3}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let serve = try Running(["serve", "--config", path])
        #expect(await serve.waitFor("admin token (shown once)"), "stderr: \(serve.stderr)")
        let client = try #require(serve.stdout.firstMatch(of: /client API on http:\/\/127\.0\.0\.1:(\d+)/)?.1)
        let admin = try #require(serve.stdout.firstMatch(of: /admin API on http:\/\/127\.0\.0\.1:(\d+)/)?.1)
        let token = try #require(serve.stdout.firstMatch(of: /admin token \(shown once\): ([0-9a-f]{64})/)?.1)
        let auth = "Authorization: Bearer \(token)"
        func models() async throws -> [[String: Any]] {
            let body = try await curl("http://127.0.0.1:\(admin)/admin/models", "-H", auth)
            let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            return json?["models"] as? [[String: Any]] ?? []
        }
        let started = try await poll(timeout: .seconds(20), every: .milliseconds(20)) {
            try await models().compactMap { $0["state"] as? String } == ["awake", "L1"]
        }
        #expect(started, "a and b are not awake and asleep at L1")
        let engineB = try #require(try await models().last?["engine_socket"] as? String)
        // b wakes for ever: requests for it stay queued.
        let injected = try await curl(
            "-X", "POST", "--unix-socket", engineB, "http://engine/sim/fault?kind=slow_wake&factor=100000")
        #expect(injected.contains("slow_wake"), "the fault was not injected: \(injected)")
        let completions = "http://127.0.0.1:\(client)/v1/completions"
        let streaming = try BackgroundCurl([
            "-N", completions, "-H", "Content-Type: application/json", "-d",
            #"{"model": "a", "prompt": "hi", "max_tokens": 1000, "stream": true}"#,
        ])
        // The stream is under way before b's requests queue (they would otherwise drain a first).
        #expect(
            await poll(timeout: .seconds(20), every: .milliseconds(20)) { streaming.output.contains("data: ") },
            "\(streaming.output)")
        let queued = try (0..<3).map { _ in
            try BackgroundCurl([
                completions, "-H", "Content-Type: application/json", "-d",
                #"{"model": "b", "prompt": "hi", "max_tokens": 3}"#,
            ])
        }
        let events = try BackgroundCurl(["-N", "http://127.0.0.1:\(admin)/admin/events", "-H", auth])
        #expect(
            try await poll(timeout: .seconds(20), every: .milliseconds(20)) {
                try await models().last?["queued"] as? Int == 3
            })
        let records = try FileManager.default.contentsOfDirectory(atPath: scratch.path + "/state/engines")
        let pids: [Int32] = records.compactMap { file in
            let data = FileManager.default.contents(atPath: scratch.path + "/state/engines/" + file)
            let record = data.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            return (record?["pid"] as? Int).map(Int32.init)
        }
        #expect(pids.count == 2)

        let signalled = ContinuousClock.now
        // The bound the docs state: the grace for requests in flight, plus 11 s.
        let bound = Duration.seconds(grace + 11)
        #expect(await serve.terminate(timeout: bound + .seconds(5)) == 0, "stderr: \(serve.stderr)")
        let took = ContinuousClock.now - signalled
        #expect(took < bound, "exit took \(took); log: \(serve.stderr.suffix(3000))")
        for request in queued {
            #expect(await request.waitUntilExit())
            #expect(request.output.contains("HTTP/1.1 503"), "\(request.output)")
            #expect(request.output.lowercased().contains("retry-after: 2"))
            #expect(request.output.contains("shutting down"))
        }
        #expect(await streaming.waitUntilExit())
        #expect(streaming.output.contains("shutting down"), "\(streaming.output.suffix(500))")
        #expect(await events.waitUntilExit())
        for pid in pids { #expect(kill(pid, 0) != 0, "engine \(pid) is still running") }
    }
}
