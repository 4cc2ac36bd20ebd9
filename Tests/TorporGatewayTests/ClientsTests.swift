import Foundation
import Testing
import TorporTestSupport

@testable import TorporGateway

/// The gateway driven by OpenAI clients nobody in this project wrote (Clients/real_clients.py): the openai SDK
/// sync and async, LiteLLM's SDK and proxy, `llm`, langchain-openai.
@Suite struct ClientsTests {
    static var python: String? { ProcessInfo.processInfo.environment["TORPOR_CLIENTS_PYTHON"] }

    static var skipReason: Comment {
        let reason =
            ProcessInfo.processInfo.environment["TORPOR_CLIENTS_SKIP_REASON"]
            ?? "TORPOR_CLIENTS_PYTHON is not set; run scripts/test.sh, which installs the clients"
        return Comment(rawValue: "the OpenAI clients are not installed: \(reason)")
    }

    @Test(.enabled(if: python != nil, skipReason))
    func openAILiteLLMLlmAndLangChainWorkUnchanged() async throws {
        let yaml = simulatedModels(2, awake: 1, modelLines: []).replacingOccurrences(
            of: "  - name: m1\n", with: "  - name: m1\n    aliases: [gpt-4o-mini]\n")
        try await withGateway(yaml) { gateway in
            try await gateway.waitUntil("m1 asleep") { await gateway.state("m1").hasPrefix("L") }
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/real_clients.py").path
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.python ?? "python3")
            process.arguments = [script, gateway.client]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            let result = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            let rows = result?["rows"] as? [[String: Any]] ?? []
            for row in rows {
                #expect(row["ok"] as? Bool == true, "\(row)")
            }
            #expect(rows.count == 6 && process.terminationStatus == 0, "\(text)")
        }
    }
}
