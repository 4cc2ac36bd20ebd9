import Foundation
import Logging
import Synchronization
import Testing
import TorporEngine

@testable import TorporGateway

/// Time that moves only when a test says so.
final class ManualClock: SchedulerClock {
    private struct Sleeper {
        let id: UInt64
        let deadline: Duration
        let continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var now = Duration.zero
        var sleepers: [Sleeper] = []
        var nextID: UInt64 = 0
        /// Sleeps cancelled before they were registered (the cancellation handler ran first).
        var cancelledEarly: Set<UInt64> = []
    }
    private let state = Mutex(State())

    var now: Duration { state.withLock { $0.now } }

    func sleep(for duration: Duration) async throws {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Outcome { case wait, resume, cancel }
                let outcome = state.withLock { state -> Outcome in
                    if state.cancelledEarly.remove(id) != nil { return .cancel }
                    guard duration > .zero else { return .resume }
                    state.sleepers.append(Sleeper(id: id, deadline: state.now + duration, continuation: continuation))
                    return .wait
                }
                switch outcome {
                case .wait: break
                case .resume: continuation.resume()
                case .cancel: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            // The handler may run before the sleeper is registered: then it leaves a note that the body reads, or
            // the sleep would never end (and a task group awaiting it would hang).
            let sleeper = state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else {
                    state.cancelledEarly.insert(id)
                    return nil
                }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and resumes every sleeper whose time has come.
    func advance(by duration: Duration) {
        let due = state.withLock { state -> [Sleeper] in
            state.now += duration
            let due = state.sleepers.filter { $0.deadline <= state.now }
            state.sleepers.removeAll { $0.deadline <= state.now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }
}

/// An engine that records what the scheduler asks of it and can fail or hang on request.
final class FakeEngine: ModelEngine {
    enum Call: Equatable {
        case start
        case stop
        case sleep(SleepLevel, SleepMode)
        case wake(SleepLevel, String)
        case reload(String)
    }

    private struct State {
        var calls: [Call] = []
        var failNextSleep = false
        var failNextWake = false
        var hangNextWake = false
        /// What the engine itself would say of its sleep.
        var sleepState = EngineSleepState.awake
    }
    private let state = Mutex(State())
    let name: String

    init(name: String) { self.name = name }

    var calls: [Call] { state.withLock { $0.calls } }
    func count(_ predicate: (Call) -> Bool) -> Int { calls.filter(predicate).count }

    func failNextSleep() { state.withLock { $0.failNextSleep = true } }
    func failNextWake() { state.withLock { $0.failNextWake = true } }
    func hangNextWake() { state.withLock { $0.hangNextWake = true } }
    /// Someone else's `/sleep` or `/wake_up`: the engine's own state changes, the scheduler is not told.
    func changeBehindTheBack(to sleepState: EngineSleepState) { state.withLock { $0.sleepState = sleepState } }

    func baseURL() async -> String { "http://fake/\(name)" }
    func start() async throws(EngineError) {
        state.withLock {
            $0.calls.append(.start)
            $0.sleepState = .awake
        }
    }
    func stop() async { state.withLock { $0.calls.append(.stop) } }
    func isAlive() async -> Bool { true }

    func sleep(level: SleepLevel, mode: SleepMode) async throws(EngineError) {
        let fail = state.withLock { state in
            state.calls.append(.sleep(level, mode))
            defer { state.failNextSleep = false }
            if !state.failNextSleep { state.sleepState = level == .offloadWeights ? .weightsOffloaded : .discardAll }
            return state.failNextSleep
        }
        if fail { throw EngineError(.httpStatus, "engine \(name): sleep failed with HTTP 500", status: 500) }
    }

    func wake(from level: SleepLevel, weightsPath: String) async throws(EngineError) {
        let (fail, hang) = state.withLock { state in
            state.calls.append(.wake(level, weightsPath))
            defer {
                state.failNextWake = false
                state.hangNextWake = false
            }
            return (state.failNextWake, state.hangNextWake)
        }
        if fail { throw EngineError(.httpStatus, "engine \(name): wake failed with HTTP 500", status: 500) }
        if hang {
            // Hangs until the watchdog cancels it.
            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(5)) }
            throw EngineError(.timeout, "engine \(name): cancelled")
        }
        state.withLock { $0.sleepState = .awake }
    }

    func observedSleepState() async -> EngineSleepState? { state.withLock { $0.sleepState } }

    func reloadWeights(from path: String) async throws(EngineError) {
        state.withLock { $0.calls.append(.reload(path)) }
    }
}

/// A scheduler over fake engines and a manual clock, its GPU workers running until `stop()`.
final class SchedulerRig: Sendable {
    let scheduler: Scheduler
    let clock = ManualClock()
    let engines: [String: FakeEngine]
    private let bus = EventBus()
    private let workers: Task<Void, Never>
    /// Requests admitted by `acquire` and not yet released, by model.
    private let uses = Mutex<[String: [Scheduler.EngineUse]]>([:])

    init(_ configuration: GatewayConfiguration) {
        var engines: [String: FakeEngine] = [:]
        for model in configuration.models { engines[model.name] = FakeEngine(name: model.name) }
        self.engines = engines
        // Every configured model has an engine here, so this cannot throw.
        scheduler = try! Scheduler(
            configuration: configuration, engines: engines, clock: clock, metrics: GatewayMetrics(),
            events: bus, logger: quietLogger)
        let scheduler = self.scheduler
        let gpus = configuration.gpus.map(\.id)
        workers = Task {
            await withDiscardingTaskGroup { group in
                for gpu in gpus { group.addTask { await scheduler.runGPU(gpu) } }
            }
        }
    }

    func stop() { workers.cancel() }

    /// The transitions published so far.
    func events() -> [TransitionEvent] { bus.recent() }

    /// Admits one request for `name` (waiting for its wake) and holds it until `release(name)`.
    /// - Returns: the engine's base URL.
    func acquire(_ name: String) async throws -> String {
        let use = try await scheduler.admit(name)
        uses.withLock { $0[name, default: []].append(use) }
        return use.baseURL
    }

    /// Ends one request on `name` that `acquire` admitted.
    func release(_ name: String) async {
        guard let use = uses.withLock({ $0[name]?.popLast() }) else {
            Issue.record("release(\(name)) without an acquire")
            return
        }
        await scheduler.release(use)
    }

    /// Advances the clock and lets the scheduler act on it.
    func advance(seconds: Double) async {
        clock.advance(by: .seconds(seconds))
        await scheduler.tick()
    }

    /// Polls (with ticks) until `condition` holds, failing the test after 120 s of real time (a deadline for a
    /// broken scheduler, not a timing: other suites may keep every thread busy for a while).
    func until(
        _ what: String, sourceLocation: SourceLocation = #_sourceLocation, _ condition: () async -> Bool
    ) async {
        let deadline = ContinuousClock.now + .seconds(120)
        while !(await condition()) {
            guard ContinuousClock.now < deadline else {
                Issue.record("timed out waiting for \(what)", sourceLocation: sourceLocation)
                return
            }
            await scheduler.tick()
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    /// The value of a task that acquires a model, or the error it threw; cancelled (and recorded as an issue)
    /// after 120 s so that a broken scheduler fails the test instead of hanging the run.
    func result(
        of task: Task<String, any Error>, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> String {
        let watchdog = Task {
            try await Task.sleep(for: .seconds(120))
            task.cancel()
            Issue.record("an acquire did not finish within 120 s", sourceLocation: sourceLocation)
        }
        defer { watchdog.cancel() }
        return try await task.value
    }

    /// Waits until every engine has been started once and `condition` holds.
    func untilStartedUp(sourceLocation: SourceLocation = #_sourceLocation, _ condition: () async -> Bool) async {
        await until("start-up", sourceLocation: sourceLocation) {
            guard await scheduler.isStartedUp else { return false }
            return await condition()
        }
    }

    func phase(_ name: String) async -> String { await scheduler.state(of: name)?.name ?? "?" }

    func phases(_ names: String...) async -> [String] {
        var result: [String] = []
        for name in names { result.append(await phase(name)) }
        return result
    }
}

/// A configuration of `count` models of 10 GiB awake each (4 weights, 4 KV cache, 2 residue) on one GPU.
func rigConfiguration(models count: Int, gpuGiB: Int, preload: Int = 0) -> GatewayConfiguration {
    var configuration = GatewayConfiguration()
    configuration.gpus = [.init(id: "0", memoryBytes: gpuGiB << 30)]
    configuration.hostMemoryBytes = 64 << 30
    configuration.scheduler.minResidencySeconds = 0
    configuration.scheduler.drainTimeoutSeconds = 5
    configuration.scheduler.transitionTimeoutSeconds = 30
    configuration.limits.queueTimeoutSeconds = 1000
    for index in 0..<count {
        var model = GatewayConfiguration.Model(
            name: "m\(index)", engine: .external(url: "http://127.0.0.1:1"), weightsBytes: 4 << 30,
            kvCacheBytes: 4 << 30)
        model.sleepResidueBytes = 2 << 30
        model.preload = index < preload
        configuration.models.append(model)
    }
    return configuration
}

/// A logger that prints only errors (the scheduler logs every transition at info).
let quietLogger: Logger = {
    var logger = Logger(label: "torpor.tests.gateway")
    logger.logLevel = .critical
    return logger
}()
