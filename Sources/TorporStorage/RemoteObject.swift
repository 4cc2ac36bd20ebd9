import Dispatch
import NIOCore
import Synchronization
public import TorporCheckpoint

/// An object in an S3-compatible store, read by range: each read is split into ranged GETs of
/// `options.rangeSize` bytes, `options.parallelism` in flight, each only while the object's ETag is the one seen
/// when it was opened (a pack pushed again meanwhile fails the read as `changed`, never mixes two versions).
///
/// As a `ByteRangeSource` it feeds the GPU loader's ring of pinned buffers directly (`LoadSource.ranges`), and
/// opens containers from their metadata alone (`Container(metadataOf:)`).
public final class RemoteObject: ByteRangeSource {
    public let client: S3Client
    public let bucket: String
    public let key: String
    public let size: Int
    public let etag: String
    public let options: TransferOptions
    private let fetchedBytes = Atomic<Int>(0)

    public var name: String { "s3://\(bucket)/\(key)" }
    /// Bytes fetched so far, by every read.
    public var fetched: Int { fetchedBytes.load(ordering: .relaxed) }

    public init(
        client: S3Client, bucket: String, key: String, size: Int, etag: String,
        options: TransferOptions = TransferOptions()
    ) {
        self.client = client
        self.bucket = bucket
        self.key = key
        self.size = size
        self.etag = etag
        self.options = options
    }

    /// Counts `bytes` more fetched (by this object's reads or a `ReadAhead` over it).
    func counted(_ bytes: Int) {
        fetchedBytes.add(bytes, ordering: .relaxed)
    }

    /// Fetches bytes `range` into `buffer` (at least `range.count` bytes, valid until this returns) with parallel
    /// ranged GETs.
    public func fetch(_ range: Range<Int>, into buffer: UnsafeMutableRawPointer) async throws(StorageError) {
        guard range.lowerBound >= 0, range.upperBound <= size else {
            throw StorageError(
                .invalidArgument, "\(name): bytes \(range.lowerBound)..<\(range.upperBound) lie beyond its \(size)")
        }
        let step = options.rangeSize
        let pieces = (range.count + step - 1) / step
        let address = UInt(bitPattern: buffer)
        _ = try await inParallel(count: pieces, width: options.parallelism) { [self] piece throws(StorageError) in
            let start = range.lowerBound + piece * step
            let part = start..<min(range.upperBound, start + step)
            let body = try await client.get(bucket: bucket, key: key, range: part, etag: etag)
            body.withUnsafeReadableBytes { bytes in
                UnsafeMutableRawPointer(bitPattern: address)!.advanced(by: start - range.lowerBound)
                    .copyMemory(from: bytes.baseAddress!, byteCount: part.count)
            }
            counted(part.count)
        }
    }

    /// `fetch`, for a thread that may block (the loader's reader thread): waits for the GETs, which run on Swift
    /// concurrency's pool and the HTTP client's event loops, never on the calling thread.
    public func read(_ range: Range<Int>, into buffer: UnsafeMutableRawPointer) throws(CheckpointError) {
        let outcome = Mutex<StorageError?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let address = UInt(bitPattern: buffer)
        Task.detached { [self] in
            do throws(StorageError) {
                try await fetch(range, into: UnsafeMutableRawPointer(bitPattern: address)!)
            } catch {
                outcome.withLock { $0 = error }
            }
            finished.signal()
        }
        finished.wait()
        if let error = outcome.withLock({ $0 }) { throw error.checkpointError }
    }
}

extension StorageError {
    /// This failure as a `ByteRangeSource` reports it: bytes that changed or fail a check are `.corruptData`,
    /// anything else `.io`; the message stays.
    var checkpointError: CheckpointError {
        CheckpointError(code == .corrupt || code == .changed ? .corruptData : .io, message)
    }
}
