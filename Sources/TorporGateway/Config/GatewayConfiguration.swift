import Foundation
import TorporCheckpoint
import Yams

/// Everything `torpor serve` reads from its YAML file; docs/gateway-config.md documents every key once.
///
/// Every key has a default except `models`; unknown keys are errors (a misspelt key must not be silently ignored).
public struct GatewayConfiguration: Sendable, Equatable {
    public var listen = Listeners()
    /// The admin API's bearer token; `TORPOR_ADMIN_TOKEN` overrides it; without either one is generated.
    public var adminToken: String?
    /// Client API keys; none means the client API is open.
    public var apiKeys: [APIKey] = []
    public var limits = Limits()
    public var scheduler = SchedulerSettings()
    /// Host RAM that level-1 sleepers (their weights) and host-cache models (their compressed checkpoints) may
    /// hold, in bytes.
    public var hostMemoryBytes: Int = 64 << 30
    /// Where host-cache models' compressed checkpoints are held (a tmpfs: RAM).
    public var hostCacheDirectory: String = "/dev/shm"
    public var gpus: [GPU] = [GPU(id: "0")]
    public var models: [Model] = []
    /// Where engine records (`*.engine.json`), logs and simulated-GPU ledgers go.
    public var stateDirectory: String = NSTemporaryDirectory() + "/torpor-gateway"

    public init() {}

    public struct Listeners: Sendable, Equatable {
        /// The OpenAI-compatible client API.
        public var client = Address(host: "0.0.0.0", port: 8080)
        /// The admin API; keep it on loopback.
        public var admin = Address(host: "127.0.0.1", port: 8081)
        public init() {}
    }

    public struct Address: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        public var description: String { "\(host):\(port)" }

