/// The restore pipeline's ring buffer, as bookkeeping: pieces take space in file order and give it back in the same
/// order, each only its own size, so a ring of eight chunks holds dozens of small tensors' pieces.
///
/// A ring of one slot a chunk held one piece a slot whatever its size: where a model has many small tensors the
/// decoders could run only a few pieces ahead of the in-order reader, which then decoded pieces itself instead of
/// hashing: 9-15% of the SHA-256 thread's time in a MiniLM bf16 verify on this project's VM, 0-3% with this ring.
struct PieceRing {
    let capacity: Int
    /// Where the next piece would start.
    private var head = 0
    /// Bytes held, counting the end of the ring a piece skipped to start at 0.
    private var used = 0
    /// The bytes each held piece accounts for, oldest first (from `oldest`).
    private var spans: [Int] = []
    private var oldest = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    /// Takes `size` contiguous bytes after the newest piece (wrapping to the ring's start where the end is too
    /// short); nil when they are not free yet. `size` must be at most `capacity`.
    /// - Returns: the piece's offset in the ring.
    mutating func reserve(_ size: Int) -> Int? {
        precondition(size >= 0 && size <= capacity)
        if used == 0 { head = 0 }
        var start = head
        var span = size
        if head + size > capacity {
            start = 0
            span += capacity - head
        }
        guard used + span <= capacity else { return nil }
        used += span
        head = start + size
        spans.append(span)
        return start
    }

    /// Gives back the oldest piece's bytes.
    mutating func releaseOldest() {
        precondition(oldest < spans.count, "no piece is held")
        used -= spans[oldest]
        oldest += 1
        if oldest == spans.count || oldest >= 1024 {
            spans.removeFirst(oldest)
            oldest = 0
        }
    }

    /// The number of pieces held.
    var count: Int { spans.count - oldest }
}
