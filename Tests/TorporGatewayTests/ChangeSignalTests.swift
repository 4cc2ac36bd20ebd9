import Synchronization
import Testing

@testable import TorporGateway

/// An actor that waits on a `ChangeSignal` the way the scheduler does (`Scheduler.nextChange`): check a condition,
/// then wait for the next change; another task changes the condition and notifies.
private actor Waiter {
    let changes = ChangeSignal()
    private var round = 0

    func advance() {
        round += 1
        changes.notify()
    }

    /// Returns once `round` has reached `goal`.
    func wait(for goal: Int) async {
        while round < goal {
            let ticket = changes.register()
            await changes.wait(ticket)
        }
    }
}

@Suite struct ChangeSignalTests {
    @Test("a change between an actor's check and its wait is not lost")
    func noLostWakeup() async throws {
        let waiter = Waiter()
        let rounds = 5_000
        let finished = Mutex(0)
        // Each round the waiter checks and waits while this task advances, and this task advances again only once
        // the waiter has seen the round: a notification that lands after the waiter's check but before its wait is
        // registered leaves it asleep with nobody to wake it.
        let waiting = Task {
            for round in 1...rounds {
                await waiter.wait(for: round)
                finished.withLock { $0 = round }
            }
        }
        defer { waiting.cancel() }
        let deadline = ContinuousClock.now + .seconds(60)
        for round in 1...rounds {
            await waiter.advance()
            while finished.withLock({ $0 }) < round {
                guard ContinuousClock.now < deadline else {
                    Issue.record("the waiter never saw round \(round) of \(rounds): a wakeup was lost")
                    return
                }
                await Task.yield()
            }
        }
    }
}
