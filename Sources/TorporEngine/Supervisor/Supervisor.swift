import Foundation
import Glibc
public import Logging
public import ServiceLifecycle

/// How to run one engine server.
public struct EngineSpec: Sendable, Equatable {
    /// A unique name: the key of its record, log file and messages.
    public var name: String
    /// The model to serve (a path or a hub id).
    public var model: String
    /// The program to run; `vllm` by default.
    public var executable = "vllm"
    /// The arguments before Torpor's own; nil means `serve MODEL --enable-sleep-mode`.
    public var arguments: [String]?
    /// Extra environment; `VLLM_SERVER_DEV_MODE=1` is always set (the dev endpoints need it).
    public var environment: [String: String] = [:]
    /// The loopback port; nil picks a free one. Ignored with `unixSocketPath`.
    public var port: Int?
    /// Serve on this unix socket (vLLM's `--uds`) instead of a loopback port.
    public var unixSocketPath: String?
    /// `CUDA_VISIBLE_DEVICES` for this engine.
    public var cudaVisibleDevices: String?
    /// `--gpu-memory-utilization` for this engine.
    public var gpuMemoryUtilization: Double?
    /// How long the engine may take to answer `/health`.
    public var readinessDeadline: Duration = .seconds(300)

    public init(name: String, model: String) {
        self.name = name
        self.model = model
    }

    /// The full argument list for a given port: always bound to 127.0.0.1 or a unix socket, as vLLM's dev
    /// endpoints have no authentication.
    public func commandArguments(port: Int) -> [String] {
        var result = arguments ?? ["serve", model, "--enable-sleep-mode"]
        if let unixSocketPath {
            result += ["--uds", unixSocketPath]
        } else {
            result += ["--host", "127.0.0.1", "--port", "\(port)"]
        }
        if let gpuMemoryUtilization { result += ["--gpu-memory-utilization", "\(gpuMemoryUtilization)"] }
        return result
    }

    /// The environment added to Torpor's own.
    public var commandEnvironment: [String: String] {
        var result = environment
        result["VLLM_SERVER_DEV_MODE"] = "1"
        if let cudaVisibleDevices { result["CUDA_VISIBLE_DEVICES"] = cudaVisibleDevices }
        return result
    }
}

/// When and how often a crashed engine is restarted.
public struct RestartPolicy: Sendable {
    public var initialDelay: Duration = .seconds(1)
    public var maximumDelay: Duration = .seconds(60)
    /// Restarts allowed in a row before the engine is given up as failed.
    public var maximumRestarts = 5

    public init() {}

    func delay(afterFailures failures: Int) -> Duration {
        min(maximumDelay, initialDelay * Double(1 << min(failures, 20)))
    }
}

/// What the supervisor reports about its engines.
public enum SupervisorEvent: Sendable, Equatable {
    case started(name: String, port: Int, pid: Int32)
    case exited(name: String, status: Int32)
    case restarting(name: String, after: Duration)
    case failed(name: String, reason: String)
    case stopped(name: String)
    /// An engine left running by a predecessor that was killed, and is now stopped.
    case cleanedUp(name: String, pid: Int32)
}

