import Foundation
import Yams

/// Reads a YAML node tree key by key, with errors that name the key path, and rejects unknown keys.
struct ConfigReader {
    typealias Model = GatewayConfiguration.Model
    typealias Engine = GatewayConfiguration.Engine
    typealias APIKey = GatewayConfiguration.APIKey
    typealias GPU = GatewayConfiguration.GPU
    typealias LevelPolicy = GatewayConfiguration.LevelPolicy

    /// What decoding needs besides the YAML.
    struct Context {
        /// Local copies of `s3://` checkpoints, by URL.
        var packs: [String: String] = [:]
        /// The variables `api_keys[].key_env` names.
        var environment: [String: String] = [:]
    }

    let node: Node
    let path: String
    let context: Context

    init(_ node: Node, path: String, context: Context) {
        self.node = node
        self.path = path
        self.context = context
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
        guard let value = node.scalar?.string else {
            throw ConfigurationError("\(key(name)): expected a string, not \(given(node))")
        }
        return value
    }

    func double(_ fields: [String: Node], _ name: String, minimum: Double = 0) throws(ConfigurationError) -> Double? {
        guard let node = fields[name] else { return nil }
        if node.scalar?.string == "null" || node.scalar?.string == "~" { return nil }
        guard let value = node.scalar.flatMap({ Double($0.string) }), value.isFinite, value >= minimum else {
            throw ConfigurationError("\(key(name)): expected a number of at least \(minimum), not \(given(node))")
        }
        return value
    }

    func int(_ fields: [String: Node], _ name: String, minimum: Int = 0) throws(ConfigurationError) -> Int? {
        guard let node = fields[name] else { return nil }
        guard let value = node.scalar.flatMap({ Int($0.string) }), value >= minimum else {
            throw ConfigurationError(
                "\(key(name)): expected a whole number of at least \(minimum), not \(given(node))")
        }
        return value
    }

    /// Sets `target` to the field's number where the field is given, leaving the default otherwise.
    func read(_ fields: [String: Node], _ name: String, into target: inout Double, minimum: Double = 0)
        throws(ConfigurationError)
    {
        if let value = try double(fields, name, minimum: minimum) { target = value }
    }

    /// Sets `target` to the field's whole number where the field is given, leaving the default otherwise.
    func read(_ fields: [String: Node], _ name: String, into target: inout Int, minimum: Int = 0)
        throws(ConfigurationError)
    {
        if let value = try int(fields, name, minimum: minimum) { target = value }
    }

