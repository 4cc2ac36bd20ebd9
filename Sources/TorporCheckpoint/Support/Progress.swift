/// What a long-running operation reports as it goes. The command line renders these as a progress bar, as plain
/// lines, or not at all.
public enum ProgressEvent: Sendable {
    /// The whole job is `files` files and `bytes` bytes of work; sent once, before the first file.
    case job(files: Int, bytes: Int)
    /// Work on `file` begins; `bytes` is the amount of work (uncompressed bytes).
    case started(file: String, bytes: Int)
    /// `bytes` more of the current file's work is done.
    case advanced(bytes: Int)
    /// Work on `file` is done.
    case finished(file: String, summary: String)
}

/// Receives progress events; called from one thread at a time.
public typealias ProgressHandler = @Sendable (ProgressEvent) -> Void