/// Starts, watches, restarts and stops engine servers.
///
/// Each engine runs in its own session; stopping it signals the whole process group. A record per running engine
/// in `stateDirectory` lets the next supervisor stop engines that a killed predecessor left running. Run it as a
/// `Service`: `run()` watches the engines until graceful shutdown, then stops them all.
public actor Supervisor: Service {
    public struct RunningEngine: Sendable {
        public let spec: EngineSpec
        public let port: Int
        public let process: EngineProcess
        public var client: EngineClient
    }

    private struct Record: Codable {
        var name: String
        var pid: Int32
        var port: Int
        var commandLine: String
        /// With `pid`, identifies the process even after the pid is reused.
        var startTime: UInt64?
    }

    private let stateDirectory: String
    private let logDirectory: String
    private let logger: Logger
    private let policy: RestartPolicy
    private var engines: [String: RunningEngine] = [:]
    private var stopping: Set<String> = []
    private var failures: [String: Int] = [:]
    /// Set by `stopAll()` until the next `start`: no restart happens meanwhile.
    private var shuttingDown = false
    private let events: AsyncStream<SupervisorEvent>.Continuation
    /// Everything the supervisor does, in order.
    public nonisolated let eventStream: AsyncStream<SupervisorEvent>

    public init(stateDirectory: String, logDirectory: String, policy: RestartPolicy = RestartPolicy(), logger: Logger)
        throws(EngineError)
    {
        for directory in [stateDirectory, logDirectory] {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw EngineError(.invalidArgument, "cannot create \(directory): \(error.localizedDescription)")
            }
        }
        self.stateDirectory = stateDirectory
        self.logDirectory = logDirectory
        self.policy = policy
        self.logger = logger
        (eventStream, events) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1000))
    }

    /// Stops every engine recorded by a previous supervisor whose process group is still alive.
    /// - Returns: the names of the engines stopped.
    @discardableResult
    public func cleanUpPredecessors() async -> [String] {
        var cleaned: [String] = []
        let files = (try? FileManager.default.contentsOfDirectory(atPath: stateDirectory)) ?? []
        for file in files where file.hasSuffix(".engine.json") {
            let path = stateDirectory + "/" + file
            defer { unlink(path) }
            guard let data = FileManager.default.contents(atPath: path),
                let record = try? JSONDecoder().decode(Record.self, from: data), engines[record.name] == nil
            else { continue }
            // Only the process that was started then is ours to stop (pids are reused).
            guard kill(record.pid, 0) == 0, let started = record.startTime,
                EngineProcess.startTime(of: record.pid) == started
            else { continue }
            logger.info(
                "stopping an engine left running by a previous supervisor",
                metadata: ["engine.name": "\(record.name)", "engine.pid": "\(record.pid)"])
            _ = kill(-record.pid, SIGTERM)
            let deadline = ContinuousClock.now + .seconds(10)
            while EngineProcess.isRunning(record.pid) && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(50))
            }
            _ = kill(-record.pid, SIGKILL)
            cleaned.append(record.name)
            events.yield(.cleanedUp(name: record.name, pid: record.pid))
        }
        return cleaned
    }

    /// Starts `spec` and waits until it answers `/health`.
    /// - Throws: `EngineError` when it cannot start, exits or is not ready in time (it is stopped then).
    @discardableResult
    public func start(_ spec: EngineSpec) async throws(EngineError) -> RunningEngine {
        guard engines[spec.name] == nil else {
            throw EngineError(.invalidArgument, "an engine named \(spec.name) is already running")
        }
        shuttingDown = false
        let port: Int
        if spec.unixSocketPath != nil {
            port = 0
        } else if let fixed = spec.port {
            port = fixed
        } else {
            port = try EngineProcess.freePort()
        }
        let engine = try await launch(spec, port: port)
        failures[spec.name] = 0
        return engine
    }

    /// The running engine called `name`.
    public func engine(_ name: String) -> RunningEngine? { engines[name] }

    /// Stops the engine called `name` and its whole process group: SIGTERM, then SIGKILL after `grace` (a hung
    /// engine may never finish a graceful shutdown).
    public func stop(_ name: String, grace: Duration = .seconds(10)) async {
        guard let engine = engines[name] else { return }
        stopping.insert(name)
        await engine.process.stop(grace: grace)
        engines[name] = nil
        stopping.remove(name)
        unlink(recordPath(name))
        events.yield(.stopped(name: name))
    }

    /// Stops every engine.
    public func stopAll() async {
        shuttingDown = true
        for name in engines.keys.sorted() { await stop(name) }
    }

    /// Watches the engines, restarting crashed ones with backoff, until graceful shutdown or cancellation; then
    /// stops them all.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.checkEngines()
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        await stopAll()
        events.finish()
    }

    /// One pass of the watchdog: restarts engines whose process has exited.
    public func checkEngines() async {
        for (name, engine) in engines where !stopping.contains(name) {
            guard let status = engine.process.exitStatus() else { continue }
            engines[name] = nil
            unlink(recordPath(name))
            events.yield(.exited(name: name, status: status))
            let count = failures[name, default: 0]
            guard count < policy.maximumRestarts else {
                let reason =
                    "exited with status \(status) after \(count) restarts; giving up. Log: \(engine.process.logPath)"
                logger.error("engine failed", metadata: ["engine.name": "\(name)", "engine.status": "\(status)"])
                events.yield(.failed(name: name, reason: reason))
                continue
            }
            let delay = policy.delay(afterFailures: count)
            failures[name] = count + 1
            logger.warning(
                "engine exited; restarting",
                metadata: ["engine.name": "\(name)", "engine.status": "\(status)", "engine.restart_in": "\(delay)"])
            events.yield(.restarting(name: name, after: delay))
            try? await Task.sleep(for: delay)
            // Stopped, shut down or started again by someone else while this restart waited.
            guard !Task.isCancelled, !shuttingDown, !stopping.contains(name), engines[name] == nil else { continue }
            do {
                _ = try await launch(engine.spec, port: engine.port)
            } catch {
                events.yield(.failed(name: name, reason: error.message))
                logger.error(
                    "engine restart failed", metadata: ["engine.name": "\(name)", "error": "\(error.message)"])
            }
        }
    }

    private func launch(_ spec: EngineSpec, port: Int) async throws(EngineError) -> RunningEngine {
        let arguments = spec.commandArguments(port: port)
        let logPath = logDirectory + "/\(spec.name).log"
        let baseURL: String
        if let socket = spec.unixSocketPath {
            // A socket file left by a dead engine would make the new one fail to bind.
            unlink(socket)
            baseURL = EngineClient.baseURL(unixSocket: socket)
        } else {
            baseURL = "http://127.0.0.1:\(port)"
        }
        let process = try EngineProcess(
            executable: spec.executable, arguments: arguments, environment: spec.commandEnvironment, logPath: logPath)
        let record = Record(
            name: spec.name, pid: process.pid, port: port, commandLine: process.commandLine,
            startTime: EngineProcess.startTime(of: process.pid))
        if let data = try? JSONEncoder().encode(record) {
            _ = FileManager.default.createFile(atPath: recordPath(spec.name), contents: data)
        }
        let client = EngineClient(name: spec.name, baseURL: baseURL, logger: logger)
        do {
            try await process.waitUntilReady(client, deadline: spec.readinessDeadline)
        } catch {
            await process.stop()
            unlink(recordPath(spec.name))
            throw error
        }
        let engine = RunningEngine(spec: spec, port: port, process: process, client: client)
        engines[spec.name] = engine
        logger.info(
            "engine ready",
            metadata: ["engine.name": "\(spec.name)", "engine.port": "\(port)", "engine.pid": "\(process.pid)"])
        events.yield(.started(name: spec.name, port: port, pid: process.pid))
        return engine
    }

    private func recordPath(_ name: String) -> String {
        stateDirectory + "/" + name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" }
            + ".engine.json"
    }
}
