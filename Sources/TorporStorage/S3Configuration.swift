import FoundationEssentials
public import TorporCheckpoint

/// An object-store location: `s3://bucket/prefix`.
public struct S3Location: Sendable, Equatable, CustomStringConvertible {
    public var bucket: String
    /// The key prefix, without leading or trailing slashes ("" for the bucket's root).
    public var prefix: String

    /// Parses `s3://bucket[/prefix]`; nil when `text` is not an `s3://` URL (a local path).
    /// - Throws: `StorageError.invalidArgument` for an `s3://` URL without a valid bucket name.
    public init?(_ text: String) throws(StorageError) {
        guard text.hasPrefix("s3://") else { return nil }
        let rest = text.dropFirst(5)
        let bucket = String(rest.prefix { $0 != "/" })
        guard Self.isValidBucket(bucket) else {
            throw StorageError(
                .invalidArgument,
                "\(text): \"\(bucket)\" is not a bucket name (3-63 lowercase letters, digits, dots and hyphens)")
        }
        self.bucket = bucket
        prefix = rest.dropFirst(bucket.count).split(separator: "/").joined(separator: "/")
    }

    public init(bucket: String, prefix: String) {
        self.bucket = bucket
        self.prefix = prefix
    }

    /// The key of `relative` under the prefix.
    public func key(_ relative: String) -> String { prefix.isEmpty ? relative : prefix + "/" + relative }

    public var description: String { "s3://\(bucket)\(prefix.isEmpty ? "" : "/" + prefix)" }

    static func isValidBucket(_ name: String) -> Bool {
        guard (3...63).contains(name.count), let first = name.first, let last = name.last,
            first.isLetter || first.isNumber, last.isLetter || last.isNumber
        else { return false }
        return name.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" || $0 == "." }
    }
}

/// Where and as whom to reach an S3-compatible store: the usual AWS environment variables and files.
public struct S3Configuration: Sendable, Equatable {
    public var credentials: AWSCredentials
    public var region: String
    /// A custom endpoint (MinIO, Ceph, R2, a loopback test server), or nil for AWS.
    public var endpoint: String?
    /// Path-style addressing (`endpoint/bucket/key`), the default with a custom endpoint; else virtual-hosted
    /// (`bucket.endpoint/key`).
    public var pathStyle: Bool

    public init(credentials: AWSCredentials, region: String, endpoint: String? = nil, pathStyle: Bool? = nil) {
        self.credentials = credentials
        self.region = region
        self.endpoint = endpoint
        self.pathStyle = pathStyle ?? (endpoint != nil)
    }

    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (or
    /// `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) and `TORPOR_S3_PATH_STYLE`; what they
    /// leave out comes from `~/.aws/credentials` and `~/.aws/config` (`AWS_SHARED_CREDENTIALS_FILE`,
    /// `AWS_CONFIG_FILE`, profile `AWS_PROFILE` or `default`).
    /// - Throws: `StorageError.credentials` naming every place it looked when no credentials are found.
    public static func fromEnvironment(_ environment: [String: String]) throws(StorageError) -> S3Configuration {
        let home = environment["HOME"] ?? "/root"
        let profile = environment["AWS_PROFILE"] ?? "default"
        let credentialsFile = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? home + "/.aws/credentials"
        let configFile = environment["AWS_CONFIG_FILE"] ?? home + "/.aws/config"
        let stored = Self.iniSection(path: credentialsFile, section: profile)
        let config = Self.iniSection(path: configFile, section: profile == "default" ? "default" : "profile \(profile)")
        guard let key = environment["AWS_ACCESS_KEY_ID"] ?? stored["aws_access_key_id"],
            let secret = environment["AWS_SECRET_ACCESS_KEY"] ?? stored["aws_secret_access_key"]
        else {
            throw StorageError(
                .credentials,
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give profile \"\(profile)\" "
                    + "keys in \(credentialsFile)")
        }
        let token = environment["AWS_SESSION_TOKEN"] ?? stored["aws_session_token"]
        let region =
            environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] ?? config["region"] ?? "us-east-1"
        let endpoint = environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"] ?? config["endpoint_url"]
        let pathStyle = environment["TORPOR_S3_PATH_STYLE"].map { ["1", "true", "yes"].contains($0.lowercased()) }
        return S3Configuration(
            credentials: AWSCredentials(accessKeyID: key, secretAccessKey: secret, sessionToken: token),
            region: region, endpoint: endpoint.map { String($0.reversed().drop { $0 == "/" }.reversed()) },
            pathStyle: pathStyle)
    }

    /// The URL of `key` in `bucket` (the key encoded as SigV4 signs it), and the `Host` header to send.
    public func url(bucket: String, key: String) -> (url: String, host: String, path: String) {
        let base = endpoint ?? "https://s3.\(region).amazonaws.com"
        let scheme = base.hasPrefix("http://") ? "http://" : "https://"
        let authority = String(base.dropFirst(base.hasPrefix("http://") ? 7 : base.hasPrefix("https://") ? 8 : 0))
        let encodedKey = key.isEmpty ? "" : SigV4Signer.encodePath(key)
        if pathStyle {
            let path = "/\(bucket)" + (key.isEmpty ? "" : "/" + encodedKey)
            return (scheme + authority + path, authority, "/\(bucket)" + (key.isEmpty ? "" : "/" + key))
        }
        let host = "\(bucket).\(authority)"
        return (scheme + host + "/" + encodedKey, host, "/" + key)
    }

    /// The `key = value` lines of `[section]` in an INI file (AWS's credentials and config files); empty when the
    /// file or section is missing.
    static func iniSection(path: String, section: String) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        var values: [String: String] = [:]
        var inSection = false
        for raw in String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline) {
            let line = trimmed(raw)
            if line.hasPrefix("#") || line.hasPrefix(";") || line.isEmpty { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                inSection = trimmed(line.dropFirst().dropLast()) == section
                continue
            }
            guard inSection, let equals = line.firstIndex(of: "=") else { continue }
            values[trimmed(line[..<equals]).lowercased()] = trimmed(line[line.index(after: equals)...])
        }
        return values
    }
}

/// `text` without leading and trailing spaces and tabs.
func trimmed(_ text: some StringProtocol) -> String {
    String(text.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
}

/// An object-storage failure, naming what failed.
public typealias StorageError = CodedError<StorageErrorCode>

/// What kind of object-storage failure an error is:
/// - `noSuchBucket`: the bucket does not exist
/// - `notFound`: the object (or pack) does not exist
/// - `accessDenied`: the credentials are refused, or lack a permission
/// - `wrongRegion`: the bucket is in another region than the one requests are signed for
/// - `corrupt`: bytes differ from what was written (a checksum failed)
/// - `changed`: an object changed while it was being read
/// - `incomplete`: a pack at the location is not complete (an interrupted push)
/// - `server`: the store answered with an error not listed above
/// - `unavailable`: retries ran out: the store is unreachable or overloaded
/// - `io`: a local file could not be read or written
public enum StorageErrorCode: String, ErrorCode {
    case invalidArgument, credentials, noSuchBucket, notFound, accessDenied, wrongRegion, corrupt, changed
    case incomplete, server, unavailable, cancelled, io
}
