import CTorporLinux
import Glibc

/// Times a command as a user runs it: from spawning the process to its exit, start-up included.
enum CommandTiming {
    /// Runs `executable` with `arguments`, output going to `logPath`, and returns the wall time in seconds.
    /// - Throws: `.io` when it cannot start, or exits unsuccessfully, with the end of its output.
    static func seconds(_ executable: String, _ arguments: [String], logPath: String) throws(CheckpointError) -> Double
    {
        let argv = ([executable] + arguments).map { strdup($0) }
        defer { for pointer in argv { free(pointer) } }
        let environment = environ
        var child: pid_t = 0
        let started = ContinuousClock.now
        let result = (argv + [nil]).withUnsafeBufferPointer { argv in
            CTorporLinux_spawnInNewSession(&child, executable, argv.baseAddress, environment, logPath)
        }
        guard result == 0 else {
            throw CheckpointError(.io, "cannot start \(executable): \(errnoDescription(result))")
        }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 {
            guard errno == EINTR else { throw ioError("cannot wait for", executable) }
        }
        let elapsed = (ContinuousClock.now - started) / .seconds(1)
        guard status == 0 else {
            let log = (try? MappedFile(path: logPath)).map { String(decoding: $0.bytes.suffix(600), as: UTF8.self) }
            throw CheckpointError(
                .io,
                "`\(([executable] + arguments).joined(separator: " "))` failed (wait status \(status)): "
                    + (log ?? "no output"))
        }
        return elapsed
    }
}
