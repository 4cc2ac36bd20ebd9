package import NIOCore
import Synchronization

/// Cancels the request in progress on a connection when its client leaves: when the connection closes (RST or a
/// full close) and when the client closes only its sending side (FIN with the server's half still open, which
/// HummingbirdCore allows and reports as `ChannelEvent.inputClosed`, seen by `InboundCloseHandler`).
///
/// HummingbirdCore's `consumeWithCancellationOnInboundClose` would close every kept-alive connection after one
/// answer; watching the channel instead keeps connections reusable. HTTP/1.1 has at most one request in progress
/// per connection, so one callback per connection cancels whichever request is current. At shutdown `cutOff()`
/// cancels every request still in progress.
package final class ConnectionWatch: Sendable {
    private final class Connection: Sendable {
        struct State {
            var closed = false
            var cancelCurrent: (@Sendable () -> Void)?
            /// Which `run` set `cancelCurrent`: one that ends late must not clear its successor's.
            var current: UInt64 = 0
        }
        let state = Mutex(State())

        func close() {
            let cancel = state.withLock { state in
                state.closed = true
                defer { state.cancelCurrent = nil }
                return state.cancelCurrent
            }
            cancel?()
        }

        func cancelCurrent() {
            let cancel = state.withLock { $0.cancelCurrent }
            cancel?()
        }
    }

    private struct State {
        var connections: [ObjectIdentifier: Connection] = [:]
        var cutOff = false
    }
    private let state = Mutex(State())

    package init() {}

    /// Runs `operation` as its own task, cancelled when the client of `channel` leaves (or at `cutOff()`).
    package func run<T: Sendable>(
        on channel: any Channel, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let connection = self.connection(for: channel)
        let task = Task { try await operation() }
        let (open, mine) = connection.state.withLock { state in
            guard !state.closed else { return (false, UInt64(0)) }
            state.current &+= 1
            state.cancelCurrent = { task.cancel() }
            return (true, state.current)
        }
        if !open || isCutOff { task.cancel() }
        defer {
            connection.state.withLock { state in
                if state.current == mine { state.cancelCurrent = nil }
            }
        }
        return try await withTaskCancellationHandler {
            try await task.value
        } onCancel: {
            task.cancel()
        }
    }

    /// The client of `channel` will send nothing more: whatever it asked for is abandoned.
    package func inputClosed(on channel: any Channel) {
        connection(for: channel).close()
    }

    /// Cancels every request in progress, and any that starts later (shutdown's deadline has passed).
    package func cutOff() {
        let connections = state.withLock { state in
            state.cutOff = true
            return Array(state.connections.values)
        }
        for connection in connections { connection.cancelCurrent() }
    }

    /// Whether `cutOff()` has been called: a cancelled request was cut off rather than abandoned by its client.
    package var isCutOff: Bool { state.withLock { $0.cutOff } }

    private func connection(for channel: any Channel) -> Connection {
        let key = ObjectIdentifier(channel)
        let (connection, isNew) = state.withLock { state in
            if let existing = state.connections[key] { return (existing, false) }
            let created = Connection()
            state.connections[key] = created
            return (created, true)
        }
        if isNew {
            channel.closeFuture.whenComplete { [weak self] _ in
                connection.close()
                _ = self?.state.withLock { $0.connections.removeValue(forKey: key) }
            }
        }
        return connection
    }
}

/// Reports a client's half-close (FIN while the server may still write) to the `ConnectionWatch`.
package final class InboundCloseHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    package typealias InboundIn = NIOAny

    private let watch: ConnectionWatch

    package init(watch: ConnectionWatch) { self.watch = watch }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed? = event as? ChannelEvent {
            watch.inputClosed(on: context.channel)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
