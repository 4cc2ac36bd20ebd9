import AsyncHTTPClient
import Crypto
import FoundationEssentials
import Glibc
public import NIOCore
public import NIOHTTP1
public import TorporCheckpoint

/// How failed requests are retried: exponential backoff with full jitter (a random wait between 0 and
/// `base × 2^(attempt-1)`, at most `cap`), on 5xx answers, throttling (429, `SlowDown`) and broken connections.
public struct RetryPolicy: Sendable {
    /// Attempts in all, the first included.
    public var attempts: Int
    public var baseSeconds: Double
    public var capSeconds: Double

    public init(attempts: Int = 8, baseSeconds: Double = 0.1, capSeconds: Double = 5) {
        self.attempts = max(1, attempts)
        self.baseSeconds = baseSeconds
        self.capSeconds = capSeconds
    }

    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1).
    func delay(after attempt: Int) -> Double {
        Double.random(in: 0...min(capSeconds, baseSeconds * Double(1 << min(attempt - 1, 30))))
    }
}

/// A client of an S3-compatible store: signed requests (SigV4 on every one), retried as `RetryPolicy` says, with
/// S3's error answers turned into `StorageError`s that name the bucket, the key and what to do.
public final class S3Client: Sendable {
    public let configuration: S3Configuration
    public let retry: RetryPolicy
    /// The deadline of one request, body included.
    public let requestTimeout: Duration
    private let http: HTTPClient
    private let signer: SigV4Signer

    /// One answer, its body collected.
    public struct Response: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: ByteBuffer

