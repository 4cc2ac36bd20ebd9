import CTorporLinux
import Dispatch
import FoundationEssentials
import Glibc
import Synchronization
import TorporCheckpoint

/// The loader's first stage: fills a ring of pinned buffers with the batches' stored bytes, in order, on its own
/// thread, each batch read by several threads at once (or fetched by range from a `ByteRangeSource`); or, from a
/// host cache, hands out the cached bytes in place.
///
/// A ring slot is reused only after the host-to-device copy out of it has finished (its `copied` event).
final class BatchReader: @unchecked Sendable {
    private let batches: [Range<Int>]
    private let slots: Int
    private let ring: [PinnedBuffer]
    private let cache: HostCache?
    private let remote: (any ByteRangeSource)?
    private let file: Int32
    private let path: String
    private let fileSize: Int
    private let ready = DispatchSemaphore(value: 0)
    private let free: DispatchSemaphore
    private let stopped = Atomic<Bool>(false)
    private let failure = Mutex<GPUError?>(nil)
    private let done = DispatchGroup()

    init(
        path: String, fileSize: Int, source: LoadSource, batches: [Range<Int>], ring: [PinnedBuffer],
        copied: [GPUEvent], device: GPUDevice, threads: Int
    ) throws(GPUError) {
        self.batches = batches
        slots = copied.count
        self.path = path
        self.fileSize = fileSize
        free = DispatchSemaphore(value: copied.count)
        switch source {
        case .hostCache(let cache):
            guard cache.count == fileSize else {
                throw GPUError(
                    .invalidArgument,
                    "the host cache \(cache.path) holds \(cache.count) bytes, but \(path) has \(fileSize)")
            }
            self.cache = cache
            remote = nil
            self.ring = []
            file = -1
            return
        case .file(let direct):
            cache = nil
            remote = nil
            let descriptor = CTorporLinux_openForReading(path, direct ? 1 : 0)
            guard descriptor >= 0 else {
                throw GPUError(.io, "cannot open \(path)\(direct ? " for direct I/O" : ""): \(errnoText())")
            }
            file = descriptor
        case .ranges(let source):
            guard source.size == fileSize else {
                throw GPUError(
                    .invalidArgument,
                    "\(source.name) holds \(source.size) bytes, but the container \(path) has \(fileSize)")
            }
            cache = nil
            remote = source
            file = -1
        }
        let longest = batches.map(\.count).max() ?? 0
        guard ring.count == copied.count, ring.allSatisfy({ $0.count >= longest }) else {
            if file >= 0 { close(file) }
            throw GPUError(.invalidArgument, "a read ring of \(ring.count) buffers for \(copied.count) slots")
        }
        self.ring = ring
        let work = UncheckedSendable((self, copied, device, max(1, threads)))
        DispatchQueue.global().async(group: done) {
            let (reader, copied, device, threads) = work.value
            reader.run(copied: copied, device: device, threads: threads)
        }
    }

    private func run(copied: [GPUEvent], device: GPUDevice, threads: Int) {
        do throws(GPUError) {
            try device.makeCurrent()
            for (number, span) in batches.enumerated() {
                free.wait()
                if stopped.load(ordering: .relaxed) { return }
                let slot = number % slots
                if number >= slots { try copied[slot].synchronize() }
                if let remote {
                    try fetch(span, from: remote, into: ring[slot].pointer)
                } else {
                    try read(span, into: ring[slot].pointer, threads: threads)
                }
                ready.signal()
            }
        } catch {
            failure.withLock { if $0 == nil { $0 = error } }
            ready.signal()
        }
    }

    /// Reads `span` of the file with `threads` parallel preads of at least 4 MiB each.
    private func read(_ span: Range<Int>, into buffer: UnsafeMutableRawPointer, threads: Int) throws(GPUError) {
        let piece = max(4 << 20, (span.count / threads + 4095) / 4096 * 4096)
        let pieces = (span.count + piece - 1) / piece
        let errors = Mutex<GPUError?>(nil)
        let context = UncheckedSendable((buffer, file, path, fileSize))
        DispatchQueue.concurrentPerform(iterations: pieces) { index in
            let (buffer, file, path, fileSize) = context.value
            var offset = index * piece
            let end = min(span.count, offset + piece)
            while offset < end {
                let count = pread(file, buffer.advanced(by: offset), end - offset, off_t(span.lowerBound + offset))
                if count < 0 {
                    if errno == EINTR { continue }
                    let error = GPUError(
                        .io, "cannot read \(path) at byte \(span.lowerBound + offset): \(errnoText())")
                    errors.withLock { if $0 == nil { $0 = error } }
                    return
                }
                if count == 0 {
                    if span.lowerBound + offset >= fileSize { return }  // the last page, read past the end
                    let error = GPUError(
                        .io, "\(path) ended at byte \(span.lowerBound + offset) (truncated while being read?)")
                    errors.withLock { if $0 == nil { $0 = error } }
                    return
                }
                offset += count
            }
        }
        if let error = errors.withLock({ $0 }) { throw error }
    }

    /// Reads `span` (its part inside the file: the last batch's span runs to a page boundary) from `source`.
    private func fetch(_ span: Range<Int>, from source: any ByteRangeSource, into buffer: UnsafeMutableRawPointer)
        throws(GPUError)
    {
        let inside = span.clamped(to: 0..<fileSize)
        guard !inside.isEmpty else { return }
        do {
            try source.read(inside, into: buffer + (inside.lowerBound - span.lowerBound))
        } catch {
            throw GPUError(error.code == .corruptData ? .corruptData : .io, error.message)
        }
    }

    /// The pinned bytes of batch `number`, once read.
    func waitUntilRead(_ number: Int) throws(GPUError) -> UnsafeRawPointer {
        if let cache { return UnsafeRawPointer(cache.pointer.advanced(by: batches[number].lowerBound)) }
        ready.wait()
        if let error = failure.withLock({ $0 }) { throw error }
        return UnsafeRawPointer(ring[number % slots].pointer)
    }

    /// Batch `number`'s copy is queued (its event recorded): the reader may refill the slot once it has run.
    func release(_ number: Int) {
        if cache == nil { free.signal() }
    }

    func check() throws(GPUError) {
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Stops the reader thread and waits for it; closes the file.
    func finish() {
        stopped.store(true, ordering: .relaxed)
        for _ in 0..<slots { free.signal() }
        done.wait()
        if file >= 0 { close(file) }
    }
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
