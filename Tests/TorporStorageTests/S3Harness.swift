import Foundation
import Glibc
import Synchronization
import Testing
import TorporCheckpoint
import TorporTestSupport

@testable import TorporStorage

/// Where the storage tests find moto and the fixtures (scripts/test.sh sets the environment).
enum Moto {
    static var python: String? { ProcessInfo.processInfo.environment["TORPOR_MOTO_PYTHON"] }

    static var skipReason: Comment {
        let reason =
            ProcessInfo.processInfo.environment["TORPOR_MOTO_SKIP_REASON"]
            ?? "TORPOR_MOTO_PYTHON is not set; run scripts/test.sh, which installs moto[server]"
        return Comment(rawValue: "moto's S3 server is not available: \(reason)")
    }

    static var clients: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Clients").path
    }

    static var fixtures: String {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return ProcessInfo.processInfo.environment["TORPOR_FIXTURES"]
            ?? repository.deletingLastPathComponent().appendingPathComponent("shared/fixtures").path
    }

    /// The built `torpor` binary.
    static var torpor: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("torpor")
            .path
    }
}

/// A moto S3 server on loopback with authentication on (users "writer" and "nobody"; buckets "torpor-test" in
/// us-east-1 and "torpor-eu" in eu-west-1), a fault-injecting proxy in front of it, and a scratch directory.
final class S3UnderTest: Sendable {
    let endpoint: String
    let proxy: String
    let writer: AWSCredentials
    let nobody: AWSCredentials
    let directory: String
    private let processes: [Process]

