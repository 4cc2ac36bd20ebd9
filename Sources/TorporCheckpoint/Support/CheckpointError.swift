/// An error from the checkpoint manager. The message names what failed (the file, the tensor, the chunk) and,
/// where there is one, what to do about it. Callers match on ``CodedError/code``.
public typealias CheckpointError = CodedError<CheckpointErrorCode>

/// What kind of checkpoint failure an error is:
/// - `invalidSafetensors`: a safetensors file that breaks the format: bad header, offsets, dtype, sizes
/// - `invalidShardIndex`: a `model.safetensors.index.json` that does not match the shards beside it
/// - `invalidContainer`: a `.torpor` container or pack manifest whose structure is malformed or truncated
/// - `corruptData`: bytes that fail a checksum or cannot be decoded: a corrupted chunk or file
/// - `unsupported`: valid input this version cannot handle (a newer format version, an unknown codec)
/// - `invalidArgument`: a bad option or argument from the caller
/// - `io`: a system call failed (open, read, write, fsync, rename ...)
/// - `outputExists`: the output path already exists and holds something
/// - `mismatch`: restored bytes differ from a reference (`verify --against`)
public enum CheckpointErrorCode: String, ErrorCode {
    case invalidSafetensors, invalidShardIndex, invalidContainer, corruptData, unsupported, invalidArgument
    case io, outputExists, mismatch
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
