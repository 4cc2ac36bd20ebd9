import ArgumentParser
import Foundation
import Logging
import TorporEngine

struct SimEngine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim-engine",
        abstract: "Run a simulated vLLM engine: the same HTTP contract, sleep levels, memory and latency model.",
        discussion: """
            Defaults: a Qwen3-0.6B-sized model (1.2 GB) at the rates real vLLM 0.25.1 measured on an H100/H200 \
            (level-1 wake 0.08 s, level-2 reload 0.22 s, cold start 50 s); --time-scale 0.01 runs it 100 times faster. Engines naming the same --gpu share its memory. \
            Once listening it prints "listening on http://HOST:PORT" on standard output.
            """)

    @Option(help: "The model name the engine serves.")
    var model: String

    @Option(help: "Port to listen on (0 picks a free one).")
    var port: Int = 0

    @Option(help: "Address to listen on. Keep it on loopback: vLLM's dev endpoints have no authentication.")
    var host: String = "127.0.0.1"

    @Option(help: "Serve on this unix socket instead of HOST:PORT (vLLM's --uds).")
    var uds: String?

    @Option(help: "The simulated GPU; engines naming the same GPU share its memory.")
    var gpu: String = "0"

    @Option(help: "The simulated GPU's ledger file (default /dev/shm/torpor-sim-gpu-GPU.json).")
    var gpuLedger: String?

    @Option(help: "Memory of the simulated GPU in GiB.")
    var gpuMemoryGib: Double = 80

    @Option(help: "Weight bytes of the model.")
    var weightBytes: Int = 1_200_000_000

    @Option(help: "KV cache bytes of the model.")
    var kvCacheBytes: Int = 4 << 30

    @Option(help: "Generated tokens per second.")
    var tokensPerSecond: Double = 100

    @Option(help: "Host-to-device rate for level-1 sleep and wake, GB/s.")
    var hostToDeviceGbps: Double = 40

    @Option(help: "Weight load rate for a level-2 reload, GB/s.")
    var loadGbps: Double = 5.5

    @Option(help: "Cold start in seconds.")
    var coldStartSeconds: Double = SimulatedEngineConfiguration.defaultColdStartSeconds

    @Option(help: "Multiply every latency by this (0.01 = 100 times faster).")
    var timeScale: Double = 1

    @Option(help: "Require this bearer token on /sim/fault.")
    var adminToken: String?

    @Flag(help: "Answer a successful /sleep and /wake_up with an empty 200, as vLLM 0.25 does.")
    var emptyLifecycleAnswers = false

    @Option(
        name: .customLong("fault"),
        help: "Inject a fault at start: \(SimulatedFault.allCases.map(\.rawValue).joined(separator: ", ")).")
    var faults: [String] = []

    func validate() throws {
        guard timeScale > 0, tokensPerSecond > 0, hostToDeviceGbps > 0, loadGbps > 0, gpuMemoryGib > 0 else {
            throw ValidationError("--time-scale, --tokens-per-second, the rates and --gpu-memory-gib must be positive")
        }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        for fault in faults where SimulatedFault(rawValue: fault) == nil {
            throw ValidationError(
                "unknown fault \"\(fault)\"; use one of: \(SimulatedFault.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        var configuration = SimulatedEngineConfiguration(model: model)
        configuration.gpu = gpu
        configuration.gpuLedgerPath = gpuLedger
        configuration.gpuMemoryBytes = Int(gpuMemoryGib * Double(1 << 30))
        configuration.weightBytes = weightBytes
        configuration.kvCacheBytes = kvCacheBytes
        configuration.tokensPerSecond = tokensPerSecond
        configuration.hostToDeviceBytesPerSecond = hostToDeviceGbps * 1e9
        configuration.loadBytesPerSecond = loadGbps * 1e9
        configuration.coldStartSeconds = coldStartSeconds
        configuration.timeScale = timeScale
        configuration.adminToken = adminToken
        configuration.initialFaults = faults.compactMap(SimulatedFault.init(rawValue:))
        configuration.emptyLifecycleAnswers = emptyLifecycleAnswers
        let server = SimulatedEngineServer(configuration: configuration)
        let host = self.host
        do {
            let socket = uds
            try await server.run(
                host: host, port: port, unixSocket: socket, logger: Logger(label: "torpor.sim-engine")
            ) { port in
                let address = socket.map { "unix:" + $0 } ?? "http://\(host):\(port)"
                FileHandle.standardOutput.write(Data("listening on \(address)\n".utf8))
            }
        } catch {
            FileHandle.standardError.write(Data("error: sim-engine \(model): \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}