    static func start() throws -> S3UnderTest {
        let python = Moto.python!
        let port = try freePort()
        let moto = Process()
        moto.executableURL = URL(fileURLWithPath: python)
        moto.arguments = ["-m", "moto.server", "-H", "127.0.0.1", "-p", "\(port)"]
        moto.standardOutput = FileHandle.nullDevice
        moto.standardError = FileHandle.nullDevice
        try moto.run()
        let endpoint = "http://127.0.0.1:\(port)"
        var processes = [moto]
        do {
            let deadline = Date().addingTimeInterval(60)
            while (try? run("/usr/bin/curl", ["-sf", "-o", "/dev/null", endpoint + "/moto-api/data.json"])) == nil {
                guard Date() < deadline, moto.isRunning else { throw StorageError(.server, "moto did not start") }
                usleep(100_000)
            }
            let users =
                try JSONSerialization.jsonObject(
                    with: try run(python, [Moto.clients + "/moto_users.py", endpoint])) as! [String: [String: String]]

            let proxy = Process()
            proxy.executableURL = URL(fileURLWithPath: python)
            proxy.arguments = [Moto.clients + "/fault_proxy.py", "\(port)"]
            let output = Pipe()
            proxy.standardOutput = output
            proxy.standardError = FileHandle.nullDevice
            try proxy.run()
            processes.append(proxy)
            var line = Data()
            while !line.contains(UInt8(ascii: "\n")) {
                let byte = output.fileHandleForReading.readData(ofLength: 1)
                guard !byte.isEmpty else { throw StorageError(.server, "the fault proxy did not start") }
                line += byte
            }
            let proxyPort = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))!
            let directory = URL(fileURLWithPath: NSTemporaryDirectory())
                .appendingPathComponent("torpor-s3-test-\(getpid())-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            func credentials(_ user: String) -> AWSCredentials {
                AWSCredentials(accessKeyID: users[user]!["id"]!, secretAccessKey: users[user]!["secret"]!)
            }
            return S3UnderTest(
                endpoint: endpoint, proxy: "http://127.0.0.1:\(proxyPort)", writer: credentials("writer"),
                nobody: credentials("nobody"), directory: directory, processes: processes)
        } catch {
            for process in processes { kill(process.processIdentifier, SIGKILL) }
            throw error
        }
    }

    private init(
        endpoint: String, proxy: String, writer: AWSCredentials, nobody: AWSCredentials, directory: String,
        processes: [Process]
    ) {
        self.endpoint = endpoint
        self.proxy = proxy
        self.writer = writer
        self.nobody = nobody
        self.directory = directory
        self.processes = processes
    }

    func stop() {
        // SIGKILL: moto's server does not always stop on SIGTERM.
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A client through the fault proxy, retrying quickly.
    func client(
        _ credentials: AWSCredentials? = nil, region: String = "us-east-1", attempts: Int = 6
    ) -> S3Client {
        S3Client(
            configuration: S3Configuration(
                credentials: credentials ?? writer, region: region, endpoint: proxy),
            retry: RetryPolicy(attempts: attempts, baseSeconds: 0.01, capSeconds: 0.05))
    }

    /// The environment the `torpor` command needs to reach the store as `writer`.
    var environment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["AWS_ACCESS_KEY_ID"] = writer.accessKeyID
        environment["AWS_SECRET_ACCESS_KEY"] = writer.secretAccessKey
        environment["AWS_ENDPOINT_URL"] = proxy
        environment["AWS_REGION"] = "us-east-1"
        environment["TORPOR_S3_CACHE"] = directory + "/cache"
        return environment
    }

    /// Sets the proxy's fault rules (see Clients/fault_proxy.py).
    func faults(_ rules: [[String: any Sendable]]) throws {
        let body = String(decoding: try JSONSerialization.data(withJSONObject: rules), as: UTF8.self)
        try run("/usr/bin/curl", ["-sf", "-X", "POST", "--data-binary", body, proxy + "/__faults"])
    }

    /// The requests the proxy has seen, "METHOD PATH?QUERY STATUS".
    func log() throws -> [String] {
        try JSONSerialization.jsonObject(with: run("/usr/bin/curl", ["-sf", proxy + "/__log"])) as! [String]
    }

    /// Multipart uploads the store still holds for `bucket`.
    func openUploads(_ bucket: String) async throws -> Int {
        let client = client()
        let uploads = try await client.openUploads(bucket: bucket)
        return uploads.count
    }

    /// A pack of the MiniLM fixture (one 30 MB container), made once per test.
    func miniLMPack(_ name: String = "mini.pack") throws -> String {
        let model = directory + "/mini-model"
        if !FileManager.default.fileExists(atPath: model) {
            try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
            try FileManager.default.copyItem(
                atPath: Moto.fixtures + "/minilm-l6-bf16.safetensors", toPath: model + "/model.safetensors")
            try Data("{\"architectures\": [\"BertModel\"]}".utf8).write(
                to: URL(fileURLWithPath: model + "/config.json"))
        }
        let pack = directory + "/" + name
        _ = try ModelPack.pack(model: model, to: pack)
        return pack
    }

}

/// Runs `body` against a fresh moto server and proxy, and stops them whatever happens.
func withS3(_ body: (S3UnderTest) async throws -> Void) async throws {
    let s3 = try S3UnderTest.start()
    do {
        try await body(s3)
    } catch {
        s3.stop()
        throw error
    }
    s3.stop()
}

/// Runs a program to its end; its standard output, or an error with its standard error.
@discardableResult
func run(_ program: String, _ arguments: [String], environment: [String: String]? = nil) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: program)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let collected = Mutex(Data())
    let reading = Thread { collected.withLock { $0 = errors.fileHandleForReading.readDataToEndOfFile() } }
    reading.start()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while !reading.isFinished { usleep(1000) }
    guard process.terminationStatus == 0 else {
        throw CommandFailure(
            status: process.terminationStatus, standardError: String(decoding: collected.withLock { $0 }, as: UTF8.self)
        )
    }
    return data
}

struct CommandFailure: Error, CustomStringConvertible {
    var status: Int32
    var standardError: String
    var description: String { "exit \(status): \(standardError)" }
}

/// A TCP port nothing listens on now.
func freePort() throws -> Int {
    guard let free = LoopbackPort() else { throw StorageError(.io, "no free port") }
    return free.port
}
