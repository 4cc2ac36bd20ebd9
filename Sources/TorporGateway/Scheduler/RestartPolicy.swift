/// When a failed engine is started again, and when it is given up: the gateway's one restart policy, for failed
/// starts at start-up, failed or hung wakes, sleeps and reloads, and engines found dead.
///
/// A model whose engine failed is stopped and started again after `delay(afterFailures:)` (1 s, 2 s, 4 s … up to
/// `maximumDelay`), at once when requests wait for it; after `maximumConsecutiveFailures` failures in a row it is
/// given up: its requests get 503 until an admin wake.
struct RestartPolicy: Sendable, Equatable {
    var initialDelay = Duration.seconds(1)
    var maximumDelay = Duration.seconds(60)
    var maximumConsecutiveFailures = 3

    /// The wait before the next start after `failures` failures in a row (at least one).
    func delay(afterFailures failures: Int) -> Duration {
        min(maximumDelay, initialDelay * Double(1 << min(max(failures - 1, 0), 20)))
    }

    func givesUp(afterFailures failures: Int) -> Bool { failures >= maximumConsecutiveFailures }
}
