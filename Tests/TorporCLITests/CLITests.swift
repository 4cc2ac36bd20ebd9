import Foundation
import Glibc
import Testing
import TorporCheckpoint

/// The result of running the `torpor` binary.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs the built `torpor` binary, as a user would, with no terminal attached, and gives it `timeout` to finish.
///
/// Output goes to temporary files, not pipes: a pipe's end that another process started at the same moment
/// inherits would never report end-of-file.
func torpor(_ arguments: String..., timeout: Duration = .seconds(300)) throws -> CommandResult {
    try torpor(arguments, timeout: timeout)
}

/// `torpor(_:timeout:)` with the arguments in an array; as `user` (through `setpriv`) when one is given.
func torpor(_ arguments: [String], as user: uid_t? = nil, timeout: Duration = .seconds(300)) throws -> CommandResult {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
        "torpor")
    let located =
        FileManager.default.isExecutableFile(atPath: binary.path)
        ? binary
        : URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/torpor")
    let scratch = Scratch()
    let outPath = scratch.path + "/stdout"
    let errPath = scratch.path + "/stderr"
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    let process = Process()
    if let user {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = ["--reuid=\(user)", "--regid=\(user)", "--clear-groups", located.path] + arguments
    } else {
        process.executableURL = located
        process.arguments = arguments
    }
    process.standardOutput = FileHandle(forWritingAtPath: outPath)
    process.standardError = FileHandle(forWritingAtPath: errPath)
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
        if ContinuousClock.now > deadline {
            process.terminate()
            Issue.record("torpor \(arguments.joined(separator: " ")) did not finish within \(timeout)")
            break
        }
        usleep(5000)
    }
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: try bytes(outPath), as: UTF8.self),
        stderr: String(decoding: try bytes(errPath), as: UTF8.self))
}

