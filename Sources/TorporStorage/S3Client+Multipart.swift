import AsyncHTTPClient
import Crypto
import FoundationEssentials
import Glibc
import NIOCore
import NIOHTTP1
public import TorporCheckpoint

extension S3Client {

    public func createMultipartUpload(bucket: String, key: String) async throws(StorageError) -> String {
        let what = "starting the upload of s3://\(bucket)/\(key)"
        let answer = try await send(.POST, bucket: bucket, key: key, query: [("uploads", "")], what: what)
        guard let id = S3ErrorBody.element("UploadId", in: answer.text) else {
            throw StorageError(.server, "\(what): the answer has no UploadId")
        }
        return id
    }

    /// Uploads one part with its MD5 (the store refuses a part whose bytes do not match) and checks the ETag the
    /// store computed against it. Returns the ETag.
    public func uploadPart(bucket: String, key: String, uploadID: String, number: Int, bytes: [UInt8])
        async throws(StorageError) -> String
    {
        let md5 = Array(Insecure.MD5.hash(data: bytes))
        let expected = "\"" + SigV4Signer.hex(md5) + "\""
        let answer = try await send(
            .PUT, bucket: bucket, key: key, query: [("partNumber", "\(number)"), ("uploadId", uploadID)],
            headers: [("content-md5", Data(md5).base64EncodedString())], body: bytes,
            what: "uploading part \(number) of s3://\(bucket)/\(key)")
        let etag = answer.headers.first(name: "etag") ?? ""
        // Without KMS or customer-key encryption, S3's ETag of a part is its MD5.
        let encrypted =
            answer.headers.first(name: "x-amz-server-side-encryption") == "aws:kms"
            || answer.headers.contains(name: "x-amz-server-side-encryption-customer-algorithm")
        if !encrypted, etag.count == 34, etag != expected {
            throw StorageError(
                .corrupt,
                "uploading part \(number) of s3://\(bucket)/\(key): the store holds bytes with MD5 \(etag), not the "
                    + "part's \(expected)")
        }
        return etag
    }

    /// Completes a multipart upload: only now does the object appear, whole.
    @discardableResult
    public func completeMultipartUpload(bucket: String, key: String, uploadID: String, etags: [String])
        async throws(StorageError) -> String
    {
        var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for (index, etag) in etags.enumerated() {
            xml += "<Part><PartNumber>\(index + 1)</PartNumber><ETag>\(S3ErrorBody.escape(etag))</ETag></Part>"
        }
        xml += "</CompleteMultipartUpload>"
        do {
            let answer = try await send(
                .POST, bucket: bucket, key: key, query: [("uploadId", uploadID)], body: Array(xml.utf8),
                what: "completing the upload of s3://\(bucket)/\(key)")
            return S3ErrorBody.element("ETag", in: answer.text) ?? ""
        } catch  where error.code == .notFound && error.message.contains("NoSuchUpload") {
            // The store completed the upload but its answer was lost, and the retry finds no upload: the object
            // is there if it has the ETag S3 gives a multipart object, the MD5 of the parts' MD5s and their count.
            let expected = Self.multipartETag(etags)
            if let expected, let (_, etag) = try await head(bucket: bucket, key: key), etag == expected {
                return etag
            }
            throw error
        }
    }

    /// The ETag S3 gives the object a multipart upload of parts with `etags` (their MD5s) makes, or nil when a part's
    /// ETag is not an MD5 (KMS or customer-key encryption).
    static func multipartETag(_ etags: [String]) -> String? {
        var digests: [UInt8] = []
        for etag in etags {
            let hex = Array(etag.utf8.filter { $0 != UInt8(ascii: "\"") })
            guard hex.count == 32 else { return nil }
            for index in stride(from: 0, to: 32, by: 2) {
                guard let byte = UInt8(String(decoding: hex[index..<(index + 2)], as: UTF8.self), radix: 16) else {
                    return nil
                }
                digests.append(byte)
            }
        }
        return "\"" + SigV4Signer.hex(Array(Insecure.MD5.hash(data: digests))) + "-\(etags.count)\""
    }

    /// The keys of the multipart uploads begun and neither completed nor abandoned in `bucket` (first 1000).
    public func openUploads(bucket: String) async throws(StorageError) -> [String] {
        let answer = try await send(
            .GET, bucket: bucket, query: [("uploads", "")], what: "listing the open uploads of \"\(bucket)\"")
        return answer.text.split(separator: "<Upload>").dropFirst().compactMap {
            S3ErrorBody.element("Key", in: String($0))
        }
    }

    /// Abandons a multipart upload: the store drops its parts and no object appears.
    public func abortMultipartUpload(bucket: String, key: String, uploadID: String) async throws(StorageError) {
        _ = try await send(
            .DELETE, bucket: bucket, key: key, query: [("uploadId", uploadID)], accept: [200, 204, 404],
            what: "abandoning the upload of s3://\(bucket)/\(key)")
    }

    static func md5Base64(_ bytes: [UInt8]) -> String {
        Data(Array(Insecure.MD5.hash(data: bytes))).base64EncodedString()
    }
}
