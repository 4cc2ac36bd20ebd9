import FoundationEssentials
import Glibc

/// A directory being built apart and moved into place only when complete.
///
/// When the destination does not exist, the work happens in `.NAME.partial-PID` next to it and `commit()` renames
/// that into place. When it is an empty directory (a fresh volume's mount point, say, which cannot be replaced), the
/// work happens in `.torpor-partial-PID` inside it and `commit()` moves each entry up, `marker` last. Either way
/// every file and directory is fsynced first, so a crash, a full disk or an error never leaves a destination that
/// looks complete. Without `commit()`, `discard()` removes the partial directory.
final class StagedDirectory {
    let destination: String
    let staging: String
    /// Whether the work happens inside the (existing, empty) destination.
    private let inPlace: Bool
    /// The entry moved into place last, whose presence says the output is complete (a pack's manifest).
    private let marker: String?
    private var committed = false

    private static let innerPrefix = ".torpor-partial-"

    /// Prepares to build `destination`, which must not exist or must be an empty directory.
    /// - Parameter marker: the top-level entry that marks the output complete; moved into place last.
    init(destination: String, marker: String? = nil) throws(CheckpointError) {
        let trimmed = destination.count > 1 && destination.hasSuffix("/") ? String(destination.dropLast()) : destination
        self.destination = trimmed
        self.marker = marker
        let manager = FileManager.default
        if let directory = isDirectory(trimmed) {
            guard directory else {
                throw CheckpointError(
                    .outputExists, "\(trimmed) already exists and is a file; choose another output or remove it")
            }
            let contents = try listDirectory(trimmed)
            // Partial work of runs that were killed (their process is gone) is a leftover, not content.
            let leftovers = contents.filter { Self.isLeftover($0, prefix: Self.innerPrefix) }
            for entry in leftovers { try? manager.removeItem(atPath: trimmed + "/" + entry) }
            guard contents.count == leftovers.count else {
                throw CheckpointError(
                    .outputExists,
                    "\(trimmed) already exists and is not an empty directory; choose another output or remove it")
            }
            guard access(trimmed, W_OK) == 0 else { throw ioError("cannot write into the output directory", trimmed) }
            inPlace = true
            staging = trimmed + "/" + Self.innerPrefix + "\(getpid())"
        } else {
            inPlace = false
            let url = URL(fileURLWithPath: trimmed)
            let parent = url.deletingLastPathComponent().path
            guard isDirectory(parent) == true else {
                throw CheckpointError(.io, "cannot create \(trimmed): its parent directory \(parent) does not exist")
            }
            let prefix = "." + url.lastPathComponent + ".partial-"
            staging = parent + "/" + prefix + "\(getpid())"
            for entry in (try? manager.contentsOfDirectory(atPath: parent)) ?? []
            where Self.isLeftover(entry, prefix: prefix) {
                try? manager.removeItem(atPath: parent + "/" + entry)
            }
        }
        guard mkdir(staging, 0o755) == 0 else { throw ioError("cannot create", staging) }
    }