        var text: String { String(buffer: body) }
    }

    public init(
        configuration: S3Configuration, retry: RetryPolicy = RetryPolicy(), requestTimeout: Duration = .seconds(300)
    ) {
        self.configuration = configuration
        self.retry = retry
        self.requestTimeout = requestTimeout
        signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region)
        http = Self.sharedHTTP
    }

    /// One connection pool for the process (never shut down, like `HTTPClient.shared`): up to 64 connections per
    /// store, each given up on when it is silent for 60 s.
    private static let sharedHTTP: HTTPClient = {
        var configuration = HTTPClient.Configuration(
            timeout: .init(connect: .seconds(10), read: .seconds(60)),
            connectionPool: .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 64))
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    // MARK: - Requests

    /// Sends one signed request, retrying what can be retried.
    /// - Parameters:
    ///   - accept: the statuses that are answers rather than errors.
    ///   - what: the operation, for error messages ("upload part 3 of s3://b/k").
    ///   - limit: the most body bytes to collect.
    ///   - check: looks at a successful answer and throws `Retry` when it is broken (a short body, say).
    public func send(
        _ method: HTTPMethod, bucket: String, key: String = "", query: [(String, String)] = [],
        headers extra: [(String, String)] = [], body: [UInt8]? = nil, accept: Set<Int> = [200], what: String,
        limit: Int = 16 << 20, check: (@Sendable (Response) throws(Retry) -> Void)? = nil
    ) async throws(StorageError) -> Response {
        let (url, host, path) = configuration.url(bucket: bucket, key: key)
        let payloadHash = SigV4Signer.payloadHash(body ?? [])
        var attempt = 0
        while true {
            attempt += 1
            var headers = [("host", host), ("x-amz-date", Self.amzDate()), ("x-amz-content-sha256", payloadHash)]
            if let token = configuration.credentials.sessionToken { headers.append(("x-amz-security-token", token)) }
            headers += extra
            let signature = signer.sign(
                method: method.rawValue, path: path, query: query, headers: headers, payloadHash: payloadHash,
                amzDate: headers[1].1)
            let queryText = query.map { "\(SigV4Signer.encode($0.0))=\(SigV4Signer.encode($0.1))" }
                .joined(separator: "&")
            var request = HTTPClientRequest(url: url + (queryText.isEmpty ? "" : "?" + queryText))
            request.method = method
            for (name, value) in headers where name != "host" { request.headers.add(name: name, value: value) }
            request.headers.add(name: "Authorization", value: signature.authorization)
            if let body { request.body = .bytes(ByteBuffer(bytes: body)) }

            var failure = ""
            do {
                let response = try await http.execute(
                    request, timeout: .nanoseconds(Int64(requestTimeout / .nanoseconds(1))))
                let collected = try await response.body.collect(upTo: limit)
                let answer = Response(status: Int(response.status.code), headers: response.headers, body: collected)
                if accept.contains(answer.status) {
                    // CompleteMultipartUpload can fail after its 200: the error is in the body.
                    if answer.status == 200, method == .POST, let code = S3ErrorBody(answer.text).code {
                        failure = "200 with error \(code)"
                        if !Self.retryable(code: code) { throw describe(answer, what: what, bucket: bucket, key: key) }
                    } else {
                        do throws(Retry) {
                            try check?(answer)
                            return answer
                        } catch {
                            failure = error.reason
                        }
                    }
                } else if Self.retryable(status: answer.status, code: S3ErrorBody(answer.text).code) {
                    failure = "\(answer.status) \(S3ErrorBody(answer.text).code ?? "")"
                } else {
                    throw describe(answer, what: what, bucket: bucket, key: key)
                }
            } catch let error as StorageError {
                throw error
            } catch is CancellationError {
                throw StorageError(.cancelled, "\(what) was cancelled")
            } catch {
                failure = "\(error)"
            }
            guard attempt < retry.attempts else {
                throw StorageError(
                    .unavailable,
                    "\(what) failed \(attempt) times (last: \(failure)); the store at \(endpointDescription) is "
                        + "unreachable or overloaded")
            }
            do {
                try await Task.sleep(for: .seconds(retry.delay(after: attempt)))
            } catch {
                throw StorageError(.cancelled, "\(what) was cancelled")
            }
        }
    }

    /// A broken answer to a request that succeeded (a body shorter than asked for): the request is retried.
    public struct Retry: Error {
        public var reason: String
        public init(_ reason: String) { self.reason = reason }
    }

    var endpointDescription: String { configuration.endpoint ?? "s3.\(configuration.region).amazonaws.com" }

    static func retryable(status: Int, code: String?) -> Bool {
        if let code, retryable(code: code) { return true }
        return status == 429 || (500...599).contains(status) && status != 501
    }

    static func retryable(code: String) -> Bool {
        ["SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException"]
            .contains(code)
    }

    /// The error an answer means, naming the bucket and key and what to do about it.
    func describe(_ answer: Response, what: String, bucket: String, key: String) -> StorageError {
        let body = S3ErrorBody(answer.text)
        let object = "s3://\(bucket)" + (key.isEmpty ? "" : "/" + key)
        let detail = body.code.map { " (\($0)\(body.message.map { ": " + $0 } ?? ""))" } ?? ""
        let region = answer.headers.first(name: "x-amz-bucket-region") ?? body.region
        if let region, region != configuration.region, [301, 307, 400, 403].contains(answer.status) {
            return StorageError(
                .wrongRegion,
                "\(what): the bucket \"\(bucket)\" is in region \(region), but requests are signed for "
                    + "\(configuration.region); set AWS_REGION=\(region)")
        }
        switch (answer.status, body.code) {
        case (301, _), (_, "PermanentRedirect"), (_, "AuthorizationHeaderMalformed"),
            (_, "IllegalLocationConstraintException"):
            return StorageError(
                .wrongRegion,
                "\(what): the bucket \"\(bucket)\" is not in region \(configuration.region)\(detail); set AWS_REGION to "
                    + "the bucket's region")
        case (_, "NoSuchBucket"):
            return StorageError(
                .noSuchBucket, "\(what): the bucket \"\(bucket)\" does not exist at \(endpointDescription)")
        case (404, nil) where key.isEmpty:
            return StorageError(
                .noSuchBucket, "\(what): the bucket \"\(bucket)\" does not exist at \(endpointDescription)")
        case (_, "NoSuchKey"), (404, _):
            return StorageError(.notFound, "\(what): \(object) does not exist\(detail)")
        case (_, "InvalidAccessKeyId"):
            return StorageError(
                .accessDenied,
                "\(what): the store does not know the access key \(configuration.credentials.accessKeyID)\(detail)")
        case (_, "SignatureDoesNotMatch"):
            return StorageError(
                .accessDenied,
                "\(what): the secret key does not match the access key \(configuration.credentials.accessKeyID)")
        case (403, _), (_, "AccessDenied"):
            return StorageError(
                .accessDenied,
                "\(what): access to \(object) is denied for the access key \(configuration.credentials.accessKeyID)"
                    + "\(detail); check its permissions and the bucket's policy")
        case (412, _):
            return StorageError(.changed, "\(what): \(object) changed on the store while it was being read")
        default:
            return StorageError(.server, "\(what): the store answered \(answer.status)\(detail)")
        }
    }

    /// Now, as `x-amz-date` writes it.
    static func amzDate(_ time: Date = Date()) -> String {
        var seconds = time_t(time.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
    }

    // MARK: - Operations

    /// Checks that the bucket exists, can be reached with these credentials, and is in the configured region.
    public func checkBucket(_ bucket: String) async throws(StorageError) {
        let answer = try await send(
            .HEAD, bucket: bucket, accept: [200, 301, 403, 404], what: "reaching the bucket \"\(bucket)\"")
        if let region = answer.headers.first(name: "x-amz-bucket-region"), region != configuration.region {
            throw describe(
                Response(status: 301, headers: answer.headers, body: ByteBuffer()), what: "reaching the bucket",
                bucket: bucket, key: "")
        }
        switch answer.status {
        case 200: return
        case 404:
            throw StorageError(
                .noSuchBucket, "the bucket \"\(bucket)\" does not exist at \(endpointDescription)")
        case 403:
            // A HEAD answer has no body to say why; a GET of the bucket's location does (an unknown key, a wrong
            // secret, a missing permission).
            let detailed = try await send(
                .GET, bucket: bucket, query: [("location", "")], accept: [200, 301, 400, 403, 404],
                what: "reaching the bucket \"\(bucket)\"")
            throw describe(
                detailed.status == 200 ? answer : detailed, what: "reaching the bucket", bucket: bucket, key: "")
        default: throw describe(answer, what: "reaching the bucket", bucket: bucket, key: "")
        }
    }

    /// An object's size and ETag, or nil when it does not exist.
    public func head(bucket: String, key: String) async throws(StorageError) -> (size: Int, etag: String)? {
        let answer = try await send(
            .HEAD, bucket: bucket, key: key, accept: [200, 404], what: "HEAD s3://\(bucket)/\(key)")
        guard answer.status == 200 else { return nil }
        guard let size = answer.headers.first(name: "content-length").flatMap(Int.init),
            let etag = answer.headers.first(name: "etag")
        else {
            throw StorageError(.server, "HEAD s3://\(bucket)/\(key): the answer has no Content-Length or ETag")
        }
        return (size, etag)
    }

    /// A whole (small) object and its ETag, or nil when it does not exist.
    public func get(bucket: String, key: String, limit: Int = 64 << 20) async throws(StorageError)
        -> (bytes: [UInt8], etag: String)?
    {
        let answer = try await send(
            .GET, bucket: bucket, key: key, accept: [200, 404], what: "reading s3://\(bucket)/\(key)", limit: limit
        ) { answer throws(Retry) in
            if answer.status == 200, let length = answer.headers.first(name: "content-length").flatMap(Int.init),
                length != answer.body.readableBytes
            {
                throw Retry("a body of \(answer.body.readableBytes) bytes where \(length) were announced")
            }
        }
        if answer.status == 404 {
            if S3ErrorBody(answer.text).code == "NoSuchBucket" {
                throw describe(answer, what: "reading s3://\(bucket)/\(key)", bucket: bucket, key: key)
            }
            return nil
        }
        return (Array(buffer: answer.body), answer.headers.first(name: "etag") ?? "")
    }

    /// Bytes `range` of an object, only if its ETag is still `etag`.
    public func get(bucket: String, key: String, range: Range<Int>, etag: String?) async throws(StorageError)
        -> ByteBuffer
    {
        var headers = [("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")]
        if let etag { headers.append(("if-match", etag)) }
        let expected = range.count
        return try await send(
            .GET, bucket: bucket, key: key, headers: headers, accept: [206, 200],
            what: "reading bytes \(range.lowerBound)..<\(range.upperBound) of s3://\(bucket)/\(key)",
            limit: expected + 1
        ) { answer throws(Retry) in
            guard answer.body.readableBytes == expected else {
                throw Retry("\(answer.body.readableBytes) bytes where \(expected) were asked for")
            }
        }.body
    }

    /// Writes a whole object in one request, with its MD5 for the store to check. Returns its ETag.
    @discardableResult
    public func put(bucket: String, key: String, bytes: [UInt8]) async throws(StorageError) -> String {
        let answer = try await send(
            .PUT, bucket: bucket, key: key, headers: [("content-md5", Self.md5Base64(bytes))], body: bytes,
            what: "writing s3://\(bucket)/\(key)")
        return answer.headers.first(name: "etag") ?? ""
    }

    public func delete(bucket: String, key: String) async throws(StorageError) {
        _ = try await send(
            .DELETE, bucket: bucket, key: key, accept: [200, 204, 404], what: "deleting s3://\(bucket)/\(key)")
    }

    /// Creates a bucket (for tests and set-up), in the configured region.
    public func createBucket(_ bucket: String) async throws(StorageError) {
        let body =
            configuration.region == "us-east-1"
            ? nil
            : Array(
                ("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>"
                    + "\(configuration.region)</LocationConstraint></CreateBucketConfiguration>").utf8)
        _ = try await send(.PUT, bucket: bucket, body: body, what: "creating the bucket \"\(bucket)\"")
    }

}

