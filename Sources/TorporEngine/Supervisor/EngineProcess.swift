import CTorporLinux
import Foundation
import Glibc
import Synchronization

/// One engine server process (vLLM or `torpor sim-engine`), started in its own session so that stopping it
/// signals its whole process group: vLLM forks workers, and killing only the parent leaks GPU memory.
public final class EngineProcess: Sendable {
    /// The process id, which is also its process group id.
    public let pid: Int32
    /// Where its standard output and error go.
    public let logPath: String
    /// The command line, for messages.
    public let commandLine: String
    /// The exit status once the process has been reaped (waitpid can report it only once).
    private let reaped = Mutex<Int32?>(nil)

    /// Starts `executable` with `arguments` and exactly `environment` (nothing of this process's own unless it is
    /// there: see `EngineEnvironment`), its output appended to `logPath`.
    /// - Throws: `EngineError` `.processFailed` naming the command when it cannot be started.
    public init(
        executable: String, arguments: [String], environment: [String: String] = [:], logPath: String
    ) throws(EngineError) {
        let path = executable.contains("/") ? executable : Self.lookUp(executable) ?? executable
        commandLine = ([path] + arguments).joined(separator: " ")
        self.logPath = logPath
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var child: Int32 = 0
        let result = CTorporLinux_spawnInNewSession(&child, path, argv, envp, logPath)
        guard result == 0 else {
            throw EngineError(.processFailed, "cannot start \(commandLine): \(String(cString: strerror(result)))")
        }
        pid = child
    }

    /// The exit status if the process has ended (reaping it), nil while it runs.
    public func exitStatus() -> Int32? {
        reaped.withLock { reaped in
            if let reaped { return reaped }
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            guard result == pid else {
                if result < 0 && errno == ECHILD { reaped = -1 }
                return reaped
            }
            reaped = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
            return reaped
        }
    }

    /// True while `pid` exists and is not a zombie.
    public static func isRunning(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat"),
            let close = String(decoding: data, as: UTF8.self).lastIndex(of: ")")
        else { return true }
        let text = String(decoding: data, as: UTF8.self)
        return text[text.index(after: close)...].split(separator: " ").first != "Z"
    }

    /// The kernel's start time of a process (clock ticks since boot, /proc/PID/stat field 22): with the pid it
    /// identifies a process across pid reuse, and survives exec.
    public static func startTime(of pid: Int32) -> UInt64? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        // The command name (field 2) may hold spaces and parentheses: count fields after its closing ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Sends `signal` to the whole process group.
    public func signalGroup(_ signal: Int32) {
        _ = kill(-pid, signal)
    }

    /// Stops the process group: SIGTERM, then SIGKILL after `grace`; returns once the leader is reaped.
    public func stop(grace: Duration = .seconds(10)) async {
        guard exitStatus() == nil else {
            signalGroup(SIGKILL)
            return
        }
        signalGroup(SIGTERM)
        let deadline = ContinuousClock.now + grace
        while exitStatus() == nil {
            if ContinuousClock.now >= deadline {
                signalGroup(SIGKILL)
                while exitStatus() == nil { try? await Task.sleep(for: .milliseconds(20)) }
                break
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        // Workers that outlived their leader are in the same group.
        signalGroup(SIGKILL)
    }

    /// The last `bytes` of the log, for error messages.
    public func logTail(bytes: Int = 2000) -> String {
        guard let data = FileManager.default.contents(atPath: logPath) else { return "" }
        return String(decoding: data.suffix(bytes), as: UTF8.self)
    }

    /// Waits until `client` reports the engine healthy, the process exits, or `deadline` passes.
    /// - Throws: `EngineError` `.processFailed` with the log's tail when the process exits first, `.timeout` when
    ///   the deadline passes.
    public func waitUntilReady(_ client: EngineClient, deadline: Duration) async throws(EngineError) {
        let end = ContinuousClock.now + deadline
        let socket = EngineClient.unixSocket(of: client.baseURL)
        while true {
            if let status = exitStatus() {
                throw EngineError(
                    .processFailed,
                    "engine \(client.name) exited with status \(status) before it was ready; log \(logPath):\n\(logTail())"
                )
            }
            // An engine on a unix socket is not probed before its socket exists: a probe would only fail to connect.
            let listening = socket.map { access($0, F_OK) == 0 } ?? true
            // Each probe gets at most the time left: the HTTP client keeps retrying a refused connection until
            // its own deadline.
            var probe = client
            probe.timeouts.probe = max(.milliseconds(50), min(client.timeouts.probe, end - ContinuousClock.now))
            if listening, (try? await probe.isHealthy()) == true { return }
            guard ContinuousClock.now < end else {
                throw EngineError(
                    .timeout, "engine \(client.name) was not ready within \(deadline); log \(logPath):\n\(logTail())")
            }
            // Shutting down: stop waiting (a cancelled sleep returns at once, which would spin to the deadline).
            guard !Task.isCancelled else {
                throw EngineError(.processFailed, "engine \(client.name): the start was cancelled")
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// A free TCP port on 127.0.0.1, chosen by the kernel.
    public static func freePort() throws(EngineError) -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw EngineError(.processFailed, "cannot create a socket to find a free port") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw EngineError(.processFailed, "cannot bind a socket to find a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func lookUp(_ command: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(command)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }
}
