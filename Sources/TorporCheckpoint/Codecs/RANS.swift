import CTorporSIMD
import FoundationEssentials
import Glibc

/// An order-0 range asymmetric numeral system (rANS) coder for one byte stream, built so both a CPU core and a
/// GPU warp decode it quickly.
///
/// Symbol *i* belongs to lane *i* mod `lanes`; every lane has its own 32-bit state and its own stream of 16-bit
/// words, so the lanes decode independently (one GPU thread each, or interleaved on a CPU for instruction-level
/// parallelism). States live in [2^16, 2^32) and renormalize by exactly one 16-bit word when they fall below
/// 2^16. Frequencies are quantized to a total of 2^`scaleBits` (at most 2^15, so each fits 16 bits).
///
/// Encoded layout (little-endian), specified in docs/FORMAT.md:
///
///     u16 lanes, u8 scaleBits, u8 reserved(0), u32 symbolCount,
///     32-byte presence bitmap (bit s set when symbol s occurs),
///     u16 frequency per present symbol, in symbol order, padded to 4 bytes,
///     u32 initial decoder state per lane, u32 word count per lane,
///     the lanes' 16-bit words, lane 0 first.
///
/// Decoding checks that every lane consumes exactly its words and ends in the encoder's initial state, so a
/// corrupted stream is detected even before the chunk's CRC is compared.
enum RANS {
    static let lowerBound: UInt32 = 1 << 16
    static let defaultLanes = 32
    static let defaultScaleBits = 12

    /// A quantized frequency table.
    struct FrequencyTable {
        var frequencies = [UInt32](repeating: 0, count: 256)
        var starts = [UInt32](repeating: 0, count: 256)
        var scaleBits: Int

        /// Quantizes `counts` (which sum to `total` > 0) so that each symbol present keeps a frequency ≥ 1 and
        /// the frequencies sum to 2^scaleBits.
        init(counts: UnsafeBufferPointer<Int>, total: Int, scaleBits: Int) {
            self.scaleBits = scaleBits
            let target = 1 << scaleBits
            var sum = 0
            var largest = 0
            for symbol in 0..<256 where counts[symbol] > 0 {
                let scaled = max(1, Int((Double(counts[symbol]) * Double(target) / Double(total)).rounded()))
                frequencies[symbol] = UInt32(scaled)
                sum += scaled
                if counts[symbol] > counts[largest] || counts[largest] == 0 { largest = symbol }
            }
            if sum < target {
                frequencies[largest] += UInt32(target - sum)
            } else if sum > target {
                var excess = sum - target
                // Take the excess from the most frequent symbols first, where it costs the least.
                let order = (0..<256).filter { frequencies[$0] > 1 }.sorted { frequencies[$0] > frequencies[$1] }
                while excess > 0 {
                    for symbol in order where excess > 0 && frequencies[symbol] > 1 {
                        let take = min(excess, max(1, Int(frequencies[symbol]) / 16), Int(frequencies[symbol]) - 1)
                        frequencies[symbol] -= UInt32(take)
                        excess -= take
                    }
                }
            }
            var start: UInt32 = 0
            for symbol in 0..<256 {
                starts[symbol] = start
                start += frequencies[symbol]
            }
        }

        /// The coded size in bits of `counts` under this table (exact to within the final states).
        func codedBits(counts: UnsafeBufferPointer<Int>) -> Double {
            var bits = 0.0
            for symbol in 0..<256 where counts[symbol] > 0 {
                bits += Double(counts[symbol]) * (Double(scaleBits) - log2(Double(frequencies[symbol])))
            }
            return bits
        }

        var presentSymbolCount: Int { frequencies.reduce(0) { $0 + ($1 > 0 ? 1 : 0) } }

        /// Bytes of the table and lane headers in an encoded stream.
        func headerBytes(lanes: Int) -> Int {
            let table = 8 + 32 + 2 * presentSymbolCount
            return (table + 3) & ~3 + 8 * lanes
        }
    }

    /// What the encoder needs of one symbol, in one place: its frequency and start, the state at which a word
    /// must be flushed first, and a reciprocal that replaces the division by the frequency (the encoder's slowest
    /// step): for every x < 2^32, x / f == (x * m) >> s with s = 32 + ceil(log2 f) and m = ceil(2^s / f). m can
    /// need 33 bits, so the product is taken at 128 bits.
    struct EncodingSymbol {
        var frequency: UInt32 = 0
        var start: UInt32 = 0
        var limit: UInt64 = 0
        var reciprocal: UInt64 = 0
        var shift: UInt64 = 0

