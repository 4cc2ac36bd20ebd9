import Foundation

extension GatewayConfiguration {
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
                    "\(key(model.name, "gpu")): no GPU \"\(model.gpu)\" under gpus (have \(gpus.map(\.id)))")
            }
            let neighbours = models.filter { $0.gpu == model.gpu && $0.name != model.name }
            let needed = model.awakeBytes + neighbours.reduce(0) { $0 + $1.sleepResidueBytes }
            guard needed <= gpu.memoryBytes else {
                throw ConfigurationError(
                    "\(key(model.name)): awake it needs \(gib(model.awakeBytes)) and its neighbours' sleep residue "
                        + "\(gib(needed - model.awakeBytes)), more than GPU \(gpu.id)'s \(gib(gpu.memoryBytes))")
            }
            for alias in model.aliases {
                guard !alias.isEmpty else {
                    throw ConfigurationError("\(key(model.name, "aliases")): an alias is empty")
                }
                guard seen.insert(alias).inserted else {
                    throw ConfigurationError(
                        "\(key(model.name, "aliases")): \"\(alias)\" is already the name or an alias of another model")
                }
            }
            if let served = model.servedName {
                guard case .external = model.engine else {
                    throw ConfigurationError(
                        "\(key(model.name, "served_name")): \"\(served)\" is only for an external engine (`engine.url`); "
                            + "engines Torpor starts serve the model's name")
                }
            }
            if model.sleepLevel == .hostCache, model.checkpoint == nil {
                throw ConfigurationError(
                    "\(key(model.name, "sleep_level")): host-cache wakes from the model's Torpor pack; set checkpoint")
            }
            if case .external(let url) = model.engine {
                guard let host = URL(string: url)?.host, ["127.0.0.1", "localhost", "::1"].contains(host) else {
                    throw ConfigurationError(
                        "\(key(model.name, "engine.url")): \(url) is not on loopback; vLLM's dev endpoints have no "
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
        if let token = metricsToken, token.count < 16 {
            throw ConfigurationError("metrics_token: use at least 16 characters")
        }
    }
}

extension GatewayConfiguration {
    /// How errors name a model's key: `models[1].gpu (model "b")`, the same index style the YAML reader's errors use,
    /// with the model's name.
    public func key(_ model: String, _ field: String? = nil) -> String {
        let index = models.firstIndex { $0.name == model }.map(String.init) ?? "?"
        return "models[\(index)]" + (field.map { "." + $0 } ?? "") + " (model \"\(model)\")"
    }
}

func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }
