import Foundation
import Glibc

/// Where the engines Torpor starts listen when `engine_transport` is `unix` (the default): one socket per model in
/// `STATE_DIR/sockets`, a directory only the gateway's user may enter (0700). vLLM's dev endpoints
/// (`/collective_rpc`, `/sleep`, `/wake_up`) have no authentication; on a unix socket there, no other local user
/// can reach them, where any could reach a TCP port on 127.0.0.1.
struct EngineSockets: Sendable {
    /// The longest path a unix socket address holds (`sun_path` is 108 bytes with its terminating zero).
    static let maximumPathBytes = 107

    let directory: String

    /// Creates `STATE_DIR/sockets` with mode 0700, or takes it over when it exists: it must be a real directory
    /// (not a link) owned by this user, and is set to 0700 when its mode is wider.
    /// - Throws: `ConfigurationError` naming the directory and what is wrong with it.
    init(stateDirectory: String) throws(ConfigurationError) {
        directory = stateDirectory + "/sockets"
        if mkdir(directory, 0o700) != 0, errno != EEXIST {
            throw ConfigurationError("state_dir: cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: directory)
        } catch {
            throw ConfigurationError("state_dir: cannot read \(directory): \(error.localizedDescription)")
        }
        guard attributes[.type] as? FileAttributeType == .typeDirectory else {
            throw ConfigurationError(
                "state_dir: \(directory) must be a directory of its own for the engines' sockets, not a link or file")
        }
        let owner = (attributes[.ownerAccountID] as? NSNumber)?.uint32Value
        guard owner == geteuid() else {
            throw ConfigurationError(
                "state_dir: \(directory) belongs to uid \(owner.map(String.init) ?? "?"), not to this user "
                    + "(uid \(geteuid())): the engines' sockets must be in a directory nobody else controls")
        }
        if (attributes[.posixPermissions] as? NSNumber)?.intValue != 0o700, chmod(directory, 0o700) != 0 {
            throw ConfigurationError(
                "state_dir: cannot make \(directory) private (0700): \(String(cString: strerror(errno)))")
        }
    }

    /// The socket of the `index`-th model: `sockets/NAME.sock` with every character other than letters, digits,
    /// `.`, `-` and `_` written as `_`; `sockets/INDEX.sock` when that path would not fit a socket address.
    /// - Throws: `ConfigurationError` when even the short form does not fit (a very long `state_dir`).
    func path(forModel name: String, index: Int) throws(ConfigurationError) -> String {
        let safe = String(
            name.map { character in
                character.isASCII && (character.isLetter || character.isNumber || "._-".contains(character))
                    ? character : "_"
            })
        for candidate in [directory + "/\(safe).sock", directory + "/\(index).sock"]
        where candidate.utf8.count <= Self.maximumPathBytes {
            return candidate
        }
        throw ConfigurationError(
            "state_dir: \(directory) is too long for unix socket addresses (at most \(Self.maximumPathBytes) bytes "
                + "with the socket's name); choose a shorter state_dir, or `engine_transport: tcp`")
    }
}
