import Foundation
import Testing

@testable import TorporGateway

/// What a hung or dead engine costs the other models on its GPU: requests for awake models keep flowing while the
/// watchdog waits for a hung one and it is killed; a dead one is given up at once rather than after a connect
/// timeout (docs/gateway.md, "What a hung engine costs the others").
@Suite(.serialized) struct FaultyNeighbourTests {
    @Test func requestsForAnAwakeModelFlowWhileItsNeighbourHangsAndIsKilled() async throws {
        // Room for both awake: m1's wake needs no eviction of m0.
        let yaml = """
            gpus: [{id: "0", memory_gib: 16}]
            scheduler: {transition_timeout_seconds: 2}
            models:
              - {name: m0, preload: true, engine: {simulated: true, time_scale: 0.01, tokens_per_second: 200}, weights_gib: 3, kv_cache_gib: 3}
              - {name: m1, engine: {simulated: true, time_scale: 0.01, tokens_per_second: 200}, weights_gib: 3, kv_cache_gib: 3}

            """
        try await withGateway(yaml) { gateway in
            #expect(await gateway.state("m1") == "L1")
            try await gateway.fault("m1", "hang_next_wake")
            let hung = Task { try await gateway.complete("m1") }
            try await gateway.waitUntil("m1 waking") { await gateway.state("m1") == "waking" }
            // Through the watchdog's 2 s and the kill, m0 answers as fast as ever.
            var slowest = Duration.zero
            var answered = 0
            while await gateway.state("m1") == "waking" || answered < 5 {
                let started = ContinuousClock.now
                let answer = try await gateway.complete("m0")
                slowest = max(slowest, ContinuousClock.now - started)
                #expect(answer.status == 200, "\(answer.body)")
                answered += 1
            }
            #expect(answered >= 5)
            #expect(slowest < .seconds(1), "the slowest answer for m0 took \(slowest)")
            // The hung engine was failed by the watchdog and restarted; its request was served.
            let answer = try await hung.value
            #expect(answer.status == 200, "\(answer.body)")
            let failure = try #require(gateway.events().first { $0.kind == "fail" && $0.model == "m1" })
            #expect(failure.reason?.contains("watchdog") == true)
        }
    }

    @Test func aDeadEngineInTheWayIsGivenUpAtOnceNotAfterAConnectTimeout() async throws {
        // One awake at a time: waking m1 means sleeping m0 first, and m0's engine is dead.
        try await withGateway(
            simulatedModels(2, awake: 1) + "scheduler: {min_residency_seconds: 0, transition_timeout_seconds: 30}\n"
        ) { gateway in
            #expect(await gateway.state("m1") == "L1")
            _ = try? await HTTPAnswer.send(
                "POST", await gateway.engineURL("m0") + "/sim/fault?kind=crash", timeout: .seconds(2))
            let started = ContinuousClock.now
            let answer = try await gateway.complete("m1")
            let took = ContinuousClock.now - started
            #expect(answer.status == 200, "\(answer.body)")
            // A refused connection is a dead engine: no 5 s connect timeout, no 30 s watchdog before m1's wake.
            #expect(took < .seconds(4), "m1 waited \(took) behind its dead neighbour")
            #expect(gateway.events().contains { $0.kind == "fail" && $0.model == "m0" })
        }
    }
}
