import Dispatch
import Synchronization

/// Work on a file's pieces on every core, handed on strictly in file order: restore decodes chunks beside the
/// file's SHA-256, pack encodes them beside the writing.
///
/// Pieces are claimed in file order into a ring of a few chunks' size (`PieceRing`), each taking its own size.
/// Helper threads (one fewer than the workers) run `work` on a piece in its slot. The calling thread hands the
/// pieces to `inOrder` one after the other; while the next piece is not ready it claims and works on one itself,
/// so no core waits while there is work. A slot is reused only after `inOrder` has had its piece. The first error
/// stops every thread and is rethrown; nothing runs after `run` returns.
struct OrderedPipeline {
    /// The bytes each piece needs in the ring, each at most `ringBytes`.
    let sizes: [Int]
    let ringBytes: Int
    let workers: Int

    init(sizes: [Int], ringBytes: Int, workers: Int) {
        self.sizes = sizes
        self.ringBytes = ringBytes
        self.workers = workers
    }

    /// A pipeline over pieces of at most `chunkSize` bytes with a ring of four chunks a worker (at least four).
    init(sizes: [Int], chunkSize: Int, workers: Int) {
        self.init(sizes: sizes, ringBytes: max(4, 4 * workers) * chunkSize, workers: workers)
    }

    func run(
        work:
            @Sendable (_ piece: Int, _ slot: UnsafeMutableRawBufferPointer, _ scratch: CodecScratch)
            throws(CheckpointError) -> Void,
        inOrder: (_ piece: Int, _ slot: UnsafeMutableRawBufferPointer) throws(CheckpointError) -> Void
    ) throws(CheckpointError) {
        guard !sizes.isEmpty else { return }
        let shared = Shared(sizes: sizes, ringBytes: ringBytes)
        defer { shared.deallocate() }
        try withoutActuallyEscaping(work) { (work) throws(CheckpointError) in
            // The helpers hold `work`: they must be done before this closure returns.
            let helpers = DispatchGroup()
            defer {
                shared.stop()
                helpers.wait()
            }
            let work = UncheckedSendable(work)
            for _ in 1..<max(workers, 1) {
                DispatchQueue.global().async(group: helpers) {
                    let scratch = CodecScratch()
                    while let claimed = shared.claim(waiting: true) {
                        shared.run(claimed, scratch: scratch, work: work.value)
                    }
                }
            }
            let scratch = CodecScratch()
            for piece in sizes.indices {
                let slot: UnsafeMutableRawBufferPointer
                while true {
                    if let error = shared.failure.error { throw error }
                    if let done = shared.done(piece) {
                        slot = done
                        break
                    }
                    if let stolen = shared.claim(waiting: false) {
                        shared.run(stolen, scratch: scratch, work: work.value)
                    } else {
                        shared.completed.wait()
                    }
                }
                try inOrder(piece, slot)
                shared.release()
            }
        }
    }

    /// A claimed piece and where its slot starts in the ring.
    private struct Claim {
        var piece: Int
        var start: Int
    }

    /// What the threads share: the ring, the next piece to claim and the pieces done.
    private final class Shared: @unchecked Sendable {
        let sizes: [Int]
        let ring: UnsafeMutableRawBufferPointer
        let failure = FailureBox()
        /// Signalled after each piece done, and on failure.
        let completed = DispatchSemaphore(value: 0)
        /// Signalled once for each claimer waiting on the ring, whenever a piece's bytes go back (or on stop).
        private let spaceFreed = DispatchSemaphore(value: 0)
        private let stopped = Atomic<Bool>(false)
        private struct Claims {
            var ring: PieceRing
            var next = 0
            /// Claimers about to wait on `spaceFreed`; one woken that still finds no room counts itself again.
            var waiting = 0

            mutating func takeWaiting() -> Int {
                defer { waiting = 0 }
                return waiting
            }
        }
        private let claims: Mutex<Claims>
        /// Each finished piece's offset in the ring.
        private let ready: Mutex<[Int?]>

        init(sizes: [Int], ringBytes: Int) {
            self.sizes = sizes
            ring = WorkingMemory.allocate(ringBytes)
            claims = Mutex(Claims(ring: PieceRing(capacity: ringBytes)))
            ready = Mutex([Int?](repeating: nil, count: sizes.count))
        }

        /// The next piece in file order with its space in the ring; nil when none is left or the pipeline stopped,
        /// and when `waiting` is false and the ring has no room for it now.
        func claim(waiting: Bool) -> Claim? {
            while true {
                let outcome: (claim: Claim?, wait: Bool) = claims.withLock { claims in
                    guard claims.next < sizes.count, !stopped.load(ordering: .acquiring) else { return (nil, false) }
                    let piece = claims.next
                    let size = sizes[piece]
                    guard let start = claims.ring.reserve(size) else {
                        if waiting { claims.waiting += 1 }
                        return (nil, waiting)
                    }
                    claims.next += 1
                    return (Claim(piece: piece, start: start), false)
                }
                guard outcome.wait else { return outcome.claim }
                spaceFreed.wait()
            }
        }

        private func slot(_ piece: Int, at start: Int) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(rebasing: ring[start..<(start + sizes[piece])])
        }

        /// Piece `piece`'s slot, once its work is done.
        func done(_ piece: Int) -> UnsafeMutableRawBufferPointer? {
            ready.withLock { $0[piece] }.map { slot(piece, at: $0) }
        }

        func run(
            _ claim: Claim, scratch: CodecScratch,
            work: (Int, UnsafeMutableRawBufferPointer, CodecScratch) throws(CheckpointError) -> Void
        ) {
            do throws(CheckpointError) {
                try work(claim.piece, slot(claim.piece, at: claim.start), scratch)
                ready.withLock { $0[claim.piece] = claim.start }
            } catch {
                failure.record(error)
                stopped.store(true, ordering: .releasing)
            }
            completed.signal()
        }

        /// Gives the consumed piece's slot back and wakes the claimers waiting for room.
        func release() {
            wake(
                claims.withLock { claims in
                    claims.ring.releaseOldest()
                    return claims.takeWaiting()
                })
        }

        /// Stops the helpers: none claims another piece, and each blocked one wakes.
        func stop() {
            stopped.store(true, ordering: .releasing)
            wake(claims.withLock { $0.takeWaiting() })
        }

        private func wake(_ waiters: Int) {
            for _ in 0..<waiters { spaceFreed.signal() }
        }

        func deallocate() { WorkingMemory.deallocate(ring) }
    }
}
