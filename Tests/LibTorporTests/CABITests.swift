import Foundation
import Testing

/// libtorpor from C, as C users see it: `C/roundtrip.c` is compiled against `torpor.h` alone and linked with the
/// library this build made, then run.
@Suite struct CABITests {
    static let build = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    /// The library scripts/test.sh points at (TORPOR_LIBRARY), else the one beside this test binary.
    static let library =
        ProcessInfo.processInfo.environment["TORPOR_LIBRARY"] ?? build.appendingPathComponent("libtorpor-c.so").path
    static let compiler = ["/opt/swift/usr/bin/clang", "/usr/bin/cc"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    @Test(
        "a C program saves, reads back and gets errors through torpor.h", .enabled(if: compiler != nil, "no C compiler")
    )
    func roundTripFromC() throws {
        try #require(
            FileManager.default.fileExists(atPath: Self.library),
            "\(Self.library) is missing: build it with `swift build` (scripts/test.sh does)")
        let libraryDirectory = URL(fileURLWithPath: Self.library).deletingLastPathComponent().path
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let header = here.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/CTorporABI/include").path
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("torpor-c-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let program = directory.appendingPathComponent("roundtrip").path
        let compiled = try run(
            Self.compiler!,
            [
                "-std=c11", "-Wall", "-Werror", "-I", header, here.appendingPathComponent("C/roundtrip.c").path,
                Self.library, "-Wl,-rpath," + libraryDirectory, "-o", program,
            ])
        try #require(compiled.status == 0, "\(compiled.output)")
        let result = try run(program, [directory.path])
        #expect(result.status == 0)
        #expect(result.output == "ok\n", "\(result.output)")
    }

    func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}
