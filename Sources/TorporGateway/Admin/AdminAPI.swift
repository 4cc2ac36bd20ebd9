import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import TorporCheckpoint
import TorporEngine

/// The admin listener (127.0.0.1:8081 by default): model states and ledgers, sleep / wake / switch, weight reloads,
/// GPU leases, configuration reloads, the transition event stream and Prometheus metrics (the gateway's and each
/// engine's). Every call needs `Authorization: Bearer TOKEN`; the metrics also take the read-only metrics token.
struct AdminAPI: Sendable {
    let token: String
    let metricsToken: String?
    let scheduler: Scheduler
    let metrics: GatewayMetrics
    let events: EventBus
    let reloader: ConfigurationReloader
    let http: HTTPClient
    /// Where the engines' logs are (`NAME.log`).
    let logDirectory: String

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(
            middleware: BearerTokenMiddleware(
                token: Array(token.utf8), metricsToken: metricsToken.map { Array($0.utf8) }))
        let scheduler = self.scheduler
        let metrics = self.metrics
        let events = self.events
        let reloader = self.reloader
        let http = self.http
        addPageRoutes(to: router)

        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(
                status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: metrics.render())))
        }
        router.get("/admin/models") { _, _ in
            try jsonResponse(ModelsReply(models: await scheduler.statuses(), gpus: await scheduler.ledgers()))
        }
        router.get("/admin/models/{name}/metrics") { _, context in
            let name = try context.parameters.require("name")
            let status = try await status(name)
            return try await engineMetrics(status, http: http)
        }
        router.get("/admin/models/{name}/logs") { request, context in
            let name = try context.parameters.require("name")
            _ = try await status(name)
            guard FileManager.default.fileExists(atPath: logDirectory + "/\(name).log") else {
                throw AdminError(
                    .notFound, "`\(name)` has no engine log (an external engine, or one not started yet)")
            }
            let query = request.uri.queryParameters
            let lines = query["lines"].flatMap { Int(String($0)) } ?? 200
            let follow = query["follow"].map { $0 == "1" || $0 == "true" } ?? false
            return EngineLogTail(path: logDirectory + "/\(name).log", lines: max(0, lines))
                .response(following: follow, request: request, stopping: { await scheduler.shuttingDown })
        }
        router.get("/admin/models/{name}") { _, context in
            let name = try context.parameters.require("name")
            guard let status = await scheduler.statuses().first(where: { $0.name == name }) else {
                throw AdminError(.notFound, "no model `\(name)`")
            }
            return try jsonResponse(status)
        }
        router.post("/admin/models/{name}/sleep") { request, context in
            let name = try context.parameters.require("name")
            let level = try parseLevel(request.uri.queryParameters["level"].map(String.init))
            _ = try await adminCall { () async throws(GatewayError) in try await scheduler.sleep(name, level: level) }
            return try jsonResponse(await status(name))
        }
        router.post("/admin/models/{name}/wake") { _, context in
            let name = try context.parameters.require("name")
            _ = try await adminCall { () async throws(GatewayError) in try await scheduler.wake(name) }
            return try jsonResponse(await status(name))
        }
        router.post("/admin/models/{name}/reload") { request, context in
            let name = try context.parameters.require("name")
            var request = request
            let body = try await request.collectBody(upTo: 1 << 20)
            guard let fields = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any],
                let path = fields["weights_path"] as? String, !path.isEmpty
            else {
                throw AdminError(.badRequest, "send a JSON body {\"weights_path\": \"/path/to/checkpoint\"}")
            }
            _ = try await adminCall { () async throws(GatewayError) in try await scheduler.reload(name, path: path) }
            return try jsonResponse(await status(name))
        }
        router.post("/admin/switch") { request, _ in
            let query = request.uri.queryParameters
            guard let target = query["to"].map(String.init) else {
                throw AdminError(.badRequest, "name the model to wake: /admin/switch?to=MODEL[&from=MODEL]")
            }
            if let from = query["from"].map(String.init) {
                _ = try await adminCall { () async throws(GatewayError) in try await scheduler.sleep(from, level: nil) }
            }
            _ = try await adminCall { () async throws(GatewayError) in try await scheduler.wake(target) }
            return try jsonResponse(ModelsReply(models: await scheduler.statuses(), gpus: await scheduler.ledgers()))
        }
        router.post("/admin/reload") { _, _ in
            let change: ConfigurationChange
            do throws(ConfigurationError) {
                change = try await reloader.reload(trigger: "admin API")
            } catch {
                throw AdminError(.badRequest, "the configuration was not reloaded: \(error.message)")
            }
            return try jsonResponse(change)
        }
        router.get("/admin/gpus") { _, _ in try jsonResponse(await scheduler.ledgers()) }
        router.post("/admin/gpus/{id}/lease") { request, context in
            let id = try context.parameters.require("id")
            let modeText = request.uri.queryParameters["mode"].map(String.init) ?? "queue"
            guard let mode = LeaseMode(rawValue: modeText) else {
                throw AdminError(.badRequest, "mode=\(modeText): use queue or refuse")
            }
            let ledgers = try await adminCall { () async throws(GatewayError) in
                try await scheduler.lease(gpu: id == "all" ? nil : id, mode: mode)
            }
            return try jsonResponse(ledgers)
        }
        router.delete("/admin/gpus/{id}/lease") { _, context in
            let id = try context.parameters.require("id")
            let ledgers = try await adminCall { () async throws(GatewayError) in
                try await scheduler.releaseLease(gpu: id == "all" ? nil : id)
            }
            return try jsonResponse(ledgers)
        }
        router.get("/admin/events/recent") { _, _ in try jsonResponse(events.recent()) }
        router.get("/admin/events") { request, _ in
            let replay = request.uri.queryParameters["replay"].map { $0 == "1" || $0 == "true" } ?? false
            let stream = events.subscribe(replay: replay)
            return Response(
                status: .ok, headers: .eventStream,
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: ": torpor transition events\n\n"))
                    try await request.body.consumeWithCancellationOnInboundClose { _ in
                        let encoder = JSONEncoder()
                        encoder.outputFormatting = .sortedKeys
                        for await event in stream {
                            let data = try encoder.encode(event)
                            try await writer.write(
                                ByteBuffer(
                                    string: "event: transition\ndata: \(String(decoding: data, as: UTF8.self))\n\n"))
                        }
                    }
                    try await writer.finish(nil)
                })
        }

        @Sendable func status(_ name: String) async throws -> Scheduler.ModelStatus {
            guard let status = await scheduler.statuses().first(where: { $0.name == name }) else {
                throw AdminError(.notFound, "no model `\(name)`")
            }
            return status
        }
        return router
    }
}