/// The few elements of S3's XML answers Torpor reads: an error's Code, Message and Region; an UploadId; an ETag.
struct S3ErrorBody {
    var code: String?
    var message: String?
    var region: String?

    init(_ text: String) {
        guard text.utf8.count < 1 << 20, text.contains("<Error>") || text.contains("<Error ") else { return }
        code = Self.element("Code", in: text)
        message = Self.element("Message", in: text)
        region = Self.element("Region", in: text)
    }

    /// The text of the first `<name>…</name>` in `xml`, entities decoded.
    static func element(_ name: String, in xml: String) -> String? {
        guard let open = xml.firstRange(of: "<\(name)>"),
            let close = xml[open.upperBound...].firstRange(of: "</\(name)>")
        else { return nil }
        return unescape(String(xml[open.upperBound..<close.lowerBound]))
    }

    static func unescape(_ text: String) -> String {
        text.replacing("&quot;", with: "\"").replacing("&apos;", with: "'").replacing("&lt;", with: "<")
            .replacing("&gt;", with: ">").replacing("&amp;", with: "&")
    }

    static func escape(_ text: String) -> String {
        text.replacing("&", with: "&amp;").replacing("<", with: "&lt;").replacing(">", with: "&gt;")
            .replacing("\"", with: "&quot;")
    }
}
