import Foundation
import Glibc
import Testing

/// Errors that say what is wrong, run as the README's users run the binary: each names the problem and exits 1.
@Suite("Errors that say what is wrong", .serialized)
struct CLIErrorTests {
    static let nobody: uid_t = 65534

    /// Mounts a tmpfs at `path` (root only); the returned closure unmounts it.
    private static func mountTmpfs(at path: String, options: String) throws -> () -> Void {
        func run(_ tool: String, _ arguments: [String]) -> Int32 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = arguments
            guard (try? process.run()) != nil else { return -1 }
            process.waitUntilExit()
            return process.terminationStatus
        }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try #require(run("/bin/mount", ["-t", "tmpfs", "-o", options, "tmpfs", path]) == 0, "cannot mount a tmpfs")
        return { _ = run("/bin/umount", [path]) }
    }

    @Test("an unknown flag or command exits 1, naming it and the closest command; help and version exit 0")
    func unknownFlagsAndCommands() throws {
        let flag = try torpor("pack", "--frob", "a", "b")
        #expect(flag.status == 1, "README: every error exits 1")
        #expect(flag.stderr.contains("Unknown option '--frob'"), "\(flag.stderr)")
        #expect(flag.stderr.contains("Usage: torpor pack"), "\(flag.stderr)")

        let command = try torpor("packk", "x", "y")
        #expect(command.status == 1)
        #expect(
            command.stderr.contains("`torpor packk` is not a command; did you mean `torpor pack`?"), "\(command.stderr)"
        )
        let nested = try torpor("gpu", "infoo")
        #expect(nested.status == 1)
        #expect(nested.stderr.contains("did you mean `torpor gpu info`?"), "\(nested.stderr)")
        let far = try torpor("zzzzzzzzzz")
        #expect(far.status == 1 && far.stderr.contains("is not a command") && !far.stderr.contains("did you mean"))

        #expect(try torpor("--help").status == 0)
        #expect(try torpor("help", "pack").stdout.contains("USAGE: torpor pack"))
        #expect(try torpor("--version").status == 0)
    }

    @Test("a model directory that cannot be read says permission denied")
    func unreadableModel() throws {
        let scratch = Scratch()
        chmod(scratch.path, 0o755)
        let model = scratch.path + "/model"
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: false)
        try FileManager.default.copyItem(
            atPath: Fixture.directory + "/tiny-llama/model.safetensors", toPath: model + "/model.safetensors")
        let outputs = scratch.path + "/outputs"
        try FileManager.default.createDirectory(atPath: outputs, withIntermediateDirectories: false)
        chmod(outputs, 0o777)
        let result: CommandResult
        if getuid() == 0 {
            // Root reads everything: the model is root's own and private, and the pack runs as nobody.
            chmod(model, 0o700)
            result = try torpor(["pack", model, outputs + "/packed"], as: Self.nobody)
        } else {
            chmod(model, 0)
            defer { chmod(model, 0o755) }
            result = try torpor("pack", model, outputs + "/packed")
        }
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot read the directory \(model): Permission denied"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: outputs + "/packed"))
    }

    @Test("bench checks where its results and scratch files go before it runs, and names the cause")
    func benchOutputsAreCheckedFirst() throws {
        let scratch = Scratch()
        let readOnly = scratch.path + "/read-only"
        var unmount: () -> Void = {}
        if getuid() == 0 {
            unmount = try Self.mountTmpfs(at: readOnly, options: "ro,size=1m")
        } else {
            try FileManager.default.createDirectory(atPath: readOnly, withIntermediateDirectories: false)
            chmod(readOnly, 0o555)
        }
        defer { unmount() }
        let cause = getuid() == 0 ? "Read-only file system" : "Permission denied"
        let model = Fixture.directory + "/tiny-llama"
        let json = try torpor(
            "bench", "pack", model, "--codecs", "raw", "--repeat", "1", "--json", readOnly + "/r.json")
        #expect(json.status == 1)
        #expect(json.stderr.contains("cannot write the results to \(readOnly)/r.json"), "\(json.stderr)")
        #expect(json.stderr.contains(cause), "\(json.stderr)")
        #expect(json.stdout.isEmpty, "the benchmark ran before the check: \(json.stdout)")

        let work = try torpor(
            "bench", "pack", model, "--codecs", "raw", "--repeat", "1", "--json", scratch.path + "/r.json",
            "--work-dir", readOnly + "/work")
        #expect(work.status == 1)
        #expect(work.stderr.contains("cannot create the work directory \(readOnly)/work"), "\(work.stderr)")
        #expect(work.stderr.contains(cause), "\(work.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/r.json"))
    }

    @Test("verify --against one file checks that file, and names the pack's files when it is not one of them")
    func verifyAgainstOneFile() throws {
        let scratch = Scratch()
        let model = Fixture.directory + "/tiny-llama"
        #expect(try torpor("pack", model, scratch.path + "/packed", "-q").status == 0)
        let wrong = try torpor("verify", scratch.path + "/packed", "--against", Fixture.directory + "/README.md")
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("is not one of the pack's files (chat_template.jinja"), "\(wrong.stderr)")
        #expect(wrong.stderr.contains("give the model directory the pack was made from"), "\(wrong.stderr)")
        let one = try torpor("verify", scratch.path + "/packed", "--against", model + "/model.safetensors")
        #expect(one.status == 0, "\(one.stderr)")
        #expect(one.stdout.contains("every checksum matches, and every byte of \(model)/model.safetensors"))
        let elsewhere = scratch.path + "/not-the-model"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: false)
        let directory = try torpor("verify", scratch.path + "/packed", "--against", elsewhere)
        #expect(directory.status == 1)
        #expect(
            directory.stderr.contains("has no file chat_template.jinja, which the pack holds"), "\(directory.stderr)")
    }

    @Test(
        "pack and unpack into an empty mount point work, leaving nothing of their own behind",
        .enabled(if: getuid() == 0))
    func emptyMountPointOutput() throws {
        let scratch = Scratch()
        let packed = scratch.path + "/packed"
        let unmountPacked = try Self.mountTmpfs(at: packed, options: "size=32m")
        defer { unmountPacked() }
        let restored = scratch.path + "/restored"
        let unmountRestored = try Self.mountTmpfs(at: restored, options: "size=32m")
        defer { unmountRestored() }
        let model = Fixture.directory + "/tiny-llama"
        let pack = try torpor("pack", model, packed)
        #expect(pack.status == 0, "\(pack.stderr)")
        #expect(try torpor("verify", packed, "--against", model, "-q").status == 0)
        let unpack = try torpor("unpack", packed, restored, "-q")
        #expect(unpack.status == 0, "\(unpack.stderr)")
        let names = try FileManager.default.contentsOfDirectory(atPath: restored).sorted()
        #expect(names == (try FileManager.default.contentsOfDirectory(atPath: model)).sorted())
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: packed).allSatisfy { !$0.hasPrefix(".torpor-partial") })
    }
}
