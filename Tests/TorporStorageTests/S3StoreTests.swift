import Dispatch
import Foundation
import Glibc
import Synchronization
import Testing
import TorporCheckpoint

@testable import TorporStorage

/// Push and pull against moto's S3 server on loopback (signatures and permissions checked), through a proxy that
/// injects failures.
@Suite(.serialized, .enabled(if: Moto.python != nil, Moto.skipReason))
struct S3StoreTests {
    /// 5 MiB parts (the 30 MB container goes up in 6) and 1 MiB ranges.
    let small = TransferOptions(partSize: 5 << 20, rangeSize: 1 << 20, parallelism: 4)

    @Test func aPushedPackPullsBackByteForByte() async throws {
        try await withS3 { s3 in
            let pack = try s3.miniLMPack()
            let client = s3.client()
            let location = S3Location(bucket: "torpor-test", prefix: "models/mini")
            let pushed = try await RemotePack.push(directory: pack, to: location, client: client, options: small)
            #expect(pushed.objects == 3)
            let pulled = s3.directory + "/pulled"
            let report = try await RemotePack.pull(from: location, to: pulled, client: client, options: small)
            #expect(report.bytes == pushed.bytes && report.transferred == report.bytes)
            for name in ["model.torpor", "config.json", PackManifest.fileName] {
                #expect(
                    FileManager.default.contents(atPath: pulled + "/" + name)
                        == FileManager.default.contents(atPath: pack + "/" + name), "\(name) differs")
            }
            #expect(!FileManager.default.fileExists(atPath: s3.directory + "/.pulled.pull-partial"))
            // The container went up in parts, and the store holds no unfinished upload.
            #expect(try s3.log().filter { $0.contains("partNumber=") }.count == 6)
            #expect(try await s3.openUploads("torpor-test") == 0)

            // The command line: push, pull, and s3:// wherever a pack directory goes.
            let environment = s3.environment
            try run(Moto.torpor, ["push", pack, "s3://torpor-test/cli/mini", "-q"], environment: environment)
            try run(
                Moto.torpor, ["pull", "s3://torpor-test/cli/mini", s3.directory + "/cli-pulled"],
                environment: environment)
            #expect(
                FileManager.default.contents(atPath: s3.directory + "/cli-pulled/model.torpor")
                    == FileManager.default.contents(atPath: pack + "/model.torpor"))
            let inspected = try run(
                Moto.torpor, ["inspect", "--json", "s3://torpor-test/cli/mini"], environment: environment)
            #expect(String(decoding: inspected, as: UTF8.self).contains("encoder.layer.0.attention.self.query.weight"))
            // Inspecting read each container's metadata only: nothing was pulled into the cache.
            #expect(!FileManager.default.fileExists(atPath: s3.directory + "/cache"))
            // Two processes verifying at once share one pull into the cache (a lock), and both succeed.
            func containerGETs() throws -> Int {
                try s3.log().filter { $0.hasPrefix("GET") && $0.contains("cli/mini/model.torpor") }.count
            }
            let before = try containerGETs()
            let outcomes = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 2) { _ in
                let outcome: String
                do {
                    outcome = String(
                        decoding: try run(
                            Moto.torpor, ["verify", "s3://torpor-test/cli/mini"], environment: environment),
                        as: UTF8.self)
                } catch {
                    outcome = "\(error)"
                }
                outcomes.withLock { $0.append(outcome) }
            }
            for outcome in outcomes.withLock({ $0 }) {
                #expect(outcome.contains("every checksum matches"), "\(outcome)")
            }
            #expect(try containerGETs() - before == 1)
        }
    }

    @Test func droppedConnectionsAnd503sAreRetried() async throws {
        try await withS3 { s3 in
            let pack = try s3.miniLMPack()
            let client = s3.client()
            let location = S3Location(bucket: "torpor-test", prefix: "retried")
            try s3.faults([
                ["match": "PUT partNumber=2", "kind": "drop-request", "times": 1],
                ["match": "PUT partNumber=4", "kind": "status", "status": 503, "times": 2],
                ["match": "POST uploadId", "kind": "status", "status": 500, "times": 1],
                ["match": "GET torpor-objects.json", "kind": "status", "status": 503, "times": 1],
                ["match": "GET model.torpor", "kind": "drop-response", "times": 2],
                ["match": "HEAD config.json", "kind": "status", "status": 429, "times": 1],
            ])
            _ = try await RemotePack.push(directory: pack, to: location, client: client, options: small)
            let pulled = s3.directory + "/pulled"
            _ = try await RemotePack.pull(from: location, to: pulled, client: client, options: small)
            #expect(
                FileManager.default.contents(atPath: pulled + "/model.torpor")
                    == FileManager.default.contents(atPath: pack + "/model.torpor"))
            let log = try s3.log()
            // Every injected failure happened, and was followed by a success of the same request.
            #expect(log.filter { $0.contains("partNumber=2") && $0.hasSuffix("dropped") }.count == 1)
            #expect(log.filter { $0.contains("partNumber=2") && $0.hasSuffix(" 200") }.count == 1)
            #expect(log.filter { $0.contains("partNumber=4") && $0.hasSuffix(" 503") }.count == 2)
            #expect(log.filter { $0.contains("partNumber=4") && $0.hasSuffix(" 200") }.count == 1)
            #expect(log.filter { $0.hasPrefix("POST") && $0.contains("uploadId") && $0.hasSuffix(" 200") }.count == 1)
            #expect(
                log.filter { $0.hasPrefix("GET") && $0.contains("model.torpor") && $0.hasSuffix("dropped") }.count == 2)
            #expect(log.filter { $0.contains("config.json") && $0.hasSuffix(" 429") }.count == 1)
            #expect(try await s3.openUploads("torpor-test") == 0)
            // The answer to CompleteMultipartUpload lost after the store completed it, and the retry told there is
            // no such upload (as S3 may say; moto would answer 200 again): the object's multipart ETag shows it is
            // there.
            try s3.faults([
                ["match": "POST uploadId", "kind": "drop-response", "times": 1],
                ["match": "POST uploadId", "kind": "status", "status": 404, "code": "NoSuchUpload", "times": 1],
            ])
            let again = S3Location(bucket: "torpor-test", prefix: "completed-unheard")
            _ = try await RemotePack.push(directory: pack, to: again, client: client, options: small)
            _ = try await RemotePack.pull(from: again, to: s3.directory + "/again", client: client, options: small)
            #expect(
                FileManager.default.contents(atPath: s3.directory + "/again/model.torpor")
                    == FileManager.default.contents(atPath: pack + "/model.torpor"))
            let completions = try s3.log().filter { $0.hasPrefix("POST") && $0.contains("completed-unheard") }
            #expect(
                completions.contains { $0.hasSuffix("dropped") } && completions.contains { $0.hasSuffix(" 404") },
                "\(completions)")
        }
    }

    @Test func anInterruptedPushLeavesNoPackAndNoUpload() async throws {
        try await withS3 { s3 in
            let pack = try s3.miniLMPack()
            let location = S3Location(bucket: "torpor-test", prefix: "interrupted")
            let client = s3.client(attempts: 2)
            // A complete pack is there first; the interrupted push of another must not leave it looking current.
            _ = try await RemotePack.push(directory: pack, to: location, client: client, options: small)
            try s3.faults([["match": "PUT partNumber=3", "kind": "status", "status": 500, "times": 100]])
            let error = await #expect(throws: StorageError.self) {
                _ = try await RemotePack.push(directory: pack, to: location, client: client, options: small)
            }
            #expect(error?.code == .unavailable)
            #expect(error?.message.contains("part 3") == true, "\(error?.message ?? "")")
            #expect(try await s3.openUploads("torpor-test") == 0)
            try s3.faults([])
            let missing = await #expect(throws: StorageError.self) {
                _ = try await RemotePack.pull(from: location, to: s3.directory + "/out", client: client)
            }
            #expect(missing?.code == .incomplete)
            #expect(missing?.message.contains("not a complete torpor pack") == true)
            #expect(!FileManager.default.fileExists(atPath: s3.directory + "/out"))
        }
    }

    @Test func anInterruptedPullResumesWhereItStopped() async throws {
        try await withS3 { s3 in
            let pack = try s3.miniLMPack()
            let location = S3Location(bucket: "torpor-test", prefix: "resumed")
            let client = s3.client(attempts: 2)
            let pushed = try await RemotePack.push(directory: pack, to: location, client: client, options: small)
            // Ten 1 MiB ranges of the container arrive, then the store fails for good: the pull stops part-way.
            try s3.faults([["match": "GET model.torpor", "kind": "status", "status": 503, "skip": 10, "times": 1000]])
            let destination = s3.directory + "/pulled"
            let oneAtATime = TransferOptions(partSize: 5 << 20, rangeSize: 1 << 20, parallelism: 1)
            let stopped = await #expect(throws: StorageError.self) {
                _ = try await RemotePack.pull(from: location, to: destination, client: client, options: oneAtATime)
            }
            #expect(stopped?.code == .unavailable)
            #expect(!FileManager.default.fileExists(atPath: destination))
            #expect(FileManager.default.fileExists(atPath: s3.directory + "/.pulled.pull-partial"))

            try s3.faults([])
            let resumed = try await RemotePack.pull(from: location, to: destination, client: client, options: small)
            #expect(resumed.bytes == pushed.bytes)
            #expect(
                resumed.transferred <= resumed.bytes - 10 << 20, "moved \(resumed.transferred) of \(resumed.bytes)")
            #expect(
                FileManager.default.contents(atPath: destination + "/model.torpor")
                    == FileManager.default.contents(atPath: pack + "/model.torpor"))
            #expect(!FileManager.default.fileExists(atPath: s3.directory + "/.pulled.pull-partial"))
        }
    }

    @Test func errorsSayWhatFailed() async throws {
        try await withS3 { s3 in
            func failure(
                _ credentials: AWSCredentials? = nil, region: String = "us-east-1", bucket: String = "torpor-test",
                prefix: String = "x"
            ) async -> StorageError? {
                let client = s3.client(credentials, region: region)
                return await #expect(throws: StorageError.self) {
                    _ = try await RemotePack.pull(
                        from: S3Location(bucket: bucket, prefix: prefix), to: s3.directory + "/out", client: client)
                }
            }
            let bucket = await failure(bucket: "no-such-bucket")
            #expect(bucket?.code == .noSuchBucket)
            #expect(bucket?.message.contains("\"no-such-bucket\" does not exist") == true)

            let unknown = await failure(AWSCredentials(accessKeyID: "AKIAUNKNOWN0000", secretAccessKey: "x"))
            #expect(unknown?.code == .accessDenied)
            #expect(unknown?.message.contains("does not know the access key AKIAUNKNOWN0000") == true)

            let secret = await failure(AWSCredentials(accessKeyID: s3.writer.accessKeyID, secretAccessKey: "wrong"))
            #expect(secret?.code == .accessDenied)
            #expect(secret?.message.contains("secret key does not match") == true)
            #expect(secret?.message.contains("wrong") == false)

            let denied = await failure(s3.nobody)
            #expect(denied?.code == .accessDenied)
            #expect(denied?.message.contains("denied for the access key \(s3.nobody.accessKeyID)") == true)

            let region = await failure(bucket: "torpor-eu")
            #expect(region?.code == .wrongRegion)
            #expect(region?.message.contains("set AWS_REGION=eu-west-1") == true)

            let empty = await failure(region: "us-east-1", prefix: "nothing/here")
            #expect(empty?.code == .incomplete)

            // A push refuses what is not a pack before reaching the store.
            let client = s3.client()
            let notAPack = await #expect(throws: StorageError.self) {
                _ = try await RemotePack.push(
                    directory: s3.directory, to: S3Location(bucket: "torpor-test", prefix: "y"), client: client)
            }
            #expect(notAPack?.message.contains("not a complete torpor pack") == true)

            // The command line says the same, as "error: …" with exit status 1.
            var environment = s3.environment
            environment["AWS_REGION"] = "us-east-1"
            let cli = #expect(throws: CommandFailure.self) {
                try run(Moto.torpor, ["pull", "s3://torpor-eu/x", s3.directory + "/cli"], environment: environment)
            }
            #expect(cli?.status == 1)
            #expect(
                cli?.standardError.contains(
                    "error: reaching the bucket: the bucket \"torpor-eu\" is in region eu-west-1") == true)
        }
    }

    @Test func aCorruptedObjectIsCaughtAndNamed() async throws {
        try await withS3 { s3 in
            let pack = try s3.miniLMPack()
            let client = s3.client()
            let location = S3Location(bucket: "torpor-test", prefix: "corrupt")
            _ = try await RemotePack.push(directory: pack, to: location, client: client, options: small)
            // One bit flips in the store, in the middle of the data region.
            var bytes = Array(FileManager.default.contents(atPath: pack + "/model.torpor")!)
            bytes[bytes.count / 2] ^= 0x10
            try await client.put(bucket: "torpor-test", key: "corrupt/model.torpor", bytes: bytes)
            let destination = s3.directory + "/pulled"
            let error = await #expect(throws: StorageError.self) {
                _ = try await RemotePack.pull(from: location, to: destination, client: client, options: small)
            }
            #expect(error?.code == .corrupt)
            #expect(error?.message.contains("s3://torpor-test/corrupt/model.torpor is corrupted") == true)
            #expect(error?.message.contains("chunk") == true, "\(error?.message ?? "")")
            #expect(!FileManager.default.fileExists(atPath: destination))

            let cli = #expect(throws: CommandFailure.self) {
                try run(Moto.torpor, ["verify", "s3://torpor-test/corrupt"], environment: s3.environment)
            }
            #expect(cli?.standardError.contains("is corrupted") == true)
        }
    }

    @Test func theGatewayPullsACheckpointFromTheStoreBeforeItStarts() async throws {
        try await withS3 { s3 in
            let pack = try s3.miniLMPack()
            _ = try await RemotePack.push(
                directory: pack, to: S3Location(bucket: "torpor-test", prefix: "gateway/mini"), client: s3.client())
            let config = s3.directory + "/torpor.yaml"
            try """
            listen: {client: "127.0.0.1:0", admin: "127.0.0.1:0"}
            state_dir: \(s3.directory)/state
            admin_token: s3-test-admin-token-0123456789
            models:
              - name: mini
                engine: {simulated: true, time_scale: 0.01}
                weights_gib: 1
                kv_cache_gib: 1
                checkpoint: s3://torpor-test/gateway/mini
            """.write(toFile: config, atomically: true, encoding: .utf8)
            let serve = Process()
            serve.executableURL = URL(fileURLWithPath: Moto.torpor)
            serve.arguments = ["serve", "--config", config, "--log-level", "error"]
            serve.environment = s3.environment
            let output = Pipe()
            serve.standardOutput = output
            serve.standardError = FileHandle.nullDevice
            let printed = Mutex("")
            output.fileHandleForReading.readabilityHandler = { handle in
                let data = handle.availableData
                printed.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
            try serve.run()
            defer {
                kill(serve.processIdentifier, SIGTERM)
                serve.waitUntilExit()
                output.fileHandleForReading.readabilityHandler = nil
            }
            let deadline = ContinuousClock.now + .seconds(60)
            while !printed.withLock({ $0.contains("admin API on") }), serve.isRunning, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            let admin = try #require(printed.withLock { $0.firstMatch(of: /admin API on (http:\S+)/)?.1 })
            let models = try run(
                "/usr/bin/curl",
                ["-sf", "-H", "Authorization: Bearer s3-test-admin-token-0123456789", "\(admin)/admin/models"])
            let listed = try JSONSerialization.jsonObject(with: models) as? [String: Any]
            let weights = try #require((listed?["models"] as? [[String: Any]])?.first?["weights_path"] as? String)
            // The engine is given the local copy, pulled into the cache and checked.
            #expect(weights.hasPrefix(s3.directory + "/cache/torpor-test/gateway%mini@"), "\(weights)")
            #expect(
                FileManager.default.contents(atPath: weights + "/model.torpor")
                    == FileManager.default.contents(atPath: pack + "/model.torpor"))
        }
    }
}
