import Dispatch
import Glibc
import Synchronization

/// Runs CPU-bound jobs on every core: `workers` threads pull job indices from a shared counter, each with its
/// own codec scratch memory. Blocks until all jobs finish; the first error thrown stops the remaining jobs and
/// is rethrown.
final class WorkerPool: Sendable {
    /// The number of worker threads.
    let workers: Int
    /// Scratch memory kept between runs, so buffers are not allocated and faulted in again for every window.
    private let spareScratch = Mutex<[UncheckedSendable<CodecScratch>]>([])

    /// A pool with one worker per active core (at least one).
    init(workers: Int? = nil) {
        self.workers = Self.count(workers)
    }

    /// The threads a pool of `workers` runs: that many, or one per active core, and at least one.
    static func count(_ workers: Int?) -> Int {
        max(1, workers ?? System.activeProcessorCount)
    }

    func run<Failure: Error>(
        jobs: Int,
        _ body: (_ job: Int, _ scratch: CodecScratch) throws(Failure) -> Void
    ) throws(Failure) {
        guard jobs > 0 else { return }
        let next = Atomic<Int>(0)
        let failure = Mutex<Failure?>(nil)
        let threads = min(workers, jobs)
        withoutActuallyEscaping(body) { body in
            let shared = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: threads) { _ in
                let scratch = self.spareScratch.withLock { $0.popLast()?.value } ?? CodecScratch()
                defer { self.spareScratch.withLock { $0.append(UncheckedSendable(scratch)) } }
                while true {
                    let job = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard job < jobs else { return }
                    do throws(Failure) {
                        try shared.value(job, scratch)
                    } catch {
                        failure.withLock { if $0 == nil { $0 = error } }
                        next.store(jobs, ordering: .relaxed)
                        return
                    }
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }
}

/// Wraps a value that is shared across the pool's threads under the pool's own discipline: each job touches
/// disjoint memory. Shared with the package's other modules (the GPU path's gather and scatter threads).
package struct UncheckedSendable<Value>: @unchecked Sendable {
    package let value: Value
    package init(_ value: Value) { self.value = value }
}

enum System {
    /// The number of cores this process may use.
    static var activeProcessorCount: Int {
        Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }
}
