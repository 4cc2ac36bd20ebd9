import FoundationEssentials

/// A sharded model's `*.safetensors.index.json`: which shard holds each tensor.
struct ShardIndex {
    /// Tensor name → shard file name.
    let weightMap: [String: String]

    /// Parses the index at `path`.
    init(path: String) throws(CheckpointError) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw CheckpointError(.io, "cannot read \(path): \(error)")
        }
        let root: JSONValue
        do {
            root = try data.withUnsafeBytes { (bytes) throws(JSONParser.SyntaxError) in try JSONParser.parse(bytes) }
        } catch {
            throw CheckpointError(.invalidShardIndex, "\(path) is not valid JSON (\(error))")
        }
        guard let map = root["weight_map"]?.objectValue else {
            throw CheckpointError(.invalidShardIndex, "\(path) has no \"weight_map\" object")
        }
        var weightMap: [String: String] = [:]
        for (tensor, shard) in map {
            guard let file = shard.stringValue, isSafeRelativePath(file) else {
                throw CheckpointError(
                    .invalidShardIndex, "\(path): tensor \"\(tensor)\" maps to something that is not a shard file name")
            }
            weightMap[tensor] = file
        }
        self.weightMap = weightMap
    }

    /// Checks the map against the shards' headers: every shard named exists, every tensor named is in its shard,
    /// and every tensor of those shards is named.
    /// - Parameters:
    ///   - shards: relative shard path (from the index's directory) → tensor names in it.
    func check(indexPath: String, shards: [String: Set<String>]) throws(CheckpointError) {
        for (tensor, shard) in weightMap.sorted(by: { $0.key < $1.key }) {
            guard let names = shards[shard] else {
                throw CheckpointError(
                    .invalidShardIndex,
                    "\(indexPath): tensor \"\(tensor)\" is mapped to \(shard), which is not in the model directory")
            }
            guard names.contains(tensor) else {
                throw CheckpointError(
                    .invalidShardIndex,
                    "\(indexPath): tensor \"\(tensor)\" is mapped to \(shard), which has no such tensor")
            }
        }
        let mappedShards = Set(weightMap.values)
        for shard in mappedShards.sorted() {
            for tensor in shards[shard, default: []].sorted() where weightMap[tensor] != shard {
                throw CheckpointError(
                    .invalidShardIndex,
                    "\(indexPath): \(shard) holds tensor \"\(tensor)\", which the weight_map does not list there")
            }
        }
    }
}
