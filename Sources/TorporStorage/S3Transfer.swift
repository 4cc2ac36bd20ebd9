import FoundationEssentials
import Glibc
import NIOCore
public import TorporCheckpoint

/// Sizes and parallelism of uploads and downloads.
public struct TransferOptions: Sendable {
    /// Bytes per part of a multipart upload (S3 wants at least 5 MiB but for the last, at most 10,000 parts).
    public var partSize: Int
    /// Bytes per ranged GET.
    public var rangeSize: Int
    /// Requests in flight at once.
    public var parallelism: Int

    public init(partSize: Int = 16 << 20, rangeSize: Int = 32 << 20, parallelism: Int = 8) {
        self.partSize = partSize
        self.rangeSize = rangeSize
        self.parallelism = max(1, parallelism)
    }

    func check() throws(StorageError) {
        guard partSize >= 5 << 20, partSize <= 5 << 30 else {
            throw StorageError(.invalidArgument, "part size \(partSize) is outside S3's 5 MiB ... 5 GiB")
        }
        guard rangeSize >= 1 << 16 else {
            throw StorageError(.invalidArgument, "range size \(rangeSize) is below 64 KiB")
        }
    }
}

extension S3Client {
    /// Uploads the file at `path`: one PUT when it fits in a part, else a multipart upload whose parts go up
    /// `parallelism` at a time, each with its MD5, and which is completed only once every part is in; on any
    /// failure the upload is abandoned, so no object appears. Returns the object's ETag.
    @discardableResult
    public func upload(
        file path: String, bucket: String, key: String, options: TransferOptions = TransferOptions(),
        progress: (@Sendable (Int) -> Void)? = nil
    ) async throws(StorageError) -> String {
        try options.check()
        let file = try LocalFile(reading: path)
        defer { file.close() }
        if file.size <= options.partSize {
            let bytes = try file.read(0..<file.size)
            let etag = try await put(bucket: bucket, key: key, bytes: bytes)
            progress?(file.size)
            return etag
        }
        let parts = (file.size + options.partSize - 1) / options.partSize
        guard parts <= 10_000 else {
            throw StorageError(
                .invalidArgument, "\(path) needs \(parts) parts of \(options.partSize) bytes; S3 allows 10,000")
        }
        let uploadID = try await createMultipartUpload(bucket: bucket, key: key)
        do {
            let etags = try await inParallel(count: parts, width: options.parallelism) { number throws(StorageError) in
                let start = number * options.partSize
                let bytes = try file.read(start..<min(file.size, start + options.partSize))
                let etag = try await self.uploadPart(
                    bucket: bucket, key: key, uploadID: uploadID, number: number + 1, bytes: bytes)
                progress?(bytes.count)
                return etag
            }
            return try await completeMultipartUpload(bucket: bucket, key: key, uploadID: uploadID, etags: etags)
        } catch {
            // Not under this (maybe cancelled) task: the abort must still reach the store.
            await Task.detached { try? await self.abortMultipartUpload(bucket: bucket, key: key, uploadID: uploadID) }
                .value
            throw error
        }
    }

    /// Downloads bytes `0..<size` of an object into the file at `path` with ranged GETs, `parallelism` at a time,
    /// each only while the object's ETag is still `etag`. The ranges already written, listed in the journal file
    /// `journal`, are not fetched again: an interrupted download resumes where it stopped. The file is fsynced.
    /// `progress` hears of the bytes already there too. Returns the bytes fetched now.
    @discardableResult
    public func download(
        bucket: String, key: String, size: Int, etag: String?, to path: String, journal: String,
        options: TransferOptions = TransferOptions(), progress: (@Sendable (Int) -> Void)? = nil
    ) async throws(StorageError) -> Int {
        try options.check()
        let file = try LocalFile(writing: path, size: size)
        defer { file.close() }
        let log = try RangeJournal(path: journal)
        defer { log.close() }
        let ranges = (size + options.rangeSize - 1) / options.rangeSize
        let missing = (0..<ranges).filter { !log.done.contains($0) }
        let resumed = log.done.filter { $0 < ranges }.reduce(0) {
            $0 + min(size, ($1 + 1) * options.rangeSize) - $1 * options.rangeSize
        }
        if resumed > 0 { progress?(resumed) }
        let fetched = try await inParallel(count: missing.count, width: options.parallelism) {
            index throws(StorageError) in
            let number = missing[index]
            let range = (number * options.rangeSize)..<min(size, (number + 1) * options.rangeSize)
            let buffer = try await self.get(bucket: bucket, key: key, range: range, etag: etag)
            try buffer.withUnsafeReadableBytes { bytes throws(StorageError) in
                try file.write(bytes, at: range.lowerBound)
            }
            try log.record(number)
            progress?(range.count)
            return range.count
        }.reduce(0, +)
        try file.sync()
        return fetched
    }
}

