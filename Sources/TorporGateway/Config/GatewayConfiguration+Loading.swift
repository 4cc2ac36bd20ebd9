import Foundation
import Yams

/// Reading a configuration: the file once, the `s3://` checkpoints it names (pulled by the caller), then the
/// decoding and checks, with the environment the caller read once.
extension GatewayConfiguration {
    /// The text of a configuration file.
    public static func text(_ path: String) throws(ConfigurationError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read the configuration file \(path)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The `s3://` checkpoints a YAML configuration names (models[].checkpoint), to pull before parsing it.
    public static func remoteCheckpoints(yaml: String) -> [String] {
        guard let node = try? Yams.compose(yaml: yaml), let models = node.mapping?["models"]?.sequence else {
            return []
        }
        return models.compactMap { $0.mapping?["checkpoint"]?.string }.filter { $0.hasPrefix("s3://") }
    }

    /// Parses and checks a YAML configuration.
    /// - Parameters:
    ///   - packs: local copies of its `s3://` checkpoints, by URL (`remoteCheckpoints`, pulled before).
    ///   - environment: the variables `api_keys[].key_env` names (the process environment, read once by the caller).
    ///   - source: the file it came from, named in every error.
    public static func parse(
        yaml: String, packs: [String: String] = [:], environment: [String: String] = [:], source: String? = nil
    ) throws(ConfigurationError) -> GatewayConfiguration {
        do throws(ConfigurationError) {
            let node: Node?
            do {
                node = try Yams.compose(yaml: yaml)
            } catch {
                throw ConfigurationError("invalid YAML: \(error)")
            }
            guard let node else { throw ConfigurationError("the configuration is empty") }
            let context = ConfigReader.Context(packs: packs, environment: environment)
            let configuration = try ConfigReader(node, path: "", context: context).decodeGateway()
            try configuration.validate()
            return configuration
        } catch {
            throw source.map { ConfigurationError("\($0): \(error.message)") } ?? error
        }
    }
}
