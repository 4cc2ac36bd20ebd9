import Foundation

/// The state machine of one simulated vLLM engine: sleep levels and modes, partial wakes, the memory ledger
/// and the requests in flight.
actor SimulatedEngine {
    enum WeightsLocation {
        case gpu
        case host
        case discarded
    }

    /// An HTTP-level answer for the contract endpoints.
    struct Reply: Sendable {
        var status: Int
        var body: [String: any Sendable]
    }

    /// What a generating request is told before each token.
    enum Permit {
        case proceed
        case abort
    }

    private final class Waiter {
        let continuation: CheckedContinuation<Permit, Never>
        init(_ continuation: CheckedContinuation<Permit, Never>) { self.continuation = continuation }
    }

    private struct Generation {
        var started = false
        var aborted = false
        /// Sends nothing after its first token (`stall_next_generation`).
        var stalls = false
    }

    let configuration: SimulatedEngineConfiguration
    private let gpu: SimulatedGPU
    private let identity: String

    private var weights = WeightsLocation.gpu
    private var kvOnGPU = true
    /// Level 0, or the moment a sleep begins: the scheduler runs nothing.
    private var schedulerStopped = false
    private var paused = false
    private var level = 0
    /// Set after a level-2 wake of the weights until `reload_weights`: generation yields garbage, as in vLLM.
    private var weightsValid = true
    /// What the generated text is derived from: the weights path last loaded.
    private(set) var weightsIdentity: String
    private var generations: [Int: Generation] = [:]
    private var waiters: [Int: Waiter] = [:]
    private var nextRequest = 0
    private var draining = false
    private var drainWaiters: [CheckedContinuation<Void, Never>] = []
    private var faults: Set<SimulatedFault> = []
    private var slowWakeFactor = 1.0

    init(configuration: SimulatedEngineConfiguration) {
        self.configuration = configuration
        gpu = SimulatedGPU(path: configuration.ledgerPath, totalBytes: configuration.gpuMemoryBytes)
        identity = "\(getpid())-\(configuration.model)"
        weightsIdentity = configuration.model
    }

    // MARK: - Start

    /// Takes the engine's memory on the simulated GPU after the cold-start delay, or fails for lack of room.
    func coldStart() async throws {
        for fault in configuration.initialFaults { inject(fault, factor: nil) }
        try await Task.sleep(for: configuration.seconds(configuration.coldStartSeconds))
        let needed = configuration.sleepResidueBytes + configuration.weightBytes + configuration.kvCacheBytes
        try gpu.update { ledger in
            let used = ledger.engines.filter { $0.key != identity }.values.reduce(0) { $0 + $1.gpuBytes }
            guard used + needed <= ledger.totalBytes else {
                throw SimulationError(
                    "CUDA out of memory: \(configuration.model) needs \(needed) bytes, GPU \(configuration.gpu) has \(ledger.totalBytes - used) free"
                )
            }
            ledger.engines[identity] = .init(pid: getpid(), model: configuration.model, gpuBytes: needed, hostBytes: 0)
        }
    }

    // MARK: - Sleep and wake

    func sleep(level requested: Int, mode: SleepMode) async -> Reply {
        if faults.remove(.hangNextSleep) != nil { await hangForever() }
        if faults.remove(.failNextSleep) != nil {
            return Reply(
                status: 500, body: errorBody("Injected fault: sleep failed", type: "InternalServerError", code: 500))
        }
        if let conflict = beginTransition() { return conflict }
        defer { endTransition() }

        switch mode {
        case .abort:
            for id in generations.keys { abort(id) }
        case .wait:
            draining = true
            await waitForStartedRequests()
            draining = false
        case .keep:
            break
        }
        schedulerStopped = true
        guard requested > 0 else {
            level = max(level, 0)
            return Reply(status: 200, body: ["status": "sleeping", "level": requested])
        }
        // Sleeping deeper while asleep frees nothing (vLLM must be woken first).
        if weights == .gpu {
            if requested == 1 {
                try? await Task.sleep(
                    for: configuration.seconds(
                        Double(configuration.weightBytes) / configuration.hostToDeviceBytesPerSecond))
                weights = .host
            } else {
                try? await Task.sleep(for: configuration.seconds(0.05))
                weights = .discarded
            }
            level = requested
        }
        kvOnGPU = false
        recordMemory()
        return Reply(status: 200, body: ["status": "sleeping", "level": requested])
    }

    func wakeUp(tags rawTags: [String]) async -> Reply {
        if faults.remove(.hangNextWake) != nil { await hangForever() }
        if faults.remove(.failNextWake) != nil {
            return Reply(
                status: 500, body: errorBody("Injected fault: wake_up failed", type: "InternalServerError", code: 500))
        }
        let known = Set(WakeTag.allCases.map(\.rawValue))
        let tags = rawTags.isEmpty ? WakeTag.allCases : rawTags.compactMap(WakeTag.init(rawValue:))
        let unknownOnly = !rawTags.isEmpty && rawTags.allSatisfy { !known.contains($0) }
        if !unknownOnly {
            if let conflict = beginTransition() { return conflict }
            defer { endTransition() }
            var needed = 0
            if tags.contains(.weights) && weights != .gpu { needed += configuration.weightBytes }
            if tags.contains(.kvCache) && !kvOnGPU { needed += configuration.kvCacheBytes }
            if needed > 0, let reason = roomFor(needed) {
                return Reply(status: 500, body: errorBody(reason, type: "InternalServerError", code: 500))
            }
            if tags.contains(.weights) && weights != .gpu {
                let seconds =
                    weights == .host
                    ? Double(configuration.weightBytes) / configuration.hostToDeviceBytesPerSecond : 0.05
                try? await Task.sleep(for: configuration.seconds(seconds * slowWakeFactor))
                if weights == .discarded { weightsValid = false }
                weights = .gpu
            }
            if tags.contains(.kvCache) && !kvOnGPU {
                try? await Task.sleep(for: configuration.seconds(configuration.kvCacheWakeSeconds * slowWakeFactor))
                kvOnGPU = true
            }
            recordMemory()
        }
        let awake = weights == .gpu && kvOnGPU
        if awake && !unknownOnly {
            schedulerStopped = false
            level = 0
            resumeWaiters()
        }
        let echoed: any Sendable = rawTags.isEmpty ? NSNull() : rawTags
        return Reply(
            status: 200, body: ["status": awake && schedulerStopped == false ? "awake" : "sleeping", "tags": echoed])
    }

    var isSleeping: Bool { schedulerStopped || paused || weights != .gpu || !kvOnGPU }

    var sleepState: EngineSleepState {
        switch weights {
        case .gpu: kvOnGPU && !schedulerStopped ? .awake : (level == 2 ? .discardAll : .weightsOffloaded)
        case .host: .weightsOffloaded
        case .discarded: .discardAll
        }
    }

    func reloadWeights(path: String) async -> Reply {
        guard weights == .gpu else {
            return Reply(
                status: 500,
                body: errorBody(
                    "reload_weights failed: the weights are not on the GPU (wake_up tags=weights first)",
                    type: "InternalServerError", code: 500))
        }
        if faults.remove(.failNextReload) != nil {
            weightsValid = false
            return Reply(
                status: 500,
                body: errorBody(
                    "Call to reload_weights method failed: loading the Torpor checkpoint \(path) failed: injected "
                        + "fault: tensor \"model.layers.0.mlp.up_proj.weight\" chunk 3 fails its CRC-32",
                    type: "InternalServerError", code: 500))
        }
        try? await Task.sleep(
            for: configuration.seconds(Double(configuration.weightBytes) / configuration.loadBytesPerSecond))
        weightsValid = true
        weightsIdentity = path
        return Reply(status: 200, body: ["results": [NSNull()]])
    }

    func resetPrefixCache() -> Bool { generations.values.allSatisfy { !$0.started } }

    func setPaused(_ value: Bool) {
        paused = value
        if !value { resumeWaiters() }
    }

    var isPaused: Bool { paused }

    /// Requests registered and not finished (vLLM's `vllm:num_requests_running`).
    var runningRequests: Int { generations.count }

    // MARK: - Faults

    func inject(_ fault: SimulatedFault, factor: Double?) {
        switch fault {
        case .crash:
            FileHandle.standardError.write(Data("sim-engine \(configuration.model): injected crash\n".utf8))
            exit(137)
        case .slowWake:
            slowWakeFactor = factor ?? 10
        default:
            faults.insert(fault)
        }
    }

    // MARK: - Requests

    func register() -> Int {
        nextRequest += 1
        generations[nextRequest] = Generation(stalls: faults.remove(.stallNextGeneration) != nil)
        return nextRequest
    }

    func finish(_ id: Int) {
        generations[id] = nil
        if let waiter = waiters.removeValue(forKey: id) { waiter.continuation.resume(returning: .abort) }
        if draining && !generations.values.contains(where: \.started) {
            for waiter in drainWaiters { waiter.resume() }
            drainWaiters.removeAll()
        }
    }

    /// Waits until request `id` may produce its next token: immediately while serving, after a full wake while
    /// asleep or paused, never for an aborted request.
    func permit(_ id: Int) async -> Permit {
        // A request whose client went away while it waited is aborted, as vLLM aborts it.
        await withTaskCancellationHandler {
            await waitForPermit(id)
        } onCancel: {
            Task { await self.cancel(id) }
        }
    }

    private func cancel(_ id: Int) { abort(id) }

    private func waitForPermit(_ id: Int) async -> Permit {
        guard let generation = generations[id] else { return .abort }
        if generation.aborted { return .abort }
        if generation.started && generation.stalls {
            // Nothing more until the request is aborted (its client left).
            while generations[id]?.aborted == false {
                if await withCheckedContinuation({ waiters[id] = Waiter($0) }) == .abort { return .abort }
            }
            return .abort
        }
        let blocked = isSleeping || (draining && !generation.started)
        if !blocked {
            generations[id]?.started = true
            return .proceed
        }
        let permit = await withCheckedContinuation { continuation in waiters[id] = Waiter(continuation) }
        if permit == .proceed { generations[id]?.started = true }
        return permit
    }

    /// The text a request generates: deterministic in the prompt, the position and the loaded weights.
    func token(prompt: String, index: Int) -> String {
        TextGenerator.token(seed: seed, prompt: prompt, index: index)
    }

    /// The embedding of `text`: deterministic in the text and the loaded weights.
    func embedding(of text: String) -> [Double] { TextGenerator.embedding(seed: seed, text: text) }

    private var seed: String { weightsValid ? weightsIdentity : "garbage:" + weightsIdentity }

    /// Aborts request `id` (its client left); nothing for a request that has finished.
    func abort(_ id: Int) {
        generations[id]?.aborted = true
        if let waiter = waiters.removeValue(forKey: id) { waiter.continuation.resume(returning: .abort) }
    }

    private func resumeWaiters() {
        guard !isSleeping else { return }
        let ready = waiters
        waiters.removeAll()
        for (_, waiter) in ready { waiter.continuation.resume(returning: .proceed) }
    }

    private func waitForStartedRequests() async {
        guard generations.values.contains(where: \.started) else { return }
        await withCheckedContinuation { drainWaiters.append($0) }
    }

    private func hangForever() async {
        while true { try? await Task.sleep(for: .seconds(3600)) }
    }

    // MARK: - Memory

    /// Marks this engine mid-transition on its GPU, or answers 500 when a neighbour is.
    private func beginTransition() -> Reply? {
        do {
            return try gpu.update { ledger in
                if let transition = ledger.transition, transition.engine != identity {
                    let neighbour = ledger.engines[transition.engine]?.model ?? transition.engine
                    return Reply(
                        status: 500,
                        body: errorBody(
                            "Memory usage increased after sleeping: \(neighbour) is in a sleep or wake transition on GPU \(configuration.gpu)",
                            type: "InternalServerError", code: 500))
                }
                ledger.transition = .init(engine: identity, until: Date().timeIntervalSince1970 + 600)
                return nil
            }
        } catch {
            return Reply(status: 500, body: errorBody("\(error)", type: "InternalServerError", code: 500))
        }
    }

    private func endTransition() {
        _ = try? gpu.update { ledger in
            if ledger.transition?.engine == identity { ledger.transition = nil }
        }
    }

    /// Nil when `bytes` more fit on the GPU, else the out-of-memory message.
    private func roomFor(_ bytes: Int) -> String? {
        (try? gpu.update { ledger -> String? in
            let used = ledger.engines.values.reduce(0) { $0 + $1.gpuBytes }
            guard used + bytes > ledger.totalBytes else { return nil }
            return
                "CUDA out of memory: waking \(configuration.model) needs \(bytes) bytes, GPU \(configuration.gpu) has \(ledger.totalBytes - used) free"
        }) ?? nil
    }

    private func recordMemory() {
        var gpuBytes = configuration.sleepResidueBytes
        if weights == .gpu { gpuBytes += configuration.weightBytes }
        if kvOnGPU { gpuBytes += configuration.kvCacheBytes }
        let hostBytes = weights == .host ? configuration.weightBytes : 0
        _ = try? gpu.update { ledger in
            ledger.engines[identity] = .init(
                pid: getpid(), model: configuration.model, gpuBytes: gpuBytes, hostBytes: hostBytes)
        }
    }
}

/// An OpenAI-style error body.
func errorBody(_ message: String, type: String, code: Int, param: String? = nil) -> [String: any Sendable] {
    [
        "error": [
            "message": message, "type": type, "param": param.map { $0 as any Sendable } ?? NSNull(), "code": code,
        ] as [String: any Sendable]
    ]
}
