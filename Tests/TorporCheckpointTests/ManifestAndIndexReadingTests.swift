import Foundation
import Testing

@testable import TorporCheckpoint

@Suite("Reading the pack manifest and the container index")
struct ManifestAndIndexReadingTests {
    private let file =
        #"{"path":"model.safetensors","size":10,"sha256":"ab","kind":"packed","container":"model.torpor","containerSize":8}"#

    private func manifest(_ json: String) -> Result<PackManifest, CheckpointError> {
        Result { () throws(CheckpointError) in try PackManifest.decode(Array(json.utf8), name: "m.json") }
    }

    @Test("a manifest reads back as written, and each defect is named with the member at fault")
    func manifestMessages() throws {
        let written = PackManifest(
            writer: "torpor 0.1.0", codec: "auto", chunkSize: 1 << 20,
            files: [
                .init(
                    path: "model.safetensors", size: 10, sha256: "ab", kind: .packed, container: "model.torpor",
                    containerSize: 8),
                .init(path: "config.json", size: 3, sha256: "cd", kind: .copied, container: nil, containerSize: nil),
            ])
        let json = String(decoding: try JSONEncoder().encode(written), as: UTF8.self)
        #expect(try manifest(json).get() == written)

        let head = #""format":"torpor-pack","writer":"w","codec":"auto","chunkSize":4096"#
        let cases: [(String, String)] = [
            (#"{"format":"other","version":1}"#, #"is not a torpor pack manifest (format "other")"#),
            (#"{"version":1}"#, #"is not a torpor pack manifest (format "missing")"#),
            (#"{"format":"torpor-pack","version":2}"#, "manifest version 2 is newer than this torpor"),
            ("{\(head)}", #"the manifest: "version" is missing"#),
            ("{\(head),\"version\":1}", #"the manifest: "files" is missing"#),
            ("{\(head),\"version\":1,\"files\":[{\"path\":1}]}", #"the manifest, file 0: "path" is not a string"#),
            (
                "{\(head),\"version\":1,\"files\":[\(file.replacingOccurrences(of: "packed", with: "zipped"))]}",
                #"the manifest, file 0: "kind" is "zipped", which this torpor does not know"#
            ),
            ("{\(head),\"version\":1,\"version\":1,\"files\":[]}", #"the manifest gives "version" twice"#),
            ("{\(head),\"version\":1,\"files\":[]", "is not valid JSON (expected ',' or '}' in an object at byte"),
        ]
        for (json, message) in cases {
            guard case .failure(let error) = manifest(json) else {
                Issue.record("accepted: \(json)")
                continue
            }
            #expect(error.message.contains(message), "\(json): \(error.message)")
        }
        // A member this torpor does not know is ignored: a newer writer may add one.
        #expect(throws: Never.self) { try manifest("{\(head),\"version\":1,\"files\":[],\"future\":[1]}").get() }
    }

    @Test("a container index reads back exactly as the writer encoded it")
    func indexRoundTrip() throws {
        let index = ContainerIndex(
            writer: .init(name: "torpor", version: "0.1.0", codecs: ["raw": "1", "byteplane": "1 (rANS)"]),
            checksum: "crc32-ieee", chunkSize: 1 << 20, chunkAlignment: 16,
            source: .init(fileName: "model.safetensors", size: 1234, sha256: "00ff"),
            metadata: ["format": "pt"],
            tensors: [
                .init(
                    name: "a", dtype: .bf16, shape: [2, 3], dataOffsets: [0, 12], codec: "byteplane", firstChunk: 0,
                    chunkCount: 1, duplicateOf: nil),
                .init(
                    name: "b", dtype: .f32, shape: [], dataOffsets: [12, 16], codec: "raw", firstChunk: 0,
                    chunkCount: 1, duplicateOf: "a"),
            ])
        let json = try JSONEncoder().encode(index)
        #expect(try json.withUnsafeBytes { try ContainerIndex(parsing: $0) } == index)
        let broken = String(decoding: json, as: UTF8.self).replacingOccurrences(of: #""BF16""#, with: #""BF17""#)
        #expect {
            try Array(broken.utf8).withUnsafeBytes { try ContainerIndex(parsing: $0) }
        } throws: { error in
            "\(error)" == #"the index, tensor 0: "dtype" is "BF17", which this torpor does not know"#
        }
    }
}
