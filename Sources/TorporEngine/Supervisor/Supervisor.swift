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
    /// Variables of Torpor's environment passed through besides those `EngineEnvironment` allows.
    public var passEnvironment: [String] = []
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

    /// Where an engine listens.
    public enum Listening: Sendable, Equatable {
        /// A TCP port on 127.0.0.1.
        case port(Int)
        /// A unix socket (vLLM's `--uds`).
        case unixSocket(String)
    }

    /// Sets where the engine listens.
    public mutating func listen(_ listening: Listening) {
        switch listening {
        case .port(let number):
            port = number
            unixSocketPath = nil
        case .unixSocket(let path):
            port = nil
            unixSocketPath = path
        }
    }

    /// The engine's base URL when it listens on `port` (ignored for a unix socket).
    public func baseURL(port: Int) -> String {
        unixSocketPath.map(EngineClient.baseURL(unixSocket:)) ?? "http://127.0.0.1:\(port)"
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

    /// The engine's whole environment: what `EngineEnvironment` passes of `parent` (Torpor's own), then
    /// `environment`, then what Torpor sets.
    /// `passing` names variables to pass besides the spec's own `passEnvironment`.
    public func commandEnvironment(parent: [String: String], passing: [String] = []) -> [String: String] {
        var result = EngineEnvironment.inherited(from: parent, passing: passEnvironment + passing)
        result.merge(environment) { $1 }
        result["VLLM_SERVER_DEV_MODE"] = "1"
        if let cudaVisibleDevices { result["CUDA_VISIBLE_DEVICES"] = cudaVisibleDevices }
        return result
    }
}

/// What the supervisor reports about its engines.
public enum SupervisorEvent: Sendable, Equatable {
    case started(name: String, port: Int, pid: Int32)
    case stopped(name: String)
    /// An engine left running by a predecessor that was killed, and is now stopped.
    case cleanedUp(name: String, pid: Int32)
}

/// Starts and stops engine servers.
///
/// Each engine runs in its own session; stopping it signals the whole process group. A record per running engine
/// in `stateDirectory` lets the next supervisor stop engines that a killed predecessor left running. Whether and
/// when a dead engine is started again is its owner's decision (the gateway's restart policy). Run it as a
/// `Service`: `run()` waits for graceful shutdown, then stops every engine.
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
    private let parentEnvironment: [String: String]
    private let passEnvironment: [String]
    private let logDirectory: String
    private let logger: Logger
    private var engines: [String: RunningEngine] = [:]
    private let events: AsyncStream<SupervisorEvent>.Continuation
    /// Everything the supervisor does, in order.
    public nonisolated let eventStream: AsyncStream<SupervisorEvent>

    /// - Parameters:
    ///   - environment: Torpor's environment (nil: this process's), of which engines get what `EngineEnvironment`
    ///     passes.
    ///   - passEnvironment: more variables of it that every engine gets.
    public init(
        stateDirectory: String, logDirectory: String,
        environment: [String: String]? = nil, passEnvironment: [String] = [],
        logger: Logger
    ) throws(EngineError) {
        for directory in [stateDirectory, logDirectory] {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw EngineError(.invalidArgument, "cannot create \(directory): \(error.localizedDescription)")
            }
        }
        self.stateDirectory = stateDirectory
        self.logDirectory = logDirectory
        parentEnvironment = environment ?? ProcessInfo.processInfo.environment
        self.passEnvironment = passEnvironment
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
    /// - Parameters:
    ///   - client: the client its owner talks to it with (one per engine); by default one on the shared HTTP client.
    /// - Throws: `EngineError` when it cannot start, exits or is not ready in time (it is stopped then).
    @discardableResult
    public func start(_ spec: EngineSpec, client: EngineClient? = nil) async throws(EngineError) -> RunningEngine {
        guard engines[spec.name] == nil else {
            throw EngineError(.invalidArgument, "an engine named \(spec.name) is already running")
        }
        let port: Int
        if spec.unixSocketPath != nil {
            port = 0
        } else if let fixed = spec.port {
            port = fixed
        } else {
            port = try EngineProcess.freePort()
        }
        return try await launch(spec, port: port, client: client)
    }

    /// The running engine called `name`.
    public func engine(_ name: String) -> RunningEngine? { engines[name] }

    /// Stops the engine called `name` and its whole process group: SIGTERM, then SIGKILL after `grace` (a hung
    /// engine may never finish a graceful shutdown).
    public func stop(_ name: String, grace: Duration = .seconds(10)) async {
        guard let engine = engines.removeValue(forKey: name) else { return }
        await engine.process.stop(grace: grace)
        unlink(recordPath(name))
        events.yield(.stopped(name: name))
    }

    /// Stops every engine at once, each with `grace` to exit before SIGKILL: done within `grace` and a moment.
    public func stopAll(grace: Duration = .seconds(10)) async {
        let names = engines.keys.sorted()
        await withDiscardingTaskGroup { group in
            for name in names { group.addTask { await self.stop(name, grace: grace) } }
        }
    }

    /// Waits for graceful shutdown (or cancellation), then stops every engine.
    public func run() async throws {
        try? await gracefulShutdown()
        await stopAll()
        events.finish()
    }

    private func launch(_ spec: EngineSpec, port: Int, client: EngineClient?) async throws(EngineError)
        -> RunningEngine
    {
        let arguments = spec.commandArguments(port: port)
        let logPath = logDirectory + "/\(spec.name).log"
        // A socket file left by a dead engine would make the new one fail to bind.
        if let socket = spec.unixSocketPath { unlink(socket) }
        let baseURL = spec.baseURL(port: port)
        let process = try EngineProcess(
            executable: spec.executable, arguments: arguments,
            environment: spec.commandEnvironment(parent: parentEnvironment, passing: passEnvironment), logPath: logPath)
        let record = Record(
            name: spec.name, pid: process.pid, port: port, commandLine: process.commandLine,
            startTime: EngineProcess.startTime(of: process.pid))
        if let data = try? JSONEncoder().encode(record) {
            _ = FileManager.default.createFile(atPath: recordPath(spec.name), contents: data)
        }
        let client = client ?? EngineClient(name: spec.name, baseURL: baseURL, logger: logger)
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