/// Runs `body(0) … body(count-1)` with at most `width` running at once; returns their results in order. The first
/// error cancels the rest and is thrown.
func inParallel<T: Sendable>(
    count: Int, width: Int, _ body: @escaping @Sendable (Int) async throws(StorageError) -> T
) async throws(StorageError) -> [T] {
    do {
        return try await withThrowingTaskGroup(of: (Int, T).self) { group in
            var results = [T?](repeating: nil, count: count)
            var next = 0
            while next < min(width, count) {
                let index = next
                group.addTask { (index, try await body(index)) }
                next += 1
            }
            while let (index, value) = try await group.next() {
                results[index] = value
                if next < count {
                    let index = next
                    group.addTask { (index, try await body(index)) }
                    next += 1
                }
            }
            return results.map { $0! }
        }
    } catch let error as StorageError {
        throw error
    } catch {
        throw StorageError(.cancelled, "cancelled")
    }
}

/// A local file read or written by offset.
final class LocalFile: Sendable {
    let path: String
    let descriptor: Int32
    let size: Int

    init(reading path: String) throws(StorageError) {
        self.path = path
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw StorageError(.io, "cannot open \(path): \(errorText())") }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw StorageError(.io, "cannot stat \(path): \(errorText())") }
        size = Int(status.st_size)
    }

    /// Opens (creating it if needed) a file of `size` bytes for writing.
    init(writing path: String, size: Int) throws(StorageError) {
        self.path = path
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw StorageError(.io, "cannot create \(path): \(errorText())") }
        guard ftruncate(descriptor, off_t(size)) == 0 else {
            Glibc.close(descriptor)
            throw StorageError(.io, "cannot size \(path) to \(size) bytes: \(errorText())")
        }
        self.size = size
    }

    func read(_ range: Range<Int>) throws(StorageError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: range.count)
        var done = 0
        while done < range.count {
            let count = bytes.withUnsafeMutableBytes {
                pread(descriptor, $0.baseAddress! + done, range.count - done, off_t(range.lowerBound + done))
            }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw StorageError(
                    .io,
                    "cannot read \(path) at byte \(range.lowerBound + done): \(count == 0 ? "it ended" : errorText())")
            }
            done += count
        }
        return bytes
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        var done = 0
        while done < bytes.count {
            let count = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw StorageError(.io, "cannot write \(path) at byte \(offset + done): \(errorText())")
            }
            done += count
        }
    }

    func sync() throws(StorageError) {
        guard fsync(descriptor) == 0 else { throw StorageError(.io, "cannot fsync \(path): \(errorText())") }
    }

    func close() { Glibc.close(descriptor) }
}

/// The ranges of a download already written: one little-endian UInt32 per range, appended after its bytes are.
final class RangeJournal: Sendable {
    let path: String
    let done: Set<Int>
    private let descriptor: Int32

    init(path: String) throws(StorageError) {
        self.path = path
        let descriptor = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw StorageError(.io, "cannot open \(path): \(errorText())") }
        self.descriptor = descriptor
        var status = stat()
        fstat(descriptor, &status)
        var bytes = [UInt8](repeating: 0, count: Int(status.st_size) / 4 * 4)
        let count = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        var done = Set<Int>()
        if count == bytes.count {
            for offset in stride(from: 0, to: bytes.count, by: 4) {
                done.insert(
                    Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2]) << 16
                        | Int(bytes[offset + 3]) << 24)
            }
        }
        self.done = done
    }

    func record(_ number: Int) throws(StorageError) {
        var value = UInt32(number).littleEndian
        guard Glibc.write(descriptor, &value, 4) == 4 else {
            throw StorageError(.io, "cannot write \(path): \(errorText())")
        }
    }

    func close() { Glibc.close(descriptor) }
}

func errorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
