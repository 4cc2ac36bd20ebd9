import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Who may use the admin listener: `Authorization: Bearer TOKEN` with the admin token, or the admin page's session
/// cookie holding it (HttpOnly, SameSite=Strict; a call that changes anything with the cookie must also carry
/// `X-Torpor-Admin: 1`, which a page of another site cannot send). The metrics (GET `/metrics` and
/// `/admin/models/NAME/metrics`) also take the metrics token. The page itself and its login and logout are open:
/// they hold nothing. Tokens are compared in constant time.
struct BearerTokenMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: [UInt8]
    let metricsToken: [UInt8]?

    static let cookieName = "torpor_admin"

    static func readsMetrics(_ request: Request) -> Bool {
        let path = request.uri.path
        return request.method == .get
            && (path == "/metrics" || (path.hasPrefix("/admin/models/") && path.hasSuffix("/metrics")))
    }

    static func isOpen(_ request: Request) -> Bool {
        let path = request.uri.path
        return (request.method == .get && (path == "/" || path == "/index.html"))
            || (request.method == .post && (path == "/login" || path == "/logout"))
    }

    /// The session cookie's token, when the request has one.
    static func cookieToken(_ request: Request) -> [UInt8]? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == cookieName {
                    let value = parts[1].trimmingCharacters(in: .whitespaces)
                    return Array((value.removingPercentEncoding ?? value).utf8)
                }
            }
        }
        return nil
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        if Self.isOpen(request) { return try await next(request, context) }
        let presented = request.headers[.authorization].flatMap(bearerToken).map { Array($0.utf8) }
        let admitted = presented.map { presented in
            constantTimeEqual(presented, token)
                || (Self.readsMetrics(request) && metricsToken.map { constantTimeEqual(presented, $0) } ?? false)
        }
        if admitted == true { return try await next(request, context) }
        if presented == nil, let cookie = Self.cookieToken(request), constantTimeEqual(cookie, token) {
            guard request.method == .get || request.headers[Self.sameSiteField] == "1" else {
                throw AdminError(.forbidden, "a change through the admin page's session needs `X-Torpor-Admin: 1`")
            }
            return try await next(request, context)
        }
        throw AdminError(.unauthorized, "the admin API needs `Authorization: Bearer TOKEN` with the admin token")
    }

    // Safe: a valid, constant field name.
    static let sameSiteField = HTTPField.Name("X-Torpor-Admin")!
}

extension AdminAPI {
    /// `/` (the page), `POST /login` (a form's `token`, checked, then kept in the session cookie) and `POST /logout`.
    func addPageRoutes(to router: Router<BasicRequestContext>) {
        let token = Array(self.token.utf8)
        router.get("/") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/html; charset=utf-8"
            headers[.cacheControl] = "no-store"
            // The page loads nothing from elsewhere, and nothing else may frame it.
            headers[.contentSecurityPolicy] =
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: AdminPage.html)))
        }
        router.post("/login") { request, _ in
            var request = request
            let body = try await request.collectBody(upTo: 4096)
            let form = String(buffer: body)
            let presented = form.split(separator: "&").compactMap { pair -> String? in
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[0] == "token" else { return nil }
                return String(parts[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            }.first
            guard let presented, constantTimeEqual(Array(presented.utf8), token) else {
                throw AdminError(.unauthorized, "that admin token was refused")
            }
            var headers = HTTPFields()
            headers[.setCookie] =
                "\(BearerTokenMiddleware.cookieName)=\(presented.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""); "
                + "Path=/; HttpOnly; SameSite=Strict"
            return Response(status: .noContent, headers: headers)
        }
        router.post("/logout") { _, _ in
            var headers = HTTPFields()
            headers[.setCookie] = "\(BearerTokenMiddleware.cookieName)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            return Response(status: .noContent, headers: headers)
        }
    }
}
