import Foundation
import Testing

@testable import TorporGateway

/// The three bounds on a proxied request — the answer's head, each gap in the answer, the whole request — each
/// ending the request with 504 (or a streamed error event) and cancelling it upstream, so that the engine stops
/// generating for nobody.
@Suite(.serialized) struct TimeoutTests {
    /// Requests the engine of `model` is generating (vLLM's `vllm:num_requests_running`).
    private func running(_ gateway: GatewayUnderTest, _ model: String = "m0") async throws -> Double? {
        let metrics = try await HTTPAnswer.send("GET", await gateway.engineURL(model) + "/metrics").body
        let line = metrics.split(separator: "\n").first { $0.hasPrefix("vllm:num_requests_running{") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    private func generate(_ gateway: GatewayUnderTest, tokens: Int, stream: Bool) async throws -> HTTPAnswer {
        try await HTTPAnswer.send(
            "POST", gateway.client + "/v1/completions",
            json: ["model": "m0", "prompt": "hi", "max_tokens": tokens, "stream": stream])
    }

    @Test func anAnswerThatIsNotStreamedMayTakeLongerThanTheGapBound() async throws {
        // 20 tokens at 20 a second: a second of silence before the head, with a gap bound of 0.3 s.
        try await withGateway(
            simulatedModels(1, awake: 1, tokensPerSecond: 20) + "limits: {upstream_read_timeout_seconds: 0.3}\n"
        ) { gateway in
            let answer = try await generate(gateway, tokens: 20, stream: false)
            #expect(answer.status == 200, "\(answer.body)")
            #expect(answer.text?.isEmpty == false)
        }
    }

    @Test func anAnswerHeadLaterThanItsBoundIs504AndTheGenerationIsCancelled() async throws {
        try await withGateway(
            simulatedModels(1, awake: 1, tokensPerSecond: 20) + "limits: {upstream_head_timeout_seconds: 0.5}\n"
        ) { gateway in
            let started = ContinuousClock.now
            let answer = try await generate(gateway, tokens: 2000, stream: false)
            #expect(answer.status == 504, "\(answer.body)")
            #expect(answer.error?["code"] as? String == "engine_timeout")
            #expect(
                (answer.error?["message"] as? String)?.contains(
                    "did not begin its answer within 0.5 s (limits.upstream_head_timeout_seconds)") == true,
                "\(answer.body)")
            #expect(ContinuousClock.now - started < .seconds(30))
            try await gateway.waitUntil("the engine aborted the request") { try await running(gateway) == 0 }
            let metrics = try await gateway.adminCall("GET", "/metrics").body
            #expect(metrics.contains("torpor_requests_total{model=\"m0\",status=\"504\"} 1"), "\(metrics)")
        }
    }

    @Test func aStreamThatStallsEndsWithAnErrorEventAfterTheGapBound() async throws {
        try await withGateway(
            simulatedModels(1, awake: 1, tokensPerSecond: 50) + "limits: {upstream_read_timeout_seconds: 0.5}\n"
        ) { gateway in
            try await gateway.fault("m0", "stall_next_generation")
            let answer = try await generate(gateway, tokens: 100, stream: true)
            #expect(answer.status == 200)
            let events = answer.body.components(separatedBy: "\n\n").filter { $0.hasPrefix("data: ") }
            #expect(events.count == 2, "\(answer.body)")
            #expect(events.first?.contains("\"choices\"") == true)
            #expect(
                events.last?.contains("sent nothing for 0.5 s (limits.upstream_read_timeout_seconds)") == true,
                "\(answer.body)")
            try await gateway.waitUntil("the engine aborted the request") { try await running(gateway) == 0 }
        }
    }

    @Test func aRequestPastItsWholeBoundIsCancelledEvenWhileTheAnswerFlows() async throws {
        try await withGateway(
            simulatedModels(1, awake: 1, tokensPerSecond: 20) + "limits: {request_timeout_seconds: 1}\n"
        ) { gateway in
            let answer = try await generate(gateway, tokens: 2000, stream: true)
            #expect(answer.status == 200)
            #expect(answer.body.contains("took longer than 1 s (limits.request_timeout_seconds)"), "\(answer.body)")
            #expect(!answer.body.contains("[DONE]"))
            try await gateway.waitUntil("the engine aborted the request") { try await running(gateway) == 0 }
            // Not streamed: 504 with nothing else.
            let whole = try await generate(gateway, tokens: 2000, stream: false)
            #expect(whole.status == 504)
            #expect(whole.error?["code"] as? String == "engine_timeout")
        }
    }
}
