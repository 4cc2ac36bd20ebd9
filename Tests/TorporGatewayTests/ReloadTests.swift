import Foundation
import Testing
import TorporTestSupport

@testable import TorporGateway

/// Configuration reloads against a running gateway with simulated engines as real processes.
@Suite struct ReloadTests {
    /// A model on GPU 0 of `simulatedModels`' shape, with extra lines.
    static func model(_ name: String, preload: Bool = false, tokensPerSecond: Int = 200, _ extra: String = "") -> String
    {
        """
          - name: \(name)
            preload: \(preload)
            engine: {simulated: true, time_scale: 0.01, tokens_per_second: \(tokensPerSecond)}
            weights_gib: 3
            kv_cache_gib: 3
        \(extra)
        """
    }

    static func configuration(_ models: String...) -> String {
        "gpus:\n  - id: \"0\"\n    memory_gib: 20\nmodels:\n" + models.joined(separator: "\n") + "\n"
    }

    @Test func aReloadKeepsUnchangedEnginesAndStartsStopsAndReplacesTheRest() async throws {
        let before = Self.configuration(
            Self.model("keep", preload: true), Self.model("drop"), Self.model("change"), Self.model("tune"))
        try await withGateway(before) { gateway in
            let pids = Dictionary(
                uniqueKeysWithValues: await gateway.gateway.scheduler.statuses().map { ($0.name, $0.enginePID) })
            #expect(pids.values.allSatisfy { $0 != nil }, "\(pids)")
            #expect(try await gateway.complete("drop").status == 200)

            try gateway.reconfigure(
                Self.configuration(
                    Self.model("keep", preload: true),
                    Self.model("change", tokensPerSecond: 400),
                    Self.model("tune", "    aliases: [gpt-4o-mini, small]\n    idle_ttl_seconds: 600"),
                    Self.model("new")))
            let answer = try await gateway.adminCall("POST", "/admin/reload")
            #expect(answer.status == 200, "\(answer.body)")
            let change = try JSONDecoder().decode(ConfigurationChange.self, from: Data(answer.body.utf8))
            #expect(change.added == ["new"] && change.removed == ["drop"] && change.restarted == ["change"])
            #expect(change.updated == ["tune"] && change.unchanged == ["keep"] && change.settings.isEmpty)

            try await gateway.waitUntil("the reload to settle") {
                let statuses = await gateway.gateway.scheduler.statuses()
                return statuses.map(\.name) == ["keep", "change", "tune", "new"]
                    && statuses.allSatisfy { ["awake", "L1", "L2"].contains($0.state) }
            }
            let after = Dictionary(
                uniqueKeysWithValues: await gateway.gateway.scheduler.statuses().map { ($0.name, $0.enginePID) })
            #expect(after["keep"] == pids["keep"] && after["tune"] == pids["tune"], "the same engine processes")
            #expect(after["change"] != pids["change"], "a changed engine is a new process")
            if let old = pids["drop"] ?? nil { #expect(kill(old, 0) != 0, "the removed model's engine is gone") }
            if let old = pids["change"] ?? nil { #expect(kill(old, 0) != 0, "the replaced engine is gone") }

            let removed = try await gateway.complete("drop")
            #expect(removed.status == 404)
            #expect(removed.error?["code"] as? String == "model_not_found", "\(removed.body)")
            for name in ["keep", "change", "tune", "new", "gpt-4o-mini"] {
                let completion = try await gateway.complete(name, chat: true)
                #expect(completion.status == 200, "\(name): \(completion.body)")
            }
            let models = try await HTTPAnswer.send("GET", gateway.client + "/v1/models")
            let ids = (models.json?["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
            #expect(ids == ["keep", "change", "tune", "gpt-4o-mini", "small", "new"], "\(models.body)")
            let alias = try await HTTPAnswer.send("GET", gateway.client + "/v1/models/small")
            #expect(alias.json?["root"] as? String == "tune", "\(alias.body)")
            #expect(gateway.events().contains { $0.model == "drop" && $0.kind == "remove" })
            #expect(gateway.events().contains { $0.model == "change" && $0.kind == "replace" })
        }
    }

    @Test func aRefusedReloadChangesNothingAndSaysWhy() async throws {
        let yaml = Self.configuration(Self.model("a", preload: true))
        try await withGateway(yaml) { gateway in
            let pid = await gateway.gateway.scheduler.statuses().first?.enginePID
            try gateway.reconfigure(yaml + "colour: blue\n")
            var answer = try await gateway.adminCall("POST", "/admin/reload")
            #expect(answer.status == 400)
            #expect(answer.body.contains("colour: unknown key"), "\(answer.body)")

            try gateway.reconfigure(Self.configuration(Self.model("a", preload: true), Self.model("a")))
            answer = try await gateway.adminCall("POST", "/admin/reload")
            #expect(answer.status == 400 && answer.body.contains("configured twice"), "\(answer.body)")

            try gateway.reconfigure(yaml.replacingOccurrences(of: "memory_gib: 20", with: "memory_gib: 30"))
            answer = try await gateway.adminCall("POST", "/admin/reload")
            #expect(answer.status == 400 && answer.body.contains("gpus changed, which only a restart applies"))

            #expect(await gateway.gateway.scheduler.statuses().first?.enginePID == pid)
            #expect(try await gateway.complete("a").status == 200)
            let running = await gateway.gateway.reloader.configuration
            #expect(running.gpus.first?.memoryBytes == 20 << 30)
        }
    }

    @Test func requestsQueuedForAChangedModelAreServedByItsNewEngine() async throws {
        try await withGateway(Self.configuration(Self.model("a"), Self.model("b", preload: true))) { gateway in
            try await gateway.waitUntil("a asleep") { await gateway.state("a").hasPrefix("L") }
            try gateway.reconfigure(
                Self.configuration(Self.model("a", tokensPerSecond: 300), Self.model("b", preload: true)))
            async let queued = gateway.complete("a", maxTokens: 8)
            let answer = try await gateway.adminCall("POST", "/admin/reload")
            #expect(answer.status == 200, "\(answer.body)")
            let completion = try await queued
            #expect(completion.status == 200, "\(completion.body)")
        }
    }

    @Test func settingsChangeAtOnce() async throws {
        let yaml = Self.configuration(Self.model("a", preload: true))
        try await withGateway(yaml) { gateway in
            try gateway.reconfigure(
                yaml + "limits: {max_request_bytes: 2048}\napi_keys:\n  - {name: team, key: sk-team-0123456789}\n")
            let answer = try await gateway.adminCall("POST", "/admin/reload")
            #expect(answer.status == 200 && answer.body.contains("api_keys"), "\(answer.body)")
            #expect(try await gateway.complete("a").status == 401)
            let big = try await HTTPAnswer.send(
                "POST", gateway.client + "/v1/completions",
                json: ["model": "a", "prompt": String(repeating: "x", count: 4096)],
                headers: ["Authorization": "Bearer sk-team-0123456789"])
            #expect(big.status == 413)
            #expect(try await gateway.complete("a", key: "sk-team-0123456789").status == 200)
        }
    }
}
