import Foundation
import HTTPTypes
import HummingbirdCore
import TorporCheckpoint

/// The client listener's answers that reach no engine: the model list, and health that never wakes a model.
extension ClientAPI {
    /// Answers a request for anything but a proxied path: `/v1/models[/{id}]`, `/health`, `/ready`,
    /// `/health/{model}`, or a 404 naming what is served.
    func respondWithStatus(
        to request: Request, path: String, settings: LiveSettings.Snapshot, writer: consuming ResponseWriter
    ) async throws {
        switch (request.method, path) {
        case (.get, _) where path == "/v1/models" || path.hasPrefix("/v1/models/"):
            let result = authenticate(request, keys: settings.keys)
            guard case .success(let key) = result else {
                if case .failure(let error) = result { try await write(error, to: writer) }
                return
            }
            let entries = await modelEntries(for: key, settings: settings)
            guard path.hasPrefix("/v1/models/") else {
                let list = entries.map(\.json).joined(separator: ",")
                try await writeJSON(Array("{\"object\":\"list\",\"data\":[\(list)]}".utf8), to: writer)
                return
            }
            let id = String(path.dropFirst("/v1/models/".count))
            let name = id.removingPercentEncoding ?? id
            guard let entry = entries.first(where: { $0.id == name }) else {
                try await write(
                    GatewayError.unknownModel(name),
                    to: writer)
                return
            }
            try await writeJSON(Array(entry.json.utf8), to: writer)
        case (.get, "/health"), (.head, "/health"):
            try await writeJSON(Array(#"{"status":"ok"}"#.utf8), to: writer)
        case (.get, "/ready"), (.head, "/ready"):
            // Serving: every model has been started once (or has failed) since the gateway began, and it is not
            // shutting down.
            let (ready, shuttingDown) = await (scheduler.isReady, scheduler.shuttingDown)
            let status = shuttingDown ? "shutting_down" : ready ? "ready" : "starting"
            try await writeJSON(
                Array("{\"status\":\"\(status)\"}".utf8), status: status == "ready" ? .ok : .serviceUnavailable,
                to: writer)
        case (.get, _) where path.hasPrefix("/health/"):
            // One model's health, as its state says; asking never wakes it.
            let sent = String(path.dropFirst("/health/".count))
            let name = sent.removingPercentEncoding ?? sent
            let model = settings.routes[name]?.model ?? name
            let result = authenticate(request, keys: settings.keys)
            guard case .success(let key) = result else {
                if case .failure(let error) = result { try await write(error, to: writer) }
                return
            }
            guard key?.models?.contains(model) ?? true,
                let status = await scheduler.statuses().first(where: { $0.name == model })
            else {
                try await write(
                    GatewayError.unknownModel(name),
                    to: writer)
                return
            }
            let healthy = status.state != "failed"
            let json =
                "{\"model\":\(jsonString(model)),\"state\":\"\(status.state)\",\"healthy\":\(healthy),"
                + "\"queued\":\(status.queued),\"in_flight\":\(status.inFlight)}"
            try await writeJSON(
                Array(json.utf8),
                status: healthy ? .ok : .serviceUnavailable, to: writer)
        default:
            let audio = path.hasPrefix("/v1/audio/") || path.hasPrefix("/audio/")
            try await write(
                GatewayError(
                    .unknownPath,
                    "Unknown request URL: \(request.method) \(path)."
                        + (audio ? " Audio requests (multipart forms) are not routed by this gateway." : "")
                        + " This gateway serves \(Self.servedPaths)."),
                to: writer)
        }
    }

    /// The models `key` may use (all of them without keys) as OpenAI's model objects with their state: each
    /// model, then each of its aliases (whose `root` names the model).
    func modelEntries(
        for key: GatewayConfiguration.APIKey?, settings: LiveSettings.Snapshot
    ) async -> [(id: String, json: String)] {
        let states = Dictionary(
            await scheduler.statuses().map { ($0.name, $0.state) }, uniquingKeysWith: { first, _ in first })
        var entries: [(id: String, json: String)] = []
        for model in settings.models where key?.models?.contains(model.name) ?? true {
            guard let state = states[model.name] else { continue }
            for id in [model.name] + model.aliases {
                let json =
                    "{\"id\":\(jsonString(id)),\"object\":\"model\",\"created\":\(Self.startTime),"
                    + "\"owned_by\":\"torpor\",\"root\":\(jsonString(model.name)),\"state\":\"\(state)\"}"
                entries.append((id, json))
            }
        }
        return entries
    }

    /// When the gateway started, as OpenAI's `created`.
    private static let startTime = Int(Date().timeIntervalSince1970)

}
