import Testing
import TorporEngine

@testable import TorporGateway

/// The scheduler's decisions on fake engines and a manual clock: no process, no real time.
@Suite struct SchedulerTests {
    @Test func startsEveryEngineAndPutsTheNotPreloadedToSleep() async throws {
        let rig = SchedulerRig(rigConfiguration(models: 3, gpuGiB: 24, preload: 1))
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phases("m2", "m0") == ["L1", "awake"] }
        #expect(await rig.phase("m1") == "L1")
        #expect(rig.engines["m0"]!.calls == [.start])
        #expect(rig.engines["m1"]!.calls == [.start, .sleep(.offloadWeights, .wait)])
        let ledger = try #require(await rig.scheduler.ledger(gpu: "0"))
        #expect(ledger.awakeBytes == 10 << 30)
        #expect(ledger.residueBytes == 4 << 30)
        #expect(await rig.scheduler.hostMemoryInUse() == 8 << 30)
    }

    @Test func concurrentRequestsForASleeperJoinOneWake() async throws {
        let rig = SchedulerRig(rigConfiguration(models: 2, gpuGiB: 24))
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m1") == "L1" }
        let urls = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<8 { group.addTask { try await rig.acquire("m0") } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(urls == Array(repeating: "http://fake/m0", count: 8))
        #expect(rig.engines["m0"]!.count { if case .wake = $0 { true } else { false } } == 1)
        #expect(await rig.scheduler.statuses().first { $0.name == "m0" }?.inFlight == 8)
    }

    @Test func evictsTheModelThatIsCheapestToLose() async throws {
        // Room for two awake; m0 is asked for often, m1 once: m1 sleeps for m2.
        let rig = SchedulerRig(rigConfiguration(models: 3, gpuGiB: 24, preload: 2))
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phases("m1", "m2") == ["awake", "L1"] }
        for _ in 0..<20 {
            _ = try await rig.acquire("m0")
            await rig.release("m0")
        }
        _ = try await rig.acquire("m1")
        await rig.release("m1")
        _ = try await rig.acquire("m2")
        #expect(await rig.phase("m1") == "L1")
        #expect(await rig.phase("m0") == "awake")
        #expect(await rig.phase("m2") == "awake")
    }

    @Test func sleepsAtLevelTwoWhenHostMemoryCannotHoldTheWeights() async throws {
        var configuration = rigConfiguration(models: 3, gpuGiB: 16, preload: 1)
        configuration.hostMemoryBytes = 5 << 30  // one model's 4 GiB of weights
        let rig = SchedulerRig(configuration)
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m0") == "awake" }
        // m1 took the host budget at start-up; m2 had to sleep at level 2.
        #expect(await rig.phase("m1") == "L1")
        #expect(await rig.phase("m2") == "L2")
        _ = try await rig.acquire("m2")
        await rig.release("m2")
        // m0 made room for m2, at level 2: m1 still holds the host budget.
        #expect(await rig.phase("m0") == "L2")
        #expect(rig.engines["m2"]!.calls.contains(.wake(.discardWeights, "m2")))
        #expect(rig.engines["m0"]!.calls.contains(.sleep(.discardWeights, .wait)))
        #expect(await rig.scheduler.hostMemoryInUse() == 4 << 30)
    }

    @Test func aHostCacheModelSleepsAtLevelTwoAndHoldsItsCheckpointInTheHostBudget() async throws {
        var configuration = rigConfiguration(models: 3, gpuGiB: 16, preload: 1)
        configuration.hostMemoryBytes = 6 << 30
        // m2 wakes from its Torpor pack held in host memory: 2.7 GiB compressed for its 4 GiB of weights.
        configuration.models[2].checkpoint = .init(
            path: "/packs/m2", storedBytes: 2_900_000_000, containers: ["/packs/m2/model.torpor"])
        configuration.models[2].sleepLevel = .hostCache
        let rig = SchedulerRig(configuration)
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m0") == "awake" }
        // The checkpoint is counted from the start, so m1's 4 GiB of weights no longer fit beside it: level 2.
        #expect(await rig.phase("m2") == "L2")
        #expect(await rig.phase("m1") == "L2")
        #expect(rig.engines["m2"]!.calls.contains(.sleep(.discardWeights, .wait)))
        #expect(await rig.scheduler.hostMemoryInUse() == 2_900_000_000)
        // A wake reloads from the checkpoint (the default weights path), and the cache stays counted while awake.
        _ = try await rig.acquire("m2")
        await rig.release("m2")
        #expect(rig.engines["m2"]!.calls.contains(.wake(.discardWeights, "/packs/m2")))
        #expect(await rig.scheduler.hostMemoryInUse() == 2_900_000_000)
        let status = await rig.scheduler.state(of: "m2")
        #expect(status?.name == "awake")
    }

    @Test func aRequestWaitsNoLongerThanTheStarvationBound() async throws {
        var configuration = rigConfiguration(models: 2, gpuGiB: 12, preload: 1)
        configuration.scheduler.minResidencySeconds = 1000
        configuration.scheduler.starvationBoundSeconds = 10
        configuration.scheduler.drainTimeoutSeconds = 2
        let rig = SchedulerRig(configuration)
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phases("m0", "m1") == ["awake", "L1"] }
        // m0 is busy (a request in flight that never ends) and resident: m1 must wait, but not for ever.
        _ = try await rig.acquire("m0")
        let waiting = Task { try await rig.acquire("m1") }
        await rig.until("m1 queued") { await rig.scheduler.statuses().first { $0.name == "m1" }?.queued == 1 }
        await rig.advance(seconds: 9)
        #expect(await rig.phase("m0") == "awake")
        await rig.advance(seconds: 2)
        await rig.until("m0 draining") { await rig.phase("m0") == "draining" }
        // Time moves on until the drain deadline (2 s) has passed for the worker, however the machine's load
        // interleaves it with this test.
        await rig.until("m1 awake after m0's drain deadline") {
            await rig.advance(seconds: 0.5)
            return await rig.phase("m1") == "awake"
        }
        #expect(try await rig.result(of: waiting) == "http://fake/m1")
        // The drain deadline passed with m0's request still running: its sleep aborted it.
        #expect(rig.engines["m0"]!.calls.last == .sleep(.offloadWeights, .abort))
    }

    @Test func pinnedModelsAreNeverEvictedAndWaitersTimeOutWith503() async throws {
        var configuration = rigConfiguration(models: 2, gpuGiB: 12, preload: 1)
        configuration.models[0].pinned = true
        configuration.limits.queueTimeoutSeconds = 30
        let rig = SchedulerRig(configuration)
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m1") == "L1" }
        let waiting = Task { try await rig.acquire("m1") }
        await rig.until("m1 queued") { await rig.scheduler.statuses().first { $0.name == "m1" }?.queued == 1 }
        await rig.advance(seconds: 31)
        let error = await #expect(throws: GatewayError.self) { try await rig.result(of: waiting) }
        #expect(error?.status == 503)
        #expect(error?.retryAfterSeconds != nil)
        #expect(await rig.phase("m0") == "awake")
    }

    @Test func aFullQueueAnswers429() async throws {
        var configuration = rigConfiguration(models: 2, gpuGiB: 12, preload: 1)
        configuration.models[0].pinned = true
        configuration.limits.queueDepth = 2
        let rig = SchedulerRig(configuration)
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m1") == "L1" }
        let first = Task { try await rig.acquire("m1") }
        let second = Task { try await rig.acquire("m1") }
        await rig.until("two queued") { await rig.scheduler.statuses().first { $0.name == "m1" }?.queued == 2 }
        let error = await #expect(throws: GatewayError.self) { try await rig.acquire("m1") }
        #expect(error?.status == 429)
        first.cancel()
        second.cancel()
        await rig.until("queue emptied by cancellation") {
            await rig.scheduler.statuses().first { $0.name == "m1" }?.queued == 0
        }
    }

    @Test func idleModelsSleepAfterTheirTTL() async throws {
        var configuration = rigConfiguration(models: 1, gpuGiB: 12, preload: 1)
        configuration.models[0].idleTTLSeconds = 60
        let rig = SchedulerRig(configuration)
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m0") == "awake" }
        _ = try await rig.acquire("m0")
        await rig.release("m0")
        await rig.advance(seconds: 59)
        #expect(await rig.phase("m0") == "awake")
        await rig.advance(seconds: 2)
        await rig.until("idle sleep") { await rig.phase("m0") == "L1" }
        // The next request wakes it again.
        #expect(try await rig.acquire("m0") == "http://fake/m0")
    }

    @Test func aHungWakeIsStoppedByTheWatchdogAndTheEngineRestarted() async throws {
        let rig = SchedulerRig(rigConfiguration(models: 2, gpuGiB: 24))
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m0") == "L1" }
        rig.engines["m0"]!.hangNextWake()
        let waiting = Task { try await rig.acquire("m0") }
        await rig.until("waking") { await rig.phase("m0") == "waking" }
        // Past the transition timeout (advanced until the watchdog, which starts with the wake call, sees it).
        await rig.until("the watchdog") {
            await rig.advance(seconds: 31)
            return await rig.phase("m0") != "waking"
        }
        // The request was queued again and served by the restarted engine.
        #expect(try await rig.result(of: waiting) == "http://fake/m0")
        #expect(rig.engines["m0"]!.calls.suffix(3) == [.wake(.offloadWeights, "m0"), .stop, .start])
        let status = await rig.scheduler.statuses().first { $0.name == "m0" }!
        #expect(status.state == "awake")
        #expect(status.lastError == nil)
    }

    @Test func aModelThatKeepsFailingIsGivenUpAndItsRequestsGet503() async throws {
        var configuration = rigConfiguration(models: 2, gpuGiB: 24)
        configuration.scheduler.maxConsecutiveFailures = 1
        let rig = SchedulerRig(configuration)
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m0") == "L1" }
        rig.engines["m0"]!.failNextWake()
        let error = await #expect(throws: GatewayError.self) { try await rig.acquire("m0") }
        #expect(error?.status == 503)
        // The engine's failure is for operators (admin API, log), not in the client's answer.
        #expect(error?.message.contains("wake failed with HTTP 500") == false)
        #expect(error?.message.contains("GET /admin/models") == true)
        let status = await rig.scheduler.statuses().first { $0.name == "m0" }
        #expect(status?.lastError?.contains("wake failed with HTTP 500") == true)
        #expect(await rig.phase("m0") == "failed")
        // Further requests are refused at once, again without the engine's failure; an admin wake restarts it.
        let refused = await #expect(throws: GatewayError.self) { try await rig.acquire("m0") }
        #expect(refused?.message.contains("has failed and is not being restarted") == true)
        #expect(refused?.message.contains("HTTP 500") == false)
        #expect(try await rig.scheduler.wake("m0") == .awake)
    }

    @Test func aLeaseSleepsEveryModelAndItsReleaseWakesThemAgain() async throws {
        let rig = SchedulerRig(rigConfiguration(models: 2, gpuGiB: 24, preload: 2))
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m1") == "awake" }
        let ledgers = try await rig.scheduler.lease(gpu: "0", mode: .queue)
        #expect(ledgers.first?.awakeBytes == 0)
        #expect(await rig.phase("m0") == "L1")
        // A request waits during the lease and is served after the release.
        let waiting = Task { try await rig.acquire("m0") }
        await rig.until("queued") { await rig.scheduler.statuses().first { $0.name == "m0" }?.queued == 1 }
        _ = try await rig.scheduler.releaseLease(gpu: "0")
        #expect(try await rig.result(of: waiting) == "http://fake/m0")
        await rig.release("m0")
        await rig.until("both awake again") { await rig.phase("m1") == "awake" }
        // In refuse mode a request is answered 503 at once.
        _ = try await rig.scheduler.lease(gpu: nil, mode: .refuse)
        let error = await #expect(throws: GatewayError.self) { try await rig.acquire("m1") }
        #expect(error?.status == 503)
    }

    @Test func anEvictionNobodyNeedsAnyMoreIsCancelled() async throws {
        var configuration = rigConfiguration(models: 2, gpuGiB: 12, preload: 1)
        configuration.scheduler.drainTimeoutSeconds = 100
        let rig = SchedulerRig(configuration)
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phase("m1") == "L1" }
        _ = try await rig.acquire("m0")
        let waiting = Task { try await rig.acquire("m1") }
        await rig.until("m0 draining for m1") { await rig.phase("m0") == "draining" }
        waiting.cancel()
        await rig.until("drain cancelled") { await rig.phase("m0") == "awake" }
        #expect(rig.engines["m0"]!.count { if case .sleep = $0 { true } else { false } } == 0)
    }

    @Test func eachGPUHasItsOwnLedgerAndLease() async throws {
        var configuration = rigConfiguration(models: 4, gpuGiB: 12)
        configuration.gpus = [.init(id: "0", memoryBytes: 12 << 30), .init(id: "1", memoryBytes: 12 << 30)]
        configuration.models[2].gpu = "1"
        configuration.models[3].gpu = "1"
        let rig = SchedulerRig(configuration)
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phases("m1", "m3") == ["L1", "L1"] }
        // One awake per GPU: m0 on GPU 0 and m2 on GPU 1 can be awake together.
        _ = try await rig.result(of: Task { try await rig.acquire("m0") })
        _ = try await rig.result(of: Task { try await rig.acquire("m2") })
        #expect(await rig.phases("m0", "m2") == ["awake", "awake"])
        // Leasing GPU 1 leaves GPU 0 serving.
        await rig.release("m2")
        _ = try await rig.scheduler.lease(gpu: "1", mode: .refuse)
        #expect(await rig.phase("m2") == "L1")
        #expect(await rig.phase("m0") == "awake")
        #expect(try await rig.acquire("m0") == "http://fake/m0")
        await #expect(throws: GatewayError.self) { try await rig.acquire("m3") }
        #expect(await rig.scheduler.ledger(gpu: "0")?.awakeBytes == 10 << 30)
        #expect(await rig.scheduler.ledger(gpu: "1")?.awakeBytes == 0)
    }

    @Test func anEngineSleptBehindTheGatewaysBackIsRecordedAsleepAndWokenForTheNextRequest() async throws {
        let rig = SchedulerRig(rigConfiguration(models: 2, gpuGiB: 24, preload: 1))
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phases("m0", "m1") == ["awake", "L1"] }
        let m0 = try #require(rig.engines["m0"])
        // Someone calls /sleep?level=2 on m0's engine itself.
        m0.changeBehindTheBack(to: .discardAll)
        await rig.scheduler.checkEngines()
        #expect(await rig.phase("m0") == "L2")
        #expect(await rig.scheduler.ledger(gpu: "0")?.awakeBytes == 0)
        #expect(rig.events().contains { $0.kind == "reconcile" && $0.model == "m0" && $0.to == "L2" })
        // The next request wakes it with its weights reloaded, instead of being sent to a sleeping engine.
        _ = try await rig.result(of: Task { try await rig.acquire("m0") })
        #expect(m0.calls.last == .wake(.discardWeights, "m0"))
        #expect(await rig.phase("m0") == "awake")
    }

    @Test func anEngineWokenBehindTheGatewaysBackIsPutBackToSleep() async throws {
        let rig = SchedulerRig(rigConfiguration(models: 2, gpuGiB: 24, preload: 1))
        defer { rig.stop() }
        await rig.untilStartedUp { await rig.phases("m0", "m1") == ["awake", "L1"] }
        let m1 = try #require(rig.engines["m1"])
        m1.changeBehindTheBack(to: .awake)
        await rig.scheduler.checkEngines()
        await rig.until("m1 back asleep") { await rig.phase("m1") == "L1" }
        #expect(m1.calls.last == .sleep(.offloadWeights, .abort))
        #expect(await m1.observedSleepState() == .weightsOffloaded)
        #expect(rig.events().contains { $0.kind == "reconcile" && $0.model == "m1" && $0.from == "L1" })
        // Agreeing engines are left alone.
        let calls = m1.calls.count
        await rig.scheduler.checkEngines()
        #expect(m1.calls.count == calls)
        #expect(await rig.phases("m0", "m1") == ["awake", "L1"])
    }

    @Test func aStartedModelForgetsItsFailuresAndABootstrappedOneGoesBackToSleepUnlessWanted() {
        let configuration = rigConfiguration(models: 2, gpuGiB: 24, preload: 1)
        var bootstrapped = ModelState(config: configuration.models[1], weightsPath: "w")
        bootstrapped.consecutiveFailures = 2
        bootstrapped.restartNotBefore = .seconds(9)
        bootstrapped.lastError = "CUDA out of memory"
        bootstrapped.recordStarted(at: .seconds(5))
        #expect(bootstrapped.consecutiveFailures == 0 && bootstrapped.restartNotBefore == nil)
        #expect(bootstrapped.lastError == nil && bootstrapped.startedOnce && bootstrapped.bootstrapSince == nil)
        #expect(bootstrapped.awakeSince == .seconds(5) && bootstrapped.lastUsed == .seconds(5))
        #expect(bootstrapped.sleepIntent == .init(reason: .idle))

        var asked = ModelState(config: configuration.models[1], weightsPath: "w")
        asked.queue.append(.init(id: 1, enqueued: .zero, deadline: .seconds(60)))
        asked.recordStarted(at: .seconds(5))
        #expect(asked.sleepIntent == nil, "a request waits for it")

        var preloaded = ModelState(config: configuration.models[0], weightsPath: "w")
        preloaded.recordStarted(at: .seconds(5))
        #expect(preloaded.sleepIntent == nil && !preloaded.preloading)
    }

    @Test func reconciliationIsDecidedFromThePhaseAndWhatTheEngineSays() {
        let policy = SchedulingPolicy(rigConfiguration(models: 1, gpuGiB: 24))
        var model = ModelState(config: rigConfiguration(models: 1, gpuGiB: 24).models[0], weightsPath: "w")
        let cases: [(ModelPhase, EngineSleepState, SchedulingPolicy.Reconciliation?)] = [
            (.awake, .awake, nil),
            (.awake, .weightsOffloaded, .recordAsleep(.offloadWeights)),
            (.awake, .discardAll, .recordAsleep(.discardWeights)),
            (.asleep(.offloadWeights), .awake, .putBackToSleep(.offloadWeights)),
            (.asleep(.discardWeights), .awake, .putBackToSleep(.discardWeights)),
            (.asleep(.offloadWeights), .weightsOffloaded, nil),
            (.asleep(.offloadWeights), .discardAll, .recordAsleep(.discardWeights)),
            (.asleep(.discardWeights), .weightsOffloaded, nil),
            // The gateway's own transitions explain any disagreement.
            (.draining, .discardAll, nil), (.waking(.offloadWeights), .awake, nil), (.starting, .awake, nil),
            (.sleeping(.discardWeights), .discardAll, nil), (.stopped, .awake, nil),
        ]
        for (phase, observed, expected) in cases {
            model.enter(phase)
            #expect(policy.reconciliation(of: model, observed: observed) == expected, "\(phase), \(observed)")
        }
    }
}
