import Foundation
import Glibc

/// One gateway per state directory: an exclusive `flock` on `STATE_DIR/gateway.lock`, held while the gateway runs
/// (the descriptor is not inherited by engines), and a line in the file saying who holds it. A second gateway on
/// the same directory is refused with that line, before it touches anything there — in particular before it stops
/// engines "left running by a previous gateway", which it does only once it holds the lock, that is only when that
/// gateway is gone.
final class StateDirectoryLock: Sendable {
    let path: String
    private let descriptor: Int32

    /// Takes the lock of `directory` (created when missing).
    /// - Throws: `ConfigurationError` naming the holder (pid, listeners, start) when another gateway has it.
    init(directory: String) throws(ConfigurationError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError("state_dir: cannot create \(directory): \(error.localizedDescription)")
        }
        path = directory + "/gateway.lock"
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw ConfigurationError("state_dir: cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
            close(descriptor)
            throw ConfigurationError(
                "state_dir \(directory) is in use by another torpor gateway "
                    + "(\(holder.flatMap { $0.isEmpty ? nil : $0 } ?? "its details are not written yet")); stop it, "
                    + "or give this one a `state_dir` of its own")
        }
        record("pid \(getpid()), starting since \(Self.now())")
    }

    /// Says where this gateway listens, for the refusal of the next one.
    func record(clientPort: Int, adminPort: Int, clientHost: String, adminHost: String) {
        record(
            "pid \(getpid()), client \(clientHost):\(clientPort), admin \(adminHost):\(adminPort), since \(Self.now())")
    }

    private func record(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = ftruncate(descriptor, 0)
        _ = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
    }

    private static func now() -> String { ISO8601DateFormatter().string(from: Date()) }

    /// Closing the descriptor releases the lock.
    deinit { close(descriptor) }
}
