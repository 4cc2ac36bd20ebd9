import Foundation
import Testing

/// Every command names itself in its configuration. Without `commandName`, ArgumentParser derives the name with
/// `String(describing:)` of the command's type, and on every start the Swift runtime then scans each of the
/// binary's ten thousand protocol conformances for each command type: 5 ms of a 7 ms `torpor --version`.
@Suite("Command names")
struct CommandNameTests {
    @Test("every CommandConfiguration sets commandName")
    func everyCommandIsNamed() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/torpor")
        let files = try FileManager.default.contentsOfDirectory(atPath: sources.path).filter { $0.hasSuffix(".swift") }
        var configurations = 0
        for file in files {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            var rest = text[...]
            while let call = rest.range(of: "CommandConfiguration(") {
                configurations += 1
                let arguments = rest[call.upperBound...].prefix(300)
                let firstLabel = arguments.drop { $0 == " " || $0 == "\n" }.prefix { $0 != ":" }
                #expect(firstLabel == "commandName", "\(file): a CommandConfiguration without commandName first")
                rest = rest[call.upperBound...]
            }
        }
        #expect(configurations >= 20, "found \(configurations) command configurations in \(sources.path)")
    }
}
