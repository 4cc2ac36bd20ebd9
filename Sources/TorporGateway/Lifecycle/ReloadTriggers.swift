import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// What starts a configuration reload besides the admin API: SIGHUP, and, when a file is watched, a change of its
/// content (checked every `interval`; an editor's save that replaces the file counts). Runs until graceful shutdown.
struct ReloadTriggers: Service {
    let reloader: ConfigurationReloader
    let watchFile: String?
    var interval = Duration.seconds(1)
    let logger: Logger

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await _ in hangups { await reload(trigger: "SIGHUP") }
                }
                if let watchFile {
                    group.addTask { await watch(watchFile) }
                }
            }
        }
    }

    private func reload(trigger: String) async {
        // A refused reload is logged by the reloader; the running configuration goes on.
        if let change = try? await reloader.reload(trigger: trigger) {
            logger.info("configuration reloaded", metadata: ["trigger": "\(trigger)", "change": "\(change)"])
        }
    }

    /// Reloads whenever the file's content differs from what was last seen (a file that cannot be read is not a
    /// change: an editor may be replacing it).
    private func watch(_ path: String) async {
        var seen = FileManager.default.contents(atPath: path)
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { return }
            guard let now = FileManager.default.contents(atPath: path), now != seen else { continue }
            seen = now
            await reload(trigger: "file watch")
        }
    }
}
