import Glibc

extension String {
    /// `printf`'s rendering of one double under `format` (such as `"%.2f GB"`): Foundation's `String(format:)`
    /// without Foundation, which this module does without (libtorpor would otherwise carry ICU).
    public init(printf format: String, _ value: Double) {
        var buffer = [CChar](repeating: 0, count: 128)
        let written = withVaList([value]) { vsnprintf(&buffer, buffer.count, format, $0) }
        self = written < 0 ? "\(value)" : String(decoding: buffer.prefix(Int(written)).map(UInt8.init), as: UTF8.self)
    }
}
