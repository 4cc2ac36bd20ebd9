/// The kind of failure an error is: a name callers match on (`error.code == .io`), printed as its raw value.
public protocol ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible where RawValue == String {}

extension ErrorCode {
    public var description: String { rawValue }
}

/// An error Torpor raises on purpose, with a sentence for people: the command line prints `message` and exits
/// with status 1, where an error it did not expect is shown as it is.
public protocol ExplainedError: Error {
    var message: String { get }
}

/// An error with a code to match on and a message: a complete, human-readable sentence naming what failed (the
/// file, the tensor, the chunk, the call) and, where there is one, what to do about it. `CheckpointError`,
/// `GPUError` and `StorageError` are this with their own codes.
public struct CodedError<Kind: ErrorCode>: ExplainedError, CustomStringConvertible, Sendable {
    public typealias Code = Kind

    /// What kind of failure this is.
    public let code: Code
    /// The sentence for people.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
