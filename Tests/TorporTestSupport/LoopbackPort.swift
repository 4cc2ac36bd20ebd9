import Glibc

/// A TCP port on 127.0.0.1 that the system chose and this object holds (bound, and listening when asked) until it
/// is released or freed: a port known to be taken, or, once released, one nothing listens on.
public final class LoopbackPort {
    public let port: Int
    private var descriptor: Int32

    /// Binds a free loopback port; `listening` also accepts connections (into a backlog nobody reads).
    /// - Returns: nil when no socket or port can be had.
    public init?(listening: Bool = false) {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let socketDescriptor = descriptor
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socketDescriptor, $0, length) == 0 && (!listening || listen(socketDescriptor, 1) == 0)
                    && getsockname(socketDescriptor, $0, &length) == 0
            }
        }
        guard bound else {
            close(descriptor)
            return nil
        }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// Closes the socket: the port is free again.
    public func release() {
        if descriptor >= 0 { close(descriptor) }
        descriptor = -1
    }

    deinit { release() }
}
