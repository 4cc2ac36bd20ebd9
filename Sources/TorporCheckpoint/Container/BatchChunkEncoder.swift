/// One chunk handed to a `BatchChunkEncoder`: host memory in, host memory out.
public struct BatchChunk: @unchecked Sendable {
    public let codec: ChunkCodec
    public let dtype: DType
    public let input: UnsafeRawBufferPointer
    /// At least `maxEncodedSize(codec, rawSize: input.count)` bytes.
    public let output: UnsafeMutableRawBufferPointer

    public init(codec: ChunkCodec, dtype: DType, input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer) {
        self.codec = codec
        self.dtype = dtype
        self.input = input
        self.output = output
    }
}

/// What a `BatchChunkEncoder` made of one chunk.
public struct BatchEncodedChunk: Sendable, Equatable {
    /// The encoded size in `output`.
    public var size: Int
    /// CRC-32 of the input.
    public var rawCRC: UInt32
    /// CRC-32 of the `size` encoded bytes.
    public var storedCRC: UInt32

    public init(size: Int, rawCRC: UInt32, storedCRC: UInt32) {
        self.size = size
        self.rawCRC = rawCRC
        self.storedCRC = storedCRC
    }
}

/// Encodes many chunks in one call on another processor — the GPU codecs (ids ≥ 16) of `pack --gpu` — and
/// computes both checksums of each chunk there too.
///
/// The packer hands it one window of chunks at a time, on one thread; chunks it does not shrink are stored raw.
public protocol BatchChunkEncoder: AnyObject, Sendable {
    /// The codecs it encodes, each with the bitstream description recorded in the container's index.
    var codecVersions: [ChunkCodec: String] { get }
    /// The most bytes one chunk of `rawSize` bytes can encode to.
    func maxEncodedSize(_ codec: ChunkCodec, rawSize: Int) throws(CheckpointError) -> Int
    /// Encodes every chunk into its output; the results are in the order of `chunks`.
    func encode(_ chunks: [BatchChunk]) throws(CheckpointError) -> [BatchEncodedChunk]
}
