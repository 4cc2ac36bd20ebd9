import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TorporEngine

@testable import TorporGateway

/// The client and admin listeners as a client sees them: errors, keys, dev paths, the admin API.
@Suite(.serialized) struct APITests {
    static let keys = """
        api_keys:
          - name: team-a
            key: sk-team-a-0123456789
            models: [m0]
          - name: everyone
            key: sk-everyone-0123456789
        limits: {max_request_bytes: 4096, queue_depth: 1}

        """

    @Test func vLLMDevPathsDoNotExistOnTheClientListener() async throws {
        try await withGateway(simulatedModels(1, awake: 1)) { gateway in
            let paths = [
                "/sleep", "/sleep?level=1", "/wake_up", "/wake_up?tags=weights", "/collective_rpc", "/pause",
                "/resume", "/is_sleeping", "/is_paused", "/reset_prefix_cache", "/metrics", "/sim/fault?kind=crash",
                "/admin/models", "/v1/../sleep", "/v1/sleep",
            ]
            for path in paths {
                for method in ["GET", "POST"] {
                    let answer = try await HTTPAnswer.send(method, gateway.client + path)
                    #expect(answer.status == 404, "\(method) \(path) answered \(answer.status)")
                    #expect(answer.error?["code"] as? String == "not_found")
                }
            }
            // Nothing reached the engine: it is still awake and serving.
            #expect(await gateway.state("m0") == "awake")
            #expect(try await gateway.complete("m0").status == 200)
        }
    }

    @Test func theAdminAPINeedsItsToken() async throws {
        try await withGateway(simulatedModels(1, awake: 1)) { gateway in
            for (method, path) in [
                ("GET", "/admin/models"), ("GET", "/metrics"), ("POST", "/admin/models/m0/sleep"),
                ("POST", "/admin/gpus/0/lease"), ("GET", "/admin/events"), ("GET", "/nonexistent"),
            ] {
                let missing = try await HTTPAnswer.send(method, gateway.admin + path)
                #expect(missing.status == 401, "\(method) \(path) without a token answered \(missing.status)")
                #expect(missing.headers.first(name: "WWW-Authenticate") == "Bearer")
                let wrong = try await gateway.adminCall(method, path, token: "test-admin-token-0123456788")
                #expect(wrong.status == 401)
            }
            #expect(await gateway.state("m0") == "awake")
            #expect(try await gateway.adminCall("GET", "/admin/models").status == 200)
        }
    }

    @Test func openAIErrorsForUnknownModelsBadBodiesAndOversizedRequests() async throws {
        try await withGateway(simulatedModels(1, awake: 1) + "limits: {max_request_bytes: 4096}\n") { gateway in
            let unknown = try await gateway.complete("no-such-model")
            #expect(unknown.status == 404)
            #expect(unknown.error?["code"] as? String == "model_not_found")
            #expect((unknown.error?["message"] as? String)?.contains("no-such-model") == true)
            let metrics = try await gateway.adminCall("GET", "/metrics").body
            #expect(!metrics.contains("no-such-model"))
            #expect(metrics.contains("torpor_requests_total{model=\"\",status=\"404\"} 1"))
            let invalid = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/completions", body: Array("{not json".utf8))
            #expect(invalid.status == 400)
            #expect(invalid.error?["type"] as? String == "invalid_request_error")
            let noModel = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/completions", json: ["prompt": "hi"])
            #expect(noModel.status == 400)
            #expect((noModel.error?["message"] as? String)?.contains("`model`") == true)
            let large = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/completions",
                json: ["model": "m0", "prompt": String(repeating: "x", count: 5000)])
            #expect(large.status == 413)
            #expect(large.error?["code"] as? String == "request_too_large")
            let wrongMethod = try await HTTPAnswer.send("GET", gateway.client + "/v1/completions")
            #expect(wrongMethod.status == 405)
            // Embeddings pass through to the engine (the simulated one makes deterministic unit vectors).
            let embeddings = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/embeddings", json: ["model": "m0", "input": ["hi", "there"]])
            #expect(embeddings.status == 200, "\(embeddings.body)")
            let vectors = (embeddings.json?["data"] as? [[String: Any]])?.compactMap { $0["embedding"] as? [Double] }
            #expect(vectors?.count == 2)
            #expect(vectors?.first.map { abs($0.reduce(0) { $0 + $1 * $1 } - 1) < 1e-9 } == true)
            let again = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/embeddings", json: ["model": "m0", "input": "hi"])
            #expect((again.json?["data"] as? [[String: Any]])?.first?["embedding"] as? [Double] == vectors?.first)
        }
    }

