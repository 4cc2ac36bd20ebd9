import Foundation
import Glibc

/// A client on a plain TCP socket that sends one HTTP request (or any bytes) and then may close only its sending
/// side (FIN), as a client that gives up without resetting the connection does.
final class HalfClosingClient {
    private let fd: Int32

    /// Connects to 127.0.0.1:`port` and sends a POST of `json` to `path`.
    convenience init(port: Int, path: String, json: String) throws {
        let body = Array(json.utf8)
        let head =
            "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.count)\r\n\r\n"
        try self.init(port: port, bytes: Array(head.utf8) + body)
    }

    /// Connects to 127.0.0.1:`port` and sends `bytes` as they are (a request the HTTP parser may refuse, say).
    init(port: Int, bytes: [UInt8]) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
    }

    /// What the server sends until it closes the connection or `timeout` passes without a byte.
    func readAnswer(timeout: Duration = .seconds(10)) -> String {
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while waitForBytes(timeout: timeout) {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { break }
            answer += buffer[..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    /// Waits (at most `timeout`) until some of the answer has arrived.
    func waitForBytes(timeout: Duration = .seconds(30)) -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&poller, 1, Int32(timeout / .milliseconds(1))) == 1
    }

    /// Sends FIN: the client will send nothing more, and can still read.
    func closeSendingSide() { shutdown(fd, Int32(SHUT_WR)) }

    deinit { close(fd) }
}
