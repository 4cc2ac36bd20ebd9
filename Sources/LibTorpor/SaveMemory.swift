import Synchronization
import TorporCheckpoint
import TorporGPU

/// Host memory a save assembles its safetensors file in. Registered with the driver as pinned the first time
/// device tensors are copied into it, and kept registered while it is kept: a training loop that saves every
/// step pays the registration (tenths of a second per gigabyte of driver time, which stalls the process's other
/// CUDA calls) once, not every step.
final class StagingRegion: @unchecked Sendable {
    /// Anonymous memory of `capacity` bytes.
    let memory: MappedFile
    /// Set once, by the one save that holds the region at a time.
    private var pinned: PinnedBuffer?

    init(capacity: Int) throws(CheckpointError) {
        memory = try MappedFile(anonymous: capacity, name: "the save's staging memory")
    }

    var capacity: Int { memory.count }
    var isPinned: Bool { pinned != nil }

    /// The first `count` bytes, standing in for the file `name`.
    func file(count: Int, name: String) -> MappedFile {
        MappedFile(viewing: memory.bytes, count: count, name: name, owner: self)
    }

    /// Registers the whole region with the driver, unless it is already.
    func pin(on device: GPUDevice) throws(GPUError) {
        guard pinned == nil, let base = memory.bytes.baseAddress else { return }
        pinned = try PinnedBuffer(
            device: device, registering: UnsafeMutableRawPointer(mutating: base), count: capacity, readOnly: false)
    }
}

/// Which kept region a save of `wanted` bytes reuses, and which kept regions go: a pure decision over the kept
/// regions' capacities.
struct StagingChoice: Equatable {
    /// The index of the kept region to reuse; nil: a new region.
    var reuse: Int?
    /// Indices of kept regions to free.
    var free: [Int]

    /// The smallest kept region that holds `wanted` bytes. When none does, a new one is made and the kept regions
    /// smaller than `wanted` are freed (saves of this size will not fit them).
    static func take(kept capacities: [Int], wanted: Int) -> StagingChoice {
        let fitting = capacities.indices.filter { capacities[$0] >= wanted }
        if let best = fitting.min(by: { capacities[$0] < capacities[$1] }) {
            return StagingChoice(reuse: best, free: [])
        }
        return StagingChoice(reuse: nil, free: Array(capacities.indices))
    }

    /// Which regions to free once a finished save's region has joined the kept ones: the smallest beyond `limit`.
    static func trim(kept capacities: [Int], limit: Int) -> [Int] {
        guard capacities.count > limit else { return [] }
        let bySize = capacities.indices.sorted { capacities[$0] > capacities[$1] }
        return Array(bySize[limit...]).sorted()
    }
}

/// What saves keep from one to the next, process-wide: staging regions (at most `keptLimit` idle ones) and GPU
/// encoders (one idle per device, chunk size and nvCOMP), each held by one save at a time.
final class SaveMemory: Sendable {
    static let shared = SaveMemory()

    /// Idle regions kept: a save finishing in the background while the next one starts needs two.
    static let keptLimit = 2

    struct EncoderKey: Hashable {
        var ordinal: Int32
        var chunkSize: Int
        var nvcompPath: String
    }

    private struct State {
        var regions: [StagingRegion] = []
        var encoders: [EncoderKey: GPUBatchEncoder] = [:]
    }

    private let state = Mutex(State())

    /// A region of at least `count` bytes for one save: a kept one when one fits (`reused`), else a new one.
    func takeRegion(_ count: Int) throws(CheckpointError) -> (region: StagingRegion, reused: Bool) {
        let kept: StagingRegion? = state.withLock { state in
            let choice = StagingChoice.take(kept: state.regions.map(\.capacity), wanted: count)
            let reused = choice.reuse.map { state.regions[$0] }
            let dropped = Set(choice.free + (choice.reuse.map { [$0] } ?? []))
            state.regions = state.regions.indices.filter { !dropped.contains($0) }.map { state.regions[$0] }
            return reused
        }
        if let kept { return (kept, true) }
        // Whole 2 MiB pages: the next save of the same tensors fits even when its metadata is longer.
        let page = 2 << 20
        return (try StagingRegion(capacity: max(count + page - 1, page) / page * page), false)
    }

    /// A save is done with `region`: kept for the next save when `keep`, else freed.
    func giveBack(_ region: StagingRegion, keep: Bool) {
        guard keep else { return }
        state.withLock { state in
            state.regions.append(region)
            let freed = Set(StagingChoice.trim(kept: state.regions.map(\.capacity), limit: Self.keptLimit))
            state.regions = state.regions.indices.filter { !freed.contains($0) }.map { state.regions[$0] }
        }
    }

    /// The idle encoder for `key`, or a new one from `make`.
    func takeEncoder(_ key: EncoderKey, make: () throws(GPUError) -> GPUBatchEncoder) throws(GPUError)
        -> GPUBatchEncoder
    {
        if let idle = state.withLock({ $0.encoders.removeValue(forKey: key) }) { return idle }
        return try make()
    }

    func giveBack(_ encoder: GPUBatchEncoder, key: EncoderKey, keep: Bool) {
        guard keep else { return }
        state.withLock { $0.encoders[key] = encoder }
    }

    /// Frees every idle region and encoder; the bytes of host memory freed.
    func releaseIdle() -> Int {
        let idle = state.withLock { state in
            defer { state = State() }
            return state
        }
        return idle.regions.reduce(0) { $0 + $1.capacity }  // unmapped and unregistered here, outside the lock
    }
}
