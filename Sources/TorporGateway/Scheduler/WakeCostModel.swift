import TorporEngine

/// What the scheduler expects a wake to cost before it has measured one of the model's own (each measured wake
/// then moves the estimate halfway to it). The rates are those measured through real vLLM 0.25.1 on an H200
/// (docs/benchmarks.md, "Through real vLLM 0.25.1 on the H200"): an 8B-shaped bf16 model of 13.97 GB woke from
/// level 1 in 0.37–0.40 s; from level 2 with vLLM's own safetensors reload in 2.0–3.1 s; through Torpor's load
/// format in 0.50–0.95 s from the page cache and 0.35–0.39 s from the pinned host cache. Each step is a fixed part
/// (the wake calls around the copy: 0.05–0.15 s) plus the weights at the step's rate.
enum WakeCostModel {
    /// Level-1 wakes copy the weights back from pinned host memory (44 GB/s measured, with the KV-cache wake).
    static let level1BytesPerSecond = 44e9
    /// Level-2 wakes reload: vLLM's safetensors loader from the page cache, Torpor's loader from a pack's files,
    /// or from its pinned host cache.
    static let safetensorsReloadBytesPerSecond = 5.5e9
    static let packReloadBytesPerSecond = 20e9
    static let hostCacheReloadBytesPerSecond = 55e9

    static func initialSeconds(for model: GatewayConfiguration.Model) -> [SleepLevel: Double] {
        let weights = Double(model.weightsBytes)
        let reloadRate =
            model.sleepLevel == .hostCache
            ? hostCacheReloadBytesPerSecond
            : model.checkpoint != nil ? packReloadBytesPerSecond : safetensorsReloadBytesPerSecond
        return [
            .offloadWeights: 0.05 + weights / level1BytesPerSecond,
            .discardWeights: 0.1 + weights / reloadRate,
        ]
    }
}
