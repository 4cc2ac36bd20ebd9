import Dispatch
import NIOCore
import Synchronization
public import TorporCheckpoint

/// Sequential reads of a `RemoteObject` with read-ahead, for a loader that reads a container front to back in
/// batches (`LoadSource.ranges(ReadAhead(object))`).
///
/// The object is fetched in pieces of `options.rangeSize` bytes, one ranged GET each, and `options.parallelism`
/// pieces beyond the last read are kept in flight: the store stays busy across the loader's batch boundaries. The
/// window runs on into `next`, the object loaded after this one (a pack's next container), so small containers
/// do not leave the store idle between loads; `start()` fills it before the first read (while the GPU starts up).
/// Pieces wholly before a read are dropped, so memory stays near `parallelism × rangeSize` however big the
/// objects. Reads that go backwards still work: the pieces they need are fetched again.
public final class ReadAhead: ByteRangeSource, @unchecked Sendable {
    public let object: RemoteObject
    /// The object read after this one, into which read-ahead continues.
    public let next: ReadAhead?
    private let pieces = Mutex<[Int: Piece]>([:])

    public var name: String { object.name }
    public var size: Int { object.size }

    public init(_ object: RemoteObject, then next: ReadAhead? = nil) {
        self.object = object
        self.next = next
    }

    /// A chain over `objects`, read in that order: each one's read-ahead continues into the next.
    public static func chain(_ objects: [RemoteObject]) -> [ReadAhead] {
        var chain: [ReadAhead] = []
        for object in objects.reversed() { chain.insert(ReadAhead(object, then: chain.first), at: 0) }
        return chain
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

    /// Starts fetching the first `count` pieces (default `parallelism`), continuing into `next` when this object
    /// has fewer, before the first read asks for them.
    public func start(pieces count: Int? = nil) {
        let count = count ?? object.options.parallelism
        let here = min(count, pieceCount)
        pieces.withLock { launch(0..<here, in: &$0) }
        if count > here { next?.start(pieces: count - here) }
    }

    /// Pieces fetched or in flight, for tests.
    var launched: Int { pieces.withLock { $0.count } }

    public func read(_ range: Range<Int>, into buffer: UnsafeMutableRawPointer) throws(CheckpointError) {
        guard !range.isEmpty else { return }
        guard range.lowerBound >= 0, range.upperBound <= size else {
            throw CheckpointError(
                .invalidArgument, "\(name): bytes \(range.lowerBound)..<\(range.upperBound) lie beyond its \(size)")
        }
        let first = range.lowerBound / step
        let last = (range.upperBound - 1) / step
        let ahead = last + 1 + object.options.parallelism
        let needed = pieces.withLock { (kept: inout [Int: Piece]) -> [Piece] in
            kept = kept.filter { $0.key >= first }
            launch(first..<min(pieceCount, ahead), in: &kept)
            return (first...last).map { kept[$0]! }
        }
        if ahead > pieceCount { next?.start(pieces: ahead - pieceCount) }
        for (index, piece) in zip(first...last, needed) {
            piece.done.wait()
            if let error = piece.error { throw error.checkpointError }
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
