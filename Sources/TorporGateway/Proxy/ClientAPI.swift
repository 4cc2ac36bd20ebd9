import AsyncHTTPClient
import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOHTTPTypes
import NIOPosix
import TorporCheckpoint
import TorporEngine

/// The OpenAI-compatible listener: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
///
/// Built on HummingbirdCore's responder so that one request is watched for its client leaving from the moment it
/// arrives until the last token: waiting in a queue, waiting for the engine's first byte, and streaming. A client
/// that leaves — closing its connection or only its sending side — cancels the upstream request (vLLM then aborts
/// it), while kept-alive connections stay open (see `ConnectionWatch`). Nothing else exists here: vLLM's dev paths
/// (`/sleep`, `/wake_up`, `/collective_rpc`, ...) answer 404.
struct ClientAPI: Sendable {
    /// The requests routed to an engine by their body's `model`: OpenAI's and vLLM's per-model endpoints.
    static let proxiedPaths: Set<String> = [
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/tokenize", "/detokenize",
        "/v1/score", "/v1/rerank", "/v2/rerank",
    ]

    /// What the listener serves, for the answer to any other path.
    static let servedPaths =
        "GET /v1/models, GET /v1/models/{id}; POST " + proxiedPaths.sorted().joined(separator: ", ")
        + "; GET /health, /ready, /health/{model}"

    let settings: LiveSettings
    let scheduler: Scheduler
    let metrics: GatewayMetrics
    let http: HTTPClient
    let logger: Logger
    let connections = ConnectionWatch()

    /// The OpenAI path a request names: as sent, or with the `/v1` that clients configured with a base URL
    /// without it leave out (`/chat/completions`, `/models`). Any other path stays as it is (and answers 404).
    static func canonicalPath(_ path: String) -> String {
        guard !path.hasPrefix("/v1/") else { return path }
        let prefixed = "/v1" + path
        return proxiedPaths.contains(prefixed) || prefixed == "/v1/models" || prefixed.hasPrefix("/v1/models/")
            ? prefixed : path
    }

    /// Answers one request.
    func respond(to request: Request, writer: consuming ResponseWriter, channel: any Channel) async throws {
        let settings = self.settings.current
        let path = Self.canonicalPath(request.uri.path)
        if Self.proxiedPaths.contains(path) {
            guard request.method == .post else {
                try await write(
                    GatewayError(.badRequest, "Use POST for \(path)."), status: 405, to: writer)
                return
            }
            try await proxy(request, path: path, settings: settings, writer: writer, channel: channel)
            return
        }
        try await respondWithStatus(to: request, path: path, settings: settings, writer: writer)
    }

    /// The key a request carries, nil when no keys are configured.
    func authenticate(
        _ request: Request, keys: APIKeyTable
    ) -> Result<GatewayConfiguration.APIKey?, GatewayError> {
        guard !keys.isEmpty else { return .success(nil) }
        guard let token = request.headers[.authorization].flatMap(bearerToken) else {
            return .failure(
                GatewayError(.unauthorized, "Missing API key: send it as `Authorization: Bearer KEY`."))
        }
        guard let key = keys.match(String(token)) else {
            return .failure(GatewayError(.unauthorized, "Incorrect API key provided."))
        }
        return .success(key)
    }

