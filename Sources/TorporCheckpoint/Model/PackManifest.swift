import FoundationEssentials

/// `torpor-manifest.json`: the list of every file of a packed model directory, written last, so a directory
/// without it is not a complete pack.
public struct PackManifest: Encodable, Sendable, Equatable {
    public static let fileName = "torpor-manifest.json"

    public enum Kind: String, Codable, Sendable {
        /// A safetensors file stored as a `.torpor` container.
        case packed
        /// Any other file, copied verbatim.
        case copied
    }

    /// One file of the original model directory.
    public struct File: Encodable, Sendable, Equatable {
        /// The path relative to the model directory, with `/` separators.
        public var path: String
        public var size: Int
        /// SHA-256 of the original file, hexadecimal.
        public var sha256: String
        public var kind: Kind
        /// For packed files: the container's path relative to the pack directory.
        public var container: String?
        /// For packed files: the container's size in bytes.
        public var containerSize: Int?
    }

    public var format = "torpor-pack"
    public var version = 1
    public var writer: String
    public var codec: String
    public var chunkSize: Int
    public var files: [File]

    /// Reads and checks the manifest of the pack directory `directory`.
    public static func load(from directory: String) throws(CheckpointError) -> PackManifest {
        let path = directory + "/" + fileName
        switch isDirectory(directory) {
        case nil:
            throw CheckpointError(.invalidArgument, "\(directory) does not exist")
        case false?:
            throw CheckpointError(
                .invalidArgument, "\(directory) is a file, not a pack: a pack is the directory `torpor pack` makes")
        case true?:
            break
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw CheckpointError(
                .invalidContainer,
                "\(directory) is not a complete torpor pack: it has no \(fileName) (an interrupted pack, or the wrong directory)"
            )
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw CheckpointError(.io, "cannot read \(path): \(error)")
        }
        return try decode(Array(data), name: path)
    }

    /// Parses and checks a manifest's bytes; `name` is where they came from, for messages.
    public static func decode(_ bytes: [UInt8], name path: String) throws(CheckpointError) -> PackManifest {
        func invalid(_ error: any Error) -> CheckpointError {
            CheckpointError(.invalidContainer, "\(path) is not a valid pack manifest (\(error))")
        }
        let fields: JSONFields
        do {
            fields = try bytes.withUnsafeBytes { try JSONFields(parsing: $0, in: "the manifest") }
        } catch {
            throw invalid(error)
        }
        // The format and version first: a newer manifest may differ in everything else.
        let format = try? fields.string("format")
        guard format == "torpor-pack" else {
            throw CheckpointError(
                .invalidContainer, "\(path) is not a torpor pack manifest (format \"\(format ?? "missing")\")")
        }
        let version: Int
        do { version = try fields.int("version") } catch { throw invalid(error) }
        guard version == 1 else {
            throw CheckpointError(
                .unsupported, "\(path): manifest version \(version) is newer than this torpor; upgrade torpor")
        }
        let manifest: PackManifest
        do { manifest = try PackManifest(fields) } catch { throw invalid(error) }
        for file in manifest.files {
            for relative in [file.path, file.container].compactMap({ $0 }) where !isSafeRelativePath(relative) {
                throw CheckpointError(.invalidContainer, "\(path) names an unsafe path \"\(relative)\"")
            }
            guard file.size >= 0, (file.kind == .packed) == (file.container != nil) else {
                throw CheckpointError(.invalidContainer, "\(path): the entry for \"\(file.path)\" is inconsistent")
            }
        }
        return manifest
    }
}

extension PackManifest {
    /// The manifest's members (`format` and `version` already checked).
    fileprivate init(_ fields: JSONFields) throws(JSONFields.Failure) {
        writer = try fields.string("writer")
        codec = try fields.string("codec")
        chunkSize = try fields.int("chunkSize")
        files = try fields.objects("files") { "file \($0)" }.map { (file) throws(JSONFields.Failure) in
            File(
                path: try file.string("path"), size: try file.int("size"), sha256: try file.string("sha256"),
                kind: try file.value("kind", as: Kind.self), container: try file.optionalString("container"),
                containerSize: try file.optionalInt("containerSize"))
        }
    }
}

/// True when `path` is relative, stays inside its directory and names no hidden traversal.
public func isSafeRelativePath(_ path: String) -> Bool {
    guard !path.isEmpty, !path.hasPrefix("/") else { return false }
    return !path.split(separator: "/", omittingEmptySubsequences: false).contains {
        $0 == ".." || $0 == "." || $0.isEmpty
    }
}
