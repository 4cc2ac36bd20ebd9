import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import TorporEngine
import TorporGateway

/// `torpor admin`: a running gateway's admin API from the shell.
struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin",
        abstract: "Operate a running gateway: states, sleep, wake, switch, reload, GPU leases, engine logs.",
        discussion: """
            Talks to the admin listener of `torpor serve` (listen.admin). The URL comes from --url, else \
            TORPOR_ADMIN_URL, else http://127.0.0.1:8081; the token from --token, else TORPOR_ADMIN_TOKEN. \
            See docs/gateway.md for the API underneath.
            """,
        subcommands: [
            AdminStatus.self, AdminSleep.self, AdminWake.self, AdminSwitch.self, AdminReload.self, AdminLease.self,
            AdminLogs.self,
        ])
}

/// Where the gateway's admin listener is, and its token.
struct AdminConnection: ParsableArguments {
    @Option(help: "The admin API's URL (default: TORPOR_ADMIN_URL, else http://127.0.0.1:8081).")
    var url: String?

    @Option(help: "The admin token (default: TORPOR_ADMIN_TOKEN).")
    var token: String?

    var baseURL: String {
        let url = url ?? ProcessInfo.processInfo.environment["TORPOR_ADMIN_URL"] ?? "http://127.0.0.1:8081"
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }

    /// One admin call; a failed one ends the command with what went wrong.
    func call(_ method: HTTPMethod, _ path: String, timeout: Duration = .seconds(600)) async throws -> ByteBuffer {
        let response = try await send(method, path, timeout: timeout)
        let body = try await response.body.collect(upTo: 64 << 20)
        try check(response.status, body)
        return body
    }

    /// Sends one call and returns the answer as it starts (for streamed answers).
    func send(_ method: HTTPMethod, _ path: String, timeout: Duration) async throws -> HTTPClientResponse {
        guard let token = token ?? ProcessInfo.processInfo.environment["TORPOR_ADMIN_TOKEN"], !token.isEmpty else {
            fail("no admin token: pass --token or set TORPOR_ADMIN_TOKEN (`torpor serve` prints a generated one once)")
        }
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        do {
            // A refused connection fails at once: no gateway listens there.
            return try await EngineClient.sharedHTTP.execute(request, timeout: .seconds(Int64(timeout / .seconds(1))))
        } catch {
            fail(
                "no gateway answers at \(baseURL) (\(error)); is `torpor serve` running? Set --url or TORPOR_ADMIN_URL")
        }
    }

    func check(_ status: HTTPResponseStatus, _ body: ByteBuffer) throws {
        guard !(200..<300).contains(status.code) else { return }
        if status == .unauthorized { fail("the gateway refused the admin token (--token or TORPOR_ADMIN_TOKEN)") }
        let message =
            ((try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any])
            .flatMap { ($0["error"] as? [String: Any])?["message"] as? String } ?? String(buffer: body)
        fail("\(message) (HTTP \(status.code))")
    }

    func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        Foundation.exit(1)
    }
}

/// `GET /admin/models`'s answer.
struct AdminModels: Decodable {
    var models: [Scheduler.ModelStatus]
    var gpus: [Scheduler.Ledger]
}

struct AdminStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Every model's state, queue and memory, and every GPU's ledger.")

    @OptionGroup var connection: AdminConnection

    @Flag(help: "Print the admin API's JSON instead of the table.")
    var json = false

    func run() async throws {
        let body = try await connection.call(.GET, "/admin/models")
        guard !json else {
            print(String(buffer: body))
            return
        }
        let reply = try JSONDecoder().decode(AdminModels.self, from: Data(buffer: body))
        print(AdminStatusTable(models: reply.models, gpus: reply.gpus).render(), terminator: "")
    }
}

/// The model an admin call is about, and the gateway to ask.
struct ModelCall: ParsableArguments {
    @Argument(help: "The model.") var model: String
    @OptionGroup var connection: AdminConnection

    /// `POST /admin/models/MODEL/ACTION`, printing the model's state after it.
    func post(_ action: String, query: String = "") async throws {
        let body = try await connection.call(.POST, "/admin/models/\(escapedPath(model))/\(action)" + query)
        let status = try JSONDecoder().decode(Scheduler.ModelStatus.self, from: Data(buffer: body))
        print("\(status.name): \(status.state)")
    }
}

