public import TorporCheckpoint
/// How nvCOMP's ANS encoder cuts and codes a chunk; the decoder reads both choices from the bitstream, so a
/// container may mix them.
///
/// nvCOMP splits each chunk into at most `subChunks` sub-chunks, each with its own frequency table, and codes each
/// lane of a sub-chunk with `statesPerLane` interleaved rANS states; a second state costs 128 bytes per sub-chunk.
/// Fewer, larger sub-chunks and one state per lane make smaller files; nvCOMP's defaults (8 sub-chunks, 2 states)
/// decode faster per chunk, which a batch of thousands of chunks does not need: the loader is bound by the
/// host-to-device link long before ANS decoding.
public struct ANSTuning: Sendable, Hashable, CustomStringConvertible {
    /// The most sub-chunks per chunk: 0 (nvCOMP's default, 8) or a power of 2 from 4 to 64.
    public var subChunks: Int
    /// Interleaved rANS states per lane: 0 (nvCOMP's default, 2), 1 or 2.
    public var statesPerLane: Int

    /// nvCOMP's own defaults.
    public static let nvcompDefault = ANSTuning(subChunks: 0, statesPerLane: 0)
    /// What `pack --gpu` uses: the smallest output (see docs/benchmarks.md for the measured trade).
    public static let `default` = ANSTuning(subChunks: 4, statesPerLane: 1)

    public init(subChunks: Int, statesPerLane: Int) {
        self.subChunks = subChunks
        self.statesPerLane = statesPerLane
    }

    /// Checks the values nvCOMP accepts, naming the bad one.
    public func validated() throws(GPUError) -> ANSTuning {
        guard subChunks == 0 || ([4, 8, 16, 32, 64] as Set).contains(subChunks) else {
            throw GPUError(
                .invalidArgument, "ANS sub-chunks must be 0 (nvCOMP's default) or 4, 8, 16, 32 or 64, not \(subChunks)")
        }
        guard (0...2).contains(statesPerLane) else {
            throw GPUError(
                .invalidArgument, "ANS states per lane must be 0 (nvCOMP's default), 1 or 2, not \(statesPerLane)")
        }
        return self
    }

    /// "at most 4 sub-chunks, 1 state per lane", as the index's `writer.codecs` records it.
    public var description: String {
        let chunks = subChunks == 0 ? "nvCOMP's default sub-chunks" : "at most \(subChunks) sub-chunks"
        let states =
            switch statesPerLane {
            case 0: "nvCOMP's default states per lane"
            case 1: "1 state per lane"
            default: "\(statesPerLane) states per lane"
            }
        return "\(chunks), \(states)"
    }
}
