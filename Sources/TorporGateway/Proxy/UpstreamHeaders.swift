import Foundation
import HTTPTypes
import NIOHTTP1

/// The headers a proxied request carries to its engine: the client's own, less a documented deny-list, plus the
/// request's id.
///
/// Not forwarded: the hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`), what the gateway sets itself (`Host`, `Content-Length`, `Content-Type`,
/// `Accept`, `Expect`), `Accept-Encoding` (answers are passed back uncompressed), the client's credentials for the
/// gateway (`Authorization`), and the gateway's own `X-Torpor-*` headers. docs/gateway.md lists them.
enum UpstreamHeaders {
    static let denied: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length", "content-type", "accept", "expect",
        "accept-encoding", "authorization", "x-request-id",
    ]

    /// The engine's request headers for a client request with `fields`.
    static func forwarded(_ fields: HTTPFields, requestID: String, stream: Bool) -> HTTPHeaders {
        var headers = HTTPHeaders()
        for field in fields {
            let name = field.name.canonicalName
            guard !denied.contains(name), !name.hasPrefix("x-torpor-") else { continue }
            headers.add(name: field.name.rawName, value: field.value)
        }
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Accept", value: stream ? "text/event-stream" : "application/json")
        headers.add(name: "X-Request-Id", value: requestID)
        return headers
    }

    /// The client's `X-Request-Id` when it is usable (1 to 128 visible ASCII characters), else a new one.
    static func requestID(_ fields: HTTPFields) -> String {
        if let sent = fields[RequestID.field], (1...128).contains(sent.utf8.count),
            sent.utf8.allSatisfy({ (0x21...0x7E).contains($0) })
        {
            return sent
        }
        return UUID().uuidString.lowercased()
    }
}

enum RequestID {
    // Safe: a valid, constant field name.
    static let field = HTTPField.Name("X-Request-Id")!
}

/// The headers of an answer whose request waited for its model: the state it waited on (`X-Torpor-Woke-From: L2`)
/// and the seconds it waited (`X-Torpor-Waited-Seconds`).
enum WaitHeaders {
    // Safe: valid, constant field names.
    static let wokeFrom = HTTPField.Name("X-Torpor-Woke-From")!
    static let waited = HTTPField.Name("X-Torpor-Waited-Seconds")!
}
