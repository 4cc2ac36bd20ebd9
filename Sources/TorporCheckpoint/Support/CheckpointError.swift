/// An error from the checkpoint manager. The message names what failed (the file, the tensor, the chunk) and,
/// where there is one, what to do about it.
///
/// Callers match on ``code``; new codes can be added without breaking them.
public struct CheckpointError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidSafetensors
            case invalidShardIndex
            case invalidContainer
            case corruptData
            case unsupported
            case invalidArgument
            case io
            case outputExists
            case mismatch
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A safetensors file that breaks the format: bad header, offsets, dtype, sizes.
        public static let invalidSafetensors = Code(.invalidSafetensors)
        /// A `model.safetensors.index.json` that does not match the shards beside it.
        public static let invalidShardIndex = Code(.invalidShardIndex)
        /// A `.torpor` container or pack manifest whose structure is malformed or truncated.
        public static let invalidContainer = Code(.invalidContainer)
        /// Bytes that fail a checksum or cannot be decoded: a corrupted chunk or file.
        public static let corruptData = Code(.corruptData)
        /// Valid input this version cannot handle (a newer format version, an unknown codec).
        public static let unsupported = Code(.unsupported)
        /// A bad option or argument from the caller.
        public static let invalidArgument = Code(.invalidArgument)
        /// A system call failed (open, read, write, fsync, rename ...).
        public static let io = Code(.io)
        /// The output path already exists and holds something.
        public static let outputExists = Code(.outputExists)
        /// Restored bytes differ from a reference (`verify --against`).
        public static let mismatch = Code(.mismatch)

        public var description: String { base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// A complete, human-readable sentence naming the failing object.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for a body that throws only `CheckpointError`.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(CheckpointError) -> R) throws(CheckpointError) -> R {
        try withUnsafeBytes { bytes in Result { () throws(CheckpointError) in try body(bytes) } }.get()
    }

    /// `withUnsafeMutableBytes` for a body that throws only `CheckpointError`.
    mutating func withMutableBytes<R>(
        _ body: (UnsafeMutableRawBufferPointer) throws(CheckpointError) -> R
    ) throws(CheckpointError) -> R {
        try withUnsafeMutableBytes { bytes in Result { () throws(CheckpointError) in try body(bytes) } }.get()
    }
}
