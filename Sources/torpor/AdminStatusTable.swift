import Foundation
import TorporGateway

/// `torpor admin status`'s table: one line a model, then one a GPU, in columns a reader takes in at a glance.
struct AdminStatusTable {
    let models: [Scheduler.ModelStatus]
    let gpus: [Scheduler.Ledger]

    func render() -> String {
        var out = ""
        if !models.isEmpty {
            out += columns(
                [["MODEL", "STATE", "GPU", "IN FLIGHT", "QUEUED", "GPU MEM", "HOST MEM", "REQ/S", "PID", "ALIASES"]]
                    + models.map { model in
                        [
                            model.name, model.state + (model.lastError == nil ? "" : " !"), model.gpu,
                            "\(model.inFlight)", "\(model.queued)", gib(model.gpuBytes), gib(model.hostBytes),
                            String(format: "%.2f", model.requestsPerSecond), model.enginePID.map(String.init) ?? "-",
                            model.aliases.isEmpty ? "-" : model.aliases.joined(separator: ","),
                        ]
                    })
            for model in models {
                if let error = model.lastError { out += "\n\(model.name): \(error)\n" }
            }
            out += "\n"
        }
        out += columns(
            [["GPU", "AWAKE", "ASLEEP", "FREE", "CAPACITY", "LEASE", "TRANSITION"]]
                + gpus.map { gpu in
                    [
                        gpu.gpu, gib(gpu.awakeBytes), gib(gpu.residueBytes), gib(gpu.freeBytes), gib(gpu.capacityBytes),
                        gpu.lease ?? "-", gpu.transition ?? "-",
                    ]
                })
        return out
    }

    /// Left-aligned columns two spaces apart.
    private func columns(_ rows: [[String]]) -> String {
        let widths = (0..<(rows.first?.count ?? 0)).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n") + "\n"
    }

    private func gib(_ bytes: Int) -> String { String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }
}
