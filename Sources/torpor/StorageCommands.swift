import ArgumentParser
import Foundation
import TorporCheckpoint
import TorporStorage

/// Options of the commands that reach an S3-compatible store.
struct StoreOptions: ParsableArguments {
    @Option(help: "Requests in flight at once.")
    var parallelism: Int = 8

    @Option(help: "Megabytes per part of a multipart upload (5 or more).")
    var partMegabytes: Int = 16

    @Option(help: "Megabytes per ranged GET.")
    var rangeMegabytes: Int = 32

    @Flag(name: [.short, .long], help: "Print nothing but errors.")
    var quiet = false

    /// The location `text` names and a client of its store, configured from the environment.
    func connect(_ text: String) throws(StorageError) -> (S3Location, S3Client) {
        guard let location = try S3Location(text) else {
            throw StorageError(.invalidArgument, "\(text) is not an s3://bucket/prefix location")
        }
        let configuration = try S3Configuration.fromEnvironment(ProcessInfo.processInfo.environment)
        return (location, S3Client(configuration: configuration))
    }

    var transfer: TransferOptions {
        TransferOptions(partSize: partMegabytes << 20, rangeSize: rangeMegabytes << 20, parallelism: parallelism)
    }

    /// Connects to the store `location` names, runs `move` and prints its summary ("pushed 12 objects … to …").
    func run(
        _ location: String, verb: String, place: String,
        _ move: (S3Location, S3Client, TransferOptions) async throws -> RemotePack.Report
    ) async throws {
        try await reportingErrors {
            let (location, client) = try connect(location)
            let report = try await move(location, client, transfer)
            guard !quiet else { return }
            let skipped = report.bytes - report.transferred
            print(
                "\(verb) \(plural(report.objects, "object")) (\(formatBytes(report.bytes))) \(place) in "
                    + WorkOptions.rate(bytes: report.transferred, seconds: report.seconds)
                    + (skipped > 0 ? "; \(formatBytes(skipped)) were already here from an interrupted pull" : ""))
        }
    }
}

struct Push: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Upload a pack directory to an S3-compatible store.",
        discussion: """
            Credentials, region and endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
            AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL (MinIO, Ceph, R2 …) and ~/.aws/credentials and \
            ~/.aws/config. Large files go up as multipart uploads with an MD5 per part; the pack's index \
            (torpor-objects.json) is written last, so a push that stops part-way never leaves a pack that looks \
            complete. Failed requests are retried with backoff. See docs/storage.md.
            """)

    @Argument(help: "A pack directory made by `torpor pack`.")
    var pack: String

    @Argument(help: "Where to put it: s3://bucket/prefix.")
    var destination: String

    @OptionGroup var store: StoreOptions

    func run() async throws {
        try await store.run(destination, verb: "pushed", place: "to \(destination)") { location, client, options in
            try await RemotePack.push(directory: pack, to: location, client: client, options: options)
        }
    }
}

struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Download a pack from an S3-compatible store into a new directory.",
        discussion: """
            Objects come down with parallel ranged GETs and are checked against the SHA-256 the push recorded; \
            the directory appears only when all of it is there and checked. An interrupted pull resumes where it \
            stopped when run again, unless the pack in the store changed meanwhile. See docs/storage.md.
            """)

    @Argument(help: "The pack: s3://bucket/prefix.")
    var source: String

    @Argument(help: "The directory to create; it must not exist or be empty.")
    var output: String

    @OptionGroup var store: StoreOptions

    func run() async throws {
        try await store.run(source, verb: "pulled", place: "into \(output)") { location, client, options in
            try await RemotePack.pull(from: location, to: output, client: client, options: options)
        }
    }
}

/// A pack argument: a local path as it is, or `s3://…` pulled into the local cache (`TORPOR_S3_CACHE`, else
/// ~/.cache/torpor/s3) unless it is there already.
/// The pack argument of the commands that read a whole pack on this machine.
struct PackSource: ParsableArguments {
    @Argument(help: "A pack directory made by `torpor pack`, or s3://bucket/prefix (pulled into the local cache).")
    var pack: String

    /// The pack's local directory: `pack` itself, or the local cache's copy of an `s3://` pack, pulled first.
    func local() async throws -> String { try await localPack(pack) }
}

func localPack(_ text: String) async throws -> String {
    try await reportingErrors {
        try await RemotePack.localPath(for: text, environment: ProcessInfo.processInfo.environment)
    }
}
