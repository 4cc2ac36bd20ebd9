import Foundation
import TorporCheckpoint

/// Renders `torpor inspect` as aligned text.
struct InspectionTable {
    let inspection: PackInspection

    init(_ inspection: PackInspection) { self.inspection = inspection }

    func render() -> String {
        var lines: [String] = []
        for file in inspection.files {
            guard file.kind == .packed, let container = file.container else {
                lines.append("\(file.path): copied, \(formatBytes(file.bytes))")
                continue
            }
            let chunk = file.chunkSize.map { $0 % (1 << 20) == 0 ? "\($0 >> 20) MiB" : "\($0 >> 10) KiB" } ?? "?"
            lines.append(
                "\(container) ← \(file.path) (\(file.writer ?? "?"), \(chunk) chunks, \(plural(file.tensors.count, "tensor")))"
            )
            let nameWidth = min(60, max(6, file.tensors.map(\.name.count).max() ?? 6)) + 2
            lines.append(
                "  " + pad("tensor", nameWidth) + pad("dtype", 8) + pad("shape", 18) + pad("codec", 12)
                    + pad("bytes", 11, right: true) + pad("stored", 11, right: true) + pad("ratio", 8, right: true))
            for tensor in file.tensors {
                var codec = tensor.codec
                if tensor.rawChunks > 0 { codec += " (\(tensor.rawChunks)/\(tensor.chunks) raw)" }
                let shape = "[" + tensor.shape.map(String.init).joined(separator: ",") + "]"
                let ratio =
                    tensor.bytes > 0 ? String(format: "%.3f", Double(tensor.storedBytes) / Double(tensor.bytes)) : "-"
                var line =
                    "  " + pad(tensor.name, nameWidth) + pad(tensor.dtype.rawValue, 8) + pad(shape, 18) + pad(codec, 12)
                    + pad(formatBytes(tensor.bytes), 11, right: true)
                if let original = tensor.duplicateOf {
                    line += "  same bytes as \(original), stored once"
                } else {
                    line += pad(formatBytes(tensor.storedBytes), 11, right: true) + pad(ratio, 8, right: true)
                }
                lines.append(line)
            }
            lines.append(
                "  container: \(formatBytes(file.bytes)) → \(formatBytes(file.storedBytes)) "
                    + String(format: "(%.4f)", Double(file.storedBytes) / Double(max(file.bytes, 1))))
        }
        let totals = inspection.totals
        lines.append(
            "total: \(plural(totals.files, "file")), \(plural(totals.tensors, "tensor")); safetensors \(formatBytes(totals.safetensorsBytes)) → "
                + "containers \(formatBytes(totals.containerBytes)) (\(String(format: "%.4f", totals.ratio))); "
                + "all files \(formatBytes(totals.bytes)) → \(formatBytes(totals.storedBytes))")
        return lines.joined(separator: "\n")
    }

    private func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(1, width - text.count))
        return right ? fill + text : text + fill
    }
}
