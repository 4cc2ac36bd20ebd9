import Foundation
import Testing

/// `torpor gpu` on a machine without an NVIDIA driver (CI's): clear messages, exit status 1, no crash.
@Suite(.enabled(if: !FileManager.default.fileExists(atPath: "/dev/nvidia0"), "this machine has a GPU"))
struct GPUCLITests {
    @Test("torpor gpu info and selftest say what is missing and fail")
    func withoutAGPU() throws {
        let info = try torpor("gpu", "info", "--nvcomp", "/nonexistent", timeout: .seconds(60))
        #expect(info.status == 1)
        #expect(info.stdout.contains("/nonexistent/libnvcomp.so.6: no such file"), "\(info.stdout)")
        #expect(info.stdout.contains("no NVIDIA driver on this machine"), "\(info.stdout)")
        let selftest = try torpor("gpu", "selftest", "--megabytes", "1", timeout: .seconds(60))
        #expect(selftest.status == 1)
        #expect(selftest.stderr.hasPrefix("error: "), "\(selftest.stderr)")
        #expect(
            selftest.stderr.contains("no NVIDIA driver")
                || selftest.stderr.contains("nvCOMP (libnvcomp.so.6) was not found"))
    }
}
