import Foundation
import Testing
import TorporCheckpoint

@testable import TorporStorage

/// Loading straight from the store: containers opened from their metadata, chunks read by range into the
/// caller's memory (the GPU loader's pinned ring), against moto on loopback through the fault proxy.
@Suite(.serialized, .enabled(if: Moto.python != nil, Moto.skipReason))
struct RemoteLoadTests {
    let small = TransferOptions(partSize: 5 << 20, rangeSize: 1 << 20, parallelism: 4)

    @Test func aContainerOpensFromItsMetadataAndReadsByRangeThroughFailures() async throws {
        try await withS3 { s3 in
            let pack = try s3.miniLMPack()
            let client = s3.client()
            let location = S3Location(bucket: "torpor-test", prefix: "stream/mini")
            _ = try await RemotePack.push(directory: pack, to: location, client: client, options: small)
            try s3.faults([
                ["match": "GET model.torpor", "kind": "drop-response", "skip": 3, "times": 1],
                ["match": "GET model.torpor", "kind": "status", "status": 503, "skip": 6, "times": 1],
            ])

            let opened = try await RemotePack.openForLoading(location, client: client, options: small).containers
            try #require(opened.count == 1)
            let remote = opened[0]
            let local = try Container(path: pack + "/model.torpor")
            #expect(remote.original == "model.safetensors" && remote.path == "model.torpor")
            #expect(remote.object.name == "s3://torpor-test/stream/mini/model.torpor")
            #expect(!remote.container.holdsChunks && local.holdsChunks)
            #expect(remote.container.index == local.index)
            #expect(remote.container.chunks == local.chunks)
            #expect(remote.container.fileSize == local.fileSize)
            #expect(Array(remote.container.sourceHeaderBytes) == Array(local.sourceHeaderBytes))
            // Opening read the preamble and the metadata at the end: a small part of the file.
            let metadata = remote.object.fetched
            #expect(metadata < local.fileSize / 20, "opening fetched \(metadata) of \(local.fileSize) bytes")

            // The chunks, in batches as the loader asks for them, from a thread that may block.
            let size = local.fileSize
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
            defer { buffer.deallocate() }
            let address = UInt(bitPattern: buffer.baseAddress!)
            let object = remote.object
            try await RemotePack.blocking { () throws(CheckpointError) in
                let base = UnsafeMutableRawPointer(bitPattern: address)!
                var offset = 0
                while offset < size {
                    let end = min(size, offset + (3 << 20) + 123)
                    try object.read(offset..<end, into: base + offset)
                    offset = end
                }
            }
            let expected = FileManager.default.contents(atPath: pack + "/model.torpor")!
            #expect(Data(buffer) == expected)
            #expect(remote.object.fetched == metadata + size)

            // With read-ahead, as the loader reads: batches front to back, each starting a page before the last
            // one ended (direct-I/O alignment); every piece is fetched once. The window runs on into the next
            // object of the chain (here the same one again) before the first is finished.
            let chain = ReadAhead.chain([object, object])
            chain[0].start()
            #expect(chain[0].launched == 4 && chain[1].launched == 0)
            for stream in chain {
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
                try await RemotePack.blocking { () throws(CheckpointError) in
                    let base = UnsafeMutableRawPointer(bitPattern: address)!
                    var offset = 0
                    while offset < size {
                        let end = min(size, offset + (5 << 20) + 100)
                        let start = max(0, offset - 4096)
                        try stream.read(start..<end, into: base + start)
                        offset = end
                    }
                }
                if stream === chain[0] { #expect(chain[1].launched == 4) }
                #expect(Data(buffer) == expected)
            }
            #expect(remote.object.fetched == metadata + 3 * size)
            let log = try s3.log()
            #expect(
                log.filter { $0.hasPrefix("GET") && $0.contains("model.torpor") && $0.hasSuffix("dropped") }.count == 1)
            #expect(
                log.filter { $0.hasPrefix("GET") && $0.contains("model.torpor") && $0.hasSuffix(" 503") }.count == 1)

            // Without the chunks' bytes, decoding on the CPU is refused, saying why.
            let refused = #expect(throws: CheckpointError.self) {
                _ = try remote.container.tensorBytes(remote.container.index.tensors[0].name)
            }
            #expect(refused?.code == .unsupported)
            #expect(refused?.message.contains("only its metadata was read") == true)
        }
    }

    @Test func badMetadataAndAnObjectThatChangesFailByName() async throws {
        try await withS3 { s3 in
            let pack = try s3.miniLMPack()
            let client = s3.client()
            let location = S3Location(bucket: "torpor-test", prefix: "stream/bad")
            _ = try await RemotePack.push(directory: pack, to: location, client: client, options: small)
            let original = Array(FileManager.default.contents(atPath: pack + "/model.torpor")!)
            let key = "stream/bad/model.torpor"

            // A flipped bit in the chunk table (the first record after the data region).
            let local = try Container(path: pack + "/model.torpor")
            let tableOffset = local.chunks.map { $0.offset + $0.storedSize }.max()!
            var damaged = original
            damaged[(tableOffset + 4095) / 4096 * 4096 + 3] ^= 0x01
            try await client.put(bucket: "torpor-test", key: key, bytes: damaged)
            let error = await #expect(throws: StorageError.self) {
                _ = try await RemotePack.openForLoading(location, client: client, options: small)
            }
            #expect(error?.code == .corrupt)
            #expect(error?.message.contains("s3://torpor-test/\(key): the chunk table fails its CRC-32") == true)

            // Pushed again while being read: the reads after the change fail as `changed`, never mixing versions.
            try await client.put(bucket: "torpor-test", key: key, bytes: original)
            let remote = try await RemotePack.openForLoading(location, client: client, options: small).containers[0]
            var changed = original
            changed[local.chunks[0].offset] ^= 0x01
            try await client.put(bucket: "torpor-test", key: key, bytes: changed)
            let object = remote.object
            let failure = await #expect(throws: StorageError.self) {
                try await RemotePack.blocking { () throws(CheckpointError) in _ = try object.bytes(0..<(2 << 20)) }
            }
            #expect(failure?.code == .corrupt)
            #expect(failure?.message.contains("s3://torpor-test/\(key) changed on the store") == true)
            // The same through read-ahead, as a streamed load reads.
            let streamed = await #expect(throws: StorageError.self) {
                try await RemotePack.blocking { () throws(CheckpointError) in
                    _ = try ReadAhead(object).bytes(0..<(2 << 20))
                }
            }
            #expect(streamed?.code == .corrupt)
            #expect(streamed?.message.contains("s3://torpor-test/\(key) changed on the store") == true)

            // The command line: a missing pack and options that need local files are refused by name.
            let missing = #expect(throws: CommandFailure.self) {
                try run(Moto.torpor, ["load", "s3://torpor-test/stream/none"], environment: s3.environment)
            }
            #expect(missing?.standardError.contains("is not a complete torpor pack") == true)
            let direct = #expect(throws: CommandFailure.self) {
                try run(Moto.torpor, ["load", "--direct", "s3://torpor-test/stream/bad"], environment: s3.environment)
            }
            #expect(direct?.standardError.contains("--direct reads local files") == true)
        }
    }
}
