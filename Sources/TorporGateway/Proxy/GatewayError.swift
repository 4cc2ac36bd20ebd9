import Foundation

/// An error a client sees, rendered as an OpenAI-style body `{"error":{"message","type","param","code"}}`.
public struct GatewayError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable {
            case badRequest = "invalid_request_error"
            case unauthorized = "invalid_api_key"
            case forbidden = "model_not_allowed"
            case notFound = "model_not_found"
            case unknownPath = "not_found"
            case payloadTooLarge = "request_too_large"
            case queueFull = "queue_full"
            case unavailable = "model_unavailable"
            case upstream = "engine_error"
            case cancelled = "client_closed_request"
        }
        fileprivate let base: Base
        private init(_ base: Base) { self.base = base }

        public static let badRequest = Code(.badRequest)
        public static let unauthorized = Code(.unauthorized)
        public static let forbidden = Code(.forbidden)
        public static let notFound = Code(.notFound)
        public static let unknownPath = Code(.unknownPath)
        public static let payloadTooLarge = Code(.payloadTooLarge)
        public static let queueFull = Code(.queueFull)
        public static let unavailable = Code(.unavailable)
        public static let upstream = Code(.upstream)
        /// The client went away while its request waited; nobody is left to answer (counted as 499).
        public static let cancelled = Code(.cancelled)

        public var description: String { base.rawValue }
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

    /// The HTTP status.
    public var status: Int {
        switch code.base {
        case .badRequest: 400
        case .unauthorized: 401
        case .forbidden: 403
        case .notFound, .unknownPath: 404
        case .payloadTooLarge: 413
        case .queueFull: 429
        case .unavailable: 503
        case .upstream: 502
        case .cancelled: 499
        }
    }

    /// OpenAI's error `type` for the status.
    var type: String {
        switch code.base {
        case .badRequest, .notFound, .unknownPath, .payloadTooLarge: "invalid_request_error"
        case .unauthorized: "authentication_error"
        case .forbidden: "permission_error"
        case .queueFull: "rate_limit_error"
        case .unavailable, .upstream, .cancelled: "server_error"
        }
    }

    /// The JSON body.
    public func body(param: String? = nil) -> [UInt8] {
        let paramJSON = param.map { "\"\(jsonEscaped($0))\"" } ?? "null"
        return Array(
            """
            {"error":{"message":"\(jsonEscaped(message))","type":"\(type)","param":\(paramJSON),"code":"\(code)"}}
            """.utf8)
    }
}

/// `text` escaped for a JSON string literal.
func jsonEscaped(_ text: String) -> String {
    var result = ""
    result.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case let c where c.value < 0x20: result += String(format: "\\u%04x", c.value)
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result
}
