import Foundation
import Testing
import TorporTestSupport

@testable import TorporGateway

/// The gateway driven by OpenAI clients nobody in this project wrote (Clients/real_clients.py): the openai SDK
/// sync and async, LiteLLM's SDK and proxy, `llm`, langchain-openai.
@Suite struct ClientsTests {
    static let clients = InstalledTool("TORPOR_CLIENTS_PYTHON", "the OpenAI clients of other projects")

    @Test(.enabled(if: clients.path != nil, Comment(rawValue: clients.skipReason)))
    func openAILiteLLMLlmAndLangChainWorkUnchanged() async throws {
        let yaml = simulatedModels(2, awake: 1, modelLines: []).replacingOccurrences(
            of: "  - name: m1\n", with: "  - name: m1\n    aliases: [gpt-4o-mini]\n")
        try await withGateway(yaml) { gateway in
            try await gateway.waitUntil("m1 asleep") { await gateway.state("m1").hasPrefix("L") }
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/real_clients.py").path
            let (status, text) = try runToEnd(Self.clients.path ?? "python3", [script, gateway.client])
            let result = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            let rows = result?["rows"] as? [[String: Any]] ?? []
            for row in rows {
                #expect(row["ok"] as? Bool == true, "\(row)")
            }
            #expect(rows.count == 6 && status == 0, "\(text)")
        }
    }
}
