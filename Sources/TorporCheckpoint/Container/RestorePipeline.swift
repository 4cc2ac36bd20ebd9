import Dispatch
import Synchronization

/// Restores a container's pieces on every core, with the file's strictly ordered work (its SHA-256) on the
/// calling thread and everything else — decoding, both CRC-32 checks, writing — beside it.
///
/// Pieces are claimed in file order into a ring of a few chunks' size (`PieceRing`), each taking its own size.
/// Helper threads (one fewer than the workers) decode and check a piece, then hand it to `each` (any thread, any
/// order: a positional write, a comparison). The calling thread hands the pieces to `inOrder` one after the other;
/// while the next piece is not ready it claims and decodes one itself, so no core waits while there is work. A
/// piece's bytes are reused only after `inOrder` has had it. The first error stops every thread and is rethrown;
/// nothing runs after `restore` returns.
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
            container: container, pieces: pieces, ringBytes: max(4, 4 * workers) * container.index.chunkSize)
        defer { shared.deallocate() }
        try withoutActuallyEscaping(each) { (each) throws(CheckpointError) in
            // The helpers hold `each`: they must be done before this closure returns.
            let helpers = DispatchGroup()
            defer {
                shared.stop()
                helpers.wait()
            }
            let each = UncheckedSendable(each)
            for _ in 1..<max(workers, 1) {
                DispatchQueue.global().async(group: helpers) {
                    let scratch = CodecScratch()
                    while let claimed = shared.claim(waiting: true) {
                        shared.decode(claimed, scratch: scratch, each: each.value)
                    }
                }
            }
            let scratch = CodecScratch()
            for piece in pieces.indices {
                let bytes: UnsafeMutableRawBufferPointer
                while true {
                    if let error = shared.failure.error { throw error }
                    if let decoded = shared.decoded(piece) {
                        bytes = decoded
                        break
                    }
                    if let stolen = shared.claim(waiting: false) {
                        shared.decode(stolen, scratch: scratch, each: each.value)
                    } else {
                        shared.completed.wait()
                    }
                }
                try inOrder(UnsafeRawBufferPointer(bytes), pieces[piece].outputOffset)
                shared.release()
            }
        }
    }

    /// A claimed piece and its bytes in the ring.
    private struct Claim {
        var piece: Int
        var output: UnsafeMutableRawBufferPointer
    }

    /// What the threads share: the ring, the next piece to claim and the decoded pieces.
    private final class Shared: @unchecked Sendable {
        let container: Container
        let pieces: [Container.Piece]
        let ring: UnsafeMutableRawBufferPointer
        let failure = FailureBox()
        /// Signalled after each decoded piece, and on failure.
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
        /// Each decoded piece's offset in the ring.
        private let ready: Mutex<[Int?]>

        init(container: Container, pieces: [Container.Piece], ringBytes: Int) {
            self.container = container
            self.pieces = pieces
            ring = WorkingMemory.allocate(ringBytes)
            claims = Mutex(Claims(ring: PieceRing(capacity: ringBytes)))
            ready = Mutex([Int?](repeating: nil, count: pieces.count))
        }

        private func size(of piece: Int) -> Int { container.chunks[pieces[piece].placement.chunk].rawSize }

        /// The next piece in file order with its space in the ring; nil when none is left or the pipeline stopped,
        /// and when `waiting` is false and the ring has no room for it now.
        func claim(waiting: Bool) -> Claim? {
            while true {
                let outcome: (claim: Claim?, wait: Bool) = claims.withLock { claims in
                    guard claims.next < pieces.count, !stopped.load(ordering: .acquiring) else { return (nil, false) }
                    let piece = claims.next
                    let size = size(of: piece)
                    guard let start = claims.ring.reserve(size) else {
                        if waiting { claims.waiting += 1 }
                        return (nil, waiting)
                    }
                    claims.next += 1
                    return (Claim(piece: piece, output: .init(rebasing: ring[start..<(start + size)])), false)
                }
                guard outcome.wait else { return outcome.claim }
                spaceFreed.wait()
            }
        }

        /// Piece `piece`'s decoded bytes, once they are ready.
        func decoded(_ piece: Int) -> UnsafeMutableRawBufferPointer? {
            guard let start = ready.withLock({ $0[piece] }) else { return nil }
            return UnsafeMutableRawBufferPointer(rebasing: ring[start..<(start + size(of: piece))])
        }

        func decode(
            _ claim: Claim, scratch: CodecScratch,
            each: (UnsafeRawBufferPointer, Int) throws(CheckpointError) -> Void
        ) {
            do throws(CheckpointError) {
                let piece = pieces[claim.piece]
                try container.decode(piece.placement, into: claim.output, scratch: scratch)
                try each(UnsafeRawBufferPointer(claim.output), piece.outputOffset)
                let start = claim.output.baseAddress! - ring.baseAddress!
                ready.withLock { $0[claim.piece] = start }
            } catch {
                failure.record(error)
                stopped.store(true, ordering: .releasing)
            }
            completed.signal()
        }

        /// Gives the consumed piece's bytes back and wakes the claimers waiting for room.
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
