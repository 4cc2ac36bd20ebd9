/// One chunk placed in one tensor. The CPU reader and the GPU loader place a container's chunks this way (a chunk
/// that two tensors share is placed once in each) and name a chunk that fails a check the same way.
public struct ChunkPlacement: Sendable, Equatable {
    /// The chunk's number in the file's chunk table.
    public var chunk: Int
    /// The tensor's number in the index.
    public var tensor: Int
    /// The chunk's position within the tensor.
    public var chunkInTensor: Int
    /// Where the chunk's decoded bytes start, counted from the tensor's first byte.
    public var offsetInTensor: Int

    public init(chunk: Int, tensor: Int, chunkInTensor: Int, offsetInTensor: Int) {
        self.chunk = chunk
        self.tensor = tensor
        self.chunkInTensor = chunkInTensor
        self.offsetInTensor = offsetInTensor
    }
}

extension Container {
    /// Tensor `number`'s chunks in order, each with the offset of its decoded bytes in the tensor.
    public func placements(ofTensor number: Int) -> [ChunkPlacement] {
        let tensor = index.tensors[number]
        var placements: [ChunkPlacement] = []
        placements.reserveCapacity(tensor.chunkCount)
        var offset = 0
        for step in 0..<tensor.chunkCount {
            placements.append(
                ChunkPlacement(
                    chunk: tensor.firstChunk + step, tensor: number, chunkInTensor: step, offsetInTensor: offset))
            offset += chunks[tensor.firstChunk + step].rawSize
        }
        return placements
    }

    /// How errors name a placed chunk: `PATH: tensor "NAME" chunk K (chunk N of the file, offset O)`.
    public func describe(_ placement: ChunkPlacement) -> String {
        "\(path): tensor \"\(index.tensors[placement.tensor].name)\" chunk \(placement.chunkInTensor) (chunk "
            + "\(placement.chunk) of the file, offset \(chunks[placement.chunk].offset))"
    }

    /// The message for a chunk whose stored bytes fail their CRC-32 (`found`).
    public func storedCRCFailure(_ placement: ChunkPlacement, found: UInt32) -> String {
        "\(describe(placement)): stored bytes fail their CRC-32 (expected "
            + "\(CRC32.hex(chunks[placement.chunk].storedCRC)), found \(CRC32.hex(found))); the container is corrupted"
    }

    /// The message for a chunk whose decoded bytes fail their CRC-32 (`found`).
    public func decodedCRCFailure(_ placement: ChunkPlacement, found: UInt32) -> String {
        "\(describe(placement)): decoded bytes fail their CRC-32 (expected "
            + "\(CRC32.hex(chunks[placement.chunk].rawCRC)), found \(CRC32.hex(found)))"
    }
}
