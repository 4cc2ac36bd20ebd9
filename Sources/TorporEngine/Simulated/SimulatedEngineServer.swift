import Foundation
import Hummingbird
public import Logging
import NIOCore
import NIOFoundationCompat
import Synchronization

/// A request's context with its connection, so that a generation can be aborted when its client leaves.
struct SimulatedRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// `torpor sim-engine`: an HTTP server with vLLM's contract (DESIGN.md §2) over a `SimulatedEngine`.
public struct SimulatedEngineServer: Sendable {
    let engine: SimulatedEngine
    let configuration: SimulatedEngineConfiguration
    /// Sees clients leave (FIN or close), as vLLM's server does, to abort their generations.
    let connections = ConnectionWatch()

    public init(configuration: SimulatedEngineConfiguration) {
        self.configuration = configuration
        engine = SimulatedEngine(configuration: configuration)
    }

    /// Waits out the cold start, takes the engine's GPU memory and serves on `host:port` until cancelled.
    /// - Parameter onListening: called with the bound port (useful with port 0).
    /// - Parameter unixSocket: serve on this unix socket instead of `host:port` (vLLM's `--uds`).
    public func run(
        host: String, port: Int, unixSocket: String? = nil, logger: Logger,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) async throws {
        try await engine.coldStart()
        let address: BindAddress = unixSocket.map { .unixDomainSocket(path: $0) } ?? .hostname(host, port: port)
        let connections = self.connections
        let app = Application(
            router: makeRouter(),
            server: .http1(configuration: .init(additionalChannelHandlers: [InboundCloseHandler(watch: connections)])),
            configuration: .init(address: address, serverName: "torpor-sim-engine"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger)
        try await app.runService()
    }

    func makeRouter() -> Router<SimulatedRequestContext> {
        let router = Router(context: SimulatedRequestContext.self)
        let engine = self.engine
        let configuration = self.configuration
        let connections = self.connections
        // The headers of the last generation request, for tests of what a proxy passes on (`/sim/last-request`).
        let lastHeaders = Mutex<[String: String]>([:])

        router.get("/health") { _, _ in Response(status: .ok) }
        router.get("/is_sleeping") { _, _ in json(["is_sleeping": await engine.isSleeping]) }
        router.get("/is_paused") { _, _ in json(["is_paused": await engine.isPaused]) }
        router.post("/pause") { _, _ in
            await engine.setPaused(true)
            return json(["status": "paused"])
        }
        router.post("/resume") { _, _ in
            await engine.setPaused(false)
            return json(["status": "resumed"])
        }
        /// A sleep's, wake's or prefix-cache reset's answer: JSON, or an empty 200 where the engine answers as vLLM 0.25.
        let emptyLifecycleAnswers = configuration.emptyLifecycleAnswers
        @Sendable func lifecycleAnswer(_ body: [String: any Sendable], status: Int) -> Response {
            status == 200 && emptyLifecycleAnswers ? Response(status: .ok) : json(body, status: .init(code: status))
        }
        router.post("/sleep") { request, _ in
            let query = request.uri.queryParameters
            let levelText = query["level"].map(String.init) ?? "1"
            guard let level = Int(levelText), (0...2).contains(level) else {
                return json(
                    errorBody(
                        "Input should be 0, 1 or 2: level=\(levelText)", type: "Bad Request", code: 400,
                        param: "query.level"),
                    status: .badRequest)
            }
            let modeText = query["mode"].map(String.init) ?? "abort"
            guard let mode = SleepMode(rawValue: modeText) else {
                return json(
                    errorBody(
                        "Input should be 'abort', 'wait' or 'keep': mode=\(modeText)", type: "Bad Request", code: 400,
                        param: "query.mode"),
                    status: .badRequest)
            }
            let reply = await engine.sleep(level: level, mode: mode)
            return lifecycleAnswer(reply.body, status: reply.status)
        }
        router.post("/wake_up") { request, _ in
            let tags = request.uri.queryParameters[values: "tags"].map(String.init)
            let reply = await engine.wakeUp(tags: tags)
            return lifecycleAnswer(reply.body, status: reply.status)
        }
        router.post("/collective_rpc") { request, _ in
            let body = try await jsonObject(request)
            guard let method = body?["method"] as? String else {
                return json(
                    errorBody("Missing 'method' in request body", type: "Bad Request", code: 400), status: .badRequest)
            }
            guard method == "reload_weights" else {
                return json(
                    errorBody("Worker has no method '\(method)'", type: "InternalServerError", code: 500),
                    status: .internalServerError)
            }
            let kwargs = body?["kwargs"] as? [String: Any]
            let path = kwargs?["weights_path"] as? String ?? configuration.model
            let reply = await engine.reloadWeights(path: path)
            return json(reply.body, status: .init(code: reply.status))
        }
        router.post("/reset_prefix_cache") { _, _ in
            lifecycleAnswer(["success": await engine.resetPrefixCache()], status: 200)
        }
        router.get("/metrics") { _, _ in
            let state = await engine.sleepState
            var text = "# HELP vllm:engine_sleep_state Engine sleep state; awake = 0 means engine is sleeping; "
            text +=
                "awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.\n"
            text += "# TYPE vllm:engine_sleep_state gauge\n"
            for candidate in EngineSleepState.allCases {
                text +=
                    "vllm:engine_sleep_state{engine=\"0\",model_name=\"\(configuration.model)\",sleep_state=\"\(candidate.rawValue)\"} "
                text += candidate == state ? "1.0\n" : "0.0\n"
            }
            text += "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            text += "# TYPE vllm:num_requests_running gauge\n"
            text +=
                "vllm:num_requests_running{engine=\"0\",model_name=\"\(configuration.model)\"} \(Double(await engine.runningRequests))\n"
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        router.get("/v1/models") { _, _ in
            json([
                "object": "list",
                "data": [
                    [
                        "id": configuration.model, "object": "model", "created": Int(Date().timeIntervalSince1970),
                        "owned_by": "vllm",
                        "root": configuration.model, "max_model_len": 2048,
                    ] as [String: any Sendable]
                ],
            ])
        }
        router.post("/v1/completions") { request, context in
            try await generate(request, chat: false, channel: context.channel)
        }
        router.post("/v1/chat/completions") { request, context in
            try await generate(request, chat: true, channel: context.channel)
        }
        router.post("/v1/embeddings") { request, _ in
            guard let body = try await jsonObject(request) else {
                return notAJSONObject()
            }
            let inputs = (body["input"] as? String).map { [$0] } ?? (body["input"] as? [String]) ?? []
            guard !inputs.isEmpty else {
                return json(
                    errorBody(
                        "'input' must be a string or a list of strings", type: "BadRequestError", code: 400,
                        param: "input"),
                    status: .badRequest)
            }
            // Like a generation: waits while the engine sleeps.
            let id = await engine.register()
            let permit = await engine.permit(id)
            var data: [[String: any Sendable]] = []
            if permit == .proceed {
                for (index, input) in inputs.enumerated() {
                    data.append(["object": "embedding", "index": index, "embedding": await engine.embedding(of: input)])
                }
            }
            await engine.finish(id)
            guard permit == .proceed else {
                return json(
                    errorBody("The request was aborted", type: "AbortError", code: 500), status: .internalServerError)
            }
            let tokens = inputs.reduce(0) { $0 + TextGenerator.countTokens($1) }
            return json([
                "object": "list", "model": body["model"] as? String ?? configuration.model, "data": data,
                "usage": ["prompt_tokens": tokens, "total_tokens": tokens] as [String: any Sendable],
            ])
        }
        addTokenizerRoutes(to: router)
        router.get("/sim/last-request") { _, _ in
            json(["headers": lastHeaders.withLock { $0 }])
        }
        router.post("/sim/fault") { request, _ in
            if let token = configuration.adminToken,
                request.headers[.authorization] != "Bearer \(token)"
            {
                return json(
                    errorBody("sim admin token required", type: "Unauthorized", code: 401), status: .unauthorized)
            }
            let query = request.uri.queryParameters
            guard let kind = query["kind"].flatMap({ SimulatedFault(rawValue: String($0)) }) else {
                let kinds = SimulatedFault.allCases.map(\.rawValue).joined(separator: ", ")
                return json(
                    errorBody("kind must be one of: \(kinds)", type: "Bad Request", code: 400, param: "kind"),
                    status: .badRequest)
            }
            await engine.inject(kind, factor: query["factor"].flatMap { Double(String($0)) })
            return json(["injected": kind.rawValue])
        }

        /// One completion or chat completion, streamed or not.
        /// Aborts request `id` when the client of `channel` leaves, as vLLM aborts a request whose client
        /// disconnected, streamed or not; cancel the returned task when the request ends.
        @Sendable func abortWhenClientLeaves(_ id: Int, on channel: any Channel) -> Task<Void, Never> {
            Task {
                _ = try? await connections.run(on: channel) { try await Task.sleep(for: .seconds(365 * 86400)) }
                // Cancelled by the client's leaving, or by the request's end (then the abort does nothing).
                await engine.abort(id)
            }
        }

        @Sendable func generate(_ request: Request, chat: Bool, channel: any Channel) async throws -> Response {
            let headers = Dictionary(
                request.headers.map { ($0.name.canonicalName, $0.value) }, uniquingKeysWith: { $0 + ", " + $1 })
            lastHeaders.withLock { $0 = headers }
            guard let body = try await jsonObject(request) else {
                return notAJSONObject()
            }
            let model = body["model"] as? String ?? configuration.model
            guard model == configuration.model else {
                return json(
                    errorBody(
                        "The model `\(model)` does not exist. Valid aliases: \(configuration.model).",
                        type: "NotFoundError", code: 404, param: "model"),
                    status: .notFound)
            }
            let prompt: String
            if chat {
                guard let messages = body["messages"] as? [[String: Any]] else {
                    return json(
                        errorBody("'messages' is required", type: "BadRequestError", code: 400, param: "messages"),
                        status: .badRequest)
                }
                prompt = messages.compactMap { $0["content"] as? String }.joined(separator: "\n")
            } else {
                guard let text = (body["prompt"] as? String) ?? (body["prompt"] as? [String])?.first else {
                    return json(
                        errorBody("'prompt' is required", type: "BadRequestError", code: 400, param: "prompt"),
                        status: .badRequest)
                }
                prompt = text
            }
            let maxTokens = (body["max_tokens"] as? Int) ?? (body["max_completion_tokens"] as? Int) ?? 16
            guard maxTokens >= 1 else {
                return json(
                    errorBody("max_tokens must be at least 1", type: "BadRequestError", code: 400, param: "max_tokens"),
                    status: .badRequest)
            }
            let stream = body["stream"] as? Bool ?? false
            let id = (chat ? "chatcmpl-" : "cmpl-") + String(UInt64.random(in: 0...UInt64.max), radix: 16)
            let created = Int(Date().timeIntervalSince1970)
            // Token rate is real time, not scaled: tests choose the rate they need.
            let interval = Duration.microseconds(Int64(1_000_000 / configuration.tokensPerSecond))
            let promptTokens = TextGenerator.countTokens(prompt)
            let requestID = await engine.register()
            let watch = abortWhenClientLeaves(requestID, on: channel)
            /// The request leaves the engine however it ends (done, aborted, client gone).
            @Sendable func end() async {
                await engine.finish(requestID)
                watch.cancel()
            }

            @Sendable func usage(completionTokens: Int) -> [String: any Sendable] {
                [
                    "prompt_tokens": promptTokens, "completion_tokens": completionTokens,
                    "total_tokens": promptTokens + completionTokens,
                ]
            }

            @Sendable func chunk(_ text: String, finish: String?, first: Bool) -> [String: any Sendable] {
                let finishValue: any Sendable = finish ?? NSNull()
                let choice: [String: any Sendable] =
                    chat
                    ? [
                        "index": 0,
                        "delta": (first ? ["role": "assistant", "content": text] : ["content": text])
                            as [String: any Sendable],
                        "logprobs": NSNull(), "finish_reason": finishValue,
                    ]
                    : ["index": 0, "text": text, "logprobs": NSNull(), "finish_reason": finishValue]
                return [
                    "id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": created,
                    "model": model,
                    "choices": [choice],
                ]
            }

            if stream {
                // As vLLM: with `stream_options.include_usage`, a last chunk with no choices carries the usage.
                let includeUsage = (body["stream_options"] as? [String: Any])?["include_usage"] as? Bool ?? false
                return Response(
                    status: .ok, headers: .eventStream,
                    body: ResponseBody { writer in
                        do {
                            var last = ""
                            var produced = 0
                            for index in 0..<maxTokens {
                                if await engine.permit(requestID) == .abort {
                                    try await writer.write(sse(chunk(last, finish: "abort", first: index == 0)))
                                    break
                                }
                                try await Task.sleep(for: interval)
                                last = await engine.token(prompt: prompt, index: index)
                                produced += 1
                                let done = index == maxTokens - 1
                                try await writer.write(
                                    sse(chunk(last, finish: done ? "length" : nil, first: index == 0)))
                            }
                            if includeUsage {
                                var final = chunk("", finish: nil, first: false)
                                final["choices"] = [[String: any Sendable]]()
                                final["usage"] = usage(completionTokens: produced)
                                try await writer.write(sse(final))
                            }
                            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                            try await writer.finish(nil)
                        } catch {
                            await end()
                            throw error
                        }
                        await end()
                    })
            }

            var text = ""
            var finish = "length"
            var produced = 0
            do {
                for index in 0..<maxTokens {
                    if await engine.permit(requestID) == .abort {
                        finish = "abort"
                        break
                    }
                    try await Task.sleep(for: interval)
                    text += await engine.token(prompt: prompt, index: index)
                    produced += 1
                }
            } catch {
                await end()
                throw error
            }
            await end()

            let choice: [String: any Sendable] =
                chat
                ? [
                    "index": 0, "message": ["role": "assistant", "content": text] as [String: any Sendable],
                    "logprobs": NSNull(),
                    "finish_reason": finish,
                ]
                : ["index": 0, "text": text, "logprobs": NSNull(), "finish_reason": finish]
            return json([
                "id": id, "object": chat ? "chat.completion" : "text_completion", "created": created, "model": model,
                "choices": [choice], "usage": usage(completionTokens: produced),
            ])
        }
        return router
    }
}

/// A JSON response.
func json(_ object: [String: any Sendable], status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8)
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: data)))
}

/// vLLM's 400 for a body that is not a JSON object.
func notAJSONObject() -> Response {
    json(errorBody("The request body is not a JSON object", type: "BadRequestError", code: 400), status: .badRequest)
}

/// One server-sent event carrying a JSON object.
func sse(_ object: [String: any Sendable]) -> ByteBuffer {
    let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8)
    return ByteBuffer(string: "data: " + String(decoding: data, as: UTF8.self) + "\n\n")
}

/// The request's body as a JSON object (nil when it is not one); bodies over 1 MiB are refused.
func jsonObject(_ request: Request) async throws -> [String: Any]? {
    var request = request
    let buffer = try await request.collectBody(upTo: 1 << 20)
    return try? JSONSerialization.jsonObject(with: Data(buffer: buffer)) as? [String: Any]
}
