import Foundation
import Testing

@testable import TorporCheckpoint

/// A stand-in for the GPU encoder: "encodes" a chunk by keeping its first half (so the packer's GPU path, its
/// checksums and its raw fallback run without a GPU), and leaves chunks of odd length un-shrunk.
final class HalvingEncoder: BatchChunkEncoder, @unchecked Sendable {
    var batches: [[ChunkCodec]] = []
    let codecVersions: [ChunkCodec: String] = [.ans16: "test", .ans32: "test", .ans8: "test", .bitcomp: "test"]

    func maxEncodedSize(_ codec: ChunkCodec, rawSize: Int) throws(CheckpointError) -> Int { rawSize }

    func encode(_ chunks: [BatchChunk]) throws(CheckpointError) -> [BatchEncodedChunk] {
        batches.append(chunks.map(\.codec))
        return chunks.map { chunk in
            let size = chunk.input.count % 2 == 0 ? chunk.input.count / 2 : chunk.input.count
            chunk.output.copyMemory(from: UnsafeRawBufferPointer(rebasing: chunk.input.prefix(size)))
            return BatchEncodedChunk(
                size: size, rawCRC: CRC32.checksum(chunk.input),
                storedCRC: CRC32.checksum(UnsafeRawBufferPointer(rebasing: chunk.input.prefix(size))))
        }
    }
}

@Suite("GPU codecs in the container")
struct GPUCodecContainerTests {
    @Test("pack --gpu's choices: ANS FLOAT16 for 16-bit floats, FLOAT32 for F32, zstd and raw stay on the CPU")
    func gpuPackChoosesPerTensor() throws {
        let directory = TemporaryDirectory()
        let model = directory.file("model.safetensors")
        try everyDTypeModel().write(to: model)
        var options = PackOptions(chunkSize: 4096)
        let encoder = HalvingEncoder()
        options.gpuEncoder = encoder
        let packed = try ModelPack.pack(model: model, to: directory.file("pack"), options: options)
        let container = try Container(path: directory.file("pack/model.torpor"))
        #expect(packed.manifest.files.count == 1)
        for tensor in container.index.tensors where tensor.byteCount >= 4096 {
            switch tensor.dtype {
            case .bf16, .f16: #expect(tensor.codec == "ans16", "\(tensor.name)")
            case .f32: #expect(tensor.codec == "ans32", "\(tensor.name)")
            default: #expect(["zstd", "raw"].contains(tensor.codec), "\(tensor.name)")
            }
        }
        #expect(!encoder.batches.isEmpty)
        #expect(encoder.batches.joined().allSatisfy { !$0.runsOnCPU })
        #expect(container.gpuCodecs.contains(.ans16))
        #expect(container.index.writer.codecs["ans16"] == "test")
        // Every chunk record still checks out (the encoder's CRCs are the container's).
        try container.checkPadding()
    }

    @Test("the CPU refuses a container with GPU chunks before doing anything, naming the codecs")
    func cpuRefusesGPUChunks() throws {
        let directory = TemporaryDirectory()
        let model = directory.file("model.safetensors")
        try everyDTypeModel().write(to: model)
        var options = PackOptions(codec: .fixed(.ans16), chunkSize: 4096)
        options.gpuEncoder = HalvingEncoder()
        let packed = directory.file("pack")
        _ = try ModelPack.pack(model: model, to: packed, options: options)
        let error = #expect(throws: CheckpointError.self) {
            _ = try ModelPack.unpack(pack: packed, to: directory.file("restored"))
        }
        #expect(error?.code == .unsupported)
        #expect(error?.message.contains("GPU codecs (ans16") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("torpor load") == true)
        #expect(!FileManager.default.fileExists(atPath: directory.file("restored")))
        let container = try Container(path: packed + "/model.torpor")
        let tensor = container.index.tensors.first { $0.codec == "ans16" && $0.chunkCount > 0 }!
        let chunkError = #expect(throws: CheckpointError.self) { _ = try container.tensorBytes(tensor.name) }
        #expect(chunkError?.message.contains("GPU codec") == true, "\(chunkError?.message ?? "")")
    }

    @Test("a GPU codec without --gpu is a clear error")
    func gpuCodecNeedsTheGPU() throws {
        let directory = TemporaryDirectory()
        let model = directory.file("model.safetensors")
        try everyDTypeModel().write(to: model)
        let error = #expect(throws: CheckpointError.self) {
            _ = try ModelPack.pack(
                model: model, to: directory.file("pack"), options: PackOptions(codec: .fixed(.bitcomp)))
        }
        #expect(error?.message.contains("pack with --gpu") == true)
        #expect(!FileManager.default.fileExists(atPath: directory.file("pack")))
    }

    @Test("codec ids: GPU codecs are 16 and up, with their element widths", arguments: ChunkCodec.allCases)
    func codecIDs(codec: ChunkCodec) {
        #expect(codec.runsOnCPU == (codec.rawValue < 16))
        #expect(ChunkCodec(name: codec.name) == codec)
        #expect(codec.elementWidth == [ChunkCodec.ans16: 2, .ans32: 4][codec, default: 1])
    }
}
