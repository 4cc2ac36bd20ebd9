import Foundation

/// How a simulated engine behaves: its model, its simulated GPU, its sizes and rates.
///
/// Rates default to what real vLLM 0.25.1 measured on the lent H100/H200 machines (docs/benchmarks.md, "Through
/// real vLLM 0.25.1 on the H200"): level-1 sleep and wake copy the weights at 40 GB/s (13.97 GB woke in
/// 0.37–0.40 s with its KV cache), a level-2 reload with vLLM's safetensors loader runs at 5.5 GB/s (1.7–2.9 s for
/// 13.97 GB), the KV cache's wake takes 0.05 s, a cold start about 50 s (40–77 s measured). The model's size is a
/// Qwen3-0.6B's. `timeScale` multiplies every latency, so tests can run the same model 100 times faster.
public struct SimulatedEngineConfiguration: Sendable {
    public var model: String
    /// The simulated GPU's name; engines naming the same GPU share its memory.
    public var gpu: String = "0"
    /// The ledger file of the simulated GPU; defaults to `/dev/shm/torpor-sim-gpu-<gpu>.json` (or the temp dir).
    public var gpuLedgerPath: String?
    public var gpuMemoryBytes = 80 << 30
    public var weightBytes = 1_200_000_000
    public var kvCacheBytes = 4 << 30
    /// What a sleeping engine keeps on the GPU (CUDA context, graphs, allocator pools).
    public var sleepResidueBytes = 1_288_490_188
    public var tokensPerSecond = 100.0
    /// Level-1 sleep and wake copy the weights at this rate.
    public var hostToDeviceBytesPerSecond = 40e9
    /// A level-2 wake reloads the weights at this rate.
    public var loadBytesPerSecond = 5.5e9
    /// Waking the KV cache (mapping its memory again) takes this long.
    public var kvCacheWakeSeconds = 0.05
    public static let defaultColdStartSeconds = 50.0
    public var coldStartSeconds = defaultColdStartSeconds
    /// Every latency is multiplied by this.
    public var timeScale = 1.0
    /// When set, `/sim/fault` requires `Authorization: Bearer <token>`.
    public var adminToken: String?
    /// Faults armed from the start (as if injected through `/sim/fault`).
    public var initialFaults: [SimulatedFault] = []
    /// Answer a successful `/sleep` and `/wake_up` with an empty 200, as vLLM 0.25 does (later releases answer
    /// `{"status": ...}`).
    public var emptyLifecycleAnswers = false

    public init(model: String) { self.model = model }

    var ledgerPath: String {
        if let gpuLedgerPath { return gpuLedgerPath }
        let directory = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return directory + "/torpor-sim-gpu-\(gpu).json"
    }

    func seconds(_ value: Double) -> Duration { .milliseconds(Int64((value * timeScale * 1000).rounded())) }
}

/// A fault to inject, through `/sim/fault?kind=...` or command-line flags.
public enum SimulatedFault: String, Sendable, CaseIterable {
    /// Exit the process at once, as a crashed engine does.
    case crash
    /// Never answer the next `/sleep`.
    case hangNextSleep = "hang_next_sleep"
    /// Never answer the next `/wake_up`.
    case hangNextWake = "hang_next_wake"
    /// Answer the next `/sleep` with 500.
    case failNextSleep = "fail_next_sleep"
    /// Answer the next `/wake_up` with 500.
    case failNextWake = "fail_next_wake"
    /// Answer the next `reload_weights` with 500 and stay up, as vLLM does when the torpor plugin finds a bad chunk:
    /// the weights stay invalid until a reload succeeds.
    case failNextReload = "fail_next_reload"
    /// Make every wake take this many times longer (`factor`, default 10).
    case slowWake = "slow_wake"
    /// The next generation sends its first token, then nothing until it is aborted (an engine stalled mid-answer).
    case stallNextGeneration = "stall_next_generation"
}
