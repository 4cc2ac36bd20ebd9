import Foundation
import TorporCheckpoint
import TorporEngine
import Yams

/// Everything `torpor serve` reads from its YAML file; docs/gateway-config.md documents every key once.
///
/// Every key has a default except `models`; unknown keys are errors (a misspelt key must not be silently ignored).
public struct GatewayConfiguration: Sendable, Equatable {
    public var listen = Listeners()
    /// The admin API's bearer token; `TORPOR_ADMIN_TOKEN` overrides it; without either one is generated.
    public var adminToken: String?
    /// A read-only credential for the admin listener's metrics (`/metrics` and each engine's); `TORPOR_METRICS_TOKEN`
    /// overrides it; without either only the admin token reads them.
    public var metricsToken: String?
    /// Client API keys; none means the client API is open.
    public var apiKeys: [APIKey] = []
    public var limits = Limits()
    public var scheduler = SchedulerSettings()
    /// Host RAM that level-1 sleepers (their weights) and host-cache models (their compressed checkpoints) may
    /// hold, in bytes.
    public var hostMemoryBytes: Int = 64 << 30
    /// Where host-cache models' compressed checkpoints are held (a tmpfs: RAM).
    public var hostCacheDirectory: String = "/dev/shm"
    /// Variables of Torpor's environment every engine gets besides those `EngineEnvironment` passes (credentials
    /// an engine needs, say); engines get nothing else of it.
    public var passEnvironment: [String] = []
    /// How the engines Torpor starts listen: a unix socket in `state_dir/sockets` (0700: only the gateway's user
    /// can reach an engine's unauthenticated dev endpoints), or, when asked, a TCP port on 127.0.0.1.
    public var engineTransport = EngineTransport.unixSocket
    public var gpus: [GPU] = [GPU(id: "0")]
    public var models: [Model] = []
    /// Where engine records (`*.engine.json`), logs and simulated-GPU ledgers go.
    public var stateDirectory: String = URL(fileURLWithPath: NSTemporaryDirectory())
        .appendingPathComponent("torpor-gateway").path

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

    /// How the engines Torpor starts listen (`engine_transport`).
    public enum EngineTransport: String, Sendable, Equatable, CaseIterable {
        /// A unix socket in a directory only the gateway's user may enter.
        case unixSocket = "unix"
        /// A TCP port on 127.0.0.1: every local user can reach it.
        case loopbackTCP = "tcp"
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
        /// The longest silence between two chunks of an engine's answer, once its head arrived.
        public var upstreamReadTimeoutSeconds = 300.0
        /// The longest wait for an engine's answer head after the request was sent to it (for a request that is not
        /// streamed, the whole generation).
        public var upstreamHeadTimeoutSeconds = 600.0
        /// The longest a request may take from its arrival to its last byte, waiting for a wake included.
        public var requestTimeoutSeconds = 1800.0
        /// At shutdown, how long requests in flight may finish before they are cut off.
        public var shutdownGraceSeconds = 30.0
        /// A client's time to send a request's head (from the connection's start or the end of the previous answer:
        /// an idle keep-alive connection closes after it too), and then the whole body.
        public var requestReadTimeoutSeconds = 60.0
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
        /// Other names clients may send for it (`gpt-4o-mini`, say); `/v1/models` lists them too.
        public var aliases: [String] = []
        /// The name its engine serves, sent upstream as the request's `model`: for engines Torpor starts, `name`
        /// (they get `--served-model-name NAME`); an external engine may serve another.
        public var servedName: String?
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
            case .simulated(let timeScale, _):
                max(30, SimulatedEngineConfiguration.defaultColdStartSeconds * timeScale * 3)
            case .external: 60
            }
        }

        /// The name sent upstream.
        public var upstreamName: String { servedName ?? name }

        /// What a level-2 wake reloads: `weights_path`, else the checkpoint, else what the engine loads at its start
        /// (`engineLoads`), else the name.
        func wakePath(engineLoads: String?) -> String { weightsPath ?? checkpoint?.path ?? engineLoads ?? name }

        /// The model with only what its running engine depends on: two models with the same identity can keep one
        /// engine across a configuration reload (their names, aliases, TTLs, pins and preloads may differ).
        public var engineIdentity: Model {
            var identity = self
            identity.aliases = []
            identity.pinned = false
            identity.preload = false
            identity.idleTTLSeconds = nil
            identity.weightsPath = nil
            return identity
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
}

/// A configuration problem, naming the key.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
