public import TorporCheckpoint
/// How a run of bytes is cut into chunks for nvCOMP's batched codecs, and where each chunk's output goes.
///
/// Chunks are `chunkBytes` long (the last may be shorter) and a multiple of the element width; every input and
/// output slot starts at `alignment` (ANS needs 16). The pointer tables nvCOMP takes are built from it.
public struct ChunkPlan: Sendable, Equatable {
    public struct Chunk: Sendable, Equatable {
        /// Where the chunk starts in the uncompressed bytes.
        public var offset: Int
        public var count: Int
        /// Where its output slot starts in the output buffer.
        public var slotOffset: Int
    }

    public let chunks: [Chunk]
    /// Bytes of every output slot (the codec's worst case for a full chunk, rounded up to the alignment).
    public let slotBytes: Int
    /// The output buffer's size.
    public var outputBytes: Int { chunks.count * slotBytes }
    public let chunkBytes: Int

    /// - Parameters:
    ///   - totalBytes: the bytes to cut.
    ///   - chunkBytes: the chunk size: a multiple of `elementBytes` and of `alignment`, at most 16 MiB.
    ///   - maxCompressedChunkBytes: the codec's worst-case output for a full chunk.
    /// - Throws: `GPUError` `.invalidArgument` naming what does not fit.
    public init(
        totalBytes: Int, chunkBytes: Int, elementBytes: Int = 1, alignment: Int = 16, maxCompressedChunkBytes: Int
    ) throws(GPUError) {
        guard totalBytes >= 0, chunkBytes > 0, chunkBytes <= 16 << 20 else {
            throw GPUError(.invalidArgument, "a chunk of \(chunkBytes) bytes: use 1 byte to 16 MiB")
        }
        guard alignment > 0, alignment & (alignment - 1) == 0, chunkBytes % alignment == 0 else {
            throw GPUError(.invalidArgument, "chunks of \(chunkBytes) bytes do not keep \(alignment)-byte alignment")
        }
        guard elementBytes > 0, chunkBytes % elementBytes == 0, totalBytes % elementBytes == 0 else {
            throw GPUError(
                .invalidArgument,
                "\(totalBytes) bytes in chunks of \(chunkBytes) do not split into \(elementBytes)-byte elements")
        }
        let slot = (max(maxCompressedChunkBytes, 1) + alignment - 1) / alignment * alignment
        var chunks: [Chunk] = []
        chunks.reserveCapacity((totalBytes + chunkBytes - 1) / chunkBytes)
        var offset = 0
        while offset < totalBytes {
            let count = min(chunkBytes, totalBytes - offset)
            chunks.append(Chunk(offset: offset, count: count, slotOffset: chunks.count * slot))
            offset += count
        }
        self.chunks = chunks
        slotBytes = slot
        self.chunkBytes = chunkBytes
    }

    /// Device addresses of each chunk's input, from `base`.
    public func inputPointers(base: UInt64) -> [UInt64] { chunks.map { base + UInt64($0.offset) } }

    /// Device addresses of each chunk's output slot, from `base`.
    public func slotPointers(base: UInt64) -> [UInt64] { chunks.map { base + UInt64($0.slotOffset) } }

    /// Each chunk's uncompressed size.
    public var sizes: [Int] { chunks.map(\.count) }
}