        init(table: FrequencyTable, symbol: Int) {
            guard table.frequencies[symbol] > 0 else { return }
            frequency = table.frequencies[symbol]
            start = table.starts[symbol]
            limit = (UInt64(lowerBound >> UInt32(table.scaleBits)) << 16) * UInt64(frequency)
            shift = 32 + UInt64(32 - (frequency - 1).leadingZeroBitCount)
            reciprocal = ((1 << shift) + UInt64(frequency) - 1) / UInt64(frequency)
        }

        /// x / frequency.
        @inline(__always)
        func quotient(_ x: UInt32) -> UInt32 {
            let (high, low) = UInt64(x).multipliedFullWidth(by: reciprocal)
            return UInt32(truncatingIfNeeded: high &<< (64 &- shift) | low &>> shift)
        }
    }

    /// An upper bound on the encoded size of `count` symbols.
    static func maxEncodedSize(count: Int, lanes: Int = defaultLanes) -> Int {
        8 + 32 + 512 + 8 * lanes + 2 * (count + lanes)
    }

    /// How far apart the lanes' regions of `encode`'s scratch words lie: a lane's most words (one a symbol) and a
    /// spare slot, rounded up to an odd number of 64-byte lines. Regions a multiple of 4 KiB apart would all map to
    /// one L1 cache set, and the encoder's stores, which go to all 32 lanes in turn, would then miss L1.
    static func laneStride(count: Int, lanes: Int = defaultLanes) -> Int {
        let perLane = (count + lanes - 1) / lanes + 1
        return (((perLane + 31) / 32) | 1) * 32
    }

    /// The 16-bit words of working space `encode` needs for `count` symbols.
    static func scratchWords(count: Int, lanes: Int = defaultLanes) -> Int {
        lanes * laneStride(count: count, lanes: lanes)
    }