    /// Whether `entry` is a partial directory (`PREFIX` + pid) of this process or of one that is gone.
    private static func isLeftover(_ entry: String, prefix: String) -> Bool {
        guard entry.hasPrefix(prefix), let pid = Int32(entry.dropFirst(prefix.count)) else { return false }
        return pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH)
    }

    /// The staging path of `relative`, creating its parent directories.
    func path(for relative: String) throws(CheckpointError) -> String {
        let full = staging + "/" + relative
        let parent = URL(fileURLWithPath: full).deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(.io, "cannot create directory \(parent): \(error)")
        }
        return full
    }

    /// Fsyncs the staged tree and moves it into place: renamed to the destination, or (inside an existing
    /// directory) each entry moved up, the marker last; then fsyncs the directory that changed.
    func commit() throws(CheckpointError) {
        try syncTree(staging)
        guard inPlace else {
            guard rename(staging, destination) == 0 else {
                throw ioError("cannot move the finished output to", destination)
            }
            committed = true
            try syncDirectory(URL(fileURLWithPath: destination).deletingLastPathComponent().path)
            return
        }
        let names = try listDirectory(staging)
        for name in names.filter({ $0 != marker }) + names.filter({ $0 == marker }) {
            guard rename(staging + "/" + name, destination + "/" + name) == 0 else {
                throw ioError("cannot move the finished \(name) into", destination)
            }
        }
        committed = true
        guard rmdir(staging) == 0 else { throw ioError("cannot remove", staging) }
        try syncDirectory(destination)
    }

    /// Removes the staged tree unless it was committed.
    func discard() {
        guard !committed else { return }
        try? FileManager.default.removeItem(atPath: staging)
    }

    private func syncTree(_ directory: String) throws(CheckpointError) {
        for relative in try entries(under: directory) {
            let full = directory + "/" + relative
            var info = stat()
            guard lstat(full, &info) == 0 else { throw ioError("cannot stat", full) }
            if (info.st_mode & S_IFMT) == S_IFDIR {
                try syncDirectory(full)
            } else {
                let fd = open(full, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw ioError("cannot open", full) }
                defer { close(fd) }
                guard fsync(fd) == 0 else { throw ioError("cannot fsync", full) }
            }
        }
        try syncDirectory(directory)
    }
}

/// The names in `directory` (without `.` and `..`), or the reason it cannot be read — `Permission denied`, say,
/// where Foundation's listing would answer with nothing.
func listDirectory(_ directory: String) throws(CheckpointError) -> [String] {
    guard let stream = opendir(directory) else { throw ioError("cannot read the directory", directory) }
    defer { closedir(stream) }
    var names: [String] = []
    while let entry = readdir(stream) {
        let name = withUnsafePointer(to: entry.pointee.d_name) {
            String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// Every entry under `root` (files, links and directories, as relative paths, parents before children), descending
/// into real directories but not into links to directories, nor into directories named `skipping`.
func entries(under root: String, skipping skipped: String? = nil) throws(CheckpointError) -> [String] {
    var found: [String] = []
    var pending = [""]
    while let relative = pending.popLast() {
        let directory = relative.isEmpty ? root : root + "/" + relative
        for name in try listDirectory(directory).sorted() where name != skipped {
            let child = relative.isEmpty ? name : relative + "/" + name
            found.append(child)
            var info = stat()
            if lstat(root + "/" + child, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR { pending.append(child) }
        }
    }
    return found
}

/// Whether `path` is a directory (following links); nil when nothing is there.
func isDirectory(_ path: String) -> Bool? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return (info.st_mode & S_IFMT) == S_IFDIR
}

/// Fsyncs a directory so that entries created or renamed in it are durable.
func syncDirectory(_ path: String) throws(CheckpointError) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw ioError("cannot open directory", path) }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw ioError("cannot fsync directory", path) }
}

/// Writes `bytes` to a new file at `path`, returning their SHA-256.
@discardableResult
func writeNewFile(_ path: String, _ bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> String {
    let file = try FileDescriptor.create(path)
    defer { file.close() }
    try file.write(bytes, at: 0)
    try file.sync()
    return FileDigest.sha256(bytes)
}

/// The regular files under `root`, as sorted relative paths; `.git` directories are skipped.
/// Symbolic links are followed (Hugging Face caches link files to blobs).
func regularFiles(under root: String) throws(CheckpointError) -> [String] {
    var files: [String] = []
    for relative in try entries(under: root, skipping: ".git") {
        let full = root + "/" + relative
        var info = stat()
        guard stat(full, &info) == 0 else { throw ioError("cannot stat", full) }
        switch info.st_mode & S_IFMT {
        case S_IFREG: files.append(relative)
        case S_IFDIR: continue
        default: throw CheckpointError(.invalidArgument, "\(full) is neither a regular file nor a directory")
        }
    }
    return files.sorted()
}
