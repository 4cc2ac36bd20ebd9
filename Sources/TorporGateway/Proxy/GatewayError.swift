import TorporCheckpoint

/// An error a client sees, rendered as an OpenAI-style body `{"error":{"message","type","param","code"}}`.
public struct GatewayError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, as OpenAI's error `code`:
    /// - `cancelled`: the client went away while its request waited; nobody is left to answer (counted as 499)
    public enum Code: String, Sendable, CustomStringConvertible {
        case badRequest = "invalid_request_error", unauthorized = "invalid_api_key"
        case forbidden = "model_not_allowed", notFound = "model_not_found", unknownPath = "not_found"
        case payloadTooLarge = "request_too_large", queueFull = "queue_full"
        case unavailable = "model_unavailable", upstream = "engine_error", cancelled = "client_closed_request"
        /// A request past one of its time bounds (`UpstreamTimeout`).
        case timeout = "engine_timeout"

        public var description: String { rawValue }
    }

    public let code: Code
    public let message: String
    /// Seconds for `Retry-After` (429 and 503).
    public let retryAfterSeconds: Int?

    public init(_ code: Code, _ message: String, retryAfterSeconds: Int? = nil) {
        self.code = code
        self.message = message
        self.retryAfterSeconds = retryAfterSeconds
    }

    public var description: String { message }

    /// What a client is told in place of an engine's failure: the reason (engine log lines, file paths) is for
    /// operators, in `GET /admin/models` (`last_error`) and the gateway's log.
    static let operatorsSeeWhy = "The reason is in the gateway's log and its admin API (GET /admin/models)."

    /// The answer for a model that is not configured, or that the client's key may not use (the same answer, so
    /// that a key cannot probe for names).
    static func unknownModel(_ name: String) -> GatewayError {
        GatewayError(.notFound, "The model `\(name)` does not exist or you do not have access to it.")
    }

    /// The answer for a model a configuration reload removed (while its engine is being stopped).
    static func removedModel(_ name: String) -> GatewayError {
        GatewayError(.notFound, "The model `\(name)` was removed from the gateway's configuration.")
    }

    /// The HTTP status.
    public var status: Int {
        switch code {
        case .badRequest: 400
        case .unauthorized: 401
        case .forbidden: 403
        case .notFound, .unknownPath: 404
        case .payloadTooLarge: 413
        case .queueFull: 429
        case .unavailable: 503
        case .upstream: 502
        case .timeout: 504
        case .cancelled: 499
        }
    }

    /// OpenAI's error `type` for the status.
    var type: String {
        switch code {
        case .badRequest, .notFound, .unknownPath, .payloadTooLarge: "invalid_request_error"
        case .unauthorized: "authentication_error"
        case .forbidden: "permission_error"
        case .queueFull: "rate_limit_error"
        case .unavailable, .upstream, .cancelled, .timeout: "server_error"
        }
    }

    /// The JSON body.
    public func body(param: String? = nil) -> [UInt8] {
        let paramJSON = param.map(jsonString) ?? "null"
        return Array(
            """
            {"error":{"message":\(jsonString(message)),"type":"\(type)","param":\(paramJSON),"code":"\(code)"}}
            """.utf8)
    }

    /// The body as a stream's last server-sent event, which tells a client mid-stream why its answer ends.
    var streamEvent: [UInt8] { Array("data: ".utf8) + body() + [10, 10] }
}