    /// Encodes `input` with `table` into `output`; `maxEncodedSize(count:)` bytes always suffice.
    /// - Parameters:
    ///   - scratch: at least `scratchWords(count: input.count)` 16-bit words of working space.
    ///   - output: any size; a stream that would not fit is not written past its end.
    ///   - kernel: the vector encoder for whole 32-symbol groups (32 lanes only), nil for the portable loop alone;
    ///     every choice writes the same bytes.
    /// - Returns: the number of bytes written, or nil when the stream does not fit in `output`.
    static func encode(
        _ input: UnsafeRawBufferPointer,
        table: FrequencyTable,
        lanes: Int = defaultLanes,
        scratch: UnsafeMutableBufferPointer<UInt16>,
        into output: UnsafeMutableRawBufferPointer,
        kernel: EncoderKernel? = EncoderKernel.available
    ) -> Int? {
        let count = input.count
        let scaleBits = UInt32(table.scaleBits)
        let perLane = (count + lanes - 1) / lanes + 1
        let stride = laneStride(count: count, lanes: lanes)
        precondition(scratch.count >= stride * lanes)
        guard output.count >= table.headerBytes(lanes: lanes) else { return nil }

        // Header: lanes, scale, count, presence bitmap, frequencies.
        output.storeLE(UInt16(lanes), at: 0)
        output.storeLE(UInt8(table.scaleBits), at: 2)
        output.storeLE(UInt8(0), at: 3)
        output.storeLE(UInt32(count), at: 4)
        var position = 8
        for word in 0..<8 {
            var bits: UInt32 = 0
            for bit in 0..<32 where table.frequencies[word * 32 + bit] > 0 { bits |= 1 << UInt32(bit) }
            output.storeLE(bits, at: position)
            position += 4
        }
        for symbol in 0..<256 where table.frequencies[symbol] > 0 {
            output.storeLE(UInt16(table.frequencies[symbol]), at: position)
            position += 2
        }
        while position % 4 != 0 {
            output.storeLE(UInt8(0), at: position)
            position += 1
        }
        let statesAt = position
        let countsAt = statesAt + 4 * lanes
        var wordsAt = countsAt + 4 * lanes

        let symbols = (0..<256).map { EncodingSymbol(table: table, symbol: $0) }
        var states = [UInt32](repeating: lowerBound, count: lanes)
        var cursors = [Int](repeating: 0, count: lanes)
        // Lane l's words end at l * stride + perLane and grow down; the slot below the last one is its spare.
        for lane in 0..<lanes { cursors[lane] = lane * stride + perLane }
        let bytes = input.bindMemory(to: UInt8.self)
        // The vector kernels take whole groups of 32 symbols; the symbols after the last whole group are encoded
        // first, here, as encoding runs from the end of the stream to its start.
        let vectorSymbols =
            kernel != nil && lanes == defaultLanes && stride * lanes < Int(Int32.max) ? count / 32 * 32 : 0
        symbols.withUnsafeBufferPointer { symbols in
            states.withUnsafeMutableBufferPointer { states in
                cursors.withUnsafeMutableBufferPointer { cursors in
                    var index = count - 1
                    var lane = index % lanes
                    while index >= vectorSymbols {
                        let symbol = symbols[Int(bytes[index])]
                        // Branch-free renormalization (the flush is as unpredictable as the data): the low word
                        // is always stored at the lane's next free slot but only kept when the cursor moves past
                        // it. A lane never fills its region, so the slot is always the lane's own.
                        var x = states[lane]
                        let flush = UInt64(x) >= symbol.limit ? 1 : 0
                        let cursor = cursors[lane] &- 1
                        scratch[cursor] = UInt16(truncatingIfNeeded: x)
                        cursors[lane] = cursor &+ 1 &- flush
                        x >>= UInt32(truncatingIfNeeded: flush &<< 4)
                        let quotient = symbol.quotient(x)
                        states[lane] = (quotient << scaleBits) &+ (x &- quotient &* symbol.frequency) &+ symbol.start
                        index -= 1
                        lane = lane == 0 ? lanes - 1 : lane - 1
                    }
                }
            }
        }
        if let kernel, vectorSymbols > 0 {
            var entries = [UInt32](repeating: 0, count: 256)
            var reciprocals = [Float](repeating: 0, count: 256)
            for symbol in 0..<256 where table.frequencies[symbol] > 0 {
                entries[symbol] = table.starts[symbol] << 16 | table.frequencies[symbol]
                reciprocals[symbol] = 1 / Float(table.frequencies[symbol])
            }
            var laneCursors = cursors.map { Int32($0) }
            kernel.encode(
                groups: vectorSymbols / 32, input: bytes.baseAddress!, entries: entries, reciprocals: reciprocals,
                scaleBits: scaleBits, states: &states, cursors: &laneCursors, words: scratch.baseAddress!)
            cursors = laneCursors.map { Int($0) }
        }
        // The words follow the header and the lanes' states and counts; the header is already in place.
        let wordBytes = (0..<lanes).reduce(0) { total, lane in total + 2 * (lane * stride + perLane - cursors[lane]) }
        guard wordsAt + wordBytes <= output.count else { return nil }
        for lane in 0..<lanes {
            output.storeLE(states[lane], at: statesAt + 4 * lane)
            let begin = cursors[lane]
            let end = lane * stride + perLane
            output.storeLE(UInt32(end - begin), at: countsAt + 4 * lane)
            #if _endian(little)
                let stored = UnsafeRawBufferPointer(UnsafeMutableBufferPointer(rebasing: scratch[begin..<end]))
                UnsafeMutableRawBufferPointer(rebasing: output[wordsAt..<(wordsAt + stored.count)]).copyMemory(
                    from: stored)
                wordsAt += stored.count
            #else
                for word in begin..<end {
                    output.storeLE(scratch[word], at: wordsAt)
                    wordsAt += 2
                }
            #endif
        }
        return wordsAt
    }

    /// Whether the AVX2 decoder can run here; `TORPOR_DISABLE_SIMD=1` turns it off.
    static let simdAvailable: Bool = CTorporSIMD_hasAVX2() != 0 && !SIMD.disabled

