import Foundation
import Glibc
import Synchronization
import TorporCheckpoint

/// Shows progress on standard error: a redrawn bar (bytes, rate, ETA) on a terminal, one line per file when
/// standard error is not a terminal, nothing with `--quiet`.
final class ProgressRenderer: Sendable {
    enum Mode {
        case bar
        case lines
        case quiet
    }

    private struct State {
        var file = ""
        var fileNumber = 0
        var fileStarted = ContinuousClock.now
        /// The whole job, when announced; otherwise the current file.
        var files = 0
        var total = 0
        var done = 0
        var started = ContinuousClock.now
        var lastDraw = ContinuousClock.now - .seconds(1)
        var isJob = false
    }

    let mode: Mode
    private let state = Mutex(State())

    init(quiet: Bool) {
        mode = quiet ? .quiet : (isatty(STDERR_FILENO) != 0 ? .bar : .lines)
    }

    /// The handler to pass to library calls, or nil when quiet.
    var handler: ProgressHandler? {
        mode == .quiet ? nil : { @Sendable [self] event in self.handle(event) }
    }

    private func handle(_ event: ProgressEvent) {
        state.withLock { state in
            switch event {
            case .job(let files, let bytes):
                state = State(files: files, total: bytes, isJob: true)
            case .started(let file, let bytes):
                if !state.isJob { state = State(files: 1, total: bytes) }
                state.file = file
                state.fileNumber += 1
                state.fileStarted = ContinuousClock.now
                if mode == .bar { draw(&state, force: true) }
            case .advanced(let bytes):
                state.done += bytes
                if mode == .bar { draw(&state, force: false) }
            case .finished(let file, let summary):
                let seconds = (ContinuousClock.now - state.fileStarted) / .seconds(1)
                let line = "\(file): \(summary) in \(String(format: "%.2f", seconds)) s"
                if mode == .bar {
                    write("\r\u{1B}[2K" + line + "\n")
                } else {
                    write(line + "\n")
                }
            }
        }
    }

    private func draw(_ state: inout State, force: Bool) {
        let now = ContinuousClock.now
        guard force || now - state.lastDraw >= .milliseconds(100) else { return }
        state.lastDraw = now
        let elapsed = max((now - state.started) / .seconds(1), 1e-6)
        let fraction = state.total > 0 ? min(1, Double(state.done) / Double(state.total)) : 1
        let width = 24
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        let rate = Double(state.done) / elapsed
        let remaining = rate > 0 ? Double(state.total - state.done) / rate : 0
        let eta = String(format: "%d:%02d", Int(remaining) / 60, Int(remaining) % 60)
        let count = state.files > 1 ? "[\(state.fileNumber)/\(state.files)] " : ""
        write(
            "\r\u{1B}[2K\(count)\(bar) \(formatBytes(state.done))/\(formatBytes(state.total)) "
                + "\(formatBytes(Int(rate)))/s ETA \(eta) \(state.file)")
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
