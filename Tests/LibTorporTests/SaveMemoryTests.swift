import Testing

@testable import LibTorpor

/// Which kept staging region a save reuses and which kept regions go (`StagingChoice`, a pure decision).
@Suite struct SaveMemoryTests {
    @Test("a save reuses the smallest kept region that holds it")
    func reusesTheSmallestFit() {
        #expect(StagingChoice.take(kept: [64, 16, 32], wanted: 20) == StagingChoice(reuse: 2, free: []))
        #expect(StagingChoice.take(kept: [16], wanted: 16) == StagingChoice(reuse: 0, free: []))
    }

    @Test("a save larger than every kept region gets new memory, and the regions too small for it are freed")
    func freesWhatNoLongerFits() {
        #expect(StagingChoice.take(kept: [8, 16], wanted: 20) == StagingChoice(reuse: nil, free: [0, 1]))
        #expect(StagingChoice.take(kept: [], wanted: 1) == StagingChoice(reuse: nil, free: []))
    }

    @Test("beyond the limit, the smallest kept regions are freed")
    func trimsTheSmallest() {
        #expect(StagingChoice.trim(kept: [8, 32, 16], limit: 2) == [0])
        #expect(StagingChoice.trim(kept: [8, 32], limit: 2) == [])
        #expect(StagingChoice.trim(kept: [4, 8, 2, 1], limit: 2) == [2, 3])
    }
}
