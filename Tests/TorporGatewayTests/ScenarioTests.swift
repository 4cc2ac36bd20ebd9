import Foundation
import NIOHTTP1
import Testing
import TorporEngine

@testable import TorporGateway

/// The gateway end to end on simulated engines (real processes, real HTTP): what a client sees in each situation,
/// and that no request goes unanswered.
@Suite(.serialized) struct ScenarioTests {
    @Test func switchingUnderLoadAnswersEveryRequest() async throws {
        try await withGateway(
            simulatedModels(3, awake: 2) + "scheduler: {min_residency_seconds: 0.05}\n"
        ) { gateway in
            #expect(await gateway.state("m2") == "L1")
            let answers = try await withThrowingTaskGroup(of: (String, HTTPAnswer).self) { group in
                for index in 0..<36 {
                    let model = "m\(index % 3)"
                    group.addTask {
                        (model, try await gateway.complete(model, prompt: "p\(index % 4)", chat: index % 2 == 0))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.count == 36)
            for (model, answer) in answers {
                #expect(answer.status == 200, "\(model): \(answer.body)")
                #expect(answer.json?["model"] as? String == model)
                #expect(answer.text?.isEmpty == false)
            }
            // The same prompt gives the same text whichever sleeps and wakes happened in between.
            let first = try await gateway.complete("m2", prompt: "same")
            _ = try await gateway.complete("m0")
            _ = try await gateway.complete("m1")
            let second = try await gateway.complete("m2", prompt: "same")
            #expect(first.text == second.text)
            #expect(gateway.events().contains { $0.kind == "wake" })
            #expect(gateway.events().contains { $0.kind == "sleep" })
            let metrics = try await gateway.adminCall("GET", "/metrics")
            #expect(metrics.body.contains("torpor_requests_total{model=\"m2\",status=\"200\"}"))
            #expect(metrics.body.contains("torpor_transition_seconds_count{kind=\"wake\",level=\"1\"}"))
        }
    }

    @Test func aLevelTwoSleeperIsReloadedFromItsWeightsOnWake() async throws {
        // Host RAM for no level-1 sleeper: everything sleeps at level 2 and comes back through reload_weights.
        try await withGateway(
            simulatedModels(2, awake: 1) + "host_memory_gib: 1\nscheduler: {min_residency_seconds: 0}\n"
        ) { gateway in
            #expect(await gateway.state("m1") == "L2")
            let before = try await gateway.complete("m0", prompt: "reload me")
            let woken = try await gateway.complete("m1")
            #expect(woken.status == 200)
            #expect(await gateway.state("m0") == "L2")
            let after = try await gateway.complete("m0", prompt: "reload me")
            // Without reload_weights a simulated engine answers garbage after a level-2 wake, as vLLM does.
            #expect(after.text == before.text)
            #expect(gateway.events().contains { $0.kind == "wake" && $0.level == 2 && $0.model == "m0" })
        }
    }

    @Test func theSleepLevelFollowsTheHostMemoryBudget() async throws {
        // Host RAM for one model's 3 GiB of weights: one level-1 sleeper at a time, the others sleep at level 2.
        try await withGateway(
            simulatedModels(3, awake: 1) + "host_memory_gib: 4\nscheduler: {min_residency_seconds: 0}\n"
        ) { gateway in
            func hostBytes() async -> Int { await gateway.gateway.scheduler.hostMemoryInUse() }
            #expect(await gateway.state("m1") == "L1")
            #expect(await gateway.state("m2") == "L2")
            #expect(await hostBytes() == 3 << 30)
            // Waking m1 puts m0 to sleep while m1 still holds the host budget: level 2.
            #expect(try await gateway.complete("m1").status == 200)
            #expect(await gateway.state("m0") == "L2")
            #expect(await hostBytes() == 0)
            // Now the budget is free: m1 sleeps at level 1 for m2.
            #expect(try await gateway.complete("m2").status == 200)
            #expect(await gateway.state("m1") == "L1")
            #expect(await hostBytes() == 3 << 30)
            let admin = try await gateway.adminCall("GET", "/admin/models")
            let models = try #require(admin.json?["models"] as? [[String: Any]])
            #expect(models.map { $0["host_bytes"] as? Int } == [0, 3 << 30, 0])
        }
    }

    @Test func drainingWithADeadlineAbortsWhatIsStillRunning() async throws {
        try await withGateway(
            simulatedModels(2, awake: 1, tokensPerSecond: 20)
                + "scheduler: {min_residency_seconds: 0, drain_timeout_seconds: 0.3}\n"
        ) { gateway in
            let stream = try StreamReader(gateway.client, model: "m0", maxTokens: 400)
            #expect(await stream.waitUntil { $0.count >= 2 })
            let other = try await gateway.complete("m1")
            #expect(other.status == 200)
            #expect(await stream.waitUntil { $0.isFinished })
            // The client of the aborted stream still got a complete SSE answer.
            #expect(stream.httpStatus == 200)
            #expect(stream.finishReason == "abort")
            #expect(stream.all.last == "data: [DONE]")
            #expect(stream.count < 400)
        }
    }

    @Test func drainingWithoutADeadlineLetsRunningRequestsFinish() async throws {
        try await withGateway(
            simulatedModels(2, awake: 1, tokensPerSecond: 100)
                + "scheduler: {min_residency_seconds: 0, drain_timeout_seconds: null}\n"
        ) { gateway in
            let stream = try StreamReader(gateway.client, model: "m0", maxTokens: 30)
            #expect(await stream.waitUntil { $0.count >= 1 })
            let other = try await gateway.complete("m1")
            #expect(other.status == 200)
            // By the time m1 answered, m0's stream had run to its end.
            #expect(stream.finishReason == "length")
            #expect(stream.all.last == "data: [DONE]")
            #expect(stream.count == 31)
        }
    }

    @Test func underSteadyLoadOnOneModelAnotherStillGetsItsTurn() async throws {
        try await withGateway(
            simulatedModels(2, awake: 1, tokensPerSecond: 400)
                + "scheduler: {min_residency_seconds: 1000, starvation_bound_seconds: 0.5, drain_timeout_seconds: 1}\n"
        ) { gateway in
            let load = Task {
                var statuses: [Int] = []
                let end = ContinuousClock.now + .seconds(3)
                while ContinuousClock.now < end {
                    async let a = gateway.complete("m0", maxTokens: 8)
                    async let b = gateway.complete("m0", maxTokens: 8)
                    statuses += [try await a.status, try await b.status]
                }
                return statuses
            }
            try await Task.sleep(for: .milliseconds(200))
            let started = ContinuousClock.now
            let turn = try await gateway.complete("m1")
            let waited = ContinuousClock.now - started
            #expect(turn.status == 200)
            // The bound (0.5 s) plus a drain (at most 1 s) plus the transitions, far under the queue timeout (120 s).
            #expect(waited < .seconds(10))
            let statuses = try await load.value
            #expect(statuses.allSatisfy { $0 == 200 })
        }
    }

    @Test func anEngineThatCrashesDuringAWakeIsRestartedAndTheRequestServed() async throws {
        try await withGateway(
            simulatedModels(2, awake: 1) + "scheduler: {min_residency_seconds: 0}\n"
        ) { gateway in
            let url = await gateway.engineURL("m1")
            _ = try await HTTPAnswer.send("POST", url + "/sim/fault?kind=slow_wake&factor=300")
            async let answer = gateway.complete("m1")
            try await gateway.waitUntil("m1 waking") { await gateway.state("m1") == "waking" }
            _ = try? await HTTPAnswer.send("POST", url + "/sim/fault?kind=crash", timeout: .seconds(2))
            let served = try await answer
            #expect(served.status == 200, "\(served.body)")
            #expect(gateway.events().contains { $0.kind == "fail" && $0.model == "m1" })
            #expect(gateway.events().contains { $0.kind == "start" && $0.model == "m1" && $0.from == "stopped" })
        }
    }

    @Test func aSleepThatFailsWith500StopsTheVictimAndStillServesTheRequest() async throws {
        try await withGateway(
            simulatedModels(2, awake: 1) + "scheduler: {min_residency_seconds: 0}\n"
        ) { gateway in
            try await gateway.fault("m0", "fail_next_sleep")
            let answer = try await gateway.complete("m1")
            #expect(answer.status == 200, "\(answer.body)")
            let failure = try #require(gateway.events().first { $0.kind == "fail" && $0.model == "m0" })
            #expect(failure.reason?.contains("500") == true)
            // The victim comes back with a cold start when it is asked for.
            let back = try await gateway.complete("m0")
            #expect(back.status == 200)
        }
    }

    @Test func aReloadThatFailsRestartsTheModelAndServesTheQueuedRequests() async throws {
        // Everything sleeps at level 2, so a wake reloads the weights; the next reload fails as the torpor plugin
        // fails on a bad chunk (500, engine up, weights invalid). The gateway must not serve those weights: it
        // stops the engine, cold-starts it, and every waiting request gets the right answer.
        try await withGateway(
            simulatedModels(2, awake: 1) + "host_memory_gib: 1\nscheduler: {min_residency_seconds: 0}\n"
        ) { gateway in
            #expect(await gateway.state("m1") == "L2")
            let expected = try await gateway.complete("m0", prompt: "same")
            #expect(expected.status == 200)
            _ = try await gateway.complete("m1")
            #expect(await gateway.state("m0") == "L2")
            try await gateway.fault("m0", "fail_next_reload")
            let answers = try await withThrowingTaskGroup(of: HTTPAnswer.self) { group in
                for _ in 0..<4 { group.addTask { try await gateway.complete("m0", prompt: "same") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for answer in answers {
                #expect(answer.status == 200, "\(answer.body)")
                #expect(answer.text == expected.text, "a reload that failed must never be served")
            }
            let failure = try #require(gateway.events().first { $0.kind == "fail" && $0.model == "m0" })
            #expect(failure.reason?.contains("chunk 3 fails its CRC-32") == true, "\(failure.reason ?? "")")
            #expect(gateway.events().contains { $0.kind == "start" && $0.model == "m0" && $0.from == "stopped" })
        }
    }

    @Test func aHungWakeIsCaughtByTheWatchdog() async throws {
        try await withGateway(
            simulatedModels(2, awake: 1) + "scheduler: {min_residency_seconds: 0, transition_timeout_seconds: 1}\n"
        ) { gateway in
            try await gateway.fault("m1", "hang_next_wake")
            let started = ContinuousClock.now
            let answer = try await gateway.complete("m1")
            #expect(answer.status == 200, "\(answer.body)")
            #expect(ContinuousClock.now - started >= .seconds(1))
            let failure = try #require(gateway.events().first { $0.kind == "fail" && $0.model == "m1" })
            #expect(failure.reason?.contains("watchdog") == true)
        }
    }

    @Test func aModelThatCannotBeWokenAnswers503WithRetryAfter() async throws {
        try await withGateway(
            simulatedModels(2, awake: 1)
                + "scheduler: {min_residency_seconds: 0, transition_timeout_seconds: 0.5, max_consecutive_failures: 1}\n"
        ) { gateway in
            try await gateway.fault("m1", "hang_next_wake")
            let answer = try await gateway.complete("m1")
            #expect(answer.status == 503)
            #expect(answer.headers.first(name: "Retry-After") != nil)
            #expect((answer.error?["message"] as? String)?.contains("m1") == true)
            #expect(answer.error?["type"] as? String == "server_error")
        }
    }

    @Test func aLeaseSleepsEverythingAndRequestsQueueOrAreRefused() async throws {
        try await withGateway(simulatedModels(2, awake: 2)) { gateway in
            let lease = try await gateway.adminCall("POST", "/admin/gpus/0/lease?mode=queue")
            #expect(lease.status == 200, "\(lease.body)")
            #expect(await gateway.state("m0") == "L1")
            #expect(await gateway.state("m1") == "L1")
            async let queued = gateway.complete("m0")
            try await gateway.waitUntil("queued") {
                await gateway.gateway.scheduler.statuses().first { $0.name == "m0" }?.queued == 1
            }
            let release = try await gateway.adminCall("DELETE", "/admin/gpus/0/lease")
            #expect(release.status == 200)
            #expect(try await queued.status == 200)
            try await gateway.waitUntil("both awake again") { await gateway.state("m1") == "awake" }
            _ = try await gateway.adminCall("POST", "/admin/gpus/all/lease?mode=refuse")
            let refused = try await gateway.complete("m1")
            #expect(refused.status == 503)
            #expect(refused.headers.first(name: "Retry-After") != nil)
        }
    }

    @Test func aClientThatLeavesCancelsTheUpstreamRequest() async throws {
        try await withGateway(
            simulatedModels(2, awake: 1, tokensPerSecond: 20) + "scheduler: {min_residency_seconds: 0}\n"
        ) { gateway in
            let url = await gateway.engineURL("m0")
            func running() async throws -> Double? {
                let metrics = try await HTTPAnswer.send("GET", url + "/metrics").body
                let line = metrics.split(separator: "\n").first { $0.hasPrefix("vllm:num_requests_running{") }
                return line.flatMap { Double($0.split(separator: " ").last ?? "") }
            }
            // Mid-stream.
            let stream = try StreamReader(gateway.client, model: "m0", maxTokens: 2000)
            #expect(await stream.waitUntil { $0.count >= 1 })
            #expect(try await running() == 1)
            stream.cancel()
            try await gateway.waitUntil("the engine aborted the request") { try await running() == 0 }
            // Before the first token: waiting for a slow wake.
            let sleeper = await gateway.engineURL("m1")
            _ = try await HTTPAnswer.send("POST", sleeper + "/sim/fault?kind=slow_wake&factor=2000")
            let waiting = try StreamReader(gateway.client, model: "m1", maxTokens: 5)
            try await gateway.waitUntil("queued for m1") {
                await gateway.gateway.scheduler.statuses().first { $0.name == "m1" }?.queued == 1
            }
            waiting.cancel()
            try await gateway.waitUntil("the queue emptied") {
                await gateway.gateway.scheduler.statuses().first { $0.name == "m1" }?.queued == 0
            }
            #expect(waiting.httpStatus == nil)
            try await gateway.waitUntil("the departure counted as 499") {
                try await gateway.adminCall("GET", "/metrics").body.contains(
                    "torpor_requests_total{model=\"m1\",status=\"499\"} 1")
            }
        }
    }

    @Test func aClientThatClosesOnlyItsSendingSideCancelsItsRequestQueuedOrStreaming() async throws {
        try await withGateway(
            simulatedModels(2, awake: 1, tokensPerSecond: 20) + "scheduler: {min_residency_seconds: 0}\n"
        ) { gateway in
            let port = try #require(Int(gateway.client.split(separator: ":").last ?? ""))
            let url = await gateway.engineURL("m0")
            func running() async throws -> Double? {
                let metrics = try await HTTPAnswer.send("GET", url + "/metrics").body
                let line = metrics.split(separator: "\n").first { $0.hasPrefix("vllm:num_requests_running{") }
                return line.flatMap { Double($0.split(separator: " ").last ?? "") }
            }
            // Mid-stream: FIN after the first bytes; the engine aborts the generation.
            let streaming = try HalfClosingClient(
                port: port, path: "/v1/completions",
                json: #"{"model": "m0", "prompt": "hi", "max_tokens": 2000, "stream": true}"#)
            #expect(streaming.waitForBytes())
            #expect(try await running() == 1)
            streaming.closeSendingSide()
            try await gateway.waitUntil("the engine aborted the request") { try await running() == 0 }
            // Queued for a slow wake: FIN frees its queue slot.
            _ = try await HTTPAnswer.send(
                "POST", await gateway.engineURL("m1") + "/sim/fault?kind=slow_wake&factor=2000")
            let queued = try HalfClosingClient(
                port: port, path: "/v1/completions", json: #"{"model": "m1", "prompt": "hi", "max_tokens": 5}"#)
            try await gateway.waitUntil("queued for m1") {
                await gateway.gateway.scheduler.statuses().first { $0.name == "m1" }?.queued == 1
            }
            queued.closeSendingSide()
            try await gateway.waitUntil("the queue emptied") {
                await gateway.gateway.scheduler.statuses().first { $0.name == "m1" }?.queued == 0
            }
            let metrics = try await gateway.adminCall("GET", "/metrics").body
            #expect(metrics.contains("torpor_requests_total{model=\"m0\",status=\"499\"} 1"), "\(metrics)")
            #expect(metrics.contains("torpor_requests_total{model=\"m1\",status=\"499\"} 1"))
        }
    }

    @Test func aStartUnderTrafficWithPreloadsEndsWithEveryModelServing() async throws {
        // Two preloaded of three that fit two awake; requests for the third arrive from the first moment, so it is
        // awake when the preloads want their room: they wait for it instead of failing with out-of-memory.
        let yaml = simulatedModels(3, awake: 2) + "scheduler: {min_residency_seconds: 0.2}\n"
        let gateway = try await GatewayUnderTest.start(yaml, waitForEngines: false)
        do {
            let early = try await withThrowingTaskGroup(of: HTTPAnswer.self) { group in
                for index in 0..<6 {
                    group.addTask { try await gateway.complete("m2", prompt: "early \(index)") }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for answer in early { #expect(answer.status == 200, "\(answer.body)") }
            try await gateway.waitUntil("start-up done", timeout: .seconds(60)) {
                await gateway.gateway.scheduler.isStartedUp
            }
            for model in ["m0", "m1", "m2"] {
                let answer = try await gateway.complete(model)
                #expect(answer.status == 200, "\(model): \(answer.body)")
            }
            #expect(
                !gateway.events().contains { $0.kind == "fail" }, "\(gateway.events().filter { $0.kind == "fail" })")
            for status in await gateway.gateway.scheduler.statuses() { #expect(status.state != "failed") }
        } catch {
            await gateway.stop()
            throw error
        }
        await gateway.stop()
    }

    @Test func anAwakeEngineThatDiesIsNoticedAndRestartedOnTheNextRequest() async throws {
        try await withGateway(simulatedModels(2, awake: 1)) { gateway in
            _ = try? await HTTPAnswer.send(
                "POST", await gateway.engineURL("m0") + "/sim/fault?kind=crash", timeout: .seconds(2))
            let before = await gateway.engineURL("m0")
            try await gateway.waitUntil("the crash noticed") { await gateway.state("m0") == "stopped" }
            let answer = try await gateway.complete("m0")
            #expect(answer.status == 200, "\(answer.body)")
            // Restarted on the same address.
            #expect(await gateway.engineURL("m0") == before)
            let failure = try #require(gateway.events().first { $0.kind == "fail" && $0.model == "m0" })
            #expect(failure.reason?.contains("exited") == true)
        }
    }

    @Test func aRequestRightAfterACrashWaitsForTheRestartedEngine() async throws {
        // Cold starts of 5 s (time scale 0.1): longer than the 5 s a refused connection used to be retried for
        // before the request got 502.
        try await withGateway(simulatedModels(1, awake: 1, timeScale: 0.1), startTimeout: .seconds(60)) { gateway in
            _ = try? await HTTPAnswer.send(
                "POST", await gateway.engineURL("m0") + "/sim/fault?kind=crash", timeout: .seconds(2))
            let answer = try await gateway.complete("m0")
            #expect(answer.status == 200, "\(answer.body)")
            let failures = gateway.events().filter { $0.kind == "fail" && $0.model == "m0" }
            #expect(failures.count == 1, "\(failures)")
            #expect(await gateway.state("m0") == "awake")
        }
    }

    @Test func enginesGetAnExplicitEnvironmentWithoutTheGatewaysSecrets() async throws {
        setenv("MY_TEST_SECRET", "do-not-pass", 1)
        setenv("MY_TEST_PASSED", "pass-me", 1)
        defer {
            unsetenv("MY_TEST_SECRET")
            unsetenv("MY_TEST_PASSED")
        }
        try await withGateway(simulatedModels(1, awake: 1) + "pass_environment: [MY_TEST_PASSED]\n") { gateway in
            let record = try Data(contentsOf: URL(fileURLWithPath: gateway.stateDirectory + "/engines/m0.engine.json"))
            let pid = try #require((try JSONSerialization.jsonObject(with: record) as? [String: Any])?["pid"] as? Int)
            let environ = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))
            let names = Set(
                String(decoding: environ, as: UTF8.self).split(separator: "\0").map { String($0.prefix { $0 != "=" }) })
            #expect(names.contains("PATH"))
            #expect(names.contains("MY_TEST_PASSED"))
            #expect(!names.contains("MY_TEST_SECRET"), "\(names.sorted())")
            #expect(!names.contains("TORPOR_ADMIN_TOKEN"))
        }
    }

    @Test func aSecondGatewayOnTheSameStateDirectoryIsRefusedAndTheFirstKeepsItsEngines() async throws {
        try await withGateway(simulatedModels(1, awake: 1)) { gateway in
            let second = await #expect(throws: ConfigurationError.self) {
                _ = try await Gateway(
                    configuration: gateway.gateway.configuration,
                    simulatorExecutable: GatewayUnderTest.torporBinary, logger: quietLogger)
            }
            let clientPort = gateway.client.split(separator: ":").last.map(String.init) ?? "?"
            #expect(second?.message.contains("is in use by another torpor gateway") == true, "\(second?.message ?? "")")
            #expect(second?.message.contains("pid \(getpid()), client 127.0.0.1:\(clientPort)") == true)
            // The refused gateway stopped nothing: the first one's engine still serves.
            #expect(await gateway.state("m0") == "awake")
            let answer = try await gateway.complete("m0")
            #expect(answer.status == 200)
        }
    }
}
