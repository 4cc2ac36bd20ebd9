import FoundationEssentials

/// How `pack` picks a codec for each tensor.
public enum CodecChoice: Sendable, Equatable, CustomStringConvertible {
    /// The float codec for 16- and 32-bit float tensors, zstd for other tensors, raw for tiny ones.
    case auto
    /// This codec wherever it applies; tensors it cannot encode (the float codec on integers) are stored raw.
    case fixed(ChunkCodec)

    /// Parses `auto` or a codec name.
    public init?(name: String) {
        if name == "auto" {
            self = .auto
        } else if let codec = ChunkCodec(name: name) {
            self = .fixed(codec)
        } else {
            return nil
        }
    }

    public static var names: [String] { ["auto"] + ChunkCodec.allCases.map(\.name) }

    /// The choices that need no GPU.
    public static var cpuNames: [String] { ["auto"] + ChunkCodec.allCases.filter(\.runsOnCPU).map(\.name) }

    public var description: String {
        switch self {
        case .auto: "auto"
        case .fixed(let codec): codec.name
        }
    }

    /// Tensors smaller than this are stored raw by `auto`: a codec's headers would eat the gain.
    static let smallTensorBytes = 256
    /// Float tensors smaller than this get zstd from `auto`: their planes are too short for rANS tables to pay.
    static let smallFloatTensorBytes = 4096

    /// The codec for `tensor`; `gpu` says whether a GPU encoder is present (`pack --gpu`).
    func codec(for tensor: TensorInfo, gpu: Bool = false) -> ChunkCodec {
        switch self {
        case .auto:
            if tensor.byteCount < Self.smallTensorBytes { return .raw }
            if tensor.dtype.isPlaneSplittableFloat && tensor.byteCount >= Self.smallFloatTensorBytes {
                guard gpu else { return .bytePlane }
                return tensor.dtype == .f32 ? .ans32 : .ans16
            }
            return .zstd
        case .fixed(let codec):
            if codec.applies(to: tensor.dtype) { return codec }
            // A float codec on a tensor it cannot code: the GPU's byte-wise ANS, or raw on the CPU.
            return codec.runsOnCPU ? .raw : .ans8
        }
    }
}

/// Options for packing a safetensors file into a container.
public struct PackOptions: Sendable {
    public var codec: CodecChoice = .auto
    /// Uncompressed bytes per chunk: a multiple of 16, at most 16 MiB.
    public var chunkSize: Int = ContainerLayout.defaultChunkSize
    /// Worker threads; nil uses every core.
    public var workers: Int?
    /// Store tensors with identical bytes once.
    public var deduplicate = true
    /// Encodes the GPU codecs (`pack --gpu`); without one, choosing a GPU codec is an error.
    public var gpuEncoder: (any BatchChunkEncoder)?

    public init(codec: CodecChoice = .auto, chunkSize: Int = ContainerLayout.defaultChunkSize, workers: Int? = nil) {
        self.codec = codec
        self.chunkSize = chunkSize
        self.workers = workers
    }

    /// Checks the options (chunk size, a GPU codec without a GPU encoder ...), naming the bad one.
    public func validate() throws(CheckpointError) {
        if case .fixed(let codec) = codec, !codec.runsOnCPU {
            guard let gpuEncoder else {
                throw CheckpointError(
                    .invalidArgument,
                    "codec \(codec.name) is a GPU codec (nvCOMP): pack with --gpu on a machine with an NVIDIA GPU")
            }
            guard gpuEncoder.codecVersions[codec] != nil else {
                throw CheckpointError(.unsupported, "the GPU encoder cannot encode codec \(codec.name)")
            }
        }
        guard chunkSize >= 4096, chunkSize <= ContainerLayout.maximumChunkSize, chunkSize % 16 == 0 else {
            throw CheckpointError(
                .invalidArgument,
                "chunk size \(chunkSize) is invalid: use a multiple of 16 between 4 KiB and 16 MiB (default 1 MiB)")
        }
    }
}

/// What packing one file produced.
public struct PackedFile: Sendable {
    public var sourceBytes: Int
    public var containerBytes: Int
    public var sha256: String
    public var tensorCount: Int
    public var duplicateCount: Int
}
