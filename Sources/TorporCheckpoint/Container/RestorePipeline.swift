import Dispatch
import Synchronization

/// Restores a container's pieces on every core, with the file's strictly ordered work (its SHA-256) on the
/// calling thread and everything else — decoding, both CRC-32 checks, writing — beside it.
///
/// Pieces are claimed in file order into a ring of chunk-sized slots. Helper threads (one fewer than the workers)
/// decode and check a piece, then hand it to `each` (any thread, any order: a positional write, a comparison). The
/// calling thread hands the pieces to `inOrder` one after the other; while the next piece is not ready it claims
/// and decodes one itself, so no core waits while there is work. A slot is reused only after `inOrder` has had
/// its piece. The first error stops every thread and is rethrown; nothing runs after `restore` returns.
struct RestorePipeline {
    let container: Container
    let pieces: [Container.Piece]
    let workers: Int

    func run(
        each: @Sendable (_ bytes: UnsafeRawBufferPointer, _ offset: Int) throws(CheckpointError) -> Void,
        inOrder: (_ bytes: UnsafeRawBufferPointer, _ offset: Int) throws(CheckpointError) -> Void
    ) throws(CheckpointError) {
        guard !pieces.isEmpty else { return }
        let shared = Shared(
            container: container, pieces: pieces, slots: max(4, 4 * workers), slotBytes: container.index.chunkSize)
        defer { shared.deallocate() }
        try withoutActuallyEscaping(each) { (each) throws(CheckpointError) in
            // The helpers hold `each`: they must be done before this closure returns.
            let helpers = DispatchGroup()
            defer {
                shared.stop(helpers: workers - 1)
                helpers.wait()
            }
            let each = UncheckedSendable(each)
            for _ in 1..<max(workers, 1) {
                DispatchQueue.global().async(group: helpers) {
                    let scratch = CodecScratch()
                    while shared.waitForSlot(), let piece = shared.claim() {
                        shared.decode(piece, scratch: scratch, each: each.value)
                    }
                }
            }
            let scratch = CodecScratch()
            for piece in pieces.indices {
                while !shared.isReady(piece) {
                    if let error = shared.failure.error { throw error }
                    if shared.takeSlotIfFree() {
                        if let stolen = shared.claim() { shared.decode(stolen, scratch: scratch, each: each.value) }
                    } else {
                        shared.completed.wait()
                    }
                }
                if let error = shared.failure.error { throw error }
                try inOrder(shared.bytes(of: piece), pieces[piece].outputOffset)
                shared.release()
            }
        }
    }

    /// What the threads share: the ring, the claim counter and the ready flags.
    private final class Shared: @unchecked Sendable {
        let container: Container
        let pieces: [Container.Piece]
        let slots: Int
        let slotBytes: Int
        let ring: UnsafeMutableRawBufferPointer
        let failure = FailureBox()
        /// Signalled after each decoded piece, and on failure.
        let completed = DispatchSemaphore(value: 0)
        /// One permit per free slot.
        private let free: DispatchSemaphore
        private let next = Atomic<Int>(0)
        private let stopped = Atomic<Bool>(false)
        private let ready: Mutex<[Bool]>

        init(container: Container, pieces: [Container.Piece], slots: Int, slotBytes: Int) {
            self.container = container
            self.pieces = pieces
            self.slots = slots
            self.slotBytes = slotBytes
            ring = WorkingMemory.allocate(slots * slotBytes)
            // Created empty, then filled: libdispatch traps when a semaphore is freed holding less than its initial
            // value, which an error leaves it doing.
            free = DispatchSemaphore(value: 0)
            for _ in 0..<slots { free.signal() }
            ready = Mutex([Bool](repeating: false, count: pieces.count))
        }

        /// Waits for a free slot; false once the pipeline stopped.
        func waitForSlot() -> Bool {
            free.wait()
            return !stopped.load(ordering: .acquiring)
        }

        /// Takes a free slot if one is free now.
        func takeSlotIfFree() -> Bool {
            free.wait(timeout: .now()) == .success
        }

        /// The next piece in file order, holding a slot already; nil when none is left (the slot goes back).
        func claim() -> Int? {
            let piece = next.wrappingAdd(1, ordering: .relaxed).oldValue
            guard piece < pieces.count, !stopped.load(ordering: .acquiring) else {
                free.signal()
                return nil
            }
            return piece
        }

        func bytes(of piece: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(slot(of: piece))
        }

        private func slot(of piece: Int) -> UnsafeMutableRawBufferPointer {
            let start = (piece % slots) * slotBytes
            let size = container.chunks[pieces[piece].placement.chunk].rawSize
            return UnsafeMutableRawBufferPointer(rebasing: ring[start..<(start + size)])
        }

        func decode(
            _ piece: Int, scratch: CodecScratch,
            each: (UnsafeRawBufferPointer, Int) throws(CheckpointError) -> Void
        ) {
            do throws(CheckpointError) {
                let output = slot(of: piece)
                try container.decode(pieces[piece].placement, into: output, scratch: scratch)
                try each(UnsafeRawBufferPointer(output), pieces[piece].outputOffset)
                ready.withLock { $0[piece] = true }
            } catch {
                failure.record(error)
                stopped.store(true, ordering: .releasing)
            }
            completed.signal()
        }

        func isReady(_ piece: Int) -> Bool { ready.withLock { $0[piece] } }

        /// Gives the consumed piece's slot back.
        func release() { free.signal() }

        /// Stops the helpers: none claims another piece, and each blocked one wakes.
        func stop(helpers: Int) {
            stopped.store(true, ordering: .releasing)
            for _ in 0..<max(helpers, 0) { free.signal() }
        }

        func deallocate() { WorkingMemory.deallocate(ring) }
    }
}
