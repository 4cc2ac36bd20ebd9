import Foundation
import Glibc

/// The memory of one simulated GPU, shared by every simulated engine process that names it.
///
/// A small JSON ledger file, read and written under `flock`, records each engine's GPU and host bytes and the
/// transition in progress, so that separate `torpor sim-engine` processes see each other as vLLM servers on one
/// GPU do: a wake fails without room, and a transition while a neighbour is mid-transition fails like vLLM's
/// "Memory usage increased after sleeping". Entries of dead processes are ignored and pruned.
struct SimulatedGPU: Sendable {
    struct Ledger: Codable {
        struct Engine: Codable {
            var pid: Int32
            var model: String
            var gpuBytes: Int
            var hostBytes: Int
        }

        struct Transition: Codable {
            var engine: String
            /// Seconds since 1970; a transition past this is considered over (its engine died mid-way).
            var until: Double
        }

        var totalBytes: Int
        var engines: [String: Engine] = [:]
        var transition: Transition?
    }

    let path: String
    let totalBytes: Int

    /// Runs `body` on the ledger under an exclusive lock and writes back what it leaves.
    func update<T>(_ body: (inout Ledger) throws -> T) throws -> T {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw SimulationError("cannot open the GPU ledger \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw SimulationError("cannot lock the GPU ledger \(path)") }
        defer { flock(fd, LOCK_UN) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = pread(fd, &buffer, buffer.count, off_t(data.count))
            guard count > 0 else { break }
            data.append(contentsOf: buffer[0..<count])
        }
        var ledger = (try? JSONDecoder().decode(Ledger.self, from: data)) ?? Ledger(totalBytes: totalBytes)
        ledger.totalBytes = totalBytes
        ledger.engines = ledger.engines.filter { kill($0.value.pid, 0) == 0 || errno != ESRCH }
        if let transition = ledger.transition,
            transition.until < Date().timeIntervalSince1970 || ledger.engines[transition.engine] == nil
        {
            ledger.transition = nil
        }
        let result = try body(&ledger)
        let encoded = try JSONEncoder().encode(ledger)
        guard ftruncate(fd, 0) == 0,
            encoded.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 0) }) == encoded.count
        else { throw SimulationError("cannot write the GPU ledger \(path)") }
        return result
    }
}

/// A failure of the simulation itself (not of the simulated engine).
struct SimulationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
