import Foundation
import Synchronization
import Testing

@testable import TorporCheckpoint

@Suite("Packing, restoring and verifying")
struct ContainerTests {
    /// Packs `model` into a fresh pack directory and returns the pack's path.
    private func pack(
        _ model: String, in directory: TemporaryDirectory, options: PackOptions = PackOptions(), name: String = "pack"
    ) throws -> String {
        let output = directory.file(name)
        _ = try ModelPack.pack(model: model, to: output, options: options)
        return output
    }

    @Test(
        "every dtype, empty and 0-d tensors round-trip byte for byte with every codec choice",
        arguments: CodecChoice.cpuNames)
    func everyDTypeRoundTrips(codec: String) throws {
        let directory = TemporaryDirectory()
        let model = directory.file("model")
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try everyDTypeModel().write(to: model + "/model.safetensors")
        try write(Array("{\"architectures\":[]}".utf8), to: model + "/config.json")
        let options = PackOptions(codec: CodecChoice(name: codec)!, chunkSize: 4096)
        let packed = try pack(model, in: directory, options: options)
        _ = try ModelPack.unpack(pack: packed, to: directory.file("restored"))
        #expect(try contents(directory.file("restored/model.safetensors")) == contents(model + "/model.safetensors"))
        #expect(try contents(directory.file("restored/config.json")) == contents(model + "/config.json"))
        let report = try ModelPack.verify(pack: packed, against: model)
        #expect(report.files == 2)
    }

    @Test("the MiniLM fixture packs to at most 0.675 of its size and restores exactly")
    func fixtureRoundTrip() throws {
        let directory = TemporaryDirectory()
        let packed = try pack(Fixtures.miniLM, in: directory)
        let inspection = try PackInspection(pack: packed)
        #expect(inspection.totals.ratio <= 0.675, "ratio \(inspection.totals.ratio)")
        #expect(inspection.files[0].tensors.count == 104)
        let floats = inspection.files[0].tensors.filter { $0.dtype == .bf16 && $0.bytes >= 4096 }
        #expect(floats.allSatisfy { $0.codec == "byteplane" })
        _ = try ModelPack.unpack(pack: packed, to: directory.file("restored"))
        #expect(try contents(directory.file("restored/minilm-l6-bf16.safetensors")) == contents(Fixtures.miniLM))
    }

