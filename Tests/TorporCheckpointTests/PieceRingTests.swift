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