struct AdminSleep: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sleep", abstract: "Drain a model and put it to sleep; returns once it sleeps.")

    @OptionGroup var call: ModelCall
    @Option(help: "1 (weights to host RAM) or 2 (weights discarded); default: the model's policy.") var level: Int?

    func validate() throws {
        if let level, ![1, 2].contains(level) { throw ValidationError("--level \(level): use 1 or 2") }
    }

    func run() async throws { try await call.post("sleep", query: level.map { "?level=\($0)" } ?? "") }
}

struct AdminWake: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wake", abstract: "Wake a model (or start it, a failed one too); returns once it is awake.")

    @OptionGroup var call: ModelCall

    func run() async throws { try await call.post("wake") }
}

struct AdminSwitch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switch", abstract: "Wake one model, first putting another to sleep when --from names it.")

    @Argument(help: "The model to wake.") var to: String
    @Option(help: "The model to put to sleep first.") var from: String?
    @OptionGroup var connection: AdminConnection

    func run() async throws {
        let from = self.from.map { "&from=\(escapedQuery($0))" } ?? ""
        let body = try await connection.call(.POST, "/admin/switch?to=\(escapedQuery(to))" + from)
        let reply = try JSONDecoder().decode(AdminModels.self, from: Data(buffer: body))
        print(AdminStatusTable(models: reply.models, gpus: reply.gpus).render(), terminator: "")
    }
}

struct AdminReload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Re-read the gateway's configuration file and apply what changed (as SIGHUP does).")

    @OptionGroup var connection: AdminConnection

    func run() async throws {
        let body = try await connection.call(.POST, "/admin/reload")
        let change = try JSONDecoder().decode(ConfigurationChange.self, from: Data(buffer: body))
        guard !change.isEmpty else {
            print("nothing changed")
            return
        }
        for (what, names) in [
            ("added", change.added), ("removed", change.removed), ("restarted", change.restarted),
            ("updated", change.updated), ("settings", change.settings),
        ] where !names.isEmpty {
            print("\(what): \(names.joined(separator: ", "))")
        }
    }
}

struct AdminLease: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease",
        abstract: "Lend a GPU to another job (every model on it sleeps), or end the lease with --release.")

    @Argument(help: "The GPU id, or `all`.") var gpu: String = "all"
    @Option(help: "While leased, requests wait (queue) or get 503 (refuse).") var mode: String = "queue"
    @Flag(help: "End the lease: the models awake before it wake again.") var release = false
    @OptionGroup var connection: AdminConnection

    func validate() throws {
        guard ["queue", "refuse"].contains(mode) else { throw ValidationError("--mode \(mode): use queue or refuse") }
    }

    func run() async throws {
        let path = "/admin/gpus/\(escapedPath(gpu))/lease"
        let body = try await release ? connection.call(.DELETE, path) : connection.call(.POST, path + "?mode=\(mode)")
        let gpus = try JSONDecoder().decode([Scheduler.Ledger].self, from: Data(buffer: body))
        print(AdminStatusTable(models: [], gpus: gpus).render(), terminator: "")
    }
}

struct AdminLogs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "The end of a model's engine log; with -f, what it writes next too.")

    @OptionGroup var call: ModelCall
    @Option(help: "How many lines from the end.") var lines: Int = 100
    @Flag(name: [.short, .long], help: "Keep printing what the engine writes, until interrupted.") var follow = false

    func run() async throws {
        let connection = call.connection
        let path = "/admin/models/\(escapedPath(call.model))/logs?lines=\(lines)" + (follow ? "&follow=1" : "")
        let response = try await connection.send(.GET, path, timeout: follow ? .seconds(365 * 86400) : .seconds(60))
        guard response.status == .ok else {
            try connection.check(response.status, try await response.body.collect(upTo: 1 << 20))
            return
        }
        for try await chunk in response.body {
            FileHandle.standardOutput.write(Data(buffer: chunk))
        }
    }
}

private func escapedPath(_ text: String) -> String {
    text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? text
}

private func escapedQuery(_ text: String) -> String {
    text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(["-", "_", ".", "~"])) ?? text
}