    @Test("tensors with equal bytes are stored once and restored to both places")
    func deduplicates() throws {
        var generator = SeededGenerator(seed: 9)
        let shared = weightBytes(.bf16, count: 50_000, sigma: 0.02, generator: &generator)
        var builder = SafetensorsBuilder()
        builder.add("model.embed_tokens.weight", dtype: .bf16, shape: [500, 100], bytes: shared)
        builder.add(
            "model.norm.weight", dtype: .bf16, shape: [100],
            bytes: weightBytes(.bf16, count: 100, sigma: 1, generator: &generator))
        builder.add("lm_head.weight", dtype: .bf16, shape: [500, 100], bytes: shared)
        let directory = TemporaryDirectory()
        try builder.write(to: directory.file("tied.safetensors"))
        let packed = try pack(directory.file("tied.safetensors"), in: directory)
        let container = try Container(path: packed + "/tied.torpor")
        let head = try #require(container.index.tensors.first { $0.name == "lm_head.weight" })
        let embed = try #require(container.index.tensors.first { $0.name == "model.embed_tokens.weight" })
        #expect(head.duplicateOf == "model.embed_tokens.weight")
        #expect(head.firstChunk == embed.firstChunk && head.chunkCount == embed.chunkCount)
        #expect(container.fileSize < shared.count)
        #expect(try container.tensorBytes("lm_head.weight") == shared)
        _ = try ModelPack.unpack(pack: packed, to: directory.file("restored"))
        #expect(
            try contents(directory.file("restored/tied.safetensors")) == contents(directory.file("tied.safetensors")))
    }

    @Test("tensors of many chunks are shared only when every chunk is equal, and their records' checksums hold")
    func deduplicatesChunkByChunk() throws {
        var generator = SeededGenerator(seed: 10)
        let shared = weightBytes(.bf16, count: 40_000, sigma: 0.02, generator: &generator)
        var lastChunkDiffers = shared
        lastChunkDiffers[lastChunkDiffers.count - 1] ^= 1
        var builder = SafetensorsBuilder()
        builder.add("a", dtype: .bf16, shape: [400, 100], bytes: shared)
        builder.add("b", dtype: .bf16, shape: [400, 100], bytes: lastChunkDiffers)
        builder.add("c", dtype: .bf16, shape: [400, 100], bytes: shared)
        let directory = TemporaryDirectory()
        try builder.write(to: directory.file("m.safetensors"))
        let packed = try pack(directory.file("m.safetensors"), in: directory, options: PackOptions(chunkSize: 8192))
        let container = try Container(path: packed + "/m.torpor")
        let tensors = Dictionary(uniqueKeysWithValues: container.index.tensors.map { ($0.name, $0) })
        #expect(tensors["a"]?.chunkCount == 10)
        #expect(tensors["b"]?.duplicateOf == nil && tensors["c"]?.duplicateOf == "a")
        #expect(try container.tensorBytes("b") == lastChunkDiffers && container.tensorBytes("c") == shared)
        _ = try ModelPack.verify(pack: packed, against: directory.file("m.safetensors"))
    }

    /// A two-shard model with its index, in `directory/model`.
    private func shardedModel(in directory: TemporaryDirectory, indexJSON: String? = nil) throws -> String {
        let model = directory.file("model")
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        var generator = SeededGenerator(seed: 4)
        var first = SafetensorsBuilder()
        first.add(
            "a.weight", dtype: .bf16, shape: [300, 64],
            bytes: weightBytes(.bf16, count: 19_200, sigma: 0.02, generator: &generator))
        first.add(
            "b.bias", dtype: .f32, shape: [64], bytes: weightBytes(.f32, count: 64, sigma: 0.1, generator: &generator))
        var second = SafetensorsBuilder()
        second.add(
            "c.weight", dtype: .f16, shape: [64, 300],
            bytes: weightBytes(.f16, count: 19_200, sigma: 0.02, generator: &generator))
        try first.write(to: model + "/model-00001-of-00002.safetensors")
        try second.write(to: model + "/model-00002-of-00002.safetensors")
        let index =
            indexJSON
                ?? """
                {"metadata":{"total_size":78336},"weight_map":{"a.weight":"model-00001-of-00002.safetensors",
                "b.bias":"model-00001-of-00002.safetensors","c.weight":"model-00002-of-00002.safetensors"}}
                """
        try write(Array(index.utf8), to: model + "/model.safetensors.index.json")
        return model
    }

    @Test("sharded models pack every shard, keep the index, and restore byte for byte")
    func shardedRoundTrip() throws {
        let directory = TemporaryDirectory()
        let model = try shardedModel(in: directory)
        let packed = try pack(model, in: directory, options: PackOptions(chunkSize: 8192))
        let manifest = try PackManifest.load(from: packed)
        #expect(
            manifest.files.map(\.path) == [
                "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
            ])
        #expect(manifest.files.map(\.kind) == [.packed, .packed, .copied])
        #expect(FileManager.default.fileExists(atPath: packed + "/model-00002-of-00002.torpor"))
        _ = try ModelPack.unpack(pack: packed, to: directory.file("restored"))
        for file in manifest.files {
            #expect(try contents(directory.file("restored/" + file.path)) == contents(model + "/" + file.path))
        }
    }

    @Test("a shard index that names a missing tensor or shard is rejected before anything is written")
    func shardIndexMismatch() throws {
        let directory = TemporaryDirectory()
        let model = try shardedModel(
            in: directory,
            indexJSON:
                #"{"weight_map":{"a.weight":"model-00001-of-00002.safetensors","c.weight":"model-00001-of-00002.safetensors"}}"#
        )
        let error = try #require(checkpointError { _ = try ModelPack.pack(model: model, to: directory.file("out")) })
        #expect(error.code == .invalidShardIndex)
        #expect(error.message.contains("\"c.weight\"") && error.message.contains("model-00001-of-00002.safetensors"))
        #expect(!FileManager.default.fileExists(atPath: directory.file("out")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == ["model"])
    }

    @Test("an existing non-empty output is refused and left untouched")
    func refusesExistingOutput() throws {
        let directory = TemporaryDirectory()
        let output = directory.file("out")
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try write([1, 2, 3], to: output + "/keep.bin")
        let error = try #require(checkpointError { _ = try ModelPack.pack(model: Fixtures.miniLM, to: output) })
        #expect(error.code == .outputExists)
        #expect(try contents(output + "/keep.bin") == [1, 2, 3])
    }

    @Test("a flipped bit anywhere in a container is caught by verify and unpack, and unpack writes nothing")
    func everyBitFlipIsCaught() throws {
        let directory = TemporaryDirectory()
        let model = directory.file("model")
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try everyDTypeModel(seed: 2).write(to: model + "/model.safetensors")
        let packed = try pack(model, in: directory, options: PackOptions(chunkSize: 4096))
        let containerPath = packed + "/model.torpor"
        let original = try contents(containerPath)
        let container = try Container(path: containerPath)
        let chunk = container.chunks[3]
        // Positions in every region: preamble, padding, chunk data, chunk table, stored header, index, and random.
        var generator = SeededGenerator(seed: 99)
        var positions = [0, 9, 20, 60, 124, 200, 4095, chunk.offset, chunk.offset + chunk.storedSize / 2]
        positions += [container.preamble.chunkTableOffset + 5, container.preamble.sourceHeaderOffset + 10]
        positions += [container.preamble.indexOffset + 3, original.count - 1]
        positions += (0..<300).map { _ in Int.random(in: 0..<original.count, using: &generator) }
        for (trial, position) in positions.enumerated() {
            var mutated = original
            mutated[position] ^= UInt8(1 << (trial % 8))
            try write(mutated, to: containerPath)
            let error = try #require(checkpointError { _ = try ModelPack.verify(pack: packed) }, "flip at \(position)")
            #expect([.corruptData, .invalidContainer, .unsupported].contains(error.code), "\(error)")
            #expect(error.message.contains(containerPath), "\(error.message)")
            if trial < 40 {
                let target = directory.file("restored-\(trial)")
                #expect(checkpointError { _ = try ModelPack.unpack(pack: packed, to: target) } != nil)
                #expect(!FileManager.default.fileExists(atPath: target))
            }
        }
        // A flip inside a chunk names the file, the tensor and the chunk.
        var mutated = original
        mutated[chunk.offset + 1] ^= 0x10
        try write(mutated, to: containerPath)
        let error = try #require(checkpointError { _ = try ModelPack.verify(pack: packed) })
        let owner = try #require(
            container.index.tensors.first { (($0.firstChunk)..<($0.firstChunk + $0.chunkCount)).contains(3) })
        #expect(
            error.message.contains("tensor \"\(owner.name)\"") && error.message.contains("chunk 3 of the file"),
            "\(error.message)")
        try write(original, to: containerPath)
        #expect(try ModelPack.verify(pack: packed).files == 1)
    }

    @Test(
        "restoring on 1 to 7 threads gives `each` every range once and `inOrder` the file, and stops at a late bad chunk",
        arguments: [1, 2, 3, 7])
    func restorePipeline(workers: Int) throws {
        let directory = TemporaryDirectory()
        try everyDTypeModel(seed: 4).write(to: directory.file("m.safetensors"))
        let packed = try pack(directory.file("m.safetensors"), in: directory, options: PackOptions(chunkSize: 4096))
        let containerPath = packed + "/m.torpor"
        let original = try contents(directory.file("m.safetensors"))
        let container = try Container(path: containerPath)
        #expect(container.chunks.count > max(4, 4 * workers), "more pieces than the ring has slots")
        let seen = Mutex<[Int: Int]>([:])
        var streamed: [UInt8] = []
        try container.restore(
            workers: workers,
            each: { bytes, offset in
                seen.withLock { $0[offset, default: 0] += bytes.count }
                #expect(Array(bytes) == Array(original[offset..<(offset + bytes.count)]), "range at \(offset)")
            },
            inOrder: { bytes, offset in
                #expect(offset == streamed.count)
                streamed += bytes
            })
        #expect(streamed == original)
        let ranges = seen.withLock { $0 }.sorted { $0.key < $1.key }
        #expect(ranges.reduce(0) { $0 + $1.value } == original.count)
        #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.key + $0.value == $1.key })

        var mutated = try contents(containerPath)
        let late = container.chunks[container.chunks.count - 3]
        mutated[late.offset] ^= 0x01
        try write(mutated, to: containerPath)
        let corrupted = try Container(path: containerPath)
        for _ in 0..<3 {
            let error = try #require(
                checkpointError {
                    try corrupted.restore(workers: workers, each: { _, _ in }, inOrder: { _, _ in })
                })
            #expect(error.code == .corruptData && error.message.contains("CRC-32"), "\(error)")
        }
    }

    @Test("truncated and mangled containers and manifests end in errors, never crashes")
    func truncationsAndMutationsFail() throws {
        let directory = TemporaryDirectory()
        var generator = SeededGenerator(seed: 123)
        var builder = SafetensorsBuilder()
        builder.add(
            "w", dtype: .bf16, shape: [64, 128],
            bytes: weightBytes(.bf16, count: 8192, sigma: 0.02, generator: &generator))
        builder.add("ids", dtype: .i64, shape: [64], bytes: randomBytes(512, generator: &generator))
        try builder.write(to: directory.file("m.safetensors"))
        let packed = try pack(directory.file("m.safetensors"), in: directory, options: PackOptions(chunkSize: 4096))
        let containerPath = packed + "/m.torpor"
        let original = try contents(containerPath)
        for trial in 0..<1500 {
            var mutated = original
            switch trial % 3 {
            case 0:
                mutated.removeLast(Int.random(in: 1...mutated.count, using: &generator))
            case 1:
                for _ in 0..<Int.random(in: 1...8, using: &generator) {
                    mutated[Int.random(in: 0..<mutated.count, using: &generator)] = UInt8.random(
                        in: 0...255, using: &generator)
                }
            default:
                let start = Int.random(in: 0..<mutated.count, using: &generator)
                let length = min(mutated.count - start, Int.random(in: 1...64, using: &generator))
                mutated.replaceSubrange(start..<(start + length), with: randomBytes(length, generator: &generator))
            }
            guard mutated != original else { continue }
            try write(mutated, to: containerPath)
            #expect(checkpointError { _ = try ModelPack.verify(pack: packed) } != nil, "trial \(trial)")
        }
        try write(original, to: containerPath)
        let manifest = try contents(packed + "/" + PackManifest.fileName)
        try write(Array(manifest.prefix(manifest.count / 2)), to: packed + "/" + PackManifest.fileName)
        let error = try #require(checkpointError { _ = try ModelPack.verify(pack: packed) })
        #expect(error.code == .invalidContainer && error.message.contains(PackManifest.fileName))
        try FileManager.default.removeItem(atPath: packed + "/" + PackManifest.fileName)
        let missing = try #require(checkpointError { _ = try ModelPack.unpack(pack: packed, to: directory.file("r")) })
        #expect(missing.message.contains("not a complete torpor pack"))
    }

    @Test("verify --against reports the first differing byte of a different original")
    func verifyAgainstFindsDifferences() throws {
        let directory = TemporaryDirectory()
        let model = directory.file("model")
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try everyDTypeModel(seed: 6).write(to: model + "/model.safetensors")
        let packed = try pack(model, in: directory)
        var changed = try contents(model + "/model.safetensors")
        changed[changed.count - 3] ^= 1
        try write(changed, to: model + "/model.safetensors")
        let error = try #require(checkpointError { _ = try ModelPack.verify(pack: packed, against: model) })
        #expect(error.code == .mismatch)
        #expect(error.message.contains("at byte \(changed.count - 3)"), "\(error.message)")
    }
}

@Suite("Writing files")
struct FileWritingTests {
    @Test("pieces written with pwritev land in order, in more calls than one and with empty pieces among them")
    func piecesInOrder() throws {
        var generator = SeededGenerator(seed: 11)
        let pieces = (0..<3000).map { number in
            number % 7 == 0 ? [] : (0..<(number % 97)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        }
        let directory = TemporaryDirectory()
        let path = directory.file("pieces")
        let file = try FileDescriptor.create(path)
        defer { file.close() }
        let joined = pieces.flatMap { $0 }
        // Each piece through a pointer that stays valid for the call: one buffer holding them all, in order.
        try joined.withUnsafeBytes { all in
            var views: [UnsafeRawBufferPointer] = []
            var start = 0
            for piece in pieces {
                views.append(UnsafeRawBufferPointer(rebasing: all[start..<(start + piece.count)]))
                start += piece.count
            }
            try file.write(views, at: 100)
        }
        let written = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(written.count == 100 + joined.count)
        #expect(Array(written.prefix(100)) == [UInt8](repeating: 0, count: 100))
        #expect(Array(written.dropFirst(100)) == joined)
    }
}
