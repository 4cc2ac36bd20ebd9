import Foundation
import Testing

@testable import TorporCheckpoint

@Suite("Reading safetensors")
struct SafetensorsTests {
    @Test("every dtype, empty and 0-d tensors and metadata are read exactly")
    func readsEveryDType() throws {
        let builder = everyDTypeModel()
        let directory = TemporaryDirectory()
        try builder.write(to: directory.file("m.safetensors"))
        let file = try SafetensorsFile(path: directory.file("m.safetensors"))
        #expect(Set(file.header.tensors.map(\.dtype)) == Set(DType.allCases))
        #expect(file.header.metadata == ["format": "pt", "note": "every \"dtype\""])
        let empty = try #require(file.header.tensors.first { $0.name == "empty" })
        #expect(empty.shape == [0, 4] && empty.byteCount == 0)
        let scalar = try #require(file.header.tensors.first { $0.name == "scalar" })
        #expect(scalar.shape == [] && scalar.elementCount == 1)
        #expect(Array(file.bytes(of: scalar)) == [42, 0, 0, 0, 0, 0, 0, 0])
        let f4 = try #require(file.header.tensors.first { $0.dtype == .f4 })
        #expect(f4.byteCount == 48)
    }

    /// A file whose header is `json`, followed by `data`.
    private func file(header json: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
        let header = Array(json.utf8)
        var bytes: [UInt8] = []
        withUnsafeBytes(of: (declaredLength ?? UInt64(header.count)).littleEndian) { bytes.append(contentsOf: $0) }
        return bytes + header + data
    }

    private func parse(_ bytes: [UInt8]) throws {
        _ = try bytes.withUnsafeBytes { try SafetensorsHeader(parsing: $0, file: "bad.safetensors") }
    }

    @Test(
        "malformed headers are rejected with a message naming the file and tensor",
        arguments: [
            (
                #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8, UInt64(9999),
                "runs beyond the end of the file", nil
            ),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, 8, nil, "not valid JSON", nil),
            (#"[1,2]"#, 0, nil, "does not start with '{'", nil),
            (#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#, 8, nil, "unknown dtype \"F33\"", "a"),
            (#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8, nil, "needs 12", "a"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, 8, nil, "out of order", "a"),
            (#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, 8, nil, "non-negative integer", "a"),
            (#"{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#, 8, nil, "non-negative integer", "a"),
            (#"{"a":{"dtype":"F32","shape":[2]}}"#, 8, nil, "data_offsets", "a"),
            (#"{"a":{"shape":[2],"data_offsets":[0,8]}}"#, 8, nil, "dtype", "a"),
            (
                #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12, nil, "overlaps", "b"
            ),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12, nil, "hole before \"a\"", nil),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4, nil, "beyond the 4-byte data region", "a"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 9, nil, "trailing bytes", nil),
            (#"{"__metadata__":{"k":1}}"#, 0, nil, "not a string", nil),
            (#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#, 1, nil, "do not fill whole bytes", "a"),
        ] as [(String, Int, UInt64?, String, String?)]
    )
    func rejectsMalformedHeaders(json: String, dataBytes: Int, declared: UInt64?, reason: String, tensor: String?)
        throws
    {
        let bytes = file(header: json, data: [UInt8](repeating: 0, count: dataBytes), declaredLength: declared)
        let error = try #require(checkpointError { try parse(bytes) })
        #expect(error.code == .invalidSafetensors)
        #expect(error.message.hasPrefix("bad.safetensors:"), "\(error.message)")
        #expect(error.message.contains(reason), "\(error.message)")
        if let tensor { #expect(error.message.contains("\"\(tensor)\""), "\(error.message)") }
    }

    @Test("a file shorter than its length prefix is rejected")
    func rejectsShortFile() throws {
        let error = try #require(checkpointError { try parse([1, 2, 3]) })
        #expect(error.message.contains("too short"))
    }
}
