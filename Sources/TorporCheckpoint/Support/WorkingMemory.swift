import Glibc

/// The large working buffers of packing and restoring (the restore ring, codec scratch, write windows): anonymous
/// memory that asks for transparent huge pages, so that first touching 8 MiB costs 4 page faults, not 2048. A
/// command that restores a 45 MB file spent about a tenth of its CPU time in those faults (this project's VM).
/// Buffers under 2 MiB come from the allocator as usual.
enum WorkingMemory {
    static let hugePage = 2 << 20

    /// At least `bytes` bytes, 64-byte aligned (2 MiB-aligned for huge-page buffers), uninitialized.
    static func allocate(_ bytes: Int) -> UnsafeMutableRawBufferPointer {
        guard bytes >= hugePage else { return .allocate(byteCount: max(bytes, 64), alignment: 64) }
        let size = (bytes + hugePage - 1) / hugePage * hugePage
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            base != MAP_FAILED
        else {
            fatalError("cannot map \(size) bytes of working memory: \(errnoDescription(errno))")
        }
        // Advisory: where the kernel has no huge pages for it, the buffer works with small ones.
        _ = madvise(base, size, MADV_HUGEPAGE)
        return UnsafeMutableRawBufferPointer(start: base, count: size)
    }

    /// Frees a buffer from `allocate` (its whole `count`, as `allocate` returned it).
    static func deallocate(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress else { return }
        if buffer.count >= hugePage {
            munmap(base, buffer.count)
        } else {
            buffer.deallocate()
        }
    }
}
