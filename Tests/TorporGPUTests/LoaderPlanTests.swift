import Foundation
import Testing
import TorporCheckpoint

@testable import TorporGPU

/// The loader's plan — which chunk goes where, in which batch — is pure arithmetic and runs without a GPU.
@Suite struct LoaderPlanTests {
    /// A pack of a small model: two equal BF16 tensors (deduplicated), an I32 tensor, a tiny F32 tensor.
    private func packedModel(codec: CodecChoice, in directory: String) throws -> Container {
        var builder = SafetensorsBuilder()
        var generator = SystemRandomNumberGenerator()
        let weights = (0..<(3000 * 16 * 2)).map { index in
            index % 2 == 1 ? UInt8(0x3C) : UInt8.random(in: 0...255, using: &generator)
        }
        builder.add("a.weight", dtype: .bf16, shape: [3000, 16], bytes: weights)
        builder.add("b.weight", dtype: .bf16, shape: [3000, 16], bytes: weights)
        builder.add("c.bias", dtype: .f32, shape: [10], bytes: [UInt8](repeating: 7, count: 40))
        builder.add("d.index", dtype: .i32, shape: [5000], bytes: (0..<20_000).map { UInt8($0 % 7) })
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try builder.write(to: directory + "/model.safetensors")
        _ = try ModelPack.pack(
            model: directory + "/model.safetensors", to: directory + "/pack",
            options: PackOptions(codec: codec, chunkSize: 4096))
        return try Container(path: directory + "/pack/model.torpor")
    }

    private func temporaryDirectory() -> String {
        NSTemporaryDirectory() + "torpor-plan-\(UUID().uuidString)"
    }

