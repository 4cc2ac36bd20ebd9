import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TorporEngine

@testable import TorporGateway

/// What operators and their tools see of the client listener: request ids and headers, aliases, vLLM's other
/// endpoints, health that never wakes, and the metrics.
@Suite(.serialized) struct OperatorAPITests {
    @Test func requestIDsAndTheClientsHeadersGoUpstream() async throws {
        try await withGateway(simulatedModels(1, awake: 1)) { gateway in
            let body: [String: any Sendable] = ["model": "m0", "prompt": "hi", "max_tokens": 2]
            let answer = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/completions", json: body,
                headers: [
                    "X-Request-Id": "trace-42", "X-Tenant": "blue", "Authorization": "Bearer not-for-the-engine",
                    "X-Torpor-Progress": "1", "Accept-Encoding": "gzip",
                ])
            #expect(answer.status == 200)
            #expect(answer.headers.first(name: "X-Request-Id") == "trace-42")
            let seen = try await HTTPAnswer.send("GET", await gateway.engineURL("m0") + "/sim/last-request")
            let headers = try #require(seen.json?["headers"] as? [String: String], "\(seen.body)")
            #expect(headers["x-request-id"] == "trace-42" && headers["x-tenant"] == "blue", "\(headers)")
            #expect(headers["authorization"] == nil && headers["x-torpor-progress"] == nil, "\(headers)")
            #expect(headers["accept-encoding"] == nil && headers["content-type"] == "application/json")

            // Generated when the client sends none, or one that is not usable; error answers carry it too.
            let generated = try await gateway.complete("m0")
            #expect(generated.headers.first(name: "X-Request-Id")?.count == 36)
            let unusable = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/completions", json: body,
                headers: ["X-Request-Id": String(repeating: "x", count: 200)])
            #expect(unusable.headers.first(name: "X-Request-Id")?.count == 36)
            let missing = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/completions", json: ["model": "absent", "prompt": "hi"],
                headers: ["X-Request-Id": "trace-43"])
            #expect(missing.status == 404 && missing.headers.first(name: "X-Request-Id") == "trace-43")
        }
    }

    @Test func vLLMsOtherPerModelEndpointsAreRoutedByModelAndOtherPathsNameWhatIsServed() async throws {
        try await withGateway(simulatedModels(2, awake: 1)) { gateway in
            // The tokenizer endpoints of the sleeping model: routed by `model`, which wakes it.
            let tokens = try await HTTPAnswer.send(
                "POST", gateway.client + "/tokenize", json: ["model": "m1", "prompt": "héllo"])
            #expect(tokens.status == 200 && tokens.json?["count"] as? Int == 6, "\(tokens.body)")
            let ids = try #require(tokens.json?["tokens"] as? [Int])
            let text = try await HTTPAnswer.send(
                "POST", gateway.client + "/detokenize", json: ["model": "m1", "tokens": ids])
            #expect(text.json?["prompt"] as? String == "héllo", "\(text.body)")
            #expect(await gateway.state("m1") == "awake")
            // Paths the simulated engine does not serve reach it all the same: its own 404 comes back.
            for path in ["/v1/responses", "/v1/score", "/score", "/v1/rerank", "/rerank", "/v2/rerank"] {
                let answer = try await HTTPAnswer.send(
                    "POST", gateway.client + path, json: ["model": "m0", "input": "hi"])
                #expect(answer.status == 404, "\(path): \(answer.body)")
                #expect(!answer.body.contains("Unknown request URL"), "\(path) was not routed: \(answer.body)")
            }
            let unknown = try await HTTPAnswer.send("POST", gateway.client + "/v1/images/generations", json: [:])
            #expect(unknown.status == 404)
            let message = try #require(unknown.error?["message"] as? String)
            #expect(message.contains("This gateway serves") && message.contains("/tokenize"), "\(message)")
            let audio = try await HTTPAnswer.send("POST", gateway.client + "/v1/audio/transcriptions", body: [])
            #expect((audio.error?["message"] as? String)?.contains("Audio requests") == true, "\(audio.body)")
        }
    }

    @Test func healthReadinessAndPerModelHealthNeverWakeAModel() async throws {
        try await withGateway(simulatedModels(2, awake: 1) + "scheduler: {max_consecutive_failures: 1}\n") { gateway in
            let ready = try await HTTPAnswer.send("GET", gateway.client + "/ready")
            #expect(ready.status == 200 && ready.json?["status"] as? String == "ready", "\(ready.body)")
            try await gateway.waitUntil("m1 asleep") { await gateway.state("m1").hasPrefix("L") }
            let asleep = try await HTTPAnswer.send("GET", gateway.client + "/health/m1")
            #expect(asleep.status == 200 && asleep.json?["healthy"] as? Bool == true, "\(asleep.body)")
            #expect((asleep.json?["state"] as? String)?.hasPrefix("L") == true)
            #expect(try await HTTPAnswer.send("GET", gateway.client + "/health/absent").status == 404)
            #expect(await gateway.state("m1").hasPrefix("L"), "asking did not wake it")
            try await gateway.fault("m1", "fail_next_wake")
            #expect(try await gateway.complete("m1").status == 503)
            try await gateway.waitUntil("m1 failed", timeout: .seconds(60)) { await gateway.state("m1") == "failed" }
            let failed = try await HTTPAnswer.send("GET", gateway.client + "/health/m1")
            #expect(failed.status == 503 && failed.json?["healthy"] as? Bool == false, "\(failed.body)")
        }
    }

    @Test func anAnswerThatWaitedForAWakeSaysSoAndHealthShowsTheQueue() async throws {
        try await withGateway(simulatedModels(2, awake: 1)) { gateway in
            try await gateway.waitUntil("m1 asleep") { await gateway.state("m1").hasPrefix("L") }
            let health = try await HTTPAnswer.send("GET", gateway.client + "/health/m1")
            #expect(health.json?["queued"] as? Int == 0 && health.json?["in_flight"] as? Int == 0, "\(health.body)")
            let woken = try await gateway.complete("m1")
            #expect(woken.status == 200)
            #expect(woken.headers.first(name: "X-Torpor-Woke-From")?.hasPrefix("L") == true, "\(woken.headers)")
            let waited = try #require(woken.headers.first(name: "X-Torpor-Waited-Seconds").flatMap(Double.init))
            #expect(waited >= 0 && waited < 30)
            let awake = try await gateway.complete("m1")
            #expect(awake.headers.first(name: "X-Torpor-Woke-From") == nil)
        }
    }

    @Test func aliasesReachTheirModelUnderTheNameItsEngineServes() async throws {
        try await withGateway(simulatedModels(1, awake: 1, modelLines: ["aliases: [gpt-4o-mini]"])) { gateway in
            let answer = try await gateway.complete("gpt-4o-mini", chat: true)
            #expect(answer.status == 200, "\(answer.body)")
            let seen = try await HTTPAnswer.send("GET", await gateway.engineURL("m0") + "/sim/last-request")
            #expect(seen.status == 200)
            let models = try await HTTPAnswer.send("GET", gateway.client + "/models")
            let ids = (models.json?["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
            #expect(ids == ["m0", "gpt-4o-mini"], "\(models.body)")
        }
    }

    @Test func metricsCountTokensFirstTokensAndTheTimeTheGatewayAddsAndTakeAReadOnlyToken() async throws {
        let token = "metrics-reader-0123456789"
        try await withGateway(simulatedModels(2, awake: 1) + "metrics_token: \(token)\n") { gateway in
            func scrape(_ credential: String) async throws -> HTTPAnswer {
                try await HTTPAnswer.send(
                    "GET", gateway.admin + "/metrics", headers: ["Authorization": "Bearer \(credential)"])
            }
            let first = try await scrape(token)
            #expect(first.status == 200)
            for series in [
                "torpor_prompt_tokens_total{model=\"m1\"} 0", "torpor_completion_tokens_total{model=\"m1\"} 0",
                "torpor_requests_in_flight{model=\"m0\"} 0", "torpor_engine_failures_total{model=\"m1\"} 0",
                "torpor_build_info{version=",
            ] {
                #expect(first.body.contains(series), "metrics lack \(series)")
            }
            // A non-streamed completion, and a stream that asks for usage, of the sleeping model (a wake).
            #expect(try await gateway.complete("m0", maxTokens: 5).status == 200)
            let streamed = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/chat/completions",
                json: [
                    "model": "m1", "messages": [["role": "user", "content": "hi"]], "max_tokens": 3, "stream": true,
                    "stream_options": ["include_usage": true],
                ])
            #expect(streamed.status == 200 && streamed.body.contains("\"usage\""), "\(streamed.body)")
            let after = try await scrape(token).body
            #expect(after.contains("torpor_completion_tokens_total{model=\"m0\"} 5"), "\(after)")
            #expect(after.contains("torpor_completion_tokens_total{model=\"m1\"} 3"))
            #expect(!after.contains("torpor_prompt_tokens_total{model=\"m1\"} 0"))
            #expect(after.contains("torpor_time_to_first_token_seconds_count{model=\"m1\"} 1"))
            #expect(!after.contains("torpor_time_to_first_token_seconds_count{model=\"m0\"}"), "not streamed")
            // The wake shows in what the gateway added for m1: above a tenth of a millisecond, below two minutes.
            #expect(after.contains("torpor_added_latency_seconds_bucket{model=\"m1\",le=\"120.0\"} 1"))
            #expect(after.contains("torpor_added_latency_seconds_bucket{model=\"m1\",le=\"0.0001\"} 0"))

            // The engine's own metrics, without waking a sleeper; the metrics token reads nothing else.
            let engine = try await HTTPAnswer.send(
                "GET", gateway.admin + "/admin/models/m0/metrics", headers: ["Authorization": "Bearer \(token)"])
            #expect(engine.status == 200 && engine.body.contains("vllm:engine_sleep_state"), "\(engine.body)")
            #expect(try await gateway.adminCall("GET", "/admin/models", token: token).status == 401)
            #expect(try await gateway.adminCall("POST", "/admin/models/m0/sleep", token: token).status == 401)
            #expect(try await scrape("wrong-token-0123456789").status == 401)
        }
    }
}
