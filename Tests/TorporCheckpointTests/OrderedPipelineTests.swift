import Foundation
import Synchronization
import Testing

@testable import TorporCheckpoint

@Suite("The restore ring")
struct PieceRingTests {
    @Test("pieces take their own size in order, wrap to the start where the end is short, and wait for room")
    func reserveAndRelease() {
        var ring = PieceRing(capacity: 100)
        #expect(ring.reserve(30) == 0)
        #expect(ring.reserve(30) == 30)
        #expect(ring.reserve(30) == 60)
        // 10 bytes are left at the end and none at the start: a piece of 20 waits.
        #expect(ring.reserve(20) == nil)
        ring.releaseOldest()
        // The end is skipped: the piece starts at 0 and holds the skipped 10 bytes until it goes back.
        #expect(ring.reserve(20) == 0)
        #expect(ring.reserve(10) == 20)
        #expect(ring.reserve(1) == nil)
        #expect(ring.count == 4)
        ring.releaseOldest()
        ring.releaseOldest()
        #expect(ring.reserve(40) == 30)
        #expect(ring.reserve(20) == 70)
        // The skipped end still counts as held until the piece at 0 goes back.
        #expect(ring.reserve(1) == nil)
        for _ in 0..<4 { ring.releaseOldest() }
        // Empty again: the next piece starts at 0 and may take the whole ring.
        #expect(ring.count == 0)
        #expect(ring.reserve(100) == 0)
        // An empty piece fits even in a full ring.
        #expect(ring.reserve(0) == 100)
        #expect(ring.count == 2)
    }

    @Test("random sizes never overlap a held piece and always fit once the ring is empty")
    func randomSizesNeverOverlap() {
        var generator = SeededGenerator(seed: 31)
        var ring = PieceRing(capacity: 1 << 20)
        var held: [(start: Int, size: Int)] = []
        for _ in 0..<20_000 {
            let size = Int.random(in: 0...(1 << 18), using: &generator)
            if let start = ring.reserve(size) {
                #expect(start >= 0 && start + size <= ring.capacity)
                for piece in held where piece.size > 0 && size > 0 {
                    #expect(start + size <= piece.start || piece.start + piece.size <= start)
                }
                held.append((start, size))
            } else {
                #expect(!held.isEmpty, "an empty ring refused \(size) bytes")
                ring.releaseOldest()
                held.removeFirst()
            }
            #expect(ring.count == held.count)
        }
    }
}

@Suite("The ordered pipeline")
struct OrderedPipelineTests {
    /// A piece's bytes as `work` writes them: its number, repeated.
    private static func pattern(_ piece: Int) -> UInt8 { UInt8(truncatingIfNeeded: piece &* 131 &+ 7) }

    @Test("every piece is worked on once and handed on in order with its own bytes, on any number of workers")
    func inOrder() throws {
        var generator = SeededGenerator(seed: 41)
        let sizes = (0..<500).map { _ in Int.random(in: 0...4096, using: &generator) }
        for workers in [1, 2, 3, 8] {
            let worked = Mutex([Int](repeating: 0, count: sizes.count))
            var handed: [Int] = []
            var wrong: [Int] = []
            try OrderedPipeline(sizes: sizes, ringBytes: 4 * 4096, workers: workers).run { (piece, slot, _) in
                #expect(slot.count == sizes[piece])
                slot.initializeMemory(as: UInt8.self, repeating: Self.pattern(piece))
                worked.withLock { $0[piece] += 1 }
            } inOrder: { (piece, slot) in
                handed.append(piece)
                if slot.count != sizes[piece] || slot.contains(where: { $0 != Self.pattern(piece) }) {
                    wrong.append(piece)
                }
            }
            #expect(handed == Array(sizes.indices), "\(workers) workers")
            #expect(wrong.isEmpty, "\(workers) workers: pieces \(wrong.prefix(5)) were overwritten before their turn")
            #expect(worked.withLock { $0 }.allSatisfy { $0 == 1 }, "\(workers) workers")
        }
    }

    @Test("the first failure, in work or in order, stops the pipeline and is rethrown; nothing runs after")
    func failures() throws {
        let sizes = [Int](repeating: 1000, count: 200)
        for failing in ["work", "inOrder"] {
            let calls = Mutex(0)
            var handed = 0
            #expect(throws: CheckpointError.self, "\(failing)") {
                try OrderedPipeline(sizes: sizes, ringBytes: 8000, workers: 3).run {
                    (piece, _, _) throws(CheckpointError) in
                    calls.withLock { $0 += 1 }
                    if failing == "work", piece == 50 { throw CheckpointError(.corruptData, "piece 50") }
                } inOrder: { (piece, _) throws(CheckpointError) in
                    if failing == "inOrder", piece == 50 { throw CheckpointError(.io, "piece 50") }
                    handed += 1
                }
            }
            #expect(handed <= 50, "\(failing)")
            // The ring holds at most eight pieces past the last one handed on, so few more were worked on.
            let after = calls.withLock { $0 }
            #expect(after < 50 + 8 + 3, "\(failing): \(after) pieces worked on")
            Thread.sleep(forTimeInterval: 0.05)
            #expect(calls.withLock { $0 } == after, "\(failing): work ran after run returned")
        }
    }
}