    @Test func everyChunkOfEveryTensorIsPlacedOnceInAlignedBatches() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let container = try packedModel(codec: .fixed(.zstd), in: directory)
        var addresses: [String: UInt64] = [:]
        for (number, tensor) in container.index.tensors.enumerated() {
            addresses[tensor.name] = UInt64(number + 1) << 32
        }
        let (entries, batches, tensors) = try GPULoader.plan(
            container, destination: .pointers(addresses), batchBytes: 16 << 10)
        #expect(tensors == 4)
        #expect(entries.count == container.index.tensors.reduce(0) { $0 + $1.chunkCount })
        #expect(batches.count > 1)
        // Batches cover the entries in order, read whole pages, hold their chunks, and group them by codec.
        #expect(batches.first?.entries.lowerBound == 0)
        #expect(batches.last?.entries.upperBound == entries.count)
        for (batch, next) in zip(batches, batches.dropFirst()) {
            #expect(batch.entries.upperBound == next.entries.lowerBound)
        }
        for batch in batches {
            #expect(batch.span.lowerBound % 4096 == 0 && batch.span.upperBound % 4096 == 0)
            #expect(batch.span.count <= 16 << 10 || batch.entries.count == 1)
            #expect(batch.span.upperBound <= container.fileSize)
            for position in batch.entries {
                let record = container.chunks[entries[position].chunk]
                #expect(
                    batch.span.contains(record.offset) && record.offset + record.storedSize <= batch.span.upperBound)
            }
            let codecs = batch.entries.map { container.chunks[entries[$0].chunk].codec.rawValue }
            #expect(codecs == codecs.sorted())
        }
        // Each tensor's chunks land back to back from its address; the duplicate reads the same chunks.
        for (number, tensor) in container.index.tensors.enumerated() {
            let mine = entries.filter { $0.tensor == number }.sorted { $0.chunkInTensor < $1.chunkInTensor }
            var offset: UInt64 = 0
            for entry in mine {
                #expect(entry.output == addresses[tensor.name]! + offset)
                offset += UInt64(container.chunks[entry.chunk].rawSize)
            }
            #expect(Int(offset) == tensor.byteCount)
        }
        let a = container.index.tensors.first { $0.name == "a.weight" }!
        let b = container.index.tensors.first { $0.name == "b.weight" }!
        #expect(b.duplicateOf == "a.weight" && b.firstChunk == a.firstChunk)
    }

    @Test func aPartialLoadReadsOnlyTheTensorsAsked() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let container = try packedModel(codec: .fixed(.zstd), in: directory)
        let (entries, batches, tensors) = try GPULoader.plan(
            container, destination: .pointers(["d.index": 0x7000_0000]), batchBytes: 64 << 20)
        let d = container.index.tensors.first { $0.name == "d.index" }!
        #expect(tensors == 1)
        #expect(entries.count == d.chunkCount)
        #expect(Set(entries.map(\.chunk)) == Set(d.firstChunk..<(d.firstChunk + d.chunkCount)))
        let stored = batches.reduce(0) { $0 + $1.span.count }
        #expect(stored < container.fileSize / 2, "read \(stored) of \(container.fileSize) bytes")
    }

    /// Stands in for the GPU encoder: "codes" a chunk as its first half, so a Bitcomp pack exists without a GPU.
    private final class HalfStoringEncoder: BatchChunkEncoder, @unchecked Sendable {
        let codecVersions: [ChunkCodec: String] = [.bitcomp: "test"]
        func maxEncodedSize(_ codec: ChunkCodec, rawSize: Int) throws(CheckpointError) -> Int { rawSize }
        func encode(_ chunks: [BatchChunk]) throws(CheckpointError) -> [BatchEncodedChunk] {
            chunks.map { chunk in
                let half = UnsafeRawBufferPointer(rebasing: chunk.input.prefix(chunk.input.count / 2))
                chunk.output.copyMemory(from: half)
                return BatchEncodedChunk(
                    size: half.count, rawCRC: CRC32.checksum(chunk.input), storedCRC: CRC32.checksum(half))
            }
        }
    }

    @Test func bitcompChunksOfDifferentWidthsGoToSeparateDecoderCalls() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var builder = SafetensorsBuilder()
        builder.add("half", dtype: .bf16, shape: [4096], bytes: (0..<8192).map { UInt8($0 % 251) })
        builder.add("wide", dtype: .i64, shape: [1024], bytes: (0..<8192).map { UInt8($0 % 241) })
        builder.add("more", dtype: .bf16, shape: [4096], bytes: (0..<8192).map { UInt8($0 % 239) })
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try builder.write(to: directory + "/model.safetensors")
        var options = PackOptions(codec: .fixed(.bitcomp), chunkSize: 4096)
        options.gpuEncoder = HalfStoringEncoder()
        _ = try ModelPack.pack(model: directory + "/model.safetensors", to: directory + "/pack", options: options)
        let container = try Container(path: directory + "/pack/model.torpor")
        let (entries, batches, _) = try GPULoader.plan(
            container, destination: .pointers(["half": 0x1000_0000, "wide": 0x2000_0000, "more": 0x3000_0000]),
            batchBytes: 64 << 20)
        #expect(batches.count == 1)
        let widths = entries.map { container.index.tensors[$0.tensor].dtype.bitWidth }
        #expect(entries.allSatisfy { container.chunks[$0.chunk].codec == .bitcomp })
        // One run of 16-bit chunks and one of 64-bit chunks, never interleaved.
        #expect(widths == widths.sorted())
        #expect(Set(widths) == [16, 64])
        #expect(Set(entries.map { GPULoader.decodeGroup($0, container) }).count == 2)
    }

    @Test func byteplaneChunksArePlannedForTheGPUKernel() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let container = try packedModel(codec: .auto, in: directory)
        let a = container.index.tensors.first { $0.name == "a.weight" }!
        #expect(a.codec == "byteplane")
        let (entries, _, tensors) = try GPULoader.plan(
            container, destination: .pointers(["a.weight": 0x1000]), batchBytes: 64 << 20)
        #expect(tensors == 1)
        #expect(entries.count == a.chunkCount)
        #expect(entries.contains { container.chunks[$0.chunk].codec == .bytePlane })
        // The kernel bounds every access by the chunk's own tables, as nvCOMP's ANS does: no host check of the
        // stored CRC-32s before decoding (nvCOMP's Zstd and Bitcomp trust their input and get one).
        #expect(ChunkCodec.bytePlane.decoderValidatesInput && ChunkCodec.ans16.decoderValidatesInput)
        #expect(!ChunkCodec.zstd.decoderValidatesInput && !ChunkCodec.bitcomp.decoderValidatesInput)
    }
}
