import CTorporDeflate
import CTorporSIMD
import Crypto
import Glibc

/// The switch for this project's own vector kernels (CTorporSIMD): `TORPOR_DISABLE_SIMD=1` turns them all off, for
/// comparing against the portable paths. Read once.
enum SIMD {
    static let disabled = getenv("TORPOR_DISABLE_SIMD").map { String(cString: $0) == "1" } ?? false
}

/// CRC-32 as zlib, PKZIP and nvCOMP's default batched CRC32 compute it (IEEE 802.3 polynomial, reflected,
/// initial value and final XOR 0xFFFFFFFF). Every chunk in a container carries two: of its stored bytes and of
/// the bytes it decodes to.
public enum CRC32 {
    /// The CRC-32 of `bytes`.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        guard wideFolding, bytes.count >= 4096 else { return CTorporDeflate_crc32(0, base, bytes.count) }
        return withUnsafeTemporaryAllocation(byteCount: 256, alignment: 64) { state in
            let stateBytes = state.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let folded = CTorporSIMD_crc32Fold256(0, base.assumingMemoryBound(to: UInt8.self), bytes.count, stateBytes)
            // The folded bytes carry the CRC register: their CRC-32 from 0xFFFFFFFF, then the rest's, is the whole's.
            let head = CTorporDeflate_crc32(0xFFFF_FFFF, stateBytes, 256)
            return CTorporDeflate_crc32(head, base + folded, bytes.count - folded)
        }
    }

    /// Whether long inputs fold 256 bytes a step with VPCLMULQDQ (CTorporSIMD's crc32_fold.c) before libdeflate
    /// finishes them; libdeflate alone otherwise, and with `TORPOR_DISABLE_SIMD=1`.
    static let wideFolding = CTorporSIMD_hasVPCLMUL512() != 0 && !SIMD.disabled

    /// The CRC-32 of a byte array.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// A CRC-32 as errors print it: `0x` and eight hex digits.
    public static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}

/// An incremental SHA-256, for whole-file digests in the pack manifest.
public struct FileDigest: Sendable {
    private var hasher = SHA256()

    public init() {}

    /// Adds `bytes` to the digest.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        hasher.update(bufferPointer: bytes)
    }

    /// The lowercase hexadecimal digest.
    public func finalize() -> String {
        hasher.finalize().map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// The SHA-256 of `bytes`, hexadecimal.
    public static func sha256(_ bytes: UnsafeRawBufferPointer) -> String {
        var digest = FileDigest()
        digest.update(bytes)
        return digest.finalize()
    }
}

extension UnsafeRawBufferPointer {
    /// Whether two byte ranges hold the same bytes (memcmp, not an element-by-element loop).
    func sameBytes(as other: UnsafeRawBufferPointer) -> Bool {
        guard count == other.count else { return false }
        guard count > 0 else { return true }
        return memcmp(baseAddress!, other.baseAddress!, count) == 0
    }
}