    @Test func healthAnswersHeadAndBearerIsCaseInsensitiveAndUnreadableBodiesAre400() async throws {
        try await withGateway(simulatedModels(1, awake: 1) + Self.keys) { gateway in
            let head = try await HTTPAnswer.send("HEAD", gateway.client + "/health")
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            // RFC 7235: the scheme is case-insensitive, for API keys and the admin token alike.
            for scheme in ["bearer", "BEARER", "Bearer"] {
                let answer = try await HTTPAnswer.send(
                    "GET", gateway.client + "/v1/models", headers: ["Authorization": "\(scheme) sk-everyone-0123456789"]
                )
                #expect(answer.status == 200, "\(scheme): \(answer.status)")
                let admin = try await HTTPAnswer.send(
                    "GET", gateway.admin + "/admin/models", headers: ["Authorization": "\(scheme) \(gateway.token)"])
                #expect(admin.status == 200, "admin, \(scheme): \(admin.status)")
            }
            #expect(
                try await HTTPAnswer.send(
                    "GET", gateway.client + "/v1/models", headers: ["Authorization": "Basic sk-everyone-0123456789"]
                ).status == 401)
            // A chunked body that breaks the encoding is a bad request, not one that is too large.
            let port = Int(gateway.client.split(separator: ":").last!)!
            let raw = try HalfClosingClient(
                port: port,
                bytes: Array(
                    ("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-everyone-0123456789"
                        + "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n").utf8))
            let answer = raw.readAnswer()
            #expect(!answer.contains(" 413 "), "\(answer)")
            #expect(answer.hasPrefix("HTTP/1.1 400"), "\(answer)")
            #expect(answer.contains("could not be read"), "\(answer)")
            // Requests the HTTP parser refuses get 400 with a body that says so, and the connection closes.
            for request in [
                "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nNo colon here\r\n\r\n",
                "BREW /v1/models HTCPCP/1.0\r\n\r\n",
                "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\u{01}b\r\n\r\n",
            ] {
                let refused = try HalfClosingClient(port: port, bytes: Array(request.utf8)).readAnswer()
                #expect(refused.hasPrefix("HTTP/1.1 400"), "\(request.debugDescription): \(refused)")
                #expect(refused.lowercased().contains("connection: close"), "\(refused)")
                let json = refused.components(separatedBy: "\r\n\r\n").last ?? ""
                let error = try #require(
                    (try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["error"]
                        as? [String: Any], "\(refused)")
                #expect((error["message"] as? String)?.contains("not valid HTTP/1.1") == true, "\(refused)")
                #expect(error["type"] as? String == "invalid_request_error")
            }
        }
    }

    @Test func aClientTooSlowToSendItsRequestIsCutOffButALongAnswerIsNot() async throws {
        let yaml =
            simulatedModels(1, awake: 1, tokensPerSecond: 10) + "limits: {request_read_timeout_seconds: 0.5}\n"
        try await withGateway(yaml) { gateway in
            let port = Int(gateway.client.split(separator: ":").last!)!
            // Half a head, then nothing: closed after the deadline, with no answer.
            var started = ContinuousClock.now
            let slowHead = try HalfClosingClient(
                port: port, bytes: Array("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n".utf8))
            #expect(slowHead.readAnswer(timeout: .seconds(10)).isEmpty)
            var took = ContinuousClock.now - started
            #expect(took >= .milliseconds(400) && took < .seconds(5), "closed after \(took)")
            // A whole head and part of the body: the same.
            started = ContinuousClock.now
            let slowBody = try HalfClosingClient(
                port: port,
                bytes: Array(
                    ("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        + "Content-Length: 100\r\n\r\n{\"model\":").utf8))
            let answer = slowBody.readAnswer(timeout: .seconds(10))
            took = ContinuousClock.now - started
            #expect(!answer.contains(" 200 "), "\(answer)")
            #expect(took < .seconds(5), "closed after \(took)")
            // The gateway's own time is not bounded: 10 tokens at 10 per second take a second.
            let long = try await gateway.complete("m0", maxTokens: 10)
            #expect(long.status == 200, "\(long.body)")
        }
    }

    @Test func aFullQueueAnswers429WithRetryAfter() async throws {
        try await withGateway(simulatedModels(2, awake: 1) + "limits: {queue_depth: 1}\n") { gateway in
            let url = await gateway.engineURL("m1")
            _ = try await HTTPAnswer.send("POST", url + "/sim/fault?kind=slow_wake&factor=300")
            async let first = gateway.complete("m1")
            try await gateway.waitUntil("one queued") {
                await gateway.gateway.scheduler.statuses().first { $0.name == "m1" }?.queued == 1
            }
            let rejected = try await gateway.complete("m1")
            #expect(rejected.status == 429)
            #expect(rejected.headers.first(name: "Retry-After") == "2")
            #expect(rejected.error?["type"] as? String == "rate_limit_error")
            #expect(try await first.status == 200)
        }
    }

    @Test func apiKeysAndTheirModelAllowLists() async throws {
        try await withGateway(simulatedModels(2, awake: 2) + Self.keys) { gateway in
            let none = try await gateway.complete("m0")
            #expect(none.status == 401)
            #expect(none.error?["type"] as? String == "authentication_error")
            let wrong = try await gateway.complete("m0", key: "sk-team-a-0123456780")
            #expect(wrong.status == 401)
            #expect(try await gateway.complete("m0", key: "sk-team-a-0123456789").status == 200)
            // A model outside the key's list looks like one that does not exist.
            let hidden = try await gateway.complete("m1", key: "sk-team-a-0123456789")
            #expect(hidden.status == 404)
            #expect(try await gateway.complete("m1", key: "sk-everyone-0123456789").status == 200)
            let models = try await HTTPAnswer.send(
                "GET", gateway.client + "/v1/models", headers: ["Authorization": "Bearer sk-team-a-0123456789"])
            let ids = (models.json?["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
            #expect(ids == ["m0"])
            let hiddenModel = try await HTTPAnswer.send(
                "GET", gateway.client + "/v1/models/m1", headers: ["Authorization": "Bearer sk-team-a-0123456789"])
            #expect(hiddenModel.status == 404)
            #expect(try await HTTPAnswer.send("GET", gateway.client + "/v1/models").status == 401)
            // Keys never reach the metrics or the admin API.
            let metrics = try await gateway.adminCall("GET", "/metrics")
            let admin = try await gateway.adminCall("GET", "/admin/models")
            for text in [metrics.body, admin.body] { #expect(!text.contains("sk-team-a")) }
        }
    }

    @Test func modelListShowsEveryModelWithItsState() async throws {
        try await withGateway(simulatedModels(3, awake: 2)) { gateway in
            let answer = try await HTTPAnswer.send("GET", gateway.client + "/v1/models")
            #expect(answer.json?["object"] as? String == "list")
            let data = try #require(answer.json?["data"] as? [[String: Any]])
            #expect(data.map { $0["id"] as? String } == ["m0", "m1", "m2"])
            #expect(data.map { $0["state"] as? String } == ["awake", "awake", "L1"])
            // One model by its id, as OpenAI's GET /v1/models/{id}; an unknown id is the usual 404.
            let one = try await HTTPAnswer.send("GET", gateway.client + "/v1/models/m2")
            #expect(one.status == 200)
            #expect(one.json?["id"] as? String == "m2" && one.json?["object"] as? String == "model")
            #expect(one.json?["state"] as? String == "L1", "asking about a model does not wake it")
            let unknown = try await HTTPAnswer.send("GET", gateway.client + "/v1/models/m9")
            #expect(unknown.status == 404 && unknown.error?["code"] as? String == "model_not_found")
            // Clients given a base URL without /v1 send the paths without it.
            let bare = try await HTTPAnswer.send("GET", gateway.client + "/models")
            #expect((bare.json?["data"] as? [[String: Any]])?.count == 3)
            let completion = try await HTTPAnswer.send(
                "POST", gateway.client + "/completions", json: ["model": "m0", "prompt": "hi", "max_tokens": 2])
            #expect(completion.status == 200 && completion.text?.isEmpty == false, "\(completion.body)")
            #expect(try await HTTPAnswer.send("GET", gateway.client + "/models/m0").json?["id"] as? String == "m0")
        }
    }

    @Test func streamsReportUsageWhenAskedAndCountersStartAtZero() async throws {
        try await withGateway(simulatedModels(2, awake: 1)) { gateway in
            // Every model's failure counter and queue depth exist before anything happens (issue 16).
            let metrics = try await gateway.adminCall("GET", "/metrics").body
            for model in ["m0", "m1"] {
                #expect(metrics.contains("torpor_engine_failures_total{model=\"\(model)\"} 0"), "\(metrics)")
            }
            // With stream_options.include_usage, the last chunk before [DONE] has no choices and the usage, as vLLM.
            let answer = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/chat/completions",
                json: [
                    "model": "m0", "messages": [["role": "user", "content": "hi"]], "max_tokens": 3, "stream": true,
                    "stream_options": ["include_usage": true],
                ])
            #expect(answer.status == 200)
            let events = answer.body.components(separatedBy: "\n\n").filter { $0.hasPrefix("data: {") }
            let last = try #require(
                events.last.flatMap {
                    try? JSONSerialization.jsonObject(with: Data($0.dropFirst(6).utf8)) as? [String: Any]
                })
            #expect((last["choices"] as? [Any])?.isEmpty == true, "\(answer.body)")
            #expect((last["usage"] as? [String: Any])?["completion_tokens"] as? Int == 3, "\(answer.body)")
            #expect(answer.body.hasSuffix("data: [DONE]\n\n"))
            // Without it, no usage chunk.
            let plain = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/completions",
                json: ["model": "m0", "prompt": "hi", "max_tokens": 3, "stream": true])
            #expect(!plain.body.contains("\"usage\""))
        }
    }

    @Test func adminSleepWakeSwitchReloadAndEvents() async throws {
        try await withGateway(simulatedModels(3, awake: 2) + "scheduler: {min_residency_seconds: 0}\n") { gateway in
            var eventsRequest = HTTPClientRequest(url: gateway.admin + "/admin/events")
            eventsRequest.headers.add(name: "Authorization", value: "Bearer \(gateway.token)")
            let events = StreamReader(eventsRequest)
            let listed = try await gateway.adminCall("GET", "/admin/models")
            let models = try #require(listed.json?["models"] as? [[String: Any]])
            #expect(models.map { $0["state"] as? String } == ["awake", "awake", "L1"])
            let ledger = try #require((listed.json?["gpus"] as? [[String: Any]])?.first)
            #expect(ledger["awake_bytes"] as? Int == 2 * Int(7.2 * Double(1 << 30)))

            let slept = try await gateway.adminCall("POST", "/admin/models/m0/sleep?level=2")
            #expect(slept.status == 200, "\(slept.body)")
            #expect(slept.json?["state"] as? String == "L2")
            let woken = try await gateway.adminCall("POST", "/admin/models/m2/wake")
            #expect(woken.json?["state"] as? String == "awake")
            let switched = try await gateway.adminCall("POST", "/admin/switch?from=m1&to=m0")
            #expect(switched.status == 200)
            #expect(await gateway.state("m0") == "awake")
            #expect(await gateway.state("m1") == "L1")
            #expect(try await gateway.adminCall("POST", "/admin/models/m9/wake").status == 404)
            #expect(try await gateway.adminCall("POST", "/admin/models/m0/sleep?level=7").status == 400)

            // A weight reload (the RLHF path): a simulated engine's text follows the weights it loaded.
            let before = try await gateway.complete("m0", prompt: "policy")
            var reload = try await HTTPAnswer.send(
                "POST", gateway.admin + "/admin/models/m0/reload", json: ["weights_path": "/checkpoints/step-2"],
                headers: ["Authorization": "Bearer \(gateway.token)"])
            #expect(reload.status == 200, "\(reload.body)")
            #expect(reload.json?["weights_path"] as? String == "/checkpoints/step-2")
            let after = try await gateway.complete("m0", prompt: "policy")
            #expect(after.text != before.text)
            reload = try await HTTPAnswer.send(
                "POST", gateway.admin + "/admin/models/m0/reload", json: ["weights_path": "m0"],
                headers: ["Authorization": "Bearer \(gateway.token)"])
            #expect(try await gateway.complete("m0", prompt: "policy").text == before.text)

            #expect(await events.waitUntil { $0.dataObjects.contains { $0["kind"] as? String == "reload" } })
            let kinds = Set(events.dataObjects.compactMap { $0["kind"] as? String })
            #expect(kinds.isSuperset(of: ["drain", "sleep", "wake", "reload"]))
            events.cancel()

            let metrics = try await gateway.adminCall("GET", "/metrics")
            for series in [
                "torpor_model_state{model=\"m0\",state=\"awake\"} 1", "torpor_transition_seconds_bucket{kind=\"sleep\"",
                "torpor_queue_wait_seconds_count", "torpor_gpu_memory_bytes{gpu=\"0\",use=\"awake\"}",
                "torpor_host_memory_bytes{use=\"level1_weights\"}",
                "torpor_added_latency_seconds_count{model=\"m0\"}",
                "torpor_requests_total{model=\"m0\",status=\"200\"}",
            ] {
                #expect(metrics.body.contains(series), "metrics lack \(series)")
            }
        }
    }

}
