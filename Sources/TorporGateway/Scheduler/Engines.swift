import AsyncHTTPClient
import Foundation
import Logging
import TorporEngine

/// An engine the gateway starts and stops through the `Supervisor`: vLLM from a command, or `torpor sim-engine`.
///
/// Its socket or port is chosen once, so the engine keeps its address across restarts.
final class ManagedEngine: ClientBackedEngine {
    let spec: EngineSpec
    let servedName: String
    let client: EngineClient
    private let supervisor: Supervisor

    init(
        spec: EngineSpec, servedName: String, supervisor: Supervisor, http: HTTPClient,
        transitionTimeoutSeconds: Double, logger: Logger
    ) {
        self.spec = spec
        self.servedName = servedName
        self.supervisor = supervisor
        var timeouts = EngineClient.Timeouts()
        // The scheduler's watchdog fires first; these only bound a call nobody watches.
        let bound = Duration.seconds(transitionTimeoutSeconds + 5)
        timeouts.sleep = bound
        timeouts.wake = bound
        timeouts.rpc = bound
        timeouts.generate = bound
        client = EngineClient(
            name: spec.name, baseURL: spec.baseURL(port: spec.port ?? 0), http: http, timeouts: timeouts,
            logger: logger)
    }

    func start() async throws(EngineError) {
        await supervisor.stop(spec.name)
        try await supervisor.start(spec, client: client)
    }

    /// Stops a failed engine: it is being replaced and may be hung, so its process group is killed at once (SIGTERM
    /// then SIGKILL) — a grace would only hold its GPU's worker longer.
    func stop() async { await supervisor.stop(spec.name, grace: .zero) }

    func isAlive() async -> Bool {
        guard let running = await supervisor.engine(spec.name) else { return false }
        return running.process.exitStatus() == nil
    }

    func processID() async -> Int32? {
        guard let running = await supervisor.engine(spec.name), running.process.exitStatus() == nil else { return nil }
        return running.process.pid
    }

}

/// An engine someone else runs; Torpor can sleep and wake it but not restart it.
final class ExternalEngine: ClientBackedEngine {
    let client: EngineClient
    let servedName: String
    private let readyTimeout: Duration

    init(url: String, servedName: String, http: HTTPClient, transitionTimeoutSeconds: Double, logger: Logger) {
        var timeouts = EngineClient.Timeouts()
        let bound = Duration.seconds(transitionTimeoutSeconds + 5)
        timeouts.sleep = bound
        timeouts.wake = bound
        timeouts.rpc = bound
        client = EngineClient(name: servedName, baseURL: url, http: http, timeouts: timeouts, logger: logger)
        self.servedName = servedName
        readyTimeout = bound
    }

    /// Waits until it answers, then wakes it fully if it sleeps.
    func start() async throws(EngineError) {
        let deadline = ContinuousClock.now + readyTimeout
        while true {
            if (try? await client.isHealthy()) == true { break }
            guard ContinuousClock.now < deadline, !Task.isCancelled else {
                throw EngineError(.timeout, "engine \(servedName) at \(client.baseURL) did not answer /health")
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
        if try await client.isSleeping() {
            _ = try await client.wakeUp()
        }
    }

    func stop() async {}

    func isAlive() async -> Bool { true }

}

/// An engine reached through an `EngineClient`: sleeping, waking and reloading are vLLM's contract calls.
protocol ClientBackedEngine: ModelEngine {
    var client: EngineClient { get }
    /// The model name the engine serves (its `--served-model-name`), for the level-2 warm-up.
    var servedName: String { get }
}

extension ClientBackedEngine {
    func baseURL() async -> String { client.baseURL }

    func observedSleepState() async -> EngineSleepState? {
        guard let sleeping = try? await client.isSleeping() else { return nil }
        guard sleeping else { return .awake }
        // Without the metric, the worst case: the weights may be gone.
        let state = try? await client.sleepState()
        return state == nil || state == .awake ? .discardAll : state
    }

    func sleep(level: SleepLevel, mode: SleepMode) async throws(EngineError) {
        try await client.sleep(level: level, mode: mode)
    }

    func wake(from level: SleepLevel, weightsPath: String) async throws(EngineError) {
        if level == .discardWeights {
            try await client.wakeFromDiscard(model: servedName, weightsPath: weightsPath)
            return
        }
        guard try await client.wakeUp() == .awake else {
            throw EngineError(.invalidResponse, "engine \(client.name): still partly asleep after a full wake_up")
        }
    }

    func reloadWeights(from path: String) async throws(EngineError) {
        try await client.reloadWeights(from: path)
        try await client.resetPrefixCache()
    }
}

extension GatewayConfiguration.Model {
    /// The engine spec for a model Torpor starts.
    /// - Parameters:
    ///   - simulator: the `torpor` binary that runs `sim-engine`.
    /// - Parameters:
    ///   - hostCacheDirectory: where a host-cache model's worker keeps the checkpoint (`host_cache_dir`).
    func engineSpec(
        listening: EngineSpec.Listening, gpu: GatewayConfiguration.GPU, stateDirectory: String, simulator: String,
        hostCacheDirectory: String = "/dev/shm"
    ) -> EngineSpec? {
        var spec = EngineSpec(name: name, model: name)
        spec.listen(listening)
        switch engine {
        case .external:
            return nil
        case .command(let arguments, let environment, let readyTimeoutSeconds):
            spec.executable = arguments[0]
            var rest = Array(arguments.dropFirst())
            if !rest.contains("--served-model-name") { rest += ["--served-model-name", name] }
            // A Torpor checkpoint loads (and a level-2 wake reloads) through the torpor load format; a host-cache
            // model's worker loads from the checkpoint's pinned copy in host memory.
            if checkpoint != nil, !rest.contains(where: { $0.hasPrefix("--load-format") }) {
                rest += ["--load-format", "torpor"]
            }
            if sleepLevel == .hostCache, !rest.contains(where: { $0.hasPrefix("--model-loader-extra-config") }) {
                let options = ["source": "host-cache", "cache_dir": hostCacheDirectory]
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                let json = (try? encoder.encode(options)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
                rest += ["--model-loader-extra-config", json]
            }
            spec.arguments = rest
            spec.environment = environment
            spec.readinessDeadline = .seconds(readyTimeoutSeconds)
            // The model path is the argument after `serve`, or after `--model`.
            if let index = rest.firstIndex(where: { $0 == "--model" || $0 == "serve" }), index + 1 < rest.count {
                spec.model = rest[index + 1]
            }
        case .simulated(let timeScale, let tokensPerSecond):
            spec.executable = simulator
            spec.arguments = [
                "sim-engine", "--model", name, "--gpu", gpu.id,
                "--gpu-ledger", stateDirectory + "/sim-gpu-\(gpu.id).json",
                "--gpu-memory-gib", "\(Double(gpu.memoryBytes) / Double(1 << 30))",
                "--weight-bytes", "\(weightsBytes)", "--kv-cache-bytes", "\(kvCacheBytes)",
                "--time-scale", "\(timeScale)", "--tokens-per-second", "\(tokensPerSecond)",
            ]
            spec.readinessDeadline = .seconds(startTimeoutSeconds)
        }
        return spec
    }
}