struct ModelsReply: Codable {
    var models: [Scheduler.ModelStatus]
    var gpus: [Scheduler.Ledger]
}

private func parseLevel(_ text: String?) throws -> SleepLevel? {
    guard let text else { return nil }
    guard let value = Int(text), let level = SleepLevel(rawValue: value), level != .pause else {
        throw AdminError(.badRequest, "level=\(text): use 1 or 2")
    }
    return level
}

/// Runs a scheduler call, turning its error into an admin answer with the same status.
private func adminCall<T>(_ operation: () async throws(GatewayError) -> T) async throws -> T {
    do {
        return try await operation()
    } catch {
        throw AdminError(HTTPResponse.Status(code: error.status), error.message)
    }
}

private func jsonResponse(_ value: some Encodable) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
    let data = try encoder.encode(value)
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(data: data)))
}

/// An admin error, answered as `{"error":{"message","type","code"}}`.
struct AdminError: HTTPResponseError {
    let status: HTTPResponse.Status
    let message: String

    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        let body =
            "{\"error\":{\"message\":\(jsonString(message)),\"type\":\"admin_error\",\"code\":\(status.code)}}"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// An engine's own Prometheus metrics (vLLM's `vllm:*`), fetched from its private socket; a sleeping engine answers
/// too, so nothing is woken.
private func engineMetrics(_ status: Scheduler.ModelStatus, http: HTTPClient) async throws -> Response {
    guard !["stopped", "starting", "failed"].contains(status.state) else {
        throw AdminError(.serviceUnavailable, "the engine of `\(status.name)` is not running (it is \(status.state))")
    }
    let response: HTTPClientResponse
    let body: ByteBuffer
    do {
        response = try await http.execute(
            HTTPClientRequest(url: status.engineURL + "/metrics"), timeout: .seconds(10))
        body = try await response.body.collect(upTo: 32 << 20)
    } catch {
        throw AdminError(.badGateway, "the engine of `\(status.name)` did not answer /metrics: \(error)")
    }
    guard response.status == .ok else {
        throw AdminError(.badGateway, "the engine of `\(status.name)` answered /metrics with \(response.status.code)")
    }
    var headers = HTTPFields()
    headers[.contentType] = response.headers.first(name: "Content-Type") ?? "text/plain; version=0.0.4"
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
}
