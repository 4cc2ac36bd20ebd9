import Foundation
import Testing
import TorporTestSupport

@testable import TorporGateway

/// The admin page in a real headless Chromium (Clients/admin_page.py, Playwright driving Debian's chromium).
@Suite struct AdminPageTests {
    static let playwright = InstalledTool("TORPOR_PLAYWRIGHT_PYTHON", "a headless browser (Playwright, chromium)")

    @Test(.enabled(if: playwright.path != nil, Comment(rawValue: playwright.skipReason)))
    func thePageLogsInShowsTheModelsFollowsASwitchLiveAndShowsALog() async throws {
        try await withGateway(simulatedModels(2, awake: 1)) { gateway in
            try await gateway.waitUntil("m1 asleep") { await gateway.state("m1").hasPrefix("L") }
            let screenshot = NSTemporaryDirectory() + "/torpor-admin-page-\(getpid()).png"
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/admin_page.py").path
            let (status, text) = try runToEnd(
                Self.playwright.path ?? "python3", [script, gateway.admin, gateway.token, screenshot, "m0", "m1"])
            print("admin page screenshot: \(screenshot)")
            let result = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            #expect(status == 0 && result?["ok"] as? Bool == true, "\(text)")
            let steps = (result?["steps"] as? [[String: Any]])?.compactMap { $0["step"] as? String } ?? []
            #expect(steps.count == 7, "\(steps)")
            #expect(FileManager.default.fileExists(atPath: screenshot))
            let (m0, m1) = (await gateway.state("m0"), await gateway.state("m1"))
            #expect(m1 == "awake" && m0.hasPrefix("L"), "m0 \(m0), m1 \(m1)")
        }
    }
}
