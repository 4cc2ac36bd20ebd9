import FoundationEssentials
import Glibc

/// A directory being built beside its final path and moved into place only when complete.
///
/// The work happens in `.NAME.partial-PID` next to the destination; `commit()` fsyncs every file and directory in
/// it and renames it to the destination, so a crash, a full disk or an error never leaves a directory at the
/// destination that looks complete. Without `commit()`, `discard()` removes the partial directory.
final class StagedDirectory {
    let destination: String
    let staging: String
    private var committed = false

    /// Prepares to build `destination`, which must not exist or must be an empty directory.
    init(destination: String) throws(CheckpointError) {
        let trimmed = destination.count > 1 && destination.hasSuffix("/") ? String(destination.dropLast()) : destination
        self.destination = trimmed
        let manager = FileManager.default
        if let directory = isDirectory(trimmed) {
            let contents = (try? manager.contentsOfDirectory(atPath: trimmed)) ?? ["?"]
            guard directory, contents.isEmpty else {
                throw CheckpointError(
                    .outputExists,
                    "\(trimmed) already exists and is not an empty directory; choose another output or remove it")
            }
        }
        let url = URL(fileURLWithPath: trimmed)
        let parent = url.deletingLastPathComponent().path
        guard isDirectory(parent) == true else {
            throw CheckpointError(.io, "cannot create \(trimmed): its parent directory \(parent) does not exist")
        }
        let prefix = "." + url.lastPathComponent + ".partial-"
        staging = parent + "/" + prefix + "\(getpid())"
        // Partial directories of runs that were killed (their process is gone) are leftovers: remove them.
        for entry in (try? manager.contentsOfDirectory(atPath: parent)) ?? [] where entry.hasPrefix(prefix) {
            guard let pid = Int32(entry.dropFirst(prefix.count)) else { continue }
            if pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH) {
                try? manager.removeItem(atPath: parent + "/" + entry)
            }
        }
        guard mkdir(staging, 0o755) == 0 else { throw ioError("cannot create", staging) }
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

    /// Fsyncs the staged tree, renames it to the destination and fsyncs the parent.
    func commit() throws(CheckpointError) {
        try syncTree(staging)
        if FileManager.default.fileExists(atPath: destination) {
            guard rmdir(destination) == 0 else { throw ioError("cannot replace the empty directory", destination) }
        }
        guard rename(staging, destination) == 0 else {
            throw ioError("cannot move the finished output to", destination)
        }
        committed = true
        try syncDirectory(URL(fileURLWithPath: destination).deletingLastPathComponent().path)
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

/// Every entry under `root` (files, links and directories, as relative paths, parents before children), descending
/// into real directories but not into links to directories, nor into directories named `skipping`.
func entries(under root: String, skipping skipped: String? = nil) throws(CheckpointError) -> [String] {
    var found: [String] = []
    var pending = [""]
    while let relative = pending.popLast() {
        let directory = relative.isEmpty ? root : root + "/" + relative
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw CheckpointError(.io, "cannot list \(directory): \(error)")
        }
        for name in names.sorted() where name != skipped {
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
