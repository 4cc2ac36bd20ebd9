/// The test targets' one way to wait for something that happens elsewhere (a process, a server, an engine): checks
/// `condition` every `interval` until it holds or `timeout` has passed, and says whether it held (checked once
/// more at the end, so a condition that became true at the deadline counts).
public func poll(
    timeout: Duration, every interval: Duration = .milliseconds(10), until condition: () async throws -> Bool
) async rethrows -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
