import CTorporLinux
import CTorporNVCOMP
import Dispatch
import FoundationEssentials
import Glibc
import Synchronization
import TorporCheckpoint

/// Planning a load: where every chunk goes and which chunks are read, copied and decoded together.
extension GPULoader {
    /// Which batched decoder call a chunk goes to: one per codec, and for Bitcomp one per element width (nvCOMP
    /// refuses a Bitcomp batch that mixes data types, though it decodes each chunk alone).
    static func decodeGroup(_ entry: Entry, _ container: Container) -> Int {
        let codec = container.chunks[entry.chunk].codec
        let width = codec == .bitcomp ? container.index.tensors[entry.tensor].dtype.bitWidth : 0
        return Int(codec.rawValue) << 8 | width
    }

    /// Every chunk placement the load makes, cut into batches of consecutive stored bytes.
    static func plan(_ container: Container, destination: LoadDestination, batchBytes: Int) throws(GPUError)
        -> (entries: [Entry], batches: [Batch], tensors: Int)
    {
        let chunks = container.chunks
        var placements: [Entry] = []
        var tensorCount = 0
        for (number, tensor) in container.index.tensors.enumerated() {
            let base: UInt64
            switch destination {
            case .arena(let buffer):
                guard tensor.dataOffsets[1] <= buffer.count else {
                    throw GPUError(
                        .invalidArgument,
                        "\(container.path): tensor \"\(tensor.name)\" ends at byte \(tensor.dataOffsets[1]) of an "
                            + "arena of \(buffer.count) bytes")
                }
                base = buffer.address + UInt64(tensor.dataOffsets[0])
            case .pointers(let addresses):
                guard let address = addresses[tensor.name] else { continue }
                base = address
            }
            tensorCount += 1
            for placement in container.placements(ofTensor: number) {
                let record = chunks[placement.chunk]
                switch record.codec {
                case .ans16 where record.rawSize % 2 != 0, .ans32 where record.rawSize % 4 != 0:
                    throw GPUError(
                        .corruptData,
                        "\(container.describe(placement)): holds \(record.rawSize) bytes, not whole "
                            + "\(record.codec.name) elements")
                default: break
                }
                placements.append(Entry(placement: placement, output: base + UInt64(placement.offsetInTensor)))
            }
        }
        // File order, so that batches read consecutive bytes; a chunk used by two tensors appears twice.
        placements.sort { (chunks[$0.chunk].offset, $0.output) < (chunks[$1.chunk].offset, $1.output) }
        var entries: [Entry] = []
        entries.reserveCapacity(placements.count)
        var batches: [Batch] = []
        var start = 0
        while start < placements.count {
            let first = chunks[placements[start].chunk]
            let spanStart = first.offset / 4096 * 4096
            var end = start
            var spanEnd = spanStart
            while end < placements.count {
                let record = chunks[placements[end].chunk]
                let newEnd = (max(spanEnd, record.offset + record.storedSize) + 4095) / 4096 * 4096
                // A batch ends at the size limit, or at a gap worth skipping (a partial load).
                if end > start && (newEnd - spanStart > batchBytes || record.offset > spanEnd + (1 << 20)) {
                    break
                }
                spanEnd = newEnd
                end += 1
            }
            // Within the batch, one run per decoder call.
            let group = placements[start..<end].sorted {
                decodeGroup($0, container) < decodeGroup($1, container)
            }
            batches.append(Batch(span: spanStart..<spanEnd, entries: entries.count..<(entries.count + group.count)))
            entries.append(contentsOf: group)
            start = end
        }
        return (entries, batches, tensorCount)
    }
}
