/// A peer compressor beside torpor's codecs in `torpor bench pack`, and its lines of the table.
extension PackBenchmark {
    /// A peer compressor measured on the same bytes in the same run (ZipNN: `ZipNNPeer` in the `torpor` command),
    /// buffer to buffer and file to file.
    public struct Peer: Codable, Sendable {
        /// "zipnn 0.5.4" and how it ran.
        public var name: String
        /// Its compressed bytes / the original bytes.
        public var ratio: Double
        public var compressMBps: Double
        /// Compression, then the SHA-256 of the same bytes: the digest every `torpor pack` records.
        public var compressAndHashMBps: Double
        public var decompressMBps: Double
        /// Decompression followed by the SHA-256 of the result: the check every `torpor unpack` and `verify` makes.
        public var decompressAndHashMBps: Double
        /// The work of a `torpor pack`, on the same calls: the file read, compressed, and the result written to a
        /// new file and fsynced.
        public var compressFileMBps: Double
        /// The work of a `torpor unpack`: the compressed file read, decompressed, and written to a new file and
        /// fsynced.
        public var decompressFileMBps: Double
        /// The work of a `torpor verify`: the compressed file read, decompressed, and its SHA-256 compared with
        /// the original's.
        public var verifyFileMBps: Double
        /// Whether every decompression gave back the original bytes.
        public var exact: Bool

        public init(
            name: String, ratio: Double, compressMBps: Double, compressAndHashMBps: Double, decompressMBps: Double,
            decompressAndHashMBps: Double, compressFileMBps: Double, decompressFileMBps: Double,
            verifyFileMBps: Double, exact: Bool
        ) {
            self.name = name
            self.ratio = ratio
            self.compressMBps = compressMBps
            self.compressAndHashMBps = compressAndHashMBps
            self.decompressMBps = decompressMBps
            self.decompressAndHashMBps = decompressAndHashMBps
            self.compressFileMBps = compressFileMBps
            self.decompressFileMBps = decompressFileMBps
            self.verifyFileMBps = verifyFileMBps
            self.exact = exact
        }
    }

    /// The peer's two rows, what they measure, and `auto` against each.
    func peerLines(_ peer: Peer) -> [String] {
        let blank = String(repeating: " ", count: 22 * floors.count)
        func row(_ label: String, _ pack: Double, _ unpack: Double, _ verify: Double) -> String {
            pad(label, 12) + pad(String(printf: "%.4f", peer.ratio), 8, right: true) + blank
                + pad(String(printf: "%.0f", pack), 11, right: true)
                + pad(String(printf: "%.0f", unpack), 13, right: true)
                + pad(String(printf: "%.0f", verify), 13, right: true)
        }
        func times(_ value: Double) -> String { String(printf: "%.2f", value) + "×" }
        var lines = [
            row("zipnn", peer.compressMBps, peer.decompressMBps, peer.decompressAndHashMBps),
            row("zipnn file", peer.compressFileMBps, peer.decompressFileMBps, peer.verifyFileMBps),
            "zipnn: \(peer.name), one warm process (no start-up); \"zipnn\" is buffer to buffer: its pack column is "
                + "compression, unpack decompression, verify decompression then SHA-256 (Python's hashlib); "
                + "compression then SHA-256: " + String(printf: "%.0f", peer.compressAndHashMBps) + " MB/s. "
                + "\"zipnn file\" does a command's work with the same calls: pack reads the file, compresses it and "
                + "writes the result, unpack reads that, decompresses it and writes the file (both fsync the new "
                + "file, as torpor's do), verify reads, decompresses and compares the SHA-256 with the original's"
                + (peer.exact ? "; every round trip byte-exact" : "; A ROUND TRIP WAS NOT BYTE-EXACT"),
        ]
        if let auto = rows.first(where: { $0.codec == CodecChoice.auto.description }) {
            lines.append(
                "auto against zipnn: pack \(times(auto.packMBps / peer.compressMBps)) its compression "
                    + "(\(times(auto.packMBps / peer.compressAndHashMBps)) with its SHA-256), unpack "
                    + "\(times(auto.unpackMBps / peer.decompressMBps)) and verify "
                    + "\(times(auto.verifyMBps / peer.decompressMBps)) its decompression "
                    + "(\(times(auto.unpackMBps / peer.decompressAndHashMBps)) and "
                    + "\(times(auto.verifyMBps / peer.decompressAndHashMBps)) with its SHA-256)")
            lines.append(
                "auto against zipnn file to file: pack \(times(auto.packMBps / peer.compressFileMBps)), unpack "
                    + "\(times(auto.unpackMBps / peer.decompressFileMBps)), verify "
                    + "\(times(auto.verifyMBps / peer.verifyFileMBps))")
        }
        return lines
    }
}
