/// A file's bytes, read by range from wherever the file lives: an object in an S3-compatible store
/// (`TorporStorage.RemoteObject`), or anything else that serves ranges.
///
/// A container opened from its metadata alone (`Container(metadataOf:)`) keeps its chunks in such a source, and
/// the GPU loader reads them from it batch by batch (`LoadSource.ranges`), so a load needs no local copy.
public protocol ByteRangeSource: Sendable {
    /// The file's name, for messages (a path or an `s3://` URL).
    var name: String { get }
    /// The file's size in bytes.
    var size: Int { get }
    /// Reads bytes `range` of the file (inside `0..<size`) into `buffer`, which holds at least `range.count`
    /// bytes; returns only once all of them are there. Blocks the calling thread: call it from a thread that may
    /// wait (not from Swift concurrency's cooperative pool). Safe to call from several threads at once.
    /// - Throws: `CheckpointError` (`.io` for a failed read, `.corruptData` for bytes that changed or fail a
    ///   check), naming the file and the range.
    func read(_ range: Range<Int>, into buffer: UnsafeMutableRawPointer) throws(CheckpointError)
}

extension ByteRangeSource {
    /// Reads `range` into a new array.
    public func bytes(_ range: Range<Int>) throws(CheckpointError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: range.count)
        guard !range.isEmpty else { return bytes }
        let failure = bytes.withUnsafeMutableBytes { buffer -> CheckpointError? in
            do throws(CheckpointError) {
                try read(range, into: buffer.baseAddress!)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
        return bytes
    }
}