        /// Parses `HOST:PORT`, `:PORT` or `PORT`.
        static func parse(_ text: String, defaultHost: String) throws(ConfigurationError) -> Address {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            let host = parts.count > 1 ? parts.dropLast().joined(separator: ":") : defaultHost
            guard let port = Int(parts.last ?? ""), (0...65535).contains(port) else {
                throw ConfigurationError("\"\(text)\" is not an address: use HOST:PORT with a port from 0 to 65535")
            }
            return Address(host: host.isEmpty ? defaultHost : host, port: port)
        }
    }

    public struct APIKey: Sendable, Equatable {
        /// A name for logs and metrics (the key itself is never logged).
        public var name: String
        public var key: String
        /// Models this key may use; nil means every model.
        public var models: [String]?
        public init(name: String, key: String, models: [String]? = nil) {
            self.name = name
            self.key = key
            self.models = models
        }
    }

    public struct Limits: Sendable, Equatable {
        /// Request bodies above this get 413.
        public var maxRequestBytes = 8 << 20
        /// Requests waiting for one model beyond this get 429.
        public var queueDepth = 256
        /// A request waits at most this long for its model before a 503.
        public var queueTimeoutSeconds = 120.0
        /// `Retry-After` on 429 and 503 answers.
        public var retryAfterSeconds = 2
        /// The longest gap between two chunks of an engine's answer.
        public var upstreamReadTimeoutSeconds = 300.0
        /// At shutdown, how long requests in flight may finish before they are cut off.
        public var shutdownGraceSeconds = 30.0
        public init() {}
    }

    public struct SchedulerSettings: Sendable, Equatable {
        /// A model woken less than this ago is not put to sleep for another one (against thrashing) unless a
        /// request has waited `starvationBoundSeconds`.
        public var minResidencySeconds = 5.0
        /// No queued request waits longer than this for its model's turn: past it, residency no longer protects
        /// the models in its way.
        public var starvationBoundSeconds = 30.0
        /// How long a victim's requests in flight may finish before its sleep aborts them; nil waits for them.
        public var drainTimeoutSeconds: Double? = 30
        /// A sleep, wake or start taking longer than this marks the engine failed and restarts it.
        public var transitionTimeoutSeconds = 300.0
        /// The half-life of the request-rate estimate behind victim choice.
        public var demandHalfLifeSeconds = 60.0
        /// Failed starts or wakes in a row before a model is given up (its requests get 503 at once).
        public var maxConsecutiveFailures = 3
        public init() {}
    }

    public struct GPU: Sendable, Equatable {
        public var id: String
        /// Memory the models on this GPU may use, in bytes.
        public var memoryBytes: Int = 80 << 30
        public init(id: String, memoryBytes: Int = 80 << 30) {
            self.id = id
            self.memoryBytes = memoryBytes
        }
    }

    /// Which sleep level a model is put to sleep at.
    public enum LevelPolicy: String, Sendable, Equatable {
        /// Level 1 while the host RAM budget holds its weights, else level 2.
        case auto
        /// Level 1 when the host RAM budget allows, else level 2 (same as auto, stated explicitly).
        case level1 = "1"
        /// Always level 2 (weights discarded; reloaded from `weights_path` on wake).
        case level2 = "2"
        /// Level 2, waking from the model's Torpor checkpoint held in pinned host memory (`host_cache_dir`): the
        /// compressed weights stay in host RAM for as long as the engine runs (about two thirds of what level 1
        /// holds), and `host_memory_gib` reserves them for the model all the time. Needs `checkpoint`.
        case hostCache = "host-cache"
    }

    /// A model's Torpor pack (`torpor pack`), which its engine loads with `--load-format torpor`.
    public struct Checkpoint: Sendable, Equatable {
        /// The pack directory, absolute.
        public var path: String
        /// The containers' bytes: what the host cache holds.
        public var storedBytes: Int
        /// The containers' paths, absolute, in manifest order.
        public var containers: [String]

        public init(path: String, storedBytes: Int, containers: [String]) {
            self.path = path
            self.storedBytes = storedBytes
            self.containers = containers
        }

        /// Reads the pack's manifest.
        static func read(_ path: String, key: String) throws(ConfigurationError) -> Checkpoint {
            let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
            let manifest: PackManifest
            do {
                manifest = try PackManifest.load(from: absolute)
            } catch {
                throw ConfigurationError("\(key): \(error.message)")
            }
            let packed = manifest.files.filter { $0.kind == .packed }
            guard !packed.isEmpty else { throw ConfigurationError("\(key): the pack \(absolute) holds no containers") }
            return Checkpoint(
                path: absolute, storedBytes: packed.reduce(0) { $0 + ($1.containerSize ?? 0) },
                containers: packed.compactMap { $0.container.map { absolute + "/" + $0 } })
        }
    }

    public struct Model: Sendable, Equatable {
        /// The `model` clients send.
        public var name: String
        public var gpu = "0"
        public var engine: Engine
        /// GPU memory of the weights (also the host RAM a level-1 sleep holds).
        public var weightsBytes: Int
        /// GPU memory of the KV cache while awake.
        public var kvCacheBytes: Int
        /// GPU memory an engine keeps while asleep (CUDA context, graphs, pools).
        public var sleepResidueBytes: Int = 1_288_490_188
        public var sleepLevel = LevelPolicy.auto
        /// Never put to sleep for another model (still by the admin API or a GPU lease).
        public var pinned = false
        /// Awake after start; otherwise it is started and put to sleep.
        public var preload = false
        /// Put to sleep after this long without requests; nil never.
        public var idleTTLSeconds: Double?
        /// What a level-2 wake reloads; by default the checkpoint, else the path the engine started with.
        public var weightsPath: String?
        /// The model's Torpor pack: its engine gets `--load-format torpor`, and `sleep_level: host-cache` wakes
        /// from it in host memory.
        public var checkpoint: Checkpoint?

        public init(name: String, engine: Engine, weightsBytes: Int, kvCacheBytes: Int) {
            self.name = name
            self.engine = engine
            self.weightsBytes = weightsBytes
            self.kvCacheBytes = kvCacheBytes
        }

        /// How long a (cold) start may take before the engine is declared failed.
        public var startTimeoutSeconds: Double {
            switch engine {
            case .command(_, _, let ready): ready
            case .simulated(let timeScale, _): max(30, 38 * timeScale * 3)
            case .external: 60
            }
        }

        /// GPU memory while awake: weights, KV cache and what stays when it sleeps.
        public var awakeBytes: Int { weightsBytes + kvCacheBytes + sleepResidueBytes }

        /// Host RAM a host-cache model holds while its engine runs (its compressed checkpoint); 0 for others.
        public var hostCacheBytes: Int { sleepLevel == .hostCache ? checkpoint?.storedBytes ?? 0 : 0 }
    }

    /// How the gateway reaches a model's engine.
    public enum Engine: Sendable, Equatable {
        /// Torpor starts this command (vLLM), adding `--host 127.0.0.1 --port N --served-model-name NAME`.
        case command(arguments: [String], environment: [String: String], readyTimeoutSeconds: Double)
        /// A simulated engine (`torpor sim-engine`) started by Torpor.
        case simulated(timeScale: Double, tokensPerSecond: Double)
        /// An engine someone else runs, reached at this base URL (loopback only: its dev endpoints are open).
        case external(url: String)
    }

    /// Reads and checks a YAML configuration file; `packs` maps its `s3://` checkpoints to local copies.
    public static func load(path: String, packs: [String: String] = [:]) throws(ConfigurationError)
        -> GatewayConfiguration
    {
        do {
            return try parse(yaml: try text(path), packs: packs)
        } catch {
            throw ConfigurationError("\(path): \(error.message)")
        }
    }

    /// The text of a configuration file.
    public static func text(_ path: String) throws(ConfigurationError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read the configuration file \(path)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The `s3://` checkpoints a YAML configuration names (models[].checkpoint), to pull before parsing it.
    public static func remoteCheckpoints(yaml: String) -> [String] {
        guard let node = try? Yams.compose(yaml: yaml), let models = node.mapping?["models"]?.sequence else {
            return []
        }
        return models.compactMap { $0.mapping?["checkpoint"]?.string }.filter { $0.hasPrefix("s3://") }
    }

    /// Parses and checks a YAML configuration; `packs` maps its `s3://` checkpoints to local copies.
    public static func parse(yaml: String, packs: [String: String] = [:]) throws(ConfigurationError)
        -> GatewayConfiguration
    {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigurationError("invalid YAML: \(error)")
        }
        guard let node else { throw ConfigurationError("the configuration is empty") }
        var configuration = try ConfigReader(node, path: "", packs: packs).decodeGateway()
        if let token = ProcessInfo.processInfo.environment["TORPOR_ADMIN_TOKEN"], !token.isEmpty {
            configuration.adminToken = token
        }
        try configuration.validate()
        return configuration
    }

    /// Checks what each field cannot check alone: names, GPUs, budgets.
    public func validate() throws(ConfigurationError) {
        guard !models.isEmpty else { throw ConfigurationError("models: at least one model is needed") }
        var seen = Set<String>()
        for model in models {
            guard !model.name.isEmpty else { throw ConfigurationError("models: a model has an empty name") }
            guard seen.insert(model.name).inserted else {
                throw ConfigurationError("models: \"\(model.name)\" is configured twice")
            }
            guard let gpu = gpus.first(where: { $0.id == model.gpu }) else {
                throw ConfigurationError(
                    "models.\(model.name).gpu: no GPU \"\(model.gpu)\" under gpus (have \(gpus.map(\.id)))")
            }
            let neighbours = models.filter { $0.gpu == model.gpu && $0.name != model.name }
            let needed = model.awakeBytes + neighbours.reduce(0) { $0 + $1.sleepResidueBytes }
            guard needed <= gpu.memoryBytes else {
                throw ConfigurationError(
                    "models.\(model.name): awake it needs \(gib(model.awakeBytes)) and its neighbours' sleep residue "
                        + "\(gib(needed - model.awakeBytes)), more than GPU \(gpu.id)'s \(gib(gpu.memoryBytes))")
            }
            if model.sleepLevel == .hostCache, model.checkpoint == nil {
                throw ConfigurationError(
                    "models.\(model.name).sleep_level: host-cache wakes from the model's Torpor pack; set checkpoint")
            }
            if case .external(let url) = model.engine {
                guard let host = URL(string: url)?.host, ["127.0.0.1", "localhost", "::1"].contains(host) else {
                    throw ConfigurationError(
                        "models.\(model.name).engine.url: \(url) is not on loopback; vLLM's dev endpoints have no "
                            + "authentication, so engines must listen on 127.0.0.1")
                }
            }
        }
        for gpu in gpus {
            let onGPU = models.filter { $0.gpu == gpu.id }
            let preloaded = onGPU.filter { $0.preload || $0.pinned }
            let needed =
                preloaded.reduce(0) { $0 + $1.awakeBytes }
                + onGPU.filter { !($0.preload || $0.pinned) }.reduce(0) { $0 + $1.sleepResidueBytes }
            guard needed <= gpu.memoryBytes else {
                throw ConfigurationError(
                    "gpus.\(gpu.id): the preloaded and pinned models (\(preloaded.map(\.name).joined(separator: ", "))) "
                        + "need \(gib(needed)) awake, more than its \(gib(gpu.memoryBytes))")
            }
        }
        let cached = models.reduce(0) { $0 + $1.hostCacheBytes }
        guard cached <= hostMemoryBytes else {
            throw ConfigurationError(
                "host_memory_gib: the host-cache models' checkpoints need \(gib(cached)), more than \(gib(hostMemoryBytes))"
            )
        }
        var keys = Set<String>()
        for key in apiKeys {
            guard key.key.count >= 8 else {
                throw ConfigurationError("api_keys.\(key.name): a key must have at least 8 characters")
            }
            guard keys.insert(key.key).inserted else {
                throw ConfigurationError("api_keys.\(key.name): the same key is configured twice")
            }
            for model in key.models ?? [] where !seen.contains(model) {
                throw ConfigurationError("api_keys.\(key.name).models: no model \"\(model)\" is configured")
            }
        }
        if let token = adminToken, token.count < 16 {
            throw ConfigurationError("admin_token: use at least 16 characters")
        }
    }
}