    /// Decodes a stream written by `encode` into `output`, whose size must equal the stream's symbol count.
    /// - Throws: a message naming what is inconsistent, for any malformed or corrupted stream.
    static func decode(
        _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, scratch: CodecScratch,
        allowSIMD: Bool = true
    ) throws(CodecFailure) {
        guard input.count >= 40 else {
            throw CodecFailure("rANS stream of \(input.count) bytes is shorter than its header")
        }
        let lanes = Int(input.loadLE(UInt16.self, at: 0))
        let scaleBits = Int(input.loadLE(UInt8.self, at: 2))
        let count = Int(input.loadLE(UInt32.self, at: 4))
        guard lanes >= 1, lanes <= 1024 else { throw CodecFailure("rANS lane count \(lanes) is out of range") }
        guard scaleBits >= 1, scaleBits <= 15 else { throw CodecFailure("rANS scale \(scaleBits) is out of range") }
        guard count == output.count else {
            throw CodecFailure("rANS stream holds \(count) symbols, expected \(output.count)")
        }
        var position = 8
        var present: [Int] = []
        for word in 0..<8 {
            let bits = input.loadLE(UInt32.self, at: position)
            position += 4
            for bit in 0..<32 where bits & (1 << UInt32(bit)) != 0 { present.append(word * 32 + bit) }
        }
        guard !present.isEmpty || count == 0 else { throw CodecFailure("rANS table has no symbols") }
        guard position + 2 * present.count <= input.count else { throw CodecFailure("rANS table is truncated") }
        let total = UInt32(1) << UInt32(scaleBits)
        var frequencies = [UInt32](repeating: 0, count: 256)
        var starts = [UInt32](repeating: 0, count: 256)
        var sum: UInt32 = 0
        for symbol in present {
            let frequency = UInt32(input.loadLE(UInt16.self, at: position))
            position += 2
            guard frequency > 0, sum + frequency <= total else {
                throw CodecFailure("rANS frequencies do not sum to 2^\(scaleBits)")
            }
            frequencies[symbol] = frequency
            starts[symbol] = sum
            sum += frequency
        }
        guard sum == total || count == 0 else { throw CodecFailure("rANS frequencies do not sum to 2^\(scaleBits)") }
        position = (position + 3) & ~3
        let statesAt = position
        let countsAt = statesAt + 4 * lanes
        var wordsAt = countsAt + 4 * lanes
        guard wordsAt <= input.count else { throw CodecFailure("rANS lane headers are truncated") }
        guard count > 0 else { return }

        var states = [UInt32](repeating: 0, count: lanes)
        var cursors = [Int](repeating: 0, count: lanes)
        var ends = [Int](repeating: 0, count: lanes)
        for lane in 0..<lanes {
            states[lane] = input.loadLE(UInt32.self, at: statesAt + 4 * lane)
            guard states[lane] >= lowerBound else { throw CodecFailure("rANS lane \(lane) starts in an invalid state") }
            let words = Int(input.loadLE(UInt32.self, at: countsAt + 4 * lane))
            cursors[lane] = wordsAt
            wordsAt += 2 * words
            guard wordsAt <= input.count else {
                throw CodecFailure("rANS lane \(lane) runs past the end of the stream")
            }
            ends[lane] = wordsAt
        }
        guard wordsAt == input.count else {
            throw CodecFailure("rANS stream has \(input.count - wordsAt) bytes after its last lane")
        }

        // The words are decoded from a copy with zeroed slack after them: a lane reads at most one word per
        // symbol (4 bytes at a time in the vector kernel), so even a corrupted stream cannot read outside the
        // copy, and the inner loops need no bounds checks. Overruns show up afterwards as a cursor past its end.
        let wordsStart = countsAt + 4 * lanes
        let slack = 2 * ((count + lanes - 1) / lanes + 1) + 4
        let copy = scratch.buffer(.streamCopy, bytes: input.count - wordsStart + slack)
        copy.copyMemory(from: UnsafeRawBufferPointer(rebasing: input[wordsStart...]))
        UnsafeMutableRawBufferPointer(rebasing: copy[(input.count - wordsStart)...]).initializeMemory(
            as: UInt8.self, repeating: 0)
        for lane in 0..<lanes {
            cursors[lane] -= wordsStart
            ends[lane] -= wordsStart
        }
        let slots = Int(total)
        let output = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        if allowSIMD && simdAvailable && lanes == defaultLanes && scaleBits == 12 && copy.count < Int(Int32.max) {
            // One packed 32-bit entry per slot: (frequency - 1) << 20 | (slot - start) << 8 | symbol.
            let entries = scratch.buffer(.decodeTables, bytes: 4 * slots).bindMemory(to: UInt32.self)
            for symbol in present {
                let start = Int(starts[symbol])
                let packed = (frequencies[symbol] - 1) << 20 | UInt32(symbol)
                for slot in start..<(start + Int(frequencies[symbol])) {
                    entries[slot] = packed | UInt32(slot - start) << 8
                }
            }
            var laneCursors = cursors.map { Int32($0) }
            states.withUnsafeMutableBufferPointer { states in
                laneCursors.withUnsafeMutableBufferPointer { laneCursors in
                    CTorporSIMD_ransDecode32(
                        count, entries.baseAddress!, copy.baseAddress!.assumingMemoryBound(to: UInt8.self),
                        states.baseAddress!, laneCursors.baseAddress!, output)
                }
            }
            cursors = laneCursors.map { Int($0) }
        } else {
            // Decode table: for each slot, (frequency << 16 | slot - start) on the state's critical path, and the
            // symbol in a separate byte table.
            let tables = scratch.buffer(.decodeTables, bytes: 5 * slots)
            let decodeEntries = UnsafeMutableRawBufferPointer(rebasing: tables[0..<(4 * slots)]).bindMemory(
                to: UInt32.self)
            let decodeSymbols = UnsafeMutableRawBufferPointer(rebasing: tables[(4 * slots)...]).bindMemory(
                to: UInt8.self)
            for symbol in present {
                let start = Int(starts[symbol])
                for slot in start..<(start + Int(frequencies[symbol])) {
                    decodeEntries[slot] = frequencies[symbol] << 16 | UInt32(slot - start)
                    decodeSymbols[slot] = UInt8(symbol)
                }
            }

            states.withUnsafeMutableBufferPointer { states in
                cursors.withUnsafeMutableBufferPointer { cursors in
                    RANS.decodeLoop(
                        count: count, lanes: lanes, scaleBits: UInt32(scaleBits),
                        entries: UnsafePointer(decodeEntries.baseAddress!),
                        symbols: UnsafePointer(decodeSymbols.baseAddress!), words: UnsafeRawPointer(copy.baseAddress!),
                        states: states.baseAddress!, cursors: cursors.baseAddress!, output: output)
                }
            }
        }
        for lane in 0..<lanes where states[lane] != lowerBound || cursors[lane] != ends[lane] {
            throw CodecFailure("rANS lane \(lane) does not end where its encoder began (corrupted data)")
        }
    }
}

