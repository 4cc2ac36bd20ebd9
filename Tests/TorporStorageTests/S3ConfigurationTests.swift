import Foundation
import Testing
import TorporCheckpoint

@testable import TorporStorage

@Suite struct S3ConfigurationTests {
    @Test func locationsParse() throws {
        #expect(try S3Location("s3://my-bucket/packs/llama/") == S3Location(bucket: "my-bucket", prefix: "packs/llama"))
        #expect(try S3Location("s3://my-bucket") == S3Location(bucket: "my-bucket", prefix: ""))
        #expect(try S3Location("/local/pack") == nil)
        #expect(try S3Location("s3://my-bucket/a//b")?.key("model.torpor") == "a/b/model.torpor")
        #expect {
            _ = try S3Location("s3://Bad_Bucket/x")
        } throws: { error in
            (error as? StorageError)?.message.contains("\"Bad_Bucket\" is not a bucket name") == true
        }
    }

    @Test func theEnvironmentComesFirstThenTheFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("torpor-aws-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try """
        [default]
        aws_access_key_id = AKIDFILE
        aws_secret_access_key = secretfile
        [work]
        aws_access_key_id=AKIDWORK
        aws_secret_access_key=secretwork
        aws_session_token=tokenwork
        """.write(toFile: directory + "/credentials", atomically: true, encoding: .utf8)
        try "[profile work]\nregion = eu-west-3\nendpoint_url = http://127.0.0.1:9000/\n".write(
            toFile: directory + "/config", atomically: true, encoding: .utf8)
        let files = [
            "AWS_SHARED_CREDENTIALS_FILE": directory + "/credentials", "AWS_CONFIG_FILE": directory + "/config",
        ]

        let fromFile = try S3Configuration.fromEnvironment(files)
        #expect(fromFile.credentials == AWSCredentials(accessKeyID: "AKIDFILE", secretAccessKey: "secretfile"))
        #expect(fromFile.region == "us-east-1" && fromFile.endpoint == nil && !fromFile.pathStyle)

        let profile = try S3Configuration.fromEnvironment(files.merging(["AWS_PROFILE": "work"]) { $1 })
        #expect(profile.credentials.sessionToken == "tokenwork")
        #expect(profile.region == "eu-west-3")
        #expect(profile.endpoint == "http://127.0.0.1:9000" && profile.pathStyle)

        let environment = try S3Configuration.fromEnvironment(
            files.merging([
                "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "secretenv", "AWS_REGION": "ap-south-1",
                "AWS_ENDPOINT_URL": "https://minio.internal:9000", "TORPOR_S3_PATH_STYLE": "false",
            ]) { $1 })
        #expect(environment.credentials.accessKeyID == "AKIDENV")
        #expect(environment.region == "ap-south-1")
        #expect(!environment.pathStyle)

        #expect {
            _ = try S3Configuration.fromEnvironment(["HOME": directory + "/nowhere"])
        } throws: { error in
            (error as? StorageError)?.code == .credentials
                && (error as? StorageError)?.message.contains("set AWS_ACCESS_KEY_ID") == true
        }
    }

    @Test func pathStyleAndVirtualHostedAddresses() {
        let credentials = AWSCredentials(accessKeyID: "a", secretAccessKey: "b")
        let aws = S3Configuration(credentials: credentials, region: "eu-west-1")
        #expect(
            aws.url(bucket: "packs", key: "llama/model 1.torpor")
                == (
                    "https://packs.s3.eu-west-1.amazonaws.com/llama/model%201.torpor",
                    "packs.s3.eu-west-1.amazonaws.com",
                    "/llama/model 1.torpor"
                ))
        let local = S3Configuration(credentials: credentials, region: "us-east-1", endpoint: "http://127.0.0.1:5000")
        #expect(
            local.url(bucket: "packs", key: "llama/model.torpor")
                == ("http://127.0.0.1:5000/packs/llama/model.torpor", "127.0.0.1:5000", "/packs/llama/model.torpor"))
        #expect(local.url(bucket: "packs", key: "") == ("http://127.0.0.1:5000/packs", "127.0.0.1:5000", "/packs"))
    }
}
