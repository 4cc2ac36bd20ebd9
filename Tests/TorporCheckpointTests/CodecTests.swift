import CTorporDeflate
import CTorporSIMD
import Foundation
import Testing

@testable import TorporCheckpoint

@Suite("Codecs")
struct CodecTests {
    private func roundTrip(_ codec: ChunkCodec, _ input: [UInt8], dtype: DType) throws -> Int {
        let scratch = CodecScratch()
        var encoded = [UInt8](repeating: 0, count: ChunkCoder.maxEncodedSize(codec, rawSize: input.count))
        let size = try #require(
            input.withUnsafeBytes { source in
                encoded.withUnsafeMutableBytes {
                    ChunkCoder.encode(codec, source, dtype: dtype, into: $0, scratch: scratch)
                }
            })
        var decoded = [UInt8](repeating: 0xAA, count: input.count)
        try encoded.withUnsafeBytes { stored in
            try decoded.withUnsafeMutableBytes { output in
                try ChunkCoder.decode(
                    codec, UnsafeRawBufferPointer(rebasing: stored[0..<size]), into: output, scratch: scratch)
            }
        }
        #expect(decoded == input)
        return size
    }

    @Test("rANS round-trips skewed, uniform, single-symbol and empty streams")
    func ransRoundTrips() throws {
        var generator = SeededGenerator(seed: 7)
        let skewed = (0..<100_003).map { _ in
            UInt8(min(255, Int(-log(Double.random(in: 0.0001..<1, using: &generator)) * 3)))
        }
        let single = [UInt8](repeating: 9, count: 5000)
        for input in [skewed, randomBytes(70_001, generator: &generator), single, [], [1], [1, 2, 3]] {
            let encoded = try #require(ransEncoded(input, table: frequencyTable(input)))
            // The vector decoder (where the CPU has AVX2) and the portable one agree.
            for allowSIMD in [true, false] {
                var decoded = [UInt8](repeating: 0, count: input.count)
                try encoded.withUnsafeBytes { stored in
                    try decoded.withUnsafeMutableBytes {
                        try RANS.decode(stored, into: $0, scratch: CodecScratch(), allowSIMD: allowSIMD)
                    }
                }
                #expect(decoded == input, "allowSIMD: \(allowSIMD)")
            }
        }
        // The skewed stream's entropy is about 2.4 bits: the coder gets close to it.
        var counts = [Int](repeating: 0, count: 256)
        for byte in skewed { counts[Int(byte)] += 1 }
        let entropy = counts.filter { $0 > 0 }.reduce(0.0) {
            $0 - Double($1) / Double(skewed.count) * log2(Double($1) / Double(skewed.count))
        }
        let coded = try #require(ransEncoded(skewed, table: frequencyTable(skewed))).count
        #expect(Double(coded) * 8 / Double(skewed.count) < entropy * 1.01 + 0.05)
    }

    @Test("a plane is counted whole unless its spread sample is noise, and a noisy start does not decide it")
    func planesAreSampledBeforeCounting() {
        var generator = SeededGenerator(seed: 29)
        let size = 512 << 10
        let noise = randomBytes(size, generator: &generator)
        // Exponent-like bytes: few values, skewed.
        let skewed = (0..<size).map { _ in
            UInt8(min(255, 120 + Int(-log(Double.random(in: 0.0001..<1, using: &generator)) * 2)))
        }
        // Noise for the first quarter, then a few values: like MiniLM's fp32 position embeddings, whose first
        // eighth carries 7.99 bits a byte and the whole chunk 2.8.
        let noisyStart = Array(noise.prefix(size / 4)) + Array(skewed.prefix(size - size / 4))
        func counted(_ plane: [UInt8]) -> [Int]? {
            var counts = [Int](repeating: -1, count: 256)
            let whole = plane.withUnsafeBytes { bytes in
                counts.withUnsafeMutableBufferPointer { BytePlaneCodec.countUnlessNoise(bytes, into: $0) }
            }
            return whole ? counts : nil
        }
        func histogram(_ plane: [UInt8]) -> [Int] {
            var counts = [Int](repeating: 0, count: 256)
            for byte in plane { counts[Int(byte)] += 1 }
            return counts
        }
        #expect(counted(noise) == nil)
        #expect(counted(skewed) == histogram(skewed))
        #expect(counted(noisyStart) == histogram(noisyStart))
        // Below the sampled size every plane is counted whole, noise too; odd sizes count every byte once.
        let small = Array(noise.prefix(BytePlaneCodec.sampledPlaneBytes - 1))
        #expect(counted(small) == histogram(small))
        let odd = Array(skewed.prefix(BytePlaneCodec.sampledPlaneBytes * 3 + 77))
        #expect(counted(odd) == histogram(odd))
    }

    @Test("the rANS and byte-plane encoders give up on an output too small for them, never writing past its end")
    func encodersRespectTheirOutput() throws {
        var generator = SeededGenerator(seed: 23)
        let plane = (0..<50_000).map { _ in
            UInt8(min(255, Int(-log(Double.random(in: 0.0001..<1, using: &generator)) * 3)))
        }
        let table = frequencyTable(plane)
        let full = try #require(ransEncoded(plane, table: table))
        // The whole stream fits exactly; one byte less, or less than the header, does not.
        #expect(ransEncoded(plane, table: table, capacity: full.count) == full)
        for capacity in [full.count - 1, full.count / 2, 40, 0] {
            #expect(ransEncoded(plane, table: table, capacity: capacity) == nil, "capacity \(capacity)")
        }

        let scratch = CodecScratch()
        let weights = weightBytes(.bf16, count: 100_000, sigma: 0.02, generator: &generator)
        let noise = randomBytes(200_000, generator: &generator)
        for input in [weights, noise] {
            func encode(capacity: Int) -> (size: Int?, tail: [UInt8]) {
                // A guard region after the output: nothing may land in it.
                var buffer = [UInt8](repeating: 0x5A, count: capacity + 4096)
                let size = input.withUnsafeBytes { source in
                    buffer.withUnsafeMutableBytes {
                        BytePlaneCodec.encode(
                            source, dtype: .bf16, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<capacity]),
                            scratch: scratch)
                    }
                }
                return (size, Array(buffer[capacity...]))
            }
            let bound = encode(capacity: ChunkCoder.maxEncodedSize(.bytePlane, rawSize: input.count))
            let size = try #require(bound.size)
            for capacity in [size, size - 1, input.count, input.count / 2, 8] {
                let result = encode(capacity: capacity)
                #expect(result.tail.allSatisfy { $0 == 0x5A }, "capacity \(capacity) was overrun")
                #expect(result.size == (capacity >= size ? size : nil), "capacity \(capacity)")
            }
        }
        // Random bytes code to more than their size, so a packer offering the raw size gets nil and stores them raw.
        #expect(
            noise.withUnsafeBytes { source in
                var output = [UInt8](repeating: 0, count: noise.count)
                return output.withUnsafeMutableBytes {
                    BytePlaneCodec.encode(source, dtype: .bf16, into: $0, scratch: scratch)
                }
            } == nil)
    }

    @Test("the AVX-512 and AVX2 encoders write the portable encoder's bytes, for every tail length and both scales")
    func vectorEncodersMatchThePortableOne() throws {
        let kernels: [EncoderKernel] =
            (CTorporSIMD_hasAVX2() != 0 ? [.avx2] : []) + (CTorporSIMD_hasAVX512() != 0 ? [.avx512] : [])
        try #require(!kernels.isEmpty, "this CPU has neither AVX2 nor AVX-512: the vector encoders cannot run here")
        var generator = SeededGenerator(seed: 17)
        var inputs: [[UInt8]] = (0..<70).map { count in
            (0..<count).map { _ in UInt8(min(255, Int(-log(Double.random(in: 0.0001..<1, using: &generator)) * 3))) }
        }
        inputs.append(weightBytes(.bf16, count: 150_001, sigma: 0.02, generator: &generator))
        inputs.append(randomBytes(100_000, generator: &generator))
        inputs.append([UInt8](repeating: 7, count: 4096))
        for (number, input) in inputs.enumerated() {
            var counts = [Int](repeating: 0, count: 256)
            for byte in input { counts[Int(byte)] += 1 }
            for scaleBits in [12, 15] {
                let table = counts.withUnsafeBufferPointer {
                    RANS.FrequencyTable(counts: $0, total: max(input.count, 1), scaleBits: scaleBits)
                }
                let portable = try #require(ransEncoded(input, table: table, kernel: nil))
                for kernel in kernels {
                    #expect(
                        ransEncoded(input, table: table, kernel: kernel) == portable,
                        "input \(number) (\(input.count) bytes), \(kernel), scale \(scaleBits)")
                }
            }
        }
    }

    @Test("the encoder's reciprocal divides exactly for every frequency and every 32-bit state")
    func reciprocalDivision() {
        var generator = SeededGenerator(seed: 11)
        for scaleBits in [12, 15] {
            var counts = [Int](repeating: 1, count: 256)
            counts.withUnsafeMutableBufferPointer { counts in
                // Every frequency from 1 to 2^scaleBits: the table is only a carrier for the symbol's frequency.
                for frequency in 1...(1 << scaleBits) {
                    var table = RANS.FrequencyTable(
                        counts: UnsafeBufferPointer(counts), total: 256, scaleBits: scaleBits)
                    table.frequencies[0] = UInt32(frequency)
                    let symbol = RANS.EncodingSymbol(table: table, symbol: 0)
                    let f = UInt32(frequency)
                    var states: [UInt32] = [0, 1, f - 1, f, f + 1, UInt32.max, UInt32.max - 1, UInt32.max / f * f]
                    states += (0..<16).map { _ in UInt32.random(in: 0...UInt32.max, using: &generator) }
                    states += (0..<8).map { _ in UInt32.random(in: 1...(UInt32.max / f), using: &generator) * f &- 1 }
                    for x in states where symbol.quotient(x) != x / f {
                        Issue.record("\(x) / \(f): reciprocal gives \(symbol.quotient(x)), not \(x / f)")
                    }
                }
            }
        }
    }

    @Test("CRC-32 is zlib's: the standard check value, and every length against a bit-wise reference")
    func crc32CheckValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([]) == 0)
        var generator = SeededGenerator(seed: 13)
        let bytes = randomBytes(1 << 20, generator: &generator)
        // Every length from 0 to 300 around the vector paths' block sizes, against a bit-by-bit reference.
        for length in Array(0...300) + [4095, 4096, 4097, 1 << 20] {
            var reference: UInt32 = 0xFFFF_FFFF
            for byte in bytes.prefix(length) {
                reference ^= UInt32(byte)
                for _ in 0..<8 { reference = reference & 1 == 1 ? (reference >> 1) ^ 0xEDB8_8320 : reference >> 1 }
            }
            #expect(CRC32.checksum(Array(bytes.prefix(length))) == ~reference, "length \(length)")
        }
    }

    @Test("CRC-32's 256-byte VPCLMULQDQ folding agrees with libdeflate at every alignment, length and start value")
    func crc32WideFolding() throws {
        var generator = SeededGenerator(seed: 17)
        let bytes = randomBytes(70_000, generator: &generator)
        let lengths = [4096, 4097, 4351, 4352, 4353, 8191, 65_536, 65_536 + 255]
        bytes.withUnsafeBytes { all in
            for offset in [0, 1, 3, 8, 63] {
                for length in lengths {
                    let slice = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                    let expected = CTorporDeflate_crc32(0, slice.baseAddress, length)
                    #expect(CRC32.checksum(slice) == expected, "offset \(offset), length \(length)")
                }
            }
        }
        // The kernel itself, continuing from a non-zero CRC as chained calls do, wherever this CPU runs it.
        guard CTorporSIMD_hasVPCLMUL512() != 0 else { return }
        #expect(CRC32.wideFolding || SIMD.disabled)
        for (start, length) in [(0, 256), (5, 511), (0, 512), (9, 4096 + 17)] {
            try bytes.withUnsafeBytes { all in
                let data = try #require(all.baseAddress).advanced(by: start).assumingMemoryBound(to: UInt8.self)
                let previous: UInt32 = 0x1234_5678
                var state = [UInt8](repeating: 0, count: 256)
                let folded = CTorporSIMD_crc32Fold256(previous, data, length, &state)
                #expect(folded == length / 256 * 256)
                let head = CTorporDeflate_crc32(0xFFFF_FFFF, state, 256)
                let whole = CTorporDeflate_crc32(head, data + folded, length - folded)
                #expect(whole == CTorporDeflate_crc32(previous, data, length), "start \(start), length \(length)")
            }
        }
    }

    private func frequencyTable(_ input: [UInt8]) -> RANS.FrequencyTable {
        var counts = [Int](repeating: 0, count: 256)
        for byte in input { counts[Int(byte)] += 1 }
        return counts.withUnsafeBufferPointer {
            RANS.FrequencyTable(counts: $0, total: max(input.count, 1), scaleBits: RANS.defaultScaleBits)
        }
    }

    /// `input` rANS-coded with `table` into `capacity` bytes (the encoder's bound when nil); nil when it does not fit.
    private func ransEncoded(
        _ input: [UInt8], table: RANS.FrequencyTable, kernel: EncoderKernel? = EncoderKernel.available,
        capacity: Int? = nil
    ) -> [UInt8]? {
        var output = [UInt8](repeating: 0, count: capacity ?? RANS.maxEncodedSize(count: input.count))
        var words = [UInt16](repeating: 0, count: RANS.scratchWords(count: input.count))
        let size = input.withUnsafeBytes { source in
            words.withUnsafeMutableBufferPointer { words in
                output.withUnsafeMutableBytes {
                    RANS.encode(source, table: table, scratch: words, into: $0, kernel: kernel)
                }
            }
        }
        return size.map { Array(output.prefix($0)) }
    }

    @Test(
        "the float codec round-trips BF16, F16 and F32 and compresses weights to their plane floor",
        arguments: [DType.bf16, .f16, .f32])
    func bytePlaneRoundTrips(dtype: DType) throws {
        var generator = SeededGenerator(seed: 3)
        let input = weightBytes(dtype, count: 200_000, sigma: 0.02, generator: &generator)
        let size = try roundTrip(.bytePlane, input, dtype: dtype)
        let ratio = Double(size) / Double(input.count)
        // Gaussian weights: the exponent plane codes to ~2.6 bits, the rest stays raw.
        let ceiling: Double = [DType.bf16: 0.68, .f16: 0.86, .f32: 0.84][dtype]!
        #expect(ratio < ceiling, "ratio \(ratio)")
        // Odd element counts and unaligned sizes still round-trip.
        _ = try roundTrip(.bytePlane, Array(input.prefix(dtype.bitWidth / 8 * 7)), dtype: dtype)
    }

    @Test("zstd and raw chunks round-trip; zstd chunks are plain zstd frames")
    func zstdAndRaw() throws {
        var generator = SeededGenerator(seed: 5)
        let text = Array(String(repeating: "torpor keeps weights warm. ", count: 2000).utf8)
        let zstdSize = try roundTrip(.zstd, text, dtype: .u8)
        #expect(zstdSize < text.count / 20)
        #expect(try roundTrip(.raw, randomBytes(1000, generator: &generator), dtype: .u8) == 1000)
    }

    @Test("corrupted byte-plane and rANS payloads fail with a reason, never crash")
    func corruptPayloadsFail() throws {
        var generator = SeededGenerator(seed: 11)
        let input = weightBytes(.bf16, count: 30_000, sigma: 0.05, generator: &generator)
        let scratch = CodecScratch()
        var encoded = [UInt8](repeating: 0, count: ChunkCoder.maxEncodedSize(.bytePlane, rawSize: input.count))
        let size = try #require(
            input.withUnsafeBytes { source in
                encoded.withUnsafeMutableBytes {
                    BytePlaneCodec.encode(source, dtype: .bf16, into: $0, scratch: scratch)
                }
            })
        encoded.removeLast(encoded.count - size)
        var failures = 0
        var wrong = 0
        for trial in 0..<3000 {
            var mutated = encoded
            switch trial % 3 {
            case 0:
                let position = Int.random(in: 0..<mutated.count, using: &generator)
                mutated[position] ^= UInt8(1 << Int.random(in: 0..<8, using: &generator))
            case 1:
                mutated.removeLast(Int.random(in: 1..<mutated.count, using: &generator))
            default:
                for _ in 0..<4 {
                    mutated[Int.random(in: 0..<mutated.count, using: &generator)] = UInt8.random(
                        in: 0...255, using: &generator)
                }
            }
            var output = [UInt8](repeating: 0, count: input.count)
            do {
                try mutated.withUnsafeBytes { stored in
                    try output.withUnsafeMutableBytes { try BytePlaneCodec.decode(stored, into: $0, scratch: scratch) }
                }
                if output != input { wrong += 1 }
            } catch {
                failures += 1
            }
        }
        // Both decoders reject the same damaged rANS streams and never read outside their input.
        let scratch2 = CodecScratch()
        var plane = [UInt8](repeating: 0, count: 40_000)
        for index in plane.indices {
            plane[index] = UInt8(min(255, Int(-log(Double.random(in: 0.001..<1, using: &generator)) * 4)))
        }
        let stream = try #require(ransEncoded(plane, table: frequencyTable(plane)))
        for _ in 0..<1000 {
            var mutated = stream
            let position = Int.random(in: 0..<mutated.count, using: &generator)
            mutated[position] ^= UInt8(1 << Int.random(in: 0..<8, using: &generator))
            var results: [[UInt8]?] = []
            for allowSIMD in [true, false] {
                var output = [UInt8](repeating: 0, count: plane.count)
                do {
                    try mutated.withUnsafeBytes { bytes in
                        try output.withUnsafeMutableBytes {
                            try RANS.decode(bytes, into: $0, scratch: scratch2, allowSIMD: allowSIMD)
                        }
                    }
                    results.append(output)
                } catch {
                    results.append(nil)
                }
            }
            #expect(results[0] == results[1])
        }

        // Flips inside a raw plane decode to wrong bytes, which the chunk's CRC catches; damage to headers and
        // rANS streams must be reported by the decoder itself.
        #expect(failures > 1000, "\(failures) failures, \(wrong) wrong outputs")
    }
}
