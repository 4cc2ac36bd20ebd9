/// How a pack that encodes on the GPU lays its chunks out in output memory: each chunk gets a slot, consecutive
/// chunks form windows (one GPU batch each), and a window is encoded into one buffer while the previous one is
/// written from the other.
///
/// A slot is as large as its chunk's encoding may be: the GPU codec's bound for the GPU's chunks, the chunk's own
/// size for the CPU's, since only an encoding smaller than the input is kept (a slot sized for a CPU codec's worst
/// case, 2.1 MiB for a 1 MiB byte-plane chunk, would be mostly memory the kernel zeroes for nothing).
struct OutputWindows: Equatable {
    /// Every slot's offset within its window's buffer (64-byte aligned).
    var slotOffsets: [Int]
    /// Consecutive slot numbers, in order; together they cover every slot.
    var windows: [Range<Int>]
    /// The bytes a buffer needs to hold any one window.
    var bufferBytes: Int

    static let slotAlignment = 64

    /// Groups slots into windows of at most `targetBytes` (a slot larger than that has a window of its own).
    init(slotSizes: [Int], targetBytes: Int) {
        slotOffsets = []
        slotOffsets.reserveCapacity(slotSizes.count)
        windows = []
        bufferBytes = 0
        var first = 0
        var filled = 0
        for (slot, size) in slotSizes.enumerated() {
            let aligned = ContainerLayout.align(size, to: Self.slotAlignment)
            if filled > 0, filled + aligned > targetBytes {
                windows.append(first..<slot)
                first = slot
                filled = 0
            }
            slotOffsets.append(filled)
            filled += aligned
            bufferBytes = max(bufferBytes, filled)
        }
        if first < slotSizes.count { windows.append(first..<slotSizes.count) }
    }

    /// The window size that keeps `workers` cores busy: at least two chunks a worker, so that no core idles at a
    /// window's end for long; up to eight a worker or 16 chunks, within `memoryLimit`.
    static func targetBytes(workers: Int, chunkSize: Int, memoryLimit: Int) -> Int {
        max(2 * workers * chunkSize, min(max(16, 8 * workers) * chunkSize, memoryLimit))
    }
}
