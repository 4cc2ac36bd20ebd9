import ArgumentParser
import Foundation
import Glibc
import TorporCheckpoint

/// How `torpor` starts and ends: every failure exits with status 1, as the README says (a usage error too, where
/// ArgumentParser would use 64); help and `--version` exit 0; an unknown subcommand is named, with the closest one.
extension Torpor {
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let problem = unknownSubcommand(in: arguments) {
            FileHandle.standardError.write(Data("error: \(problem)\n".utf8))
            Glibc.exit(ExitCode.failure.rawValue)
        }
        do {
            var command = try parseAsRoot(arguments)
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            guard code != .success else { exit(withError: error) }  // help and version, printed as usual
            let message = fullMessage(for: error)
            if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
            Glibc.exit(code == .validationFailure ? ExitCode.failure.rawValue : code.rawValue)
        }
    }

    /// What is wrong when `arguments` name a subcommand that does not exist (`torpor packk`, `torpor gpu infoo`),
    /// with the closest name when one is near; nil when they do not.
    static func unknownSubcommand(
        in arguments: [String], of configuration: CommandConfiguration = Torpor.configuration, path: String = "torpor"
    ) -> String? {
        let subcommands = configuration.subcommands
        guard !subcommands.isEmpty, configuration.defaultSubcommand == nil, let first = arguments.first,
            !first.hasPrefix("-")
        else { return nil }
        let isRoot = path == "torpor"
        for subcommand in subcommands {
            let nested = subcommand.configuration
            if (nested.commandName ?? subcommand._commandName) == first || nested.aliases.contains(first) {
                return unknownSubcommand(in: Array(arguments.dropFirst()), of: nested, path: path + " " + first)
            }
        }
        // ArgumentParser's own `help` subcommand exists at the top.
        let names = subcommands.map { $0.configuration.commandName ?? $0._commandName } + (isRoot ? ["help"] : [])
        guard !names.contains(first) else { return nil }
        var problem = "`\(path) \(first)` is not a command"
        let ranked = names.map { (name: $0, distance: editDistance(first, $0)) }.sorted { $0.distance < $1.distance }
        if let closest = ranked.first, closest.distance <= max(2, first.count / 3) {
            problem += "; did you mean `\(path) \(closest.name)`?"
        }
        return problem + " (`\(path) --help` lists the commands: \(names.joined(separator: ", ")))"
    }
}

/// The Levenshtein distance between two words: the fewest insertions, deletions and substitutions that turn one
/// into the other.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a)
    let b = Array(b)
    guard !a.isEmpty else { return b.count }
    guard !b.isEmpty else { return a.count }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}

/// Why `path` could not be written (or created), or nil when it can: checked before a long job, so that the job
/// does not end with the failure. Names the cause: `Permission denied`, `Read-only file system`, a parent that is
/// a file.
func whyNotWritable(_ path: String) -> String? {
    var probe = URL(fileURLWithPath: path).standardizedFileURL.path
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: probe, isDirectory: &isFolder) {
        return access(probe, W_OK) == 0 ? nil : String(cString: strerror(errno))
    }
    while true {
        let parent = URL(fileURLWithPath: probe).deletingLastPathComponent().path
        guard parent != probe else { return nil }
        if FileManager.default.fileExists(atPath: parent, isDirectory: &isFolder) {
            guard isFolder.boolValue else { return "\(parent) is a file, not a directory" }
            return access(parent, W_OK | X_OK) == 0 ? nil : "\(parent): \(String(cString: strerror(errno)))"
        }
        probe = parent
    }
}
