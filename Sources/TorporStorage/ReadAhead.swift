import Dispatch
import NIOCore
import Synchronization
public import TorporCheckpoint

/// Sequential reads of a `RemoteObject` with read-ahead, for a loader that reads a container front to back in
/// batches (`LoadSource.ranges(ReadAhead(object))`).
///
/// The object is fetched in pieces of `options.rangeSize` bytes, one ranged GET each, and `options.parallelism`
/// pieces beyond the last read are kept in flight: the store stays busy across the loader's batch boundaries, and,
/// with `start()`, while the container before this one is still loading. Pieces wholly before a read are dropped,
/// so memory stays near `parallelism × rangeSize` however big the object. Reads that go backwards still work: the
/// pieces they need are fetched again.
public final class ReadAhead: ByteRangeSource, @unchecked Sendable {
    public let object: RemoteObject
    private let pieces = Mutex<[Int: Piece]>([:])

    public var name: String { object.name }
    public var size: Int { object.size }

    public init(_ object: RemoteObject) {
        self.object = object
    }

    deinit {
        pieces.withLock { for piece in $0.values { piece.task?.cancel() } }
    }

    /// One ranged GET, in flight or done.
    private final class Piece: @unchecked Sendable {
        let done = DispatchGroup()
        var task: Task<Void, Never>?
        var bytes: ByteBuffer?
        var error: StorageError?
    }

    private var step: Int { object.options.rangeSize }
    private var pieceCount: Int { (size + step - 1) / step }

    /// Starts fetching the first pieces from `offset`, before the first read asks for them.
    public func start(at offset: Int = 0) {
        guard offset < size else { return }
        let first = offset / step
        pieces.withLock { launch(first..<min(pieceCount, first + object.options.parallelism), in: &$0) }
    }

    public func read(_ range: Range<Int>, into buffer: UnsafeMutableRawPointer) throws(CheckpointError) {
        guard !range.isEmpty else { return }
        guard range.lowerBound >= 0, range.upperBound <= size else {
            throw CheckpointError(
                .invalidArgument, "\(name): bytes \(range.lowerBound)..<\(range.upperBound) lie beyond its \(size)")
        }
        let first = range.lowerBound / step
        let last = (range.upperBound - 1) / step
        let needed = pieces.withLock { (kept: inout [Int: Piece]) -> [Piece] in
            kept = kept.filter { $0.key >= first }
            launch(first..<min(pieceCount, last + 1 + object.options.parallelism), in: &kept)
            return (first...last).map { kept[$0]! }
        }
        for (index, piece) in zip(first...last, needed) {
            piece.done.wait()
            if let error = piece.error {
                throw CheckpointError(
                    error.code == .corrupt || error.code == .changed ? .corruptData : .io, error.message)
            }
            let pieceStart = index * step
            let overlap = max(range.lowerBound, pieceStart)..<min(range.upperBound, pieceStart + step)
            piece.bytes!.withUnsafeReadableBytes { bytes in
                (buffer + (overlap.lowerBound - range.lowerBound)).copyMemory(
                    from: bytes.baseAddress! + (overlap.lowerBound - pieceStart), byteCount: overlap.count)
            }
        }
    }

    /// Starts the pieces of `indices` not yet fetched or in flight.
    private func launch(_ indices: Range<Int>, in kept: inout [Int: Piece]) {
        for index in indices where kept[index] == nil {
            let piece = Piece()
            let part = (index * step)..<min(size, (index + 1) * step)
            piece.done.enter()
            let object = object
            piece.task = Task.detached {
                do throws(StorageError) {
                    piece.bytes = try await object.client.get(
                        bucket: object.bucket, key: object.key, range: part, etag: object.etag)
                    object.counted(part.count)
                } catch {
                    piece.error = error
                }
                piece.done.leave()
            }
            kept[index] = piece
        }
    }
}
