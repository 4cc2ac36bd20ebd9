import Foundation
import Glibc
import Testing
import TorporEngine

@testable import TorporGateway

/// Engines only the gateway can touch: unix sockets in a private directory by default, and what happens when
/// someone changes an engine's state behind the gateway's back anyway.
@Suite(.serialized) struct EngineIsolationTests {
    static let nobody: uid_t = 65534

    private static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "torpor-sockets-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    private static func mode(_ path: String) throws -> Int {
        try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber).intValue
    }

    @Test func theSocketDirectoryIsPrivateAndTakenBackWhenWidened() throws {
        let state = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: state) }
        let sockets = try EngineSockets(stateDirectory: state)
        #expect(try Self.mode(sockets.directory) == 0o700)
        chmod(sockets.directory, 0o755)
        _ = try EngineSockets(stateDirectory: state)
        #expect(try Self.mode(sockets.directory) == 0o700)
    }

    @Test func aLinkOrAnotherUsersDirectoryIsRefused() throws {
        let state = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: state) }
        try FileManager.default.createDirectory(atPath: state + "/elsewhere", withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(
            atPath: state + "/sockets", withDestinationPath: state + "/elsewhere")
        #expect {
            _ = try EngineSockets(stateDirectory: state)
        } throws: { error in
            (error as? ConfigurationError)?.message.contains("must be a directory of its own") == true
        }
        guard getuid() == 0 else { return }
        try FileManager.default.removeItem(atPath: state + "/sockets")
        try FileManager.default.createDirectory(atPath: state + "/sockets", withIntermediateDirectories: false)
        chown(state + "/sockets", Self.nobody, gid_t(Self.nobody))
        #expect {
            _ = try EngineSockets(stateDirectory: state)
        } throws: { error in
            (error as? ConfigurationError)?.message.contains("belongs to uid 65534, not to this user") == true
        }
    }

    @Test func socketNamesAreSafeAndFitASocketAddress() throws {
        let state = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: state) }
        let sockets = try EngineSockets(stateDirectory: state)
        #expect(
            try sockets.path(forModel: "meta-llama/Llama 3.1:8b", index: 0)
                == sockets.directory + "/meta-llama_Llama_3.1_8b.sock")
        let long = String(repeating: "x", count: 120)
        #expect(try sockets.path(forModel: long, index: 3) == sockets.directory + "/3.sock")
        let deep = state + "/" + String(repeating: "d", count: 100)
        try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: false)
        #expect {
            _ = try EngineSockets(stateDirectory: deep).path(forModel: "m", index: 0)
        } throws: { error in
            (error as? ConfigurationError)?.message.contains("too long for unix socket addresses") == true
        }
    }

    /// `curl` against an engine's socket, as `user` (nil: as this process's user); the exit status and stderr.
    private static func curlSocket(_ socket: String, as user: uid_t?) throws -> (Int32, String) {
        let process = Process()
        var arguments = ["curl", "-sS", "--max-time", "5", "--unix-socket", socket, "http://engine/health"]
        if let user {
            arguments = ["setpriv", "--reuid=\(user)", "--regid=\(user)", "--clear-groups"] + arguments
        }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (process.terminationStatus, message)
    }

    @Test func enginesListenOnPrivateSocketsThatNoOtherUserCanReach() async throws {
        try await withGateway(simulatedModels(2, awake: 1)) { gateway in
            let statuses = await gateway.gateway.scheduler.statuses()
            for status in statuses {
                let socket = try #require(status.engineSocket, "\(status.name) has no socket: \(status.engineURL)")
                #expect(socket == gateway.stateDirectory + "/sockets/\(status.name).sock")
                #expect(status.engineURL.hasPrefix("http+unix://"))
                let (code, message) = try Self.curlSocket(socket, as: nil)
                #expect(code == 0, "the gateway's own user cannot reach \(socket): \(message)")
            }
            #expect(try Self.mode(gateway.stateDirectory + "/sockets") == 0o700)
            #expect(try await gateway.complete("m1").status == 200)
        }
    }

    @Test(.enabled(if: getuid() == 0, "acting as another user needs root (CI runs as root)"))
    func anotherUserCannotReachAnEngine() async throws {
        try await withGateway(simulatedModels(1, awake: 1)) { gateway in
            let socket = try #require(await gateway.gateway.scheduler.statuses().first?.engineSocket)
            let (code, message) = try Self.curlSocket(socket, as: Self.nobody)
            #expect(code != 0)
            #expect(message.contains("Permission denied") || message.contains("Couldn't connect"), "\(message)")
            // The same call as root goes through: the refusal is the directory's doing.
            #expect(try Self.curlSocket(socket, as: nil).0 == 0)
        }
    }

    @Test func loopbackTCPIsAnExplicitChoice() async throws {
        try await withGateway("engine_transport: tcp\n" + simulatedModels(1, awake: 1)) { gateway in
            let status = try #require(await gateway.gateway.scheduler.statuses().first)
            #expect(status.engineURL.hasPrefix("http://127.0.0.1:"))
            #expect(status.engineSocket == nil)
            #expect(try await gateway.complete("m0").status == 200)
        }
    }

    @Test func anEngineSleptOrWokenBehindTheGatewaysBackIsReconciled() async throws {
        // Room for both awake, so that a wake behind the gateway's back succeeds.
        let yaml = """
            gpus: [{id: "0", memory_gib: 16}]
            models:
              - {name: m0, preload: true, engine: {simulated: true, time_scale: 0.01}, weights_gib: 3, kv_cache_gib: 3}
              - {name: m1, engine: {simulated: true, time_scale: 0.01}, weights_gib: 3, kv_cache_gib: 3}

            """
        try await withGateway(yaml) { gateway in
            let before = try await gateway.complete("m0", prompt: "same")
            #expect(before.status == 200)
            // Someone with access to the engine puts it to sleep directly.
            let slept = try await HTTPAnswer.send("POST", await gateway.engineURL("m0") + "/sleep?level=1")
            #expect(slept.status == 200, "\(slept.body)")
            try await gateway.waitUntil("m0 recorded asleep", timeout: .seconds(10)) {
                await gateway.state("m0") == "L1"
            }
            #expect(gateway.events().contains { $0.kind == "reconcile" && $0.model == "m0" })
            // The next request wakes it, and gets the same answer as before.
            let after = try await gateway.complete("m0", prompt: "same")
            #expect(after.status == 200, "\(after.body)")
            #expect(after.text == before.text)
            // Someone wakes a sleeper directly: it is put back to sleep.
            #expect(await gateway.state("m1") == "L1")
            let woken = try await HTTPAnswer.send("POST", await gateway.engineURL("m1") + "/wake_up")
            #expect(woken.status == 200, "\(woken.body)")
            try await gateway.waitUntil("m1 put back to sleep", timeout: .seconds(10)) {
                let state = await gateway.state("m1")
                return gateway.events().contains { $0.kind == "reconcile" && $0.model == "m1" } && state == "L1"
            }
            let sleeping = try await HTTPAnswer.send("GET", await gateway.engineURL("m1") + "/is_sleeping")
            #expect(sleeping.json?["is_sleeping"] as? Bool == true)
        }
    }
}
