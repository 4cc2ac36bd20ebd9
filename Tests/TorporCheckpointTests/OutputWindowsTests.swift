import Testing

@testable import TorporCheckpoint

@Suite("Pack output windows")
struct OutputWindowsTests {
    @Test("slots are laid out 64-byte aligned and grouped into windows of at most the target, in order")
    func slotsFillWindowsInOrder() {
        let layout = OutputWindows(slotSizes: [100, 64, 1000, 10, 3000, 5], targetBytes: 1200)
        // 128 + 64 + 1024 would pass 1200: slot 2 starts the second window.
        #expect(layout.windows == [0..<2, 2..<4, 4..<5, 5..<6])
        #expect(layout.slotOffsets == [0, 128, 0, 1024, 0, 0])
        // The slot larger than the target has a window of its own, and the buffer holds it.
        #expect(layout.bufferBytes == 3008)
        // Every slot lies inside the buffer and no two slots of a window overlap.
        let sizes = [100, 64, 1000, 10, 3000, 5]
        for window in layout.windows {
            for slot in window.dropFirst() {
                #expect(layout.slotOffsets[slot] >= layout.slotOffsets[slot - 1] + sizes[slot - 1])
            }
            for slot in window { #expect(layout.slotOffsets[slot] + sizes[slot] <= layout.bufferBytes) }
        }
    }

    @Test("no slots make no windows; one slot makes one")
    func edges() {
        #expect(OutputWindows(slotSizes: [], targetBytes: 4096).windows.isEmpty)
        let one = OutputWindows(slotSizes: [1], targetBytes: 4096)
        #expect(one.windows == [0..<1] && one.bufferBytes == 64)
    }

    @Test("the target keeps every worker busy and stays within memory")
    func targetSize() {
        let mib = 1 << 20
        // 2 workers: 16 chunks.
        #expect(OutputWindows.targetBytes(workers: 2, chunkSize: mib, memoryLimit: 512 * mib) == 16 * mib)
        // Never below two chunks a worker; never above the memory limit unless that forces it.
        #expect(
            OutputWindows.targetBytes(workers: 64, chunkSize: 16 * mib, memoryLimit: 512 * mib) == 2 * 64 * 16 * mib)
        #expect(OutputWindows.targetBytes(workers: 4, chunkSize: 16 * mib, memoryLimit: 512 * mib) == 512 * mib)
    }
}