func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }

/// A configuration problem, naming the key.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Reads a YAML node tree key by key, with errors that name the key path, and rejects unknown keys.
struct ConfigReader {
    typealias Model = GatewayConfiguration.Model
    typealias Engine = GatewayConfiguration.Engine
    typealias APIKey = GatewayConfiguration.APIKey
    typealias GPU = GatewayConfiguration.GPU
    typealias LevelPolicy = GatewayConfiguration.LevelPolicy

    let node: Node
    let path: String
    /// Local copies of `s3://` checkpoints, by URL.
    let packs: [String: String]

    init(_ node: Node, path: String, packs: [String: String] = [:]) {
        self.node = node
        self.path = path
        self.packs = packs
    }

    private func key(_ name: String) -> String { path.isEmpty ? name : path + "." + name }

    func mapping(allowed: Set<String>) throws(ConfigurationError) -> [String: Node] {
        guard let mapping = node.mapping else {
            throw ConfigurationError("\(path.isEmpty ? "the configuration" : path): expected a mapping of keys")
        }
        var result: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard let name = keyNode.string else { throw ConfigurationError("\(path): a key is not a string") }
            guard allowed.contains(name) else {
                throw ConfigurationError(
                    "\(key(name)): unknown key (known here: \(allowed.sorted().joined(separator: ", ")))")
            }
            result[name] = value
        }
        return result
    }

    func string(_ fields: [String: Node], _ name: String) throws(ConfigurationError) -> String? {
        guard let node = fields[name] else { return nil }
        guard let value = node.scalar?.string else { throw ConfigurationError("\(key(name)): expected a string") }
        return value
    }

    func double(_ fields: [String: Node], _ name: String, minimum: Double = 0) throws(ConfigurationError) -> Double? {
        guard let node = fields[name] else { return nil }
        if node.scalar?.string == "null" || node.scalar?.string == "~" { return nil }
        guard let value = node.scalar.flatMap({ Double($0.string) }), value.isFinite, value >= minimum else {
            throw ConfigurationError("\(key(name)): expected a number of at least \(minimum)")
        }
        return value
    }

    func int(_ fields: [String: Node], _ name: String, minimum: Int = 0) throws(ConfigurationError) -> Int? {
        guard let node = fields[name] else { return nil }
        guard let value = node.scalar.flatMap({ Int($0.string) }), value >= minimum else {
            throw ConfigurationError("\(key(name)): expected a whole number of at least \(minimum)")
        }
        return value
    }

    func bool(_ fields: [String: Node], _ name: String) throws(ConfigurationError) -> Bool? {
        guard let node = fields[name] else { return nil }
        switch node.scalar?.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw ConfigurationError("\(key(name)): expected true or false")
        }
    }

    /// A size in GiB (a number) as bytes.
    func gibibytes(_ fields: [String: Node], _ name: String) throws(ConfigurationError) -> Int? {
        try double(fields, name).map { Int(($0 * Double(1 << 30)).rounded()) }
    }

    func strings(_ fields: [String: Node], _ name: String) throws(ConfigurationError) -> [String]? {
        guard let node = fields[name] else { return nil }
        guard let sequence = node.sequence else { throw ConfigurationError("\(key(name)): expected a list") }
        var result: [String] = []
        for item in sequence {
            guard let value = item.scalar?.string else {
                throw ConfigurationError("\(key(name)): every item must be a string")
            }
            result.append(value)
        }
        return result
    }

    func child(_ fields: [String: Node], _ name: String) -> ConfigReader? {
        fields[name].map { ConfigReader($0, path: key(name), packs: packs) }
    }

    func items(_ fields: [String: Node], _ name: String) throws(ConfigurationError) -> [ConfigReader] {
        guard let node = fields[name] else { return [] }
        guard let sequence = node.sequence else { throw ConfigurationError("\(key(name)): expected a list") }
        return sequence.enumerated().map { ConfigReader($1, path: key(name) + "[\($0)]", packs: packs) }
    }

    // MARK: - The schema

    func decodeGateway() throws(ConfigurationError) -> GatewayConfiguration {
        let fields = try mapping(allowed: [
            "listen", "admin_token", "api_keys", "limits", "scheduler", "host_memory_gib", "gpus", "models",
            "state_dir", "host_cache_dir",
        ])
        var result = GatewayConfiguration()
        if let listen = child(fields, "listen") {
            let values = try listen.mapping(allowed: ["client", "admin"])
            if let client = try listen.string(values, "client") {
                result.listen.client = try .parse(client, defaultHost: "0.0.0.0")
            }
            if let admin = try listen.string(values, "admin") {
                result.listen.admin = try .parse(admin, defaultHost: "127.0.0.1")
            }
        }
        result.adminToken = try string(fields, "admin_token")
        for (index, item) in try items(fields, "api_keys").enumerated() {
            let values = try item.mapping(allowed: ["name", "key", "key_env", "models"])
            let name = try item.string(values, "name") ?? "key\(index + 1)"
            var key = try item.string(values, "key")
            if let variable = try item.string(values, "key_env") {
                guard let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty else {
                    throw ConfigurationError("\(item.path).key_env: the environment variable \(variable) is not set")
                }
                key = value
            }
            guard let key else { throw ConfigurationError("\(item.path): give key or key_env") }
            result.apiKeys.append(APIKey(name: name, key: key, models: try item.strings(values, "models")))
        }
        if let limits = child(fields, "limits") {
            let values = try limits.mapping(allowed: [
                "max_request_bytes", "queue_depth", "queue_timeout_seconds", "retry_after_seconds",
                "upstream_read_timeout_seconds", "shutdown_grace_seconds",
            ])
            var value = result.limits
            value.maxRequestBytes = try limits.int(values, "max_request_bytes", minimum: 1) ?? value.maxRequestBytes
            value.queueDepth = try limits.int(values, "queue_depth", minimum: 1) ?? value.queueDepth
            value.queueTimeoutSeconds =
                try limits.double(values, "queue_timeout_seconds", minimum: 0.001) ?? value.queueTimeoutSeconds
            value.retryAfterSeconds =
                try limits.int(values, "retry_after_seconds", minimum: 1) ?? value.retryAfterSeconds
            value.upstreamReadTimeoutSeconds =
                try limits.double(values, "upstream_read_timeout_seconds", minimum: 0.001)
                ?? value.upstreamReadTimeoutSeconds
            value.shutdownGraceSeconds =
                try limits.double(values, "shutdown_grace_seconds", minimum: 0) ?? value.shutdownGraceSeconds
            result.limits = value
        }
        if let scheduler = child(fields, "scheduler") {
            let values = try scheduler.mapping(allowed: [
                "min_residency_seconds", "starvation_bound_seconds", "drain_timeout_seconds",
                "transition_timeout_seconds", "demand_half_life_seconds", "max_consecutive_failures",
            ])
            var value = result.scheduler
            value.minResidencySeconds =
                try scheduler.double(values, "min_residency_seconds") ?? value.minResidencySeconds
            value.starvationBoundSeconds =
                try scheduler.double(values, "starvation_bound_seconds") ?? value.starvationBoundSeconds
            if values["drain_timeout_seconds"] != nil {
                value.drainTimeoutSeconds = try scheduler.double(values, "drain_timeout_seconds")
            }
            value.transitionTimeoutSeconds =
                try scheduler.double(values, "transition_timeout_seconds", minimum: 0.001)
                ?? value.transitionTimeoutSeconds
            value.demandHalfLifeSeconds =
                try scheduler.double(values, "demand_half_life_seconds", minimum: 0.001) ?? value.demandHalfLifeSeconds
            value.maxConsecutiveFailures =
                try scheduler.int(values, "max_consecutive_failures", minimum: 1) ?? value.maxConsecutiveFailures
            result.scheduler = value
        }
        result.hostMemoryBytes = try gibibytes(fields, "host_memory_gib") ?? result.hostMemoryBytes
        if fields["gpus"] != nil {
            result.gpus = []
            for item in try items(fields, "gpus") {
                let values = try item.mapping(allowed: ["id", "memory_gib"])
                guard let id = try item.string(values, "id") else {
                    throw ConfigurationError("\(item.path).id is missing")
                }
                guard let memory = try item.gibibytes(values, "memory_gib") else {
                    throw ConfigurationError("\(item.path).memory_gib is missing")
                }
                result.gpus.append(GPU(id: id, memoryBytes: memory))
            }
        }
        for item in try items(fields, "models") { result.models.append(try item.decodeModel()) }
        result.stateDirectory = try string(fields, "state_dir") ?? result.stateDirectory
        result.hostCacheDirectory = try string(fields, "host_cache_dir") ?? result.hostCacheDirectory
        return result
    }

    func decodeModel() throws(ConfigurationError) -> Model {
        let values = try mapping(allowed: [
            "name", "gpu", "engine", "weights_gib", "kv_cache_gib", "sleep_residue_gib", "sleep_level", "pinned",
            "preload", "idle_ttl_seconds", "weights_path", "checkpoint",
        ])
        guard let name = try string(values, "name") else { throw ConfigurationError("\(path).name is missing") }
        guard let engineReader = child(values, "engine") else { throw ConfigurationError("\(path).engine is missing") }
        guard let weights = try gibibytes(values, "weights_gib") else {
            throw ConfigurationError("\(path).weights_gib is missing (GPU memory of the weights)")
        }
        guard let kvCache = try gibibytes(values, "kv_cache_gib") else {
            throw ConfigurationError("\(path).kv_cache_gib is missing (GPU memory of the KV cache)")
        }
        var model = Model(
            name: name, engine: try engineReader.decodeEngine(), weightsBytes: weights, kvCacheBytes: kvCache)
        model.gpu = try string(values, "gpu") ?? model.gpu
        model.sleepResidueBytes = try gibibytes(values, "sleep_residue_gib") ?? model.sleepResidueBytes
        if let level = try string(values, "sleep_level") {
            guard let policy = LevelPolicy(rawValue: level) else {
                throw ConfigurationError("\(path).sleep_level: \"\(level)\" is not auto, 1, 2 or host-cache")
            }
            model.sleepLevel = policy
        }
        model.pinned = try bool(values, "pinned") ?? false
        model.preload = try bool(values, "preload") ?? false
        model.idleTTLSeconds = try double(values, "idle_ttl_seconds", minimum: 0.001)
        model.weightsPath = try string(values, "weights_path")
        if let pack = try string(values, "checkpoint") {
            guard !pack.hasPrefix("s3://") || packs[pack] != nil else {
                throw ConfigurationError(
                    "\(path).checkpoint: \(pack) has not been pulled; `torpor serve` pulls s3:// checkpoints before it "
                        + "reads the configuration")
            }
            model.checkpoint = try GatewayConfiguration.Checkpoint.read(packs[pack] ?? pack, key: "\(path).checkpoint")
        }
        return model
    }

    func decodeEngine() throws(ConfigurationError) -> Engine {
        let values = try mapping(allowed: [
            "command", "environment", "ready_timeout_seconds", "simulated", "time_scale", "tokens_per_second", "url",
        ])
        let kinds = ["command", "simulated", "url"].filter { values[$0] != nil }
        guard kinds.count == 1 else {
            throw ConfigurationError("\(path): give exactly one of command, simulated or url (have \(kinds))")
        }
        if let arguments = try strings(values, "command") {
            guard !arguments.isEmpty else { throw ConfigurationError("\(path).command: the command is empty") }
            var environment: [String: String] = [:]
            if let reader = child(values, "environment") {
                guard let mapping = reader.node.mapping else {
                    throw ConfigurationError("\(reader.path): expected a mapping of variable names to values")
                }
                for (key, value) in mapping {
                    guard let name = key.string, let text = value.scalar?.string else {
                        throw ConfigurationError("\(reader.path): every variable and value must be a string")
                    }
                    environment[name] = text
                }
            }
            let ready = try double(values, "ready_timeout_seconds", minimum: 0.001) ?? 600
            return .command(arguments: arguments, environment: environment, readyTimeoutSeconds: ready)
        }
        if let simulated = try bool(values, "simulated") {
            guard simulated else {
                throw ConfigurationError("\(path).simulated: only `simulated: true` means anything")
            }
            return .simulated(
                timeScale: try double(values, "time_scale", minimum: 0.0001) ?? 1,
                tokensPerSecond: try double(values, "tokens_per_second", minimum: 0.001) ?? 100)
        }
        return .external(url: try string(values, "url") ?? "")
    }
}