final class Scratch {
    let path: String
    init() {
        var template = Array((NSTemporaryDirectory() + "/torpor-cli-XXXXXX").utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

enum Fixture {
    static var directory: String {
        if let path = ProcessInfo.processInfo.environment["TORPOR_FIXTURES"] { return path }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/fixtures").path
    }
}

func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

@Suite("The torpor command", .serialized)
struct CLITests {
    @Test("pack, inspect, verify and unpack the tiny Llama as a user would")
    func fullCycle() throws {
        let scratch = Scratch()
        let model = Fixture.directory + "/tiny-llama"
        let pack = scratch.path + "/packed"
        let files = try FileManager.default.contentsOfDirectory(atPath: model).count
        let packed = try torpor("pack", model, pack)
        #expect(packed.status == 0, "\(packed.stderr)")
        #expect(packed.stdout.contains("packed \(files) files into \(pack)"), "\(packed.stdout)")
        // Not a terminal: one plain line per file on standard error, no bar.
        #expect(packed.stderr.contains("model.safetensors: "), "\(packed.stderr)")
        #expect(!packed.stderr.contains("\r"))
        #expect(FileManager.default.fileExists(atPath: pack + "/model.torpor"))
        #expect(try bytes(pack + "/tokenizer.json") == bytes(model + "/tokenizer.json"))

        let table = try torpor("inspect", pack)
        #expect(table.status == 0)
        #expect(table.stdout.contains("model.embed_tokens.weight"), "\(table.stdout)")
        #expect(table.stdout.contains("F32") && table.stdout.contains("byteplane"))
        #expect(table.stdout.contains("total: \(files) files"))

        let json = try torpor("inspect", pack, "--json")
        let inspection = try JSONDecoder().decode(PackInspection.self, from: Data(json.stdout.utf8))
        let container = try #require(inspection.files.first { $0.kind == .packed })
        #expect(container.tensors.contains { $0.name == "model.embed_tokens.weight" && $0.shape == [374, 128] })
        #expect(inspection.totals.safetensorsBytes == (try bytes(model + "/model.safetensors")).count)

        let verified = try torpor("verify", pack, "--against", model)
        #expect(verified.status == 0, "\(verified.stderr)")
        #expect(verified.stdout.contains("every byte matches"))

        let restored = scratch.path + "/restored"
        let unpacked = try torpor("unpack", pack, restored, "--quiet")
        #expect(unpacked.status == 0 && unpacked.stdout.isEmpty && unpacked.stderr.isEmpty)
        for file in try FileManager.default.contentsOfDirectory(atPath: model) {
            #expect(try bytes(restored + "/" + file) == bytes(model + "/" + file), "\(file)")
        }
    }

    @Test("bench pack times the commands, writes JSON and says when ZipNN is not there to compare with")
    func benchPack() throws {
        let scratch = Scratch()
        let json = scratch.path + "/bench.json"
        let result = try torpor(
            "bench", "pack", Fixture.directory + "/tiny-llama", "--codecs", "auto,raw", "--repeat", "1", "--json", json,
            "--zipnn-python", scratch.path + "/no-such-python")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("`torpor` commands timed from process start to exit"), "\(result.stdout)")
        #expect(result.stdout.contains("zipnn: not measured: "), "\(result.stdout)")
        #expect(result.stdout.contains("SHA-256 alone, one core: "))
        let report =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        #expect(report?["timing"] as? String == "command")
        let rows = report?["rows"] as? [[String: Any]] ?? []
        #expect(rows.map { $0["codec"] as? String } == ["auto", "raw"])
        #expect(rows.allSatisfy { ($0["unpackMBps"] as? Double ?? 0) > 0 && ($0["packMBps"] as? Double ?? 0) > 0 })
        #expect((report?["peerNote"] as? String)?.contains("no-such-python") == true)
    }

    @Test("bench pack measures ZipNN where a Python has it, with and without the SHA-256 torpor computes")
    func benchPackWithAPeer() throws {
        let scratch = Scratch()
        // A stand-in `zipnn` (a lossless identity coder with the real one's interface and package metadata) on a
        // Python of its own, so that the peer's whole path runs without the real package.
        let site = scratch.path + "/site"
        try FileManager.default.createDirectory(atPath: site + "/zipnn", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(
            atPath: site + "/zipnn-9.9.dist-info", withIntermediateDirectories: true)
        try """
        class ZipNN:
            def __init__(self, input_format, bytearray_dtype, threads):
                assert input_format == "byte" and bytearray_dtype in ("bfloat16", "float16", "float32")
            def compress(self, data):
                return bytes(data)
            def decompress(self, data):
                return bytearray(data)
        """.write(toFile: site + "/zipnn/__init__.py", atomically: true, encoding: .utf8)
        try "Metadata-Version: 2.1\nName: zipnn\nVersion: 9.9\n".write(
            toFile: site + "/zipnn-9.9.dist-info/METADATA", atomically: true, encoding: .utf8)
        let python = scratch.path + "/python"
        try "#!/bin/sh\nPYTHONPATH=\(site) exec python3 \"$@\"\n".write(
            toFile: python, atomically: true, encoding: .utf8)
        chmod(python, 0o755)

        let json = scratch.path + "/bench.json"
        let work = scratch.path + "/work"
        let result = try torpor(
            "bench", "pack", Fixture.directory + "/tiny-llama", "--codecs", "auto", "--repeat", "1", "--json", json,
            "--zipnn-python", python, "--work-dir", work)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("zipnn: zipnn 9.9 (Python "), "\(result.stdout)")
        #expect(result.stdout.contains("every round trip byte-exact"), "\(result.stdout)")
        #expect(result.stdout.contains("with its SHA-256), unpack"), "\(result.stdout)")
        #expect(result.stdout.contains("\nzipnn file "), "\(result.stdout)")
        #expect(result.stdout.contains("auto against zipnn file to file: pack "), "\(result.stdout)")
        // The peer's files went where the benchmark's own go, and are gone.
        #expect(try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.hasPrefix("zipnn") } == [])
        let report =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        let peer = try #require(report?["peer"] as? [String: Any], "\(report ?? [:])")
        #expect(peer["ratio"] as? Double == 1)
        let compress = try #require(peer["compressMBps"] as? Double)
        let compressAndHash = try #require(peer["compressAndHashMBps"] as? Double)
        let decompress = try #require(peer["decompressMBps"] as? Double)
        let decompressAndHash = try #require(peer["decompressAndHashMBps"] as? Double)
        #expect(compressAndHash > 0 && compressAndHash < compress)
        #expect(decompressAndHash > 0 && decompressAndHash < decompress)
        // File to file: the same calls with the reads, the writes and the fsyncs a command does.
        for step in ["compressFileMBps", "decompressFileMBps", "verifyFileMBps"] {
            let rate = try #require(peer[step] as? Double, "\(step): \(peer)")
            #expect(rate > 0 && rate.isFinite, "\(step): \(rate)")
        }
        #expect(try #require(peer["compressFileMBps"] as? Double) < compress)
        #expect(try #require(peer["decompressFileMBps"] as? Double) < decompress)
    }

    @Test("a corrupted pack fails verify and unpack with a message naming the file, tensor and chunk")
    func corruptionIsReported() throws {
        let scratch = Scratch()
        let pack = scratch.path + "/packed"
        #expect(try torpor("pack", Fixture.directory + "/minilm-l6-bf16.safetensors", pack, "-q").status == 0)
        let path = pack + "/minilm-l6-bf16.torpor"
        var data = try bytes(path)
        data[4096 + 100] ^= 0x04
        try data.write(to: URL(fileURLWithPath: path))
        let verified = try torpor("verify", pack)
        #expect(verified.status == 1)
        #expect(verified.stderr.hasPrefix("error: \(path): tensor \""), "\(verified.stderr)")
        #expect(verified.stderr.contains("chunk 0") && verified.stderr.contains("CRC-32"), "\(verified.stderr)")
        let unpacked = try torpor("unpack", pack, scratch.path + "/out")
        #expect(unpacked.status == 1)
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))
        // Cut in half, as an interrupted copy leaves it: it says so.
        try Data(data.prefix(data.count / 2)).write(to: URL(fileURLWithPath: path))
        let truncated = try torpor("inspect", pack)
        #expect(truncated.status == 1)
        #expect(truncated.stderr.contains("looks truncated"), "\(truncated.stderr)")
    }

