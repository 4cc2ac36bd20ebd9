/// The configured API keys, matched in constant time.
struct APIKeyTable: Sendable {
    private let keys: [(bytes: [UInt8], key: GatewayConfiguration.APIKey)]

    init(_ keys: [GatewayConfiguration.APIKey]) { self.keys = keys.map { (Array($0.key.utf8), $0) } }

    var isEmpty: Bool { keys.isEmpty }

    /// The key equal to `presented`; every configured key is compared in full, so timing reveals nothing.
    func match(_ presented: String) -> GatewayConfiguration.APIKey? {
        let bytes = Array(presented.utf8)
        var found: GatewayConfiguration.APIKey?
        for entry in keys where constantTimeEqual(bytes, entry.bytes) { found = entry.key }
        return found
    }
}

/// Compares two byte strings in time that depends only on their lengths.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
    let count = max(a.count, b.count)
    for index in 0..<count {
        let x = index < a.count ? a[index] : 0
        let y = index < b.count ? b[index] : 0
        difference |= x ^ y
    }
    return difference == 0 && a.count == b.count
}