extension RANS {
    /// The decoder's inner loop, kept in one function over raw pointers so its state stays in registers.
    /// `words` must have room for one 16-bit read per symbol past any lane's start.
    @inline(never)
    fileprivate static func decodeLoop(
        count: Int,
        lanes: Int,
        scaleBits: UInt32,
        entries: UnsafePointer<UInt32>,
        symbols: UnsafePointer<UInt8>,
        words: UnsafeRawPointer,
        states: UnsafeMutablePointer<UInt32>,
        cursors: UnsafeMutablePointer<Int>,
        output: UnsafeMutablePointer<UInt8>
    ) {
        let mask = (UInt32(1) << scaleBits) &- 1
        @inline(__always)
        func step(_ lane: Int, _ index: Int) {
            var x = states[lane]
            let slot = Int(x & mask)
            let entry = entries[slot]
            output[index] = symbols[slot]
            x = (entry &>> 16) &* (x &>> scaleBits) &+ (entry & 0xFFFF)
            if x < lowerBound {
                let cursor = cursors[lane]
                x =
                    (x &<< 16)
                    | UInt32(UInt16(littleEndian: words.loadUnaligned(fromByteOffset: cursor, as: UInt16.self)))
                cursors[lane] = cursor &+ 2
            }
            states[lane] = x
        }
        var index = 0
        if lanes == defaultLanes {
            // The writer's lane count: a loop with a constant trip count that the compiler unrolls.
            while index &+ defaultLanes <= count {
                for lane in 0..<defaultLanes { step(lane, index &+ lane) }
                index &+= defaultLanes
            }
        }
        while index < count {
            let groupEnd = min(index &+ lanes, count)
            var lane = 0
            while index < groupEnd {
                step(lane, index)
                index &+= 1
                lane &+= 1
            }
        }
    }
}

/// The vector encoder this CPU runs (CTorporSIMD's rans_encode.c), if any: AVX-512 where present, else AVX2.
/// `TORPOR_DISABLE_SIMD=1` turns both off, as it does the vector decoder.
enum EncoderKernel {
    case avx512
    case avx2

    static let available: EncoderKernel? =
        if !RANS.simdAvailable {
            nil
        } else if CTorporSIMD_hasAVX512() != 0 {
            .avx512
        } else {
            .avx2
        }

    func encode(
        groups: Int, input: UnsafePointer<UInt8>, entries: [UInt32], reciprocals: [Float], scaleBits: UInt32,
        states: inout [UInt32], cursors: inout [Int32], words: UnsafeMutablePointer<UInt16>
    ) {
        let kernel = self == .avx512 ? CTorporSIMD_ransEncode32AVX512 : CTorporSIMD_ransEncode32AVX2
        kernel(groups, input, entries, reciprocals, scaleBits, &states, &cursors, words)
    }
}

/// Why a chunk could not be decoded; the caller adds the file, tensor and chunk.
struct CodecFailure: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}
