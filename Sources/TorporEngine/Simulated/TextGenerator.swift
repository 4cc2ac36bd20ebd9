/// Deterministic text: each token is a word picked by a hash of the seed, the prompt and the position.
enum TextGenerator {
    static let words = [
        "the", "model", "sleeps", "wakes", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "weights",
        "return", "to", "the", "GPU", "in", "a", "second", "torpor", "keeps", "them", "warm", "while", "others", "run",
    ]

    static func token(seed: String, prompt: String, index: Int) -> String {
        " " + words[Int(hash(seed + "\u{0}" + prompt + "\u{0}\(index)") % UInt64(words.count))]
    }

    /// A unit vector of `dimensions` numbers, deterministic in the seed and the text: the simulated embedding.
    static func embedding(seed: String, text: String, dimensions: Int = 32) -> [Double] {
        let raw = (0..<dimensions).map { index in
            Double(hash(seed + "\u{0}" + text + "\u{0}\(index)") % 2001) / 1000 - 1
        }
        let norm = max(raw.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
        return raw.map { $0 / norm }
    }

    /// FNV-1a of `text`'s bytes.
    private static func hash(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return hash
    }

    /// A rough token count of a prompt: whitespace-separated words, at least 1.
    static func countTokens(_ text: String) -> Int { max(1, text.split(whereSeparator: \.isWhitespace).count) }
}
