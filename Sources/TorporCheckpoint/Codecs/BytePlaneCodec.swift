import Glibc

/// The float codec: splits 16- and 32-bit floats into byte planes and entropy-codes each plane that pays.
///
/// Trained weights are nearly incompressible byte by byte, except for the bits of the exponent, which take few
/// values. Gathering the exponent into one plane and coding it with an order-0 rANS coder reaches the byte-plane
/// entropy floor (about 0.67 of bf16's size) where zstd on the interleaved bytes stalls at about 0.78.
///
/// Layouts (`transform`):
/// - 0, plain: plane *k* holds byte *k* of each little-endian element (F16).
/// - 1, exponent-aligned: for BF16, and for the high half of F32, the sign bit moves next to the mantissa so that
///   one plane holds the whole 8-bit exponent: `e = (w >> 7) & 0xFF`, `sm = (w >> 8) & 0x80 | w & 0x7F`.
///
/// Payload (little-endian): u8 version (1), u8 width (2 or 4), u8 transform, u8 reserved (0), u32 elementCount;
/// per plane 12 bytes: u8 encoding (0 raw, 1 rANS), 3 reserved bytes, u32 offset, u32 length; the planes follow,
/// each starting at a 16-byte boundary of the payload.
enum BytePlaneCodec {
    static let version: UInt8 = 1

    enum Transform: UInt8 {
        case plain = 0
        case exponentAligned = 1
    }

    enum PlaneEncoding: UInt8 {
        case raw = 0
        case rans = 1
    }

    /// A plane is entropy-coded only when that saves at least this fraction of its size; below that, storing it
    /// raw decodes faster for almost the same size.
    static let minimumSaving = 0.01

    /// A plane of at least `sampledPlaneBytes` whose sample (the first `sampleWidth` bytes of every `samplePeriod`,
    /// an eighth spread over the whole plane) carries at least `sampleEntropyCutoff` bits a byte is stored raw
    /// without counting the rest: the mantissa planes of trained weights are noise, and counting them was 7 % of a
    /// bf16 pack's CPU time. Coding pays only below about 7.92 bits (`minimumSaving`), and a sample's estimate falls
    /// short of its plane's entropy by 0.003–0.02 bits, so the cut-off leaves a margin. The sample is spread rather
    /// than the plane's start because real tensors change along their rows: MiniLM's fp32 position embeddings carry
    /// 7.99 bits a byte in their first eighth and 2.8 over the whole chunk. Still, a plane whose compressible bytes
    /// all fall between the samples would be stored raw where coding would have saved a little.
    static let sampledPlaneBytes = 64 << 10
    static let samplePeriod = 512
    static let sampleWidth = 64
    static let sampleEntropyCutoff = 7.96

    static func headerSize(width: Int) -> Int { (8 + 12 * width + 15) & ~15 }

    /// An upper bound for any width: `width` planes of `rawSize / width` symbols, each coding to at most
    /// `RANS.maxEncodedSize` plus alignment.
    static func maxEncodedSize(rawSize: Int) -> Int {
        [2, 4].map { width in
            headerSize(width: width) + width * (RANS.maxEncodedSize(count: rawSize / width) + 16)
        }.max()!
    }

    static func transform(for dtype: DType) -> Transform {
        dtype == .f16 ? .plain : .exponentAligned
    }

