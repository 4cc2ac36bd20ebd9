import Testing

@testable import TorporStorage

/// Cases of AWS's published Signature Version 4 test suite (aws-sig-v4-test-suite: service "service", region
/// us-east-1, 2015-08-30T12:36:00Z, the suite's example credentials), and the IAM example of AWS's SigV4 guide.
struct SigV4Vector: Sendable, CustomStringConvertible {
    var name: String
    var method = "GET"
    var path = "/"
    var query: [(String, String)] = []
    var headers: [(String, String)] = []
    var body = ""
    var service = "service"
    var signedHeaders = "host;x-amz-date"
    var signature: String

    var description: String { name }

    static let all: [SigV4Vector] = [
        .init(name: "get-vanilla", signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        .init(
            name: "get-vanilla-empty-query-key", query: [("Param1", "value1")],
            signature: "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
        .init(
            name: "get-vanilla-query-order-key-case", query: [("Param2", "value2"), ("Param1", "value1")],
            signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
        .init(
            name: "get-vanilla-query-unreserved",
            query: [
                (
                    "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                    "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                )
            ], signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
        .init(
            name: "get-vanilla-utf8-query", query: [("ሴ", "bar")],
            signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
        .init(
            name: "get-unreserved", path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
        .init(
            name: "get-utf8", path: "/ሴ", signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
        .init(
            name: "get-header-key-duplicate",
            headers: [
                ("My-Header1", "value2"), ("my-header1", "value2"),
                ("MY-HEADER1", "value1"),
            ],
            signedHeaders: "host;my-header1;x-amz-date",
            signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
        .init(
            name: "get-header-value-order", headers: [("My-Header1", "value4,value1,value3,value2")],
            signedHeaders: "host;my-header1;x-amz-date",
            signature: "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"),
        .init(
            name: "get-header-value-trim", headers: [("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
            signedHeaders: "host;my-header1;my-header2;x-amz-date",
            signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
        .init(
            name: "post-vanilla", method: "POST",
            signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        .init(
            name: "post-vanilla-query", method: "POST", query: [("Param1", "value1")],
            signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
        .init(
            name: "post-vanilla-query-nonunreserved", method: "POST",
            query: [("@#$%^", ""), ("+", "/,?><`\";:\\|][{}")],
            signature: "66c82657c86e26fb25238d0e69f011edc4c6df5ae71119d7cb98ed9b87393c1e"),
        .init(
            name: "post-header-key-sort", method: "POST", headers: [("My-Header1", "value1")],
            signedHeaders: "host;my-header1;x-amz-date",
            signature: "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"),
        .init(
            name: "post-header-value-case", method: "POST", headers: [("My-Header1", "VALUE1")],
            signedHeaders: "host;my-header1;x-amz-date",
            signature: "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"),
        .init(
            name: "post-x-www-form-urlencoded", method: "POST",
            headers: [("Content-Type", "application/x-www-form-urlencoded")], body: "Param1=value1",
            signedHeaders: "content-type;host;x-amz-date",
            signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
        .init(
            name: "post-x-www-form-urlencoded-parameters", method: "POST",
            headers: [("Content-Type", "application/x-www-form-urlencoded; charset=utf8")], body: "Param1=value1",
            signedHeaders: "content-type;host;x-amz-date",
            signature: "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe"),
        // AWS's SigV4 guide: IAM ListUsers.
        .init(
            name: "iam-list-users", query: [("Action", "ListUsers"), ("Version", "2010-05-08")],
            headers: [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")], service: "iam",
            signedHeaders: "content-type;host;x-amz-date",
            signature: "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"),
    ]
}

@Suite struct SigV4Tests {
    static let credentials = AWSCredentials(
        accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")

    @Test(arguments: SigV4Vector.all)
    func theSuitesSignatures(vector: SigV4Vector) {
        let signer = SigV4Signer(credentials: Self.credentials, region: "us-east-1", service: vector.service)
        let host = vector.service == "iam" ? "iam.amazonaws.com" : "example.amazonaws.com"
        let signed = signer.sign(
            method: vector.method, path: vector.path, query: vector.query,
            headers: [("Host", host), ("X-Amz-Date", "20150830T123600Z")] + vector.headers,
            payloadHash: SigV4Signer.payloadHash(Array(vector.body.utf8)), amzDate: "20150830T123600Z")
        #expect(signed.signature == vector.signature, "\(vector.name)\n\(signed.canonicalRequest)")
        #expect(
            signed.authorization
                == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/\(vector.service)/aws4_request, "
                + "SignedHeaders=\(vector.signedHeaders), Signature=\(vector.signature)")
    }

    @Test func theSecretIsNeverPrinted() {
        let credentials = AWSCredentials(accessKeyID: "AKID", secretAccessKey: "very-secret", sessionToken: "sess-XYZ")
        #expect(!"\(credentials)".contains("very-secret"))
        #expect(!"\(credentials)".contains("sess-XYZ"))
        #expect("\(credentials)".contains("AKID"))
    }

    @Test func pathsAreEncodedOnceUnlessAskedTwice() {
        #expect(SigV4Signer.encodePath("/my bucket/a+b%c") == "/my%20bucket/a%2Bb%25c")
        let s3 = SigV4Signer(credentials: Self.credentials, region: "us-east-1")
        let other = SigV4Signer(
            credentials: Self.credentials, region: "us-east-1", service: "service", doubleEncodePath: true)
        let headers = [("host", "h"), ("x-amz-date", "20150830T123600Z")]
        let once = s3.sign(
            method: "GET", path: "/a b", query: [], headers: headers, payloadHash: "UNSIGNED-PAYLOAD",
            amzDate: "20150830T123600Z")
        let twice = other.sign(
            method: "GET", path: "/a b", query: [], headers: headers, payloadHash: "UNSIGNED-PAYLOAD",
            amzDate: "20150830T123600Z")
        #expect(once.canonicalRequest.split(separator: "\n")[1] == "/a%20b")
        #expect(twice.canonicalRequest.split(separator: "\n")[1] == "/a%2520b")
    }
}
