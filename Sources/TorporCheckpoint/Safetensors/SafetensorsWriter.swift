import FoundationEssentials

/// Builds safetensors files: used to generate test models and converted benchmark models.
public struct SafetensorsBuilder: Sendable {
    private var entries: [(name: String, dtype: DType, shape: [Int], bytes: [UInt8])] = []
    /// Optional `__metadata__`.
    public var metadata: [String: String] = [:]

    public init() {}

    /// Adds a tensor; `bytes` must hold exactly dtype × shape bytes.
    public mutating func add(_ name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
        precondition(dtype.byteCount(elements: shape.reduce(1, *)) == bytes.count, "size mismatch for \(name)")
        entries.append((name, dtype, shape, bytes))
    }

    /// The serialized file: 8-byte little-endian header length, the JSON header padded with spaces to a multiple
    /// of 8 (as the reference writer does), then the tensors in the order they were added.
    public func serialized() -> [UInt8] {
        var out = Self.header(
            entries.map { ($0.name, $0.dtype, $0.shape, $0.bytes.count) }, metadata: metadata)
        out.reserveCapacity(out.count + entries.reduce(0) { $0 + $1.bytes.count })
        for entry in entries { out.append(contentsOf: entry.bytes) }
        return out
    }

    /// A safetensors file's first bytes for tensors laid out in this order, back to back: the 8-byte
    /// little-endian length, then the JSON header padded with spaces to a multiple of 8.
    public static func header(
        _ tensors: [(name: String, dtype: DType, shape: [Int], byteCount: Int)], metadata: [String: String] = [:]
    ) -> [UInt8] {
        var parts: [String] = []
        if !metadata.isEmpty {
            let items = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            parts.append("\"__metadata__\":{\(items.joined(separator: ","))}")
        }
        var offset = 0
        for tensor in tensors {
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            parts.append(
                "\(jsonString(tensor.name)):{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],"
                    + "\"data_offsets\":[\(offset),\(offset + tensor.byteCount)]}"
            )
            offset += tensor.byteCount
        }
        var header = Array(("{" + parts.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + header.count)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        return out
    }

    /// Writes the file to `path`.
    public func write(to path: String) throws {
        try Data(serialized()).write(to: URL(fileURLWithPath: path))
    }
}

/// A JSON string literal for `text` (quoted, with quotes, backslashes and control characters escaped).
public func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
