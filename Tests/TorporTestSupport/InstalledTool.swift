import Foundation

/// A tool the tests drive that `scripts/test.sh` installs and names in the environment: `TORPOR_NAME_PYTHON` (or
/// `_BIN`) when it is there, `TORPOR_NAME_SKIP_REASON` when it could not be installed.
public struct InstalledTool: Sendable {
    /// The variable that names it, e.g. `TORPOR_PLAYWRIGHT_PYTHON`.
    public let variable: String
    /// What it is, for the reason a test is skipped.
    public let what: String

    public init(_ variable: String, _ what: String) {
        self.variable = variable
        self.what = what
    }

    /// Its path, when it is installed.
    public var path: String? { ProcessInfo.processInfo.environment[variable] }

    /// Why the tests that need it are skipped.
    public var skipReason: String {
        let reasonVariable = variable.split(separator: "_").dropLast().joined(separator: "_") + "_SKIP_REASON"
        let reason =
            ProcessInfo.processInfo.environment[reasonVariable]
            ?? "\(variable) is not set; run scripts/test.sh, which installs it"
        return "\(what) is not available: \(reason)"
    }
}

/// Runs `executable` with `arguments` (and `input` on its standard input) to its end: its status and its standard
/// output, with its standard error too when `withErrors`.
public func runToEnd(
    _ executable: String, _ arguments: [String], input: String? = nil, withErrors: Bool = false
) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    if withErrors { process.standardError = output }
    let stdin = Pipe()
    process.standardInput = input == nil ? FileHandle.nullDevice : stdin
    try process.run()
    if let input {
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
    }
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}
