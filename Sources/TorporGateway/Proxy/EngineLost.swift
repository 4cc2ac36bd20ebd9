import AsyncHTTPClient
import Glibc
import NIOCore
import NIOPosix

/// A proxied request that lost its engine before the answer's head: the connection was refused (nothing reached
/// the engine) or closed.
struct EngineLost: Error {
    let cause: any Error
    /// The engine never got the request.
    let refused: Bool

    /// `error` from the HTTP client as a lost engine, or nil for any other failure.
    init?(_ error: any Error) {
        cause = error
        if let error = error as? NIOConnectionError {
            refused = error.connectionErrors.contains { ($0.error as? IOError)?.errnoCode == ECONNREFUSED }
            if !refused { return nil }
        } else if let error = error as? IOError, [ECONNREFUSED, ENOENT].contains(error.errnoCode) {
            // A unix socket nobody listens on: refused, or gone with its engine.
            refused = true
        } else if let error = error as? IOError, [ECONNRESET, EPIPE].contains(error.errnoCode) {
            // A kept-alive connection to an engine that died (a unix socket reports a reset, not a close).
            refused = false
        } else if let error = error as? HTTPClientError, error == .remoteConnectionClosed {
            refused = false
        } else {
            return nil
        }
    }
}