    @Test("bad input gets a clear error and a non-zero exit")
    func badInput() throws {
        let scratch = Scratch()
        let notSafetensors = scratch.path + "/model"
        try FileManager.default.createDirectory(atPath: notSafetensors, withIntermediateDirectories: true)
        try Data("{\"dtype\": oops".utf8).write(to: URL(fileURLWithPath: notSafetensors + "/model.safetensors"))
        let broken = try torpor("pack", notSafetensors, scratch.path + "/out")
        #expect(broken.status == 1)
        #expect(broken.stderr.contains("model.safetensors"), "\(broken.stderr)")
        #expect(broken.stderr.contains("not a safetensors file"), "\(broken.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))

        let codec = try torpor("pack", notSafetensors, scratch.path + "/out", "--codec", "lz4")
        #expect(codec.status == 1 && codec.stderr.contains("unknown codec \"lz4\""), "\(codec.stderr)")
        #expect(codec.stderr.contains("Usage: torpor pack <model> <output>"), "pack's usage: \(codec.stderr)")

        let chunk = try torpor("pack", Fixture.directory + "/tiny-llama", scratch.path + "/out", "--chunk-size", "100")
        #expect(chunk.status == 1 && chunk.stderr.contains("chunk size 100 is invalid"), "\(chunk.stderr)")

        let ansWithoutGPU = try torpor(
            "pack", Fixture.directory + "/tiny-llama", scratch.path + "/out", "--ans-states", "2")
        #expect(
            ansWithoutGPU.status != 0 && ansWithoutGPU.stderr.contains("tune the GPU's ANS encoder: add --gpu"),
            "\(ansWithoutGPU.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))

        for command in ["verify", "inspect", "unpack"] {
            let arguments = [command, scratch.path + "/nowhere"] + (command == "unpack" ? [scratch.path + "/out"] : [])
            let missing = try torpor(arguments)
            #expect(missing.status == 1 && missing.stderr.contains("nowhere does not exist"), "\(missing.stderr)")
        }
        let file = try torpor("verify", notSafetensors + "/model.safetensors")
        #expect(file.status == 1 && file.stderr.contains("is a file, not a pack"), "\(file.stderr)")

        let incomplete = try torpor("inspect", notSafetensors)
        #expect(
            incomplete.status == 1 && incomplete.stderr.contains("not a complete torpor pack"), "\(incomplete.stderr)")
    }

    @Test("a pack killed mid-way leaves no output, and the next pack removes its leftovers")
    func killedPack() throws {
        let scratch = Scratch()
        let model = scratch.path + "/model"
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        for shard in 1...3 {
            try FileManager.default.copyItem(
                atPath: Fixture.directory + "/minilm-l6-bf16.safetensors", toPath: model + "/part-\(shard).safetensors")
        }
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("torpor")
        let process = Process()
        process.executableURL = binary
        process.arguments = ["pack", model, scratch.path + "/out", "--quiet", "--threads", "1"]
        try process.run()
        let partial = scratch.path + "/.out.partial-\(process.processIdentifier)"
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: partial + "/part-1.torpor") && Date() < deadline {
            usleep(2000)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "the pack finished before it could be killed")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))
        #expect(FileManager.default.fileExists(atPath: partial))

        let again = try torpor("pack", model, scratch.path + "/out", "-q")
        #expect(again.status == 0, "\(again.stderr)")
        #expect(!FileManager.default.fileExists(atPath: partial))
        #expect(try torpor("verify", scratch.path + "/out", "--against", model, "-q").status == 0)
    }

    @Test("a full disk mid-pack leaves nothing that looks complete and says why", .enabled(if: getuid() == 0))
    func fullDisk() throws {
        let scratch = Scratch()
        let mountPoint = scratch.path + "/small"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mountPoint]
        try mount.run()
        mount.waitUntilExit()
        try #require(mount.terminationStatus == 0, "cannot mount a tmpfs to fill")
        defer {
            let unmount = Process()
            unmount.executableURL = URL(fileURLWithPath: "/bin/umount")
            unmount.arguments = [mountPoint]
            try? unmount.run()
            unmount.waitUntilExit()
        }
        let result = try torpor("pack", Fixture.directory + "/minilm-l6-bf16.safetensors", mountPoint + "/pack")
        #expect(result.status == 1)
        #expect(result.stderr.contains("No space left on device"), "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: mountPoint).isEmpty)
    }
}