    func bool(_ fields: [String: Node], _ name: String) throws(ConfigurationError) -> Bool? {
        guard let node = fields[name] else { return nil }
        switch node.scalar?.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw ConfigurationError("\(key(name)): expected true or false, not \(given(node))")
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

    /// What was given, for an error: a scalar quoted, else what kind of node it is.
    private func given(_ node: Node) -> String {
        if let scalar = node.scalar { return "\"\(scalar.string)\"" }
        return node.sequence != nil ? "a list" : "a mapping"
    }

    func child(_ fields: [String: Node], _ name: String) -> ConfigReader? {
        fields[name].map { ConfigReader($0, path: key(name), context: context) }
    }

    func items(_ fields: [String: Node], _ name: String) throws(ConfigurationError) -> [ConfigReader] {
        guard let node = fields[name] else { return [] }
        guard let sequence = node.sequence else { throw ConfigurationError("\(key(name)): expected a list") }
        return sequence.enumerated().map { ConfigReader($1, path: key(name) + "[\($0)]", context: context) }
    }

    // MARK: - The schema

    func decodeGateway() throws(ConfigurationError) -> GatewayConfiguration {
        let fields = try mapping(allowed: [
            "listen", "admin_token", "api_keys", "limits", "scheduler", "host_memory_gib", "gpus", "models",
            "state_dir", "host_cache_dir", "pass_environment", "engine_transport", "metrics_token",
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
        result.metricsToken = try string(fields, "metrics_token")
        for (index, item) in try items(fields, "api_keys").enumerated() {
            let values = try item.mapping(allowed: ["name", "key", "key_env", "models"])
            let name = try item.string(values, "name") ?? "key\(index + 1)"
            var key = try item.string(values, "key")
            if let variable = try item.string(values, "key_env") {
                guard let value = context.environment[variable], !value.isEmpty else {
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
                "upstream_read_timeout_seconds", "shutdown_grace_seconds", "request_read_timeout_seconds",
                "upstream_head_timeout_seconds", "request_timeout_seconds",
            ])
            var value = result.limits
            try limits.read(values, "max_request_bytes", into: &value.maxRequestBytes, minimum: 1)
            try limits.read(values, "queue_depth", into: &value.queueDepth, minimum: 1)
            try limits.read(values, "queue_timeout_seconds", into: &value.queueTimeoutSeconds, minimum: 0.001)
            try limits.read(values, "retry_after_seconds", into: &value.retryAfterSeconds, minimum: 1)
            try limits.read(
                values, "upstream_read_timeout_seconds", into: &value.upstreamReadTimeoutSeconds, minimum: 0.001)
            try limits.read(
                values, "upstream_head_timeout_seconds", into: &value.upstreamHeadTimeoutSeconds, minimum: 0.001)
            try limits.read(values, "request_timeout_seconds", into: &value.requestTimeoutSeconds, minimum: 0.001)
            try limits.read(values, "shutdown_grace_seconds", into: &value.shutdownGraceSeconds)
            try limits.read(
                values, "request_read_timeout_seconds", into: &value.requestReadTimeoutSeconds, minimum: 0.001)
            result.limits = value
        }
        if let scheduler = child(fields, "scheduler") {
            let values = try scheduler.mapping(allowed: [
                "min_residency_seconds", "starvation_bound_seconds", "drain_timeout_seconds",
                "transition_timeout_seconds", "demand_half_life_seconds", "max_consecutive_failures",
            ])
            var value = result.scheduler
            try scheduler.read(values, "min_residency_seconds", into: &value.minResidencySeconds)
            try scheduler.read(values, "starvation_bound_seconds", into: &value.starvationBoundSeconds)
            if values["drain_timeout_seconds"] != nil {
                value.drainTimeoutSeconds = try scheduler.double(values, "drain_timeout_seconds")
            }
            try scheduler.read(
                values, "transition_timeout_seconds", into: &value.transitionTimeoutSeconds, minimum: 0.001)
            try scheduler.read(values, "demand_half_life_seconds", into: &value.demandHalfLifeSeconds, minimum: 0.001)
            try scheduler.read(values, "max_consecutive_failures", into: &value.maxConsecutiveFailures, minimum: 1)
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
        result.passEnvironment = try strings(fields, "pass_environment") ?? result.passEnvironment
        if let transport = try string(fields, "engine_transport") {
            guard let value = GatewayConfiguration.EngineTransport(rawValue: transport) else {
                throw ConfigurationError(
                    "\(key("engine_transport")): expected unix (the default) or tcp, not \"\(transport)\"")
            }
            result.engineTransport = value
        }
        return result
    }

    func decodeModel() throws(ConfigurationError) -> Model {
        let values = try mapping(allowed: [
            "name", "gpu", "engine", "weights_gib", "kv_cache_gib", "sleep_residue_gib", "sleep_level", "pinned",
            "preload", "idle_ttl_seconds", "weights_path", "checkpoint", "aliases", "served_name",
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
        model.aliases = try strings(values, "aliases") ?? []
        model.servedName = try string(values, "served_name")
        if let pack = try string(values, "checkpoint") {
            guard !pack.hasPrefix("s3://") || context.packs[pack] != nil else {
                throw ConfigurationError(
                    "\(path).checkpoint: \(pack) has not been pulled; `torpor serve` pulls s3:// checkpoints before it "
                        + "reads the configuration")
            }
            model.checkpoint = try GatewayConfiguration.Checkpoint.read(
                context.packs[pack] ?? pack, key: "\(path).checkpoint")
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
