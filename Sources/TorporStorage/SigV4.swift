import Crypto
import FoundationEssentials

/// AWS credentials. The secret never appears in `description` (so never in a log line).
public struct AWSCredentials: Sendable, Equatable, CustomStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String {
        "AWSCredentials(\(accessKeyID), secret: <hidden>\(sessionToken == nil ? "" : ", session token: <hidden>"))"
    }
}

/// AWS Signature Version 4 (`AWS4-HMAC-SHA256`): the canonical request, the string to sign, the signing key and
/// the `Authorization` header, as AWS documents them and its published test suite checks them.
public struct SigV4Signer: Sendable {
    public var credentials: AWSCredentials
    public var region: String
    public var service: String
    /// Encode the (already encoded) path once more, as services other than S3 expect of a path that carries
    /// percent-escapes on the wire. Off by default: `sign` takes the path unencoded and encodes it once, which is
    /// what S3 and AWS's test suite expect.
    public var doubleEncodePath: Bool

    public init(credentials: AWSCredentials, region: String, service: String = "s3", doubleEncodePath: Bool = false) {
        self.credentials = credentials
        self.region = region
        self.service = service
        self.doubleEncodePath = doubleEncodePath
    }

    /// Everything one signature is made of, for a request to sign and for tests to compare step by step.
    public struct Signature: Sendable, Equatable {
        public var canonicalRequest: String
        public var stringToSign: String
        public var signedHeaders: String
        public var signature: String
        public var authorization: String
    }

    /// Signs a request.
    /// - Parameters:
    ///   - path: the request path as sent, not yet encoded (`/bucket/key with spaces`).
    ///   - query: query parameters, not yet encoded, in any order.
    ///   - headers: every header to sign (names in any case; `host` and `x-amz-date` among them). Repeated names
    ///     are joined with commas, in order.
    ///   - payloadHash: the hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    ///   - amzDate: the request time as `YYYYMMDD'T'HHMMSS'Z'` (the `x-amz-date` header's value).
    public func sign(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], payloadHash: String,
        amzDate: String
    ) -> Signature {
        var canonicalPath = path.isEmpty ? "/" : path
        canonicalPath = Self.encodePath(canonicalPath)
        if doubleEncodePath { canonicalPath = Self.encodePath(canonicalPath) }
        let canonicalQuery = query.map { (Self.encode($0.0), Self.encode($0.1)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        var merged: [String: [String]] = [:]
        for (name, value) in headers { merged[name.lowercased(), default: []].append(Self.trim(value)) }
        let names = merged.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let canonicalRequest = [method, canonicalPath, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash]
            .joined(separator: "\n")
        let day = String(amzDate.prefix(8))
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, Self.hex(SHA256.hash(data: Array(canonicalRequest.utf8))),
        ].joined(separator: "\n")
        var key = SymmetricKey(data: Array("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key))
        return Signature(
            canonicalRequest: canonicalRequest, stringToSign: stringToSign, signedHeaders: signedHeaders,
            signature: signature,
            authorization:
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), "
                + "Signature=\(signature)")
    }

    /// The hex SHA-256 of `bytes`: a payload hash.
    public static func payloadHash(_ bytes: some Sequence<UInt8>) -> String { hex(SHA256.hash(data: Array(bytes))) }

    /// RFC 3986 percent-encoding of everything but the unreserved characters (A-Z a-z 0-9 - _ . ~), uppercase hex.
    static func encode(_ text: String, keepSlash: Bool = false) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                out += "/"
            default:
                let digits = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 15)]], as: UTF8.self)
            }
        }
        return out
    }

    static func encodePath(_ path: String) -> String { encode(path, keepSlash: true) }

    /// A header value as signed: outer spaces trimmed, runs of spaces made one.
    static func trim(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        for byte in digest {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 15)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
