import TorporEngine

/// What the admin API shows: one model's state, one GPU's ledger.
extension Scheduler {
    /// What the admin API shows of one model.
    public struct ModelStatus: Sendable, Codable {
        public var name: String
        public var gpu: String
        public var state: String
        public var inFlight: Int
        public var queued: Int
        public var pinned: Bool
        public var gpuBytes: Int
        public var hostBytes: Int
        public var requestsPerSecond: Double
        public var wakeSeconds: [String: Double]
        public var weightsPath: String
        /// Where the gateway sends this model's requests (`http+unix://…` for an engine on a unix socket).
        public var engineURL: String
        /// The unix socket the engine listens on, when it does (`curl --unix-socket PATH http://engine/health`).
        public var engineSocket: String?
        /// The engine's process, when Torpor started it and it runs.
        public var enginePID: Int32?
        /// Other names clients may send for it.
        public var aliases: [String]
        public var lastError: String?

        enum CodingKeys: String, CodingKey {
            case name, gpu, state, pinned
            case inFlight = "in_flight"
            case queued
            case gpuBytes = "gpu_bytes"
            case hostBytes = "host_bytes"
            case requestsPerSecond = "requests_per_second"
            case wakeSeconds = "wake_seconds"
            case weightsPath = "weights_path"
            case engineURL = "engine_url"
            case engineSocket = "engine_socket"
            case enginePID = "engine_pid"
            case aliases
            case lastError = "last_error"
        }
    }

    /// One GPU's ledger.
    public struct Ledger: Sendable, Codable {
        public var gpu: String
        public var capacityBytes: Int
        public var awakeBytes: Int
        public var residueBytes: Int
        public var freeBytes: Int
        public var lease: String?
        public var transition: String?

        enum CodingKeys: String, CodingKey {
            case gpu, lease, transition
            case capacityBytes = "capacity_bytes"
            case awakeBytes = "awake_bytes"
            case residueBytes = "residue_bytes"
            case freeBytes = "free_bytes"
        }
    }

    public func statuses() async -> [ModelStatus] {
        let now = clock.now
        var result: [ModelStatus] = []
        for name in order {
            guard let model = models[name] else { continue }
            let url = await engines[name]?.baseURL() ?? ""
            result.append(
                ModelStatus(
                    name: name, gpu: model.gpu, state: model.phase.name, inFlight: model.inFlight,
                    queued: model.queue.count, pinned: model.config.pinned, gpuBytes: model.gpuBytes,
                    hostBytes: model.hostBytes, requestsPerSecond: policy.demand(of: model, at: now),
                    wakeSeconds: [
                        "1": model.wakeSeconds[.offloadWeights] ?? 0, "2": model.wakeSeconds[.discardWeights] ?? 0,
                    ],
                    weightsPath: model.weightsPath, engineURL: url, engineSocket: EngineClient.unixSocket(of: url),
                    enginePID: await engines[name]?.processID(), aliases: model.config.aliases,
                    lastError: model.lastError))
        }
        return result
    }

    /// The ledger of GPU `id`, nil for a GPU that is not configured.
    public func ledger(gpu id: String) -> Ledger? {
        guard let gpu = gpus[id]?.state else { return nil }
        let onGPU = models.values.filter { $0.gpu == id }
        let awake = onGPU.filter { !$0.isAsleep }.reduce(0) { $0 + $1.gpuBytes }
        let residue = onGPU.filter(\.isAsleep).reduce(0) { $0 + $1.gpuBytes }
        return Ledger(
            gpu: id, capacityBytes: gpu.config.memoryBytes, awakeBytes: awake, residueBytes: residue,
            freeBytes: gpu.config.memoryBytes - awake - residue, lease: gpu.lease?.rawValue,
            transition: gpu.transition)
    }

    public func ledgers() -> [Ledger] { configuration.gpus.compactMap { ledger(gpu: $0.id) } }

    public func hostMemoryInUse() -> Int { models.values.reduce(0) { $0 + $1.hostBytes } }

    public func state(of name: String) -> ModelPhase? { models[name]?.phase }

    public func modelNames() -> [String] { order }
}