    /// Encodes one chunk of `dtype` elements (BF16, F16 or F32) into `output`, which may be of any size:
    /// `maxEncodedSize` always suffices; a packer that keeps only encodings smaller than the input gives it that much.
    /// - Returns: the bytes written, or nil when the input is not whole elements of a supported width or its
    ///   encoding does not fit in `output`.
    static func encode(
        _ input: UnsafeRawBufferPointer,
        dtype: DType,
        into output: UnsafeMutableRawBufferPointer,
        scratch: CodecScratch
    ) -> Int? {
        guard dtype.isPlaneSplittableFloat else { return nil }
        let width = dtype.bitWidth / 8
        guard input.count % width == 0 else { return nil }
        let count = input.count / width
        let layout = transform(for: dtype)
        var position = headerSize(width: width)
        guard output.count >= position else { return nil }
        let planes = scratch.buffer(.planes, bytes: input.count)
        split(input, width: width, transform: layout, into: planes)

        output.storeLE(version, at: 0)
        output.storeLE(UInt8(width), at: 1)
        output.storeLE(layout.rawValue, at: 2)
        output.storeLE(UInt8(0), at: 3)
        output.storeLE(UInt32(count), at: 4)
        for header in 8..<position { output.storeLE(UInt8(0), at: header) }

        let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: 256)
        defer { counts.deallocate() }
        for plane in 0..<width {
            let bytes = UnsafeRawBufferPointer(rebasing: planes[(plane * count)..<((plane + 1) * count)])
            var encoding = PlaneEncoding.raw
            var length = count
            if count > 0, countUnlessNoise(bytes, into: counts) {
                let table = RANS.FrequencyTable(
                    counts: UnsafeBufferPointer(counts), total: count, scaleBits: RANS.defaultScaleBits)
                let estimate =
                    table.codedBits(counts: UnsafeBufferPointer(counts)) / 8
                    + Double(table.headerBytes(lanes: RANS.defaultLanes))
                if estimate < Double(count) * (1 - minimumSaving) {
                    // Coded only where it is smaller than the raw plane.
                    let destination = UnsafeMutableRawBufferPointer(
                        rebasing: output[position..<min(output.count, position + count - 1)])
                    let words = scratch.buffer(.words, bytes: 2 * RANS.scratchWords(count: count)).bindMemory(
                        to: UInt16.self)
                    if let written = RANS.encode(bytes, table: table, scratch: words, into: destination) {
                        encoding = .rans
                        length = written
                    }
                }
            }
            let aligned = (position + length + 15) & ~15
            guard aligned <= output.count else { return nil }
            if encoding == .raw {
                UnsafeMutableRawBufferPointer(rebasing: output[position..<(position + count)]).copyMemory(from: bytes)
            }
            let entry = 8 + 12 * plane
            output.storeLE(encoding.rawValue, at: entry)
            output.storeLE(UInt32(position), at: entry + 4)
            output.storeLE(UInt32(length), at: entry + 8)
            for pad in (position + length)..<aligned { output.storeLE(UInt8(0), at: pad) }
            position = aligned
        }
        return position
    }

    /// Decodes one chunk into `output` (the chunk's uncompressed size).
    static func decode(
        _ input: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer,
        scratch: CodecScratch
    ) throws(CodecFailure) {
        guard input.count >= 8 else { throw CodecFailure("byte-plane chunk of \(input.count) bytes has no header") }
        let chunkVersion = input.loadLE(UInt8.self, at: 0)
        guard chunkVersion == version else {
            throw CodecFailure(
                "byte-plane chunk version \(chunkVersion) is not supported (this reader knows \(version))")
        }
        let width = Int(input.loadLE(UInt8.self, at: 1))
        guard width == 2 || width == 4 else { throw CodecFailure("byte-plane element width \(width) is not 2 or 4") }
        guard let layout = Transform(rawValue: input.loadLE(UInt8.self, at: 2)) else {
            throw CodecFailure("byte-plane transform \(input.loadLE(UInt8.self, at: 2)) is unknown")
        }
        let count = Int(input.loadLE(UInt32.self, at: 4))
        guard count * width == output.count else {
            throw CodecFailure(
                "byte-plane chunk holds \(count) elements of \(width) bytes, expected \(output.count) bytes")
        }
        guard input.count >= headerSize(width: width) else { throw CodecFailure("byte-plane header is truncated") }

        let decoded = scratch.buffer(.planes, bytes: output.count)
        var sources: [UnsafeRawPointer?] = []
        for plane in 0..<width {
            let entry = 8 + 12 * plane
            let offset = Int(input.loadLE(UInt32.self, at: entry + 4))
            let length = Int(input.loadLE(UInt32.self, at: entry + 8))
            guard offset >= headerSize(width: width), offset <= input.count, length <= input.count - offset else {
                throw CodecFailure("byte-plane plane \(plane) lies outside the chunk")
            }
            let bytes = UnsafeRawBufferPointer(rebasing: input[offset..<(offset + length)])
            switch PlaneEncoding(rawValue: input.loadLE(UInt8.self, at: entry)) {
            case .raw:
                guard length == count else {
                    throw CodecFailure("byte-plane raw plane \(plane) holds \(length) bytes, expected \(count)")
                }
                sources.append(bytes.baseAddress)
            case .rans:
                let target = UnsafeMutableRawBufferPointer(rebasing: decoded[(plane * count)..<((plane + 1) * count)])
                do {
                    try RANS.decode(bytes, into: target, scratch: scratch)
                } catch {
                    throw CodecFailure("plane \(plane): \(error.reason)")
                }
                sources.append(UnsafeRawPointer(target.baseAddress))
            case nil:
                throw CodecFailure("byte-plane plane \(plane) has an unknown encoding")
            }
        }
        guard count > 0 else { return }
        merge(sources.map { $0! }, count: count, width: width, transform: layout, into: output)
    }

    /// Counts `bytes` into `counts`, or returns false once a sample of a large plane shows it not worth coding.
    static func countUnlessNoise(_ bytes: UnsafeRawBufferPointer, into counts: UnsafeMutableBufferPointer<Int>)
        -> Bool
    {
        guard bytes.count >= sampledPlaneBytes else {
            histogram(bytes, into: counts)
            return true
        }
        histogram(bytes, of: .sample, into: counts)
        guard entropyBits(counts) < sampleEntropyCutoff else { return false }
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 256) { rest in
            histogram(bytes, of: .rest, into: rest)
            for symbol in 0..<256 { counts[symbol] += rest[symbol] }
        }
        return true
    }

    /// The Shannon entropy in bits a byte of bytes counted in `counts` (0 for none).
    static func entropyBits(_ counts: some Collection<Int>) -> Double {
        let total = counts.reduce(0, +)
        guard total > 0 else { return 0 }
        var bits = 0.0
        for count in counts where count > 0 { bits += Double(count) * log2(Double(total) / Double(count)) }
        return bits / Double(total)
    }

    /// Which bytes `histogram` counts: all, the sample (the first `sampleWidth` of every `samplePeriod`), or the rest.
    enum Selection {
        case all, sample, rest
    }

    static func histogram(
        _ bytes: UnsafeRawBufferPointer, of selection: Selection = .all, into counts: UnsafeMutableBufferPointer<Int>
    ) {
        // Four interleaved tables avoid the store-to-load stall of repeated symbols.
        var tables = [Int](repeating: 0, count: 1024)
        tables.withUnsafeMutableBufferPointer { tables in
            let data = bytes.bindMemory(to: UInt8.self)
            @inline(__always) func count(_ range: Range<Int>) {
                let blocks = range.count / 4
                for block in 0..<blocks {
                    let base = range.lowerBound &+ block &* 4
                    tables[Int(data[base])] &+= 1
                    tables[256 &+ Int(data[base &+ 1])] &+= 1
                    tables[512 &+ Int(data[base &+ 2])] &+= 1
                    tables[768 &+ Int(data[base &+ 3])] &+= 1
                }
                for index in (range.lowerBound + blocks * 4)..<range.upperBound { tables[Int(data[index])] &+= 1 }
            }
            switch selection {
            case .all:
                count(0..<data.count)
            case .sample:
                for start in stride(from: 0, to: data.count, by: samplePeriod) {
                    count(start..<min(start + sampleWidth, data.count))
                }
            case .rest:
                for start in stride(from: 0, to: data.count, by: samplePeriod) {
                    count(min(start + sampleWidth, data.count)..<min(start + samplePeriod, data.count))
                }
            }
            for symbol in 0..<256 {
                counts[symbol] = tables[symbol] + tables[256 + symbol] + tables[512 + symbol] + tables[768 + symbol]
            }
        }
    }

    /// Splits elements into planes: plane k occupies `planes[k * count ..< (k + 1) * count]`.
    static func split(
        _ input: UnsafeRawBufferPointer,
        width: Int,
        transform: Transform,
        into planes: UnsafeMutableRawBufferPointer
    ) {
        let count = input.count / width
        let out = planes.bindMemory(to: UInt8.self).baseAddress!
        if width == 2 {
            let words = input.baseAddress!
            let plane0 = out
            let plane1 = out + count
            if transform == .exponentAligned {
                for index in 0..<count {
                    let w = UInt16(littleEndian: words.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self))
                    plane0[index] = UInt8(truncatingIfNeeded: (w >> 8) & 0x80 | w & 0x7F)
                    plane1[index] = UInt8(truncatingIfNeeded: w >> 7)
                }
            } else {
                for index in 0..<count {
                    let w = UInt16(littleEndian: words.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self))
                    plane0[index] = UInt8(truncatingIfNeeded: w)
                    plane1[index] = UInt8(truncatingIfNeeded: w >> 8)
                }
            }
        } else {
            let words = input.baseAddress!
            let aligned = transform == .exponentAligned
            for index in 0..<count {
                let w = UInt32(littleEndian: words.loadUnaligned(fromByteOffset: index &* 4, as: UInt32.self))
                out[index] = UInt8(truncatingIfNeeded: w)
                out[count &+ index] = UInt8(truncatingIfNeeded: w >> 8)
                let high = w >> 16
                if aligned {
                    out[2 &* count &+ index] = UInt8(truncatingIfNeeded: (high >> 8) & 0x80 | high & 0x7F)
                    out[3 &* count &+ index] = UInt8(truncatingIfNeeded: high >> 7)
                } else {
                    out[2 &* count &+ index] = UInt8(truncatingIfNeeded: high)
                    out[3 &* count &+ index] = UInt8(truncatingIfNeeded: high >> 8)
                }
            }
        }
    }

    /// The inverse of `split`, reading plane k from `sources[k]`.
    static func merge(
        _ sources: [UnsafeRawPointer],
        count: Int,
        width: Int,
        transform: Transform,
        into output: UnsafeMutableRawBufferPointer
    ) {
        if width == 2 {
            let plane0 = sources[0].assumingMemoryBound(to: UInt8.self)
            let plane1 = sources[1].assumingMemoryBound(to: UInt8.self)
            let words = output.baseAddress!
            if transform == .exponentAligned {
                for index in 0..<count {
                    let sm = UInt16(plane0[index])
                    let e = UInt16(plane1[index])
                    words.storeBytes(
                        of: ((sm & 0x80) << 8 | e << 7 | sm & 0x7F).littleEndian, toByteOffset: index &* 2,
                        as: UInt16.self)
                }
            } else {
                for index in 0..<count {
                    words.storeBytes(
                        of: (UInt16(plane0[index]) | UInt16(plane1[index]) << 8).littleEndian, toByteOffset: index &* 2,
                        as: UInt16.self)
                }
            }
        } else {
            let p0 = sources[0].assumingMemoryBound(to: UInt8.self)
            let p1 = sources[1].assumingMemoryBound(to: UInt8.self)
            let p2 = sources[2].assumingMemoryBound(to: UInt8.self)
            let p3 = sources[3].assumingMemoryBound(to: UInt8.self)
            let words = output.baseAddress!
            let aligned = transform == .exponentAligned
            for index in 0..<count {
                let low = UInt32(p0[index]) | UInt32(p1[index]) << 8
                let high: UInt32
                if aligned {
                    let sm = UInt32(p2[index])
                    high = (sm & 0x80) << 8 | UInt32(p3[index]) << 7 | sm & 0x7F
                } else {
                    high = UInt32(p2[index]) | UInt32(p3[index]) << 8
                }
                words.storeBytes(of: (low | high << 16).littleEndian, toByteOffset: index &* 4, as: UInt32.self)
            }
        }
    }
}
