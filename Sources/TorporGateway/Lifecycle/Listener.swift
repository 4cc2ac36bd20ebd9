import Glibc
import Logging
import NIOCore
import ServiceLifecycle

/// One of the gateway's listeners (the client API or the admin API): the server, with a failure to bind turned
/// into an error that names the listener, its address and what to do, in place of NIO's
/// `bind(descriptor:ptr:bytes:): Address already in use (errno: 98)`.
struct Listener: Service {
    let name: String
    let host: String
    let port: Int
    let server: any Service

    func run() async throws {
        do {
            try await server.run()
        } catch let error as IOError where error.errnoCode == EADDRINUSE || error.errnoCode == EACCES {
            let reason =
                error.errnoCode == EADDRINUSE
                ? "the address is in use (another torpor serve or another server holds it; choose another port in "
                    + "`listen`)"
                : "permission denied (ports below 1024 need privileges)"
            throw ConfigurationError("the \(name) listener cannot listen on \(host):\(port): \(reason)")
        }
    }
}

/// A warning for an admin listener that is not on loopback: the admin API controls every engine, and its token is
/// its only guard.
func warnIfExposed(admin host: String, logger: Logger) {
    guard !["127.0.0.1", "::1", "localhost"].contains(host) else { return }
    let warning =
        "the admin API listens beyond this machine: anyone who can reach it and holds the admin token can sleep, "
        + "wake, reload and lease every model; put it on 127.0.0.1 or behind a firewall"
    logger.warning("\(warning)", metadata: ["listen.admin": "\(host)"])
}