    private func proxy(
        _ request: Request, path: String, settings: LiveSettings.Snapshot, writer: consuming ResponseWriter,
        channel: any Channel
    ) async throws {
        let arrived = ContinuousClock.now
        let requestID = UpstreamHeaders.requestID(request.headers)
        let key: GatewayConfiguration.APIKey?
        switch authenticate(request, keys: settings.keys) {
        case .success(let found): key = found
        case .failure(let error):
            metrics.countRequest(model: "", status: error.status)
            try await write(error, to: writer)
            return
        }
        let limit = settings.limits.maxRequestBytes
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            let error = GatewayError(
                .payloadTooLarge, "The request body has \(length) bytes; this gateway accepts at most \(limit).")
            metrics.countRequest(model: "", status: 413)
            try await write(error, to: writer, close: true)
            return
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            metrics.countRequest(model: "", status: 413)
            try await write(
                GatewayError(
                    .payloadTooLarge, "The request body is larger than this gateway's limit of \(limit) bytes."),
                to: writer, close: true)
            return
        } catch {
            // A malformed chunked body, or a client gone mid-body: not the body's size.
            metrics.countRequest(model: "", status: 400)
            try await write(
                GatewayError(.badRequest, "The request body could not be read: \(error)."), to: writer, close: true)
            return
        }
        let fields = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]
        guard var fields, let sent = fields["model"] as? String else {
            metrics.countRequest(model: "", status: 400)
            try await write(
                GatewayError(
                    .badRequest,
                    fields == nil
                        ? "The request body is not a JSON object." : "The request body has no string field `model`."),
                to: writer)
            return
        }
        // An alias means its model; an unknown name is the scheduler's 404 (one actor call per request). A model
        // outside the key's list gets the same answer here.
        let route = settings.routes[sent] ?? LiveSettings.Route(model: sent, upstreamName: sent)
        let model = route.model
        guard key?.models?.contains(model) ?? true else {
            metrics.countRequest(model: "", status: 404)
            try await write(
                GatewayError.unknownModel(model),
                to: writer)
            return
        }
        let stream = fields["stream"] as? Bool ?? false
        var upstreamBody = body
        if route.upstreamName != sent {
            // The engine knows the model by the name it serves.
            fields["model"] = route.upstreamName
            if let data = try? JSONSerialization.data(withJSONObject: fields) { upstreamBody = ByteBuffer(data: data) }
        }
        let upstreamHeaders = UpstreamHeaders.forwarded(request.headers, requestID: requestID, stream: stream)
        let slot = WriterSlot(writer)
        let outcome = await proxyWatched(
            channel: channel, path: path, model: model, body: upstreamBody, headers: upstreamHeaders,
            requestID: requestID, stream: stream, limits: settings.limits, arrived: arrived, slot: slot)
        if case .failure(let error) = outcome {
            // Names of models that do not exist come from clients: they are not metric labels.
            metrics.countRequest(model: error.code == .notFound ? "" : model, status: error.status)
            // A client that left gets no answer: there is no one to read it.
            if error.code != .cancelled, let writer = slot.writer.take() {
                try await write(error, to: writer, requestID: requestID)
            } else if connections.isCutOff {
                // Cut off at shutdown with the answer begun: it cannot be completed, so the connection ends it
                // (the client sees a truncated answer instead of waiting for the rest).
                try? await channel.close()
            }
        }
    }

    /// Waits for the model, forwards the request and streams the answer back, all cancelled if the client leaves.
    private func proxyWatched(
        channel: any Channel, path: String, model: String, body: ByteBuffer, headers: HTTPHeaders, requestID: String,
        stream: Bool, limits: GatewayConfiguration.Limits, arrived: ContinuousClock.Instant, slot: WriterSlot
    ) async -> Result<Void, GatewayError> {
        let scheduler = self.scheduler
        let connections = self.connections
        let metrics = self.metrics
        let http = self.http
        let logger = {
            var logger = self.logger
            logger[metadataKey: "request.id"] = "\(requestID)"
            return logger
        }()
        let deadlines = UpstreamDeadlines(model: model, arrived: arrived, limits: limits)
        do {
            try await connections.run(on: channel) {
                try await deadlines.bounding { try await forwardOnce() }
            }
            return .success(())
        } catch let error as GatewayError {
            return .failure(error)
        } catch let timeout as UpstreamTimeout {
            logger.warning(
                "a request ran past its time bound and was cancelled",
                metadata: ["model": "\(model)", "bound": "\(timeout.bound.rawValue)"])
            guard slot.writer == nil else { return .failure(timeout.error) }
            // The answer had begun (a streamed one ended with an error event): the connection ends it.
            metrics.countRequest(model: model, status: 504)
            try? await channel.close()
            return .success(())
        } catch {
            // Cut off at shutdown: answered, when nothing has been written yet.
            if connections.isCutOff {
                metrics.countRequest(model: model, status: 503)
                return .failure(
                    GatewayError(
                        .unavailable, "The gateway is shutting down.",
                        retryAfterSeconds: limits.retryAfterSeconds))
            }
            // The client left: nothing to answer.
            metrics.countRequest(model: model, status: 499)
            return .success(())
        }

        /// Forwards the request, sent again once when the engine was lost before it could answer.
        @Sendable func forwardOnce() async throws {
            // A connection refused or closed before the answer's head: the engine is checked at once (a dead
            // one is failed and restarted), and the request waits for the restart, once.
            for attempt in 1...2 {
                do {
                    try await forward()
                    return
                } catch let lost as EngineLost {
                    let dead = await scheduler.engineUnreachable(model)
                    // Sent again only when the engine cannot have answered it: a refused connection, or one
                    // closed by an engine that is now dead.
                    guard attempt == 1, lost.refused || dead else { throw didNotAnswer(lost.cause) }
                    logger.warning(
                        "an engine was lost before it answered; the request waits for its restart",
                        metadata: ["model": "\(model)", "error": "\(lost.cause)", "engine.dead": "\(dead)"])
                }
            }
        }

        @Sendable func didNotAnswer(_ cause: any Error) -> GatewayError {
            GatewayError(
                .upstream, "The engine of `\(model)` did not answer: \(cause). Try again.", retryAfterSeconds: 1)
        }

        @Sendable func forward() async throws {
            let waitStarted = ContinuousClock.now
            try await scheduler.withEngine(model) { engine in
                metrics.addInFlight(model, 1)
                defer { metrics.addInFlight(model, -1) }
                var upstream = HTTPClientRequest(url: engine.baseURL + path)
                upstream.method = .POST
                upstream.headers = headers
                upstream.body = .bytes(body)
                let response: HTTPClientResponse
                deadlines.sent()
                let sent = ContinuousClock.now
                do {
                    response = try await http.execute(upstream, deadline: .distantFuture)
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    if let lost = EngineLost(error) { throw lost }
                    throw didNotAnswer(error)
                }
                let headReceived = ContinuousClock.now
                var head = HTTPResponse(status: .init(code: Int(response.status.code)))
                head.headerFields[RequestID.field] = requestID
                if let state = engine.waitedFor {
                    // The request waited for its model: from which state, and how long.
                    head.headerFields[WaitHeaders.wokeFrom] = state
                    head.headerFields[WaitHeaders.waited] = String(
                        format: "%.3f", (sent - waitStarted) / .seconds(1))
                }
                for name in ["Content-Type", "Content-Length", "Cache-Control"] {
                    if let value = response.headers.first(name: name), let field = HTTPField.Name(name) {
                        head.headerFields[field] = value
                    }
                }
                guard let writer = slot.writer.take() else { throw CancellationError() }
                var bodyWriter = try await writer.writeHead(head)
                metrics.observeAddedLatency(
                    model, seconds: (sent - arrived + (ContinuousClock.now - headReceived)) / .seconds(1))
                deadlines.received()
                var usage = UsageTally()
                var first = true
                do {
                    for try await chunk in response.body {
                        deadlines.received()
                        usage.consume(chunk)
                        try await bodyWriter.write(chunk)
                        if first, stream {
                            metrics.observeTimeToFirstToken(
                                model, seconds: (ContinuousClock.now - arrived) / .seconds(1))
                        }
                        first = false
                    }
                } catch is CancellationError {
                    let ending =
                        connections.isCutOff
                        ? GatewayError(.unavailable, "The gateway is shutting down.")
                        : deadlines.expired?.error
                    if stream, let ending {
                        // The stream's last event says why it ends. The cancelled task's writer takes no more
                        // bytes, so the event and the answer's end go to the channel itself (its pipeline's HTTP
                        // encoder frames them); the connection is closed next.
                        channel.write(HTTPResponsePart.body(ByteBuffer(bytes: ending.streamEvent)), promise: nil)
                        try? await channel.writeAndFlush(HTTPResponsePart.end(nil))
                    }
                    throw CancellationError()
                } catch {
                    logger.warning(
                        "the engine's answer broke off", metadata: ["model": "\(model)", "error": "\(error)"])
                    if stream {
                        let failure = GatewayError(
                            .upstream, "The engine of `\(model)` stopped answering: \(error)")
                        try? await bodyWriter.write(ByteBuffer(bytes: failure.streamEvent))
                    }
                }
                try await bodyWriter.finish(nil)
                metrics.countRequest(model: model, status: Int(response.status.code))
                if let tokens = usage.usage {
                    metrics.countTokens(model, prompt: tokens.prompt, completion: tokens.completion)
                }
            }
        }
    }

    func write(
        _ error: GatewayError, status: Int? = nil, to writer: consuming ResponseWriter, close: Bool = false,
        requestID: String? = nil
    )
        async throws
    {
        var head = HTTPResponse(status: .init(code: status ?? error.status))
        if let requestID { head.headerFields[RequestID.field] = requestID }
        head.headerFields[.contentType] = "application/json"
        if let retry = error.retryAfterSeconds { head.headerFields[.retryAfter] = "\(retry)" }
        if close { head.headerFields[.connection] = "close" }
        let body = error.body()
        head.headerFields[.contentLength] = "\(body.count)"
        var bodyWriter = try await writer.writeHead(head)
        try await bodyWriter.write(ByteBuffer(bytes: body))
        try await bodyWriter.finish(nil)
    }

    func writeJSON(
        _ body: [UInt8], status: HTTPResponse.Status = .ok, to writer: consuming ResponseWriter
    ) async throws {
        var head = HTTPResponse(status: status)
        head.headerFields[.contentType] = "application/json"
        head.headerFields[.contentLength] = "\(body.count)"
        var bodyWriter = try await writer.writeHead(head)
        try await bodyWriter.write(ByteBuffer(bytes: body))
        try await bodyWriter.finish(nil)
    }
}

/// Holds the response writer until the head is written, so a closure can take it exactly once.
final class WriterSlot: @unchecked Sendable {
    var writer: ResponseWriter?
    init(_ writer: consuming ResponseWriter) { self.writer = consume writer }
}
