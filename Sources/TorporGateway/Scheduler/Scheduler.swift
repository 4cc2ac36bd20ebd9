import Foundation
public import Logging
public import ServiceLifecycle
import TorporEngine

/// Keeps the state of every model and GPU, and performs what `SchedulingPolicy` decides: requests are admitted or
/// queued, one worker per GPU runs its transitions one at a time (vLLM fails when a neighbour allocates during a
/// sleep), and time moves queue timeouts, idle TTLs and restart delays along.
///
/// Requests use an engine through `withEngine`. Run it as a `Service`: its workers and its 100 ms tick run until
/// graceful shutdown; `beginShutdown()` first answers every queued request and refuses new ones.
public actor Scheduler: Service {
    /// One admitted request's use of an engine.
    public struct EngineUse: Sendable {
        let id: UInt64
        public let model: String
        /// Where the request goes, e.g. `http://127.0.0.1:8001`.
        public let baseURL: String
        /// The model's state when the request had to wait for it (`L2`, `starting`, ...); nil when it was awake.
        public var waitedFor: String? = nil
    }

    struct GPUWorker {
        var state: GPUState
        let signal: AsyncStream<Void>.Continuation
        let signals: AsyncStream<Void>
    }

    /// The running configuration; a reload replaces it (`apply`).
    var configuration: GatewayConfiguration
    var policy: SchedulingPolicy
    let clock: any SchedulerClock
    let logger: Logger
    let metrics: GatewayMetrics
    let events: EventBus
    var models: [String: ModelState] = [:]
    var engines: [String: any ModelEngine]
    /// Model names in configuration order (then models a reload removed, until their engines are stopped).
    var order: [String]
    /// The new state and engine of each model a reload changed, taken up once its old engine is stopped.
    var replacements: [String: (state: ModelState, engine: any ModelEngine)] = [:]
    var gpus: [String: GPUWorker] = [:]
    /// The continuations of queued requests, by request id.
    private var waiting: [UInt64: CheckedContinuation<Void, any Error>] = [:]
    /// Admitted requests, by use id: the model each one holds.
    var uses: [UInt64: String] = [:]
    private var nextID: UInt64 = 0
    /// Set by `beginShutdown()`: nothing new is admitted, started or woken.
    private(set) var shuttingDown = false
    /// Latched by `isReady` the first time every model had started.
    private var startedUp = false
    /// Resumed at every change of state and every tick.
    let changes = ChangeSignal()

    /// - Parameters:
    ///   - engines: one engine per configured model.
    ///   - defaultWeightsPaths: where a model's weights are when its configuration names none (the engine's model).
    /// - Throws: `ConfigurationError` when a model has no engine.
    public init(
        configuration: GatewayConfiguration, engines: [String: any ModelEngine],
        defaultWeightsPaths: [String: String] = [:], clock: any SchedulerClock, metrics: GatewayMetrics,
        events: EventBus, logger: Logger
    ) throws(ConfigurationError) {
        self.configuration = configuration
        policy = SchedulingPolicy(configuration)
        self.clock = clock
        self.logger = logger
        self.metrics = metrics
        self.events = events
        self.engines = engines
        order = configuration.models.map(\.name)
        metrics.register(models: order)
        for model in configuration.models {
            guard engines[model.name] != nil else {
                throw ConfigurationError("\(configuration.key(model.name)): no engine was made for it")
            }
            models[model.name] = ModelState(
                config: model, weightsPath: model.wakePath(engineLoads: defaultWeightsPaths[model.name]))
        }
        for gpu in configuration.gpus {
            let (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            gpus[gpu.id] = GPUWorker(state: GPUState(config: gpu), signal: signal, signals: signals)
        }
    }

    // MARK: - Requests

    /// Runs `body` with `name`'s engine once the model is awake, counting the request in flight until `body` ends
    /// (normally, by throwing or by cancellation).
    /// - Throws: `GatewayError` — 404 unknown model, 429 full queue, 503 a model that cannot be woken in time or a
    ///   gateway that is shutting down, `.cancelled` when the caller was cancelled while it waited; or what `body`
    ///   throws.
    public nonisolated func withEngine<T>(
        _ name: String, _ body: (EngineUse) async throws -> T
    ) async throws -> T {
        let use = try await admit(name)
        let result: Result<T, any Error>
        do {
            result = .success(try await body(use))
        } catch {
            result = .failure(error)
        }
        await release(use)
        return try result.get()
    }

    /// Waits until `name` is awake and counts one request in flight on it.
    func admit(_ name: String) async throws(GatewayError) -> EngineUse {
        guard var model = models[name], let gpu = gpus[model.gpu]?.state else {
            throw GatewayError.unknownModel(name)
        }
        if let refusal = policy.refusal(of: model, on: gpu, shuttingDown: shuttingDown) { throw refusal }
        policy.recordRequest(&model, at: clock.now)
        switch policy.admission(of: model, on: gpu) {
        case .admit:
            models[name] = model
            metrics.observeQueueWait(name, seconds: 0)
            return await use(name)
        case .queueFull:
            models[name] = model
            throw GatewayError(
                .queueFull,
                "The queue for `\(name)` is full (\(configuration.limits.queueDepth) requests wait for it to wake).",
                retryAfterSeconds: configuration.limits.retryAfterSeconds)
        case .enqueue:
            models[name] = model
        }
        let waitedFor = model.phase.name
        nextID += 1
        let id = nextID
        let waitStarted = clock.now
        defer { metrics.observeQueueWait(name, seconds: (clock.now - waitStarted) / .seconds(1)) }
        do {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    guard !Task.isCancelled else {
                        continuation.resume(throwing: CancellationError())
                        return
                    }
                    let now = clock.now
                    let request = ModelState.QueuedRequest(
                        id: id, enqueued: now, deadline: now + .seconds(configuration.limits.queueTimeoutSeconds))
                    models[name]?.queue.append(request)
                    waiting[id] = continuation
                    metrics.setQueueDepth(name, models[name]?.queue.count ?? 0)
                    signal(model.gpu)
                }
            } onCancel: {
                Task { await self.withdraw(id, of: name) }
            }
        } catch let error as GatewayError {
            throw error
        } catch {
            throw GatewayError(.cancelled, "The request for `\(name)` was cancelled while it waited.")
        }
        // Counted in flight when it was resumed (`admitQueue`).
        var use = await engineUse(name)
        use.waitedFor = waitedFor
        return use
    }

    /// Counts a new request in flight on `name` and hands out its use.
    private func use(_ name: String) async -> EngineUse {
        models[name]?.inFlight += 1
        return await engineUse(name)
    }

    private func engineUse(_ name: String) async -> EngineUse {
        nextID += 1
        uses[nextID] = name
        return EngineUse(id: nextID, model: name, baseURL: await engines[name]?.baseURL() ?? "")
    }

    /// Ends one admitted request.
    func release(_ use: EngineUse) {
        guard let name = uses.removeValue(forKey: use.id), var model = models[name] else { return }
        model.inFlight = max(0, model.inFlight - 1)
        model.lastUsed = clock.now
        models[name] = model
        if model.inFlight == 0 { notifyChange() }
    }

    /// Takes a cancelled request out of its queue.
    private func withdraw(_ id: UInt64, of name: String) {
        guard let continuation = waiting.removeValue(forKey: id) else { return }
        models[name]?.queue.removeAll { $0.id == id }
        continuation.resume(throwing: CancellationError())
        metrics.setQueueDepth(name, models[name]?.queue.count ?? 0)
        notifyChange()
        if let gpu = models[name]?.gpu { signal(gpu) }
    }

    /// Admits every queued request of an awake model.
    func admitQueue(_ name: String) {
        guard var model = models[name], model.phase == .awake, gpus[model.gpu]?.state.lease == nil else { return }
        let queue = model.queue
        model.queue = []
        model.inFlight += queue.count
        model.wakeIntent = nil
        models[name] = model
        metrics.setQueueDepth(name, 0)
        for request in queue { waiting.removeValue(forKey: request.id)?.resume() }
    }

    /// Answers every queued request of `name` with `error`.
    func failQueue(_ name: String, _ error: GatewayError) {
        let queue = models[name]?.queue ?? []
        models[name]?.queue = []
        metrics.setQueueDepth(name, 0)
        for request in queue { waiting.removeValue(forKey: request.id)?.resume(throwing: error) }
    }

    // MARK: - Time

    /// Expires requests past their deadline, schedules idle sleeps, and wakes the workers.
    public func tick() {
        let now = clock.now
        for name in order {
            guard var model = models[name] else { continue }
            let expired = Set(policy.expiredRequests(of: model, at: now))
            if !expired.isEmpty {
                let error = policy.expiry(of: model)
                model.queue.removeAll { expired.contains($0.id) }
                for id in expired { waiting.removeValue(forKey: id)?.resume(throwing: error) }
                metrics.setQueueDepth(name, model.queue.count)
            }
            if policy.idleSleepIsDue(model, at: now) { model.sleepIntent = .init(reason: .idle) }
            models[name] = model
        }
        notifyChange()
        for id in gpus.keys { signal(id) }
    }

    /// Fails models whose engine process has died (they are restarted by the restart policy), then reconciles those
    /// whose engine's sleep changed behind the gateway's back.
    public func checkEngines() async {
        for name in order {
            guard let phase = models[name]?.phase, phase.isSettled else { continue }
            await checkEngine(name, reason: "its engine exited")
        }
        await reconcileEngines()
    }

    /// A request lost `name`'s engine before its answer (connection refused or closed): when its process is gone,
    /// the model is failed now — the restart policy brings it back, and the request waits for that — rather than
    /// at the next periodic check.
    /// - Returns: whether the engine is dead (and the model failed for it, when it was awake or asleep).
    @discardableResult
    public func engineUnreachable(_ name: String) async -> Bool {
        await checkEngine(name, reason: "its engine exited (a request lost its connection)")
    }

    /// Whether `name`'s engine is gone; one that died while its model was awake or asleep fails the model (in any
    /// other phase a start, a transition or a failure already handles it).
    @discardableResult
    private func checkEngine(_ name: String, reason: String) async -> Bool {
        guard let phase = models[name]?.phase, let engine = engines[name], !(await engine.isAlive()) else {
            return false
        }
        if phase.isSettled, models[name]?.phase == phase { await fail(name, reason, stopEngine: true) }
        return true
    }

    func notifyChange() { changes.notify() }

    /// Suspends until the next change of state or tick, or until the task is cancelled. The wait is registered
    /// before this actor runs anything else (`ChangeSignal`), so a change right after the caller's check wakes it.
    func nextChange() async {
        let ticket = changes.register()
        await changes.wait(ticket)
    }

    func signal(_ gpu: String) { gpus[gpu]?.signal.yield() }

    // MARK: - Running

    /// Runs the GPU workers and the tick until graceful shutdown.
    public func run() async throws {
        let gpuIDs = configuration.gpus.map(\.id)
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for id in gpuIDs { group.addTask { await self.runGPU(id) } }
                group.addTask {
                    while !Task.isCancelled {
                        do { try await self.clock.sleep(for: .milliseconds(100)) } catch { break }
                        await self.tick()
                    }
                }
                // Apart from the tick: an engine slow to answer its checks delays no request's expiry.
                group.addTask {
                    while !Task.isCancelled {
                        do { try await self.clock.sleep(for: .seconds(1)) } catch { break }
                        await self.checkEngines()
                    }
                }
            }
        }
    }

    /// Refuses new requests and answers every queued one with 503 and `Retry-After`; requests in flight go on.
    public func beginShutdown() {
        guard !shuttingDown else { return }
        shuttingDown = true
        let error = GatewayError(
            .unavailable, "The gateway is shutting down.", retryAfterSeconds: configuration.limits.retryAfterSeconds)
        for name in order { failQueue(name, error) }
        logger.info("shutting down: queued requests answered, new ones refused")
        notifyChange()
        for id in gpus.keys { signal(id) }
    }

    /// Waits until no request is in flight, at most `seconds`.
    /// - Returns: the requests still in flight.
    public func waitUntilIdle(seconds: Double) async -> Int {
        let deadline = clock.now + .seconds(seconds)
        while inFlightTotal > 0 && clock.now < deadline && !Task.isCancelled { await nextChange() }
        return inFlightTotal
    }

    private var inFlightTotal: Int { models.values.reduce(0) { $0 + $1.inFlight } }

    /// True once the gateway has started up (`isStartedUp` held once): what `/ready` reports until shutdown.
    public var isReady: Bool {
        if !startedUp, isStartedUp { startedUp = true }
        return startedUp && !shuttingDown
    }

    /// True once every model has been started once (awake or put to sleep), or has failed.
    public var isStartedUp: Bool {
        models.values.allSatisfy { model in
            if case .failed = model.phase { return true }
            return model.startedOnce && model.bootstrapSince == nil && model.sleepIntent == nil
                && (model.phase == .awake || model.isAsleep)
        }
    }

    /// Returns once every model has been started once, or has failed.
    public func waitUntilStartedUp() async {
        while !isStartedUp && !Task.isCancelled { await nextChange() }
    }

    /// Marks `name` to wake without a request.
    public func wakeIntent(_ name: String) {
        guard let gpu = models[name]?.gpu else { return }
        models[name]?.wakeIntent = clock.now
        signal(gpu)
    }
}
