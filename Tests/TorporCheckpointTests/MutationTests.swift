import Foundation
import Testing

@testable import TorporCheckpoint

@Suite("Randomized mutations")
struct MutationTests {
    @Test("thousands of mutated safetensors files are rejected with a named error or parsed consistently")
    func mutatedSafetensorsNeverCrash() throws {
        var generator = SeededGenerator(seed: 2024)
        let original = everyDTypeModel(seed: 8).serialized()
        let headerLength = Int(original.withUnsafeBytes { $0.loadLE(UInt64.self, at: 0) })
        var rejected = 0
        for trial in 0..<5000 {
            var mutated = original
            switch trial % 5 {
            case 0:
                // A byte of the JSON header replaced by a JSON-significant character.
                let structural = Array("{}[]\":,0123456789-.eE tfn\\".utf8)
                mutated[8 + Int.random(in: 0..<headerLength, using: &generator)] = structural.randomElement(
                    using: &generator)!
            case 1:
                mutated[Int.random(in: 0..<(8 + headerLength), using: &generator)] ^= UInt8(
                    1 << Int.random(in: 0..<8, using: &generator))
            case 2:
                mutated.removeLast(Int.random(in: 1...mutated.count, using: &generator))
            case 3:
                // The length prefix changed.
                let length = UInt64.random(in: 0...UInt64(original.count * 2), using: &generator)
                withUnsafeBytes(of: length.littleEndian) { mutated.replaceSubrange(0..<8, with: $0) }
            default:
                // A digit inside the header changed: shapes and offsets that disagree.
                let digits = (8..<(8 + headerLength)).filter { mutated[$0] >= 0x30 && mutated[$0] <= 0x39 }
                let position = digits.randomElement(using: &generator)!
                mutated[position] = UInt8.random(in: 0x30...0x39, using: &generator)
            }
            do {
                let header = try mutated.withUnsafeBytes { try SafetensorsHeader(parsing: $0, file: "m.safetensors") }
                // What parses must still describe a consistent file.
                #expect(header.tensors.reduce(0) { $0 + $1.byteCount } == header.dataLength)
            } catch let error as CheckpointError {
                rejected += 1
                #expect(error.message.hasPrefix("m.safetensors:"))
            }
        }
        #expect(rejected > 3000)
    }
}
