import CTorporCUDA
import CTorporNVCOMP
import FoundationEssentials
public import TorporCheckpoint

/// The GPU decoder of the CPU's byte-plane codec (FORMAT.md, codec 2): a CUDA kernel compiled at run time with
/// NVRTC for the GPU at hand, one block per chunk: its first warp's 32 threads are the rANS stream's 32 lanes, then
/// the whole block merges the raw planes and undoes the exponent-aligned transform in place, 16 elements per
/// thread with 16-byte loads and stores (byte by byte where the output or a plane is not 16-byte aligned).
///
/// It reads the loader's pointer tables like nvCOMP's decoders, writes a status and decoded size per chunk, and
/// checks what the CPU decoder checks (header, plane bounds, frequency table, every lane's word count and final
/// state), so malformed input ends in a status, never an access outside the chunk or its output. Frequency
/// tables of up to 12 bits (what the writer uses) decode on the GPU; other stream parameters get "not
/// supported".
public final class GPUBytePlaneDecoder: @unchecked Sendable {
    public let device: GPUDevice
    private let module: CTorporCUDA_Module
    private let function: CTorporCUDA_Function
    /// Seconds NVRTC took to compile the kernel.
    public let compileSeconds: Double

    static let kernelName = "torpor_byteplane_decode"

    /// Compiles the kernel for `device` and loads it.
    public init(device: GPUDevice, nvrtc: NVRTCLibrary) throws(GPUError) {
        self.device = device
        let started = ContinuousClock.now
        let architecture = "sm_" + device.info.computeCapability.filter { $0 != "." }
        let cubin = try nvrtc.compile(Self.source, name: "torpor_byteplane.cu", architecture: architecture)
        compileSeconds = (ContinuousClock.now - started) / .seconds(1)
        try device.makeCurrent()
        let driver = device.driver
        var module: CTorporCUDA_Module?
        try driver.check(cubin.withUnsafeBytes { driver.cuModuleLoadData(&module, $0.baseAddress) }, "cuModuleLoadData")
        var function: CTorporCUDA_Function?
        let found = driver.cuModuleGetFunction(&function, module, Self.kernelName)
        guard found == CTorporCUDA_Success, let function else {
            _ = driver.cuModuleUnload(module)
            try driver.check(found, "cuModuleGetFunction(\(Self.kernelName))")
            throw GPUError(.cuda, "cuModuleGetFunction(\(Self.kernelName)) returned no function")
        }
        self.module = module!
        self.function = function
    }

    deinit {
        try? device.makeCurrent()
        _ = device.driver.cuModuleUnload(module)
    }

    /// Queues the decode of the table entries `range` (one block per chunk) on `stream`.
    func run(tables: PointerTables, range: Range<Int>, stream: GPUStream) throws(GPUError) {
        guard !range.isEmpty else { return }
        func address<T>(_ pointer: UnsafeMutablePointer<T>) -> UInt64 { UInt64(UInt(bitPattern: pointer)) }
        var arguments: [UInt64] = [
            address(tables.entry(0, range.lowerBound, as: UInt64.self)),
            address(tables.entry(2, range.lowerBound, as: UInt64.self)),
            address(tables.entry(1, range.lowerBound, as: UInt64.self)),
            address(tables.entry(3, range.lowerBound, as: UInt64.self)),
            address(tables.entry(4, range.lowerBound, as: UInt64.self)),
            address(tables.statuses + range.lowerBound),
        ]
        var count = UInt32(range.count)
        let driver = device.driver
        let function = function
        let result = arguments.withUnsafeMutableBufferPointer { values in
            withUnsafeMutablePointer(to: &count) { countPointer in
                var parameters: [UnsafeMutableRawPointer?] =
                    (0..<values.count).map { UnsafeMutableRawPointer(values.baseAddress! + $0) }
                    + [UnsafeMutableRawPointer(countPointer)]
                return parameters.withUnsafeMutableBufferPointer {
                    driver.cuLaunchKernel(
                        function, UInt32(range.count), 1, 1, Self.threadsPerChunk, 1, 1, 0, stream.handle,
                        $0.baseAddress, nil)
                }
            }
        }
        try driver.check(result, "cuLaunchKernel(\(Self.kernelName), \(range.count) chunks)")
    }

    /// Threads per chunk: warp 0 decodes the rANS planes (32 lanes, as the format has), then all of them merge the
    /// raw planes and undo the transform with 16-byte loads and stores.
    static let threadsPerChunk: UInt32 = 256

    /// The kernel. Statuses follow nvCOMP's: 0 success, 11 not supported, 12 cannot decompress.
    static let source = #"""
        typedef unsigned char u8;
        typedef unsigned short u16;
        typedef unsigned int u32;
        typedef unsigned long long u64;

        #define TORPOR_OK 0
        #define TORPOR_UNSUPPORTED 11
        #define TORPOR_BAD 12
        #define THREADS 256

        __device__ __forceinline__ u32 load16(const u8 *p) { return (u32)p[0] | ((u32)p[1] << 8); }
        __device__ __forceinline__ u32 load32(const u8 *p) {
            return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
        }

        struct Tables {
            u32 entries[4096];   // per slot: frequency << 16 | slot - start
            u8 symbols[4096];
            u32 frequencies[256];
            u32 starts[256];
            u32 laneStart[32];
            u32 laneEnd[32];
            u32 laneState[32];
            int flag;
        };

        struct Chunk {
            const u8 *planes[4];   // raw planes' bytes; null for rANS planes (already in the output)
            u32 width, transform, n, rawMask, rANSMask;
            int status;
        };

        // One rANS plane (32 lanes, frequency tables of at most 12 bits) into byte `plane` of each element.
        // Called by the 32 threads of warp 0; returns the same status in each.
        __device__ int decodePlane(const u8 *s, u32 length, u8 *out, u32 n, u32 width, u32 plane, u32 lane,
                                   Tables &t) {
            if (length < 40) return TORPOR_BAD;
            const u32 lanes = load16(s), scaleBits = s[2], count = load32(s + 4);
            if (scaleBits < 1 || scaleBits > 15 || lanes < 1 || lanes > 1024) return TORPOR_BAD;
            if (lanes != 32 || scaleBits > 12) return TORPOR_UNSUPPORTED;
            if (count != n) return TORPOR_BAD;
            __syncwarp();  // the previous plane is done with the tables
            if (lane == 0) {
                int ok = 1;
                u32 position = 40, sum = 0;
                const u32 total = 1u << scaleBits;
                for (u32 symbol = 0; symbol < 256; ++symbol) {
                    t.frequencies[symbol] = 0;
                    if (!ok) continue;
                    if (load32(s + 8 + 4 * (symbol >> 5)) & (1u << (symbol & 31))) {
                        if (position + 2 > length) { ok = 0; continue; }
                        const u32 frequency = load16(s + position);
                        position += 2;
                        if (frequency == 0 || sum + frequency > total) { ok = 0; continue; }
                        t.frequencies[symbol] = frequency;
                        t.starts[symbol] = sum;
                        sum += frequency;
                    }
                }
                if (ok && n > 0 && sum != total) ok = 0;
                position = (position + 3) & ~3u;
                const u32 statesAt = position, countsAt = position + 128;
                u32 cursor = position + 256;
                if (ok && cursor > length) ok = 0;
                for (u32 j = 0; ok && j < 32; ++j) {
                    const u32 state = load32(s + statesAt + 4 * j), words = load32(s + countsAt + 4 * j);
                    if (state < 65536u || (u64)cursor + 2ull * words > length) { ok = 0; break; }
                    t.laneState[j] = state;
                    t.laneStart[j] = cursor;
                    cursor += 2 * words;
                    t.laneEnd[j] = cursor;
                }
                if (ok && cursor != length) ok = 0;
                t.flag = ok ? TORPOR_OK : TORPOR_BAD;
            }
            __syncwarp();
            if (t.flag != TORPOR_OK) return t.flag;
            for (u32 symbol = lane; symbol < 256; symbol += 32) {
                const u32 frequency = t.frequencies[symbol], start = t.starts[symbol];
                for (u32 k = 0; k < frequency; ++k) {
                    t.entries[start + k] = (frequency << 16) | k;
                    t.symbols[start + k] = (u8)symbol;
                }
            }
            __syncwarp();
            const u32 mask = (1u << scaleBits) - 1;
            u32 x = t.laneState[lane], cursor = t.laneStart[lane];
            const u32 end = t.laneEnd[lane];
            // Lanes' words start at even offsets of the stream: 16-bit loads when the stream is 2-byte aligned.
            const bool even = ((u64)s & 1) == 0;
            int good = 1;
            for (u32 i = lane; i < n; i += 32) {
                const u32 slot = x & mask, entry = t.entries[slot];
                out[(u64)i * width + plane] = t.symbols[slot];
                x = (entry >> 16) * (x >> scaleBits) + (entry & 0xFFFF);
                if (x < 65536u) {
                    if (cursor + 2 > end) { good = 0; break; }
                    const u32 word = even ? (u32)__ldg((const u16 *)(s + cursor)) : load16(s + cursor);
                    x = (x << 16) | word;
                    cursor += 2;
                }
            }
            if (!good || x != 65536u || cursor != end) atomicExch(&t.flag, TORPOR_BAD);
            __syncwarp();
            return t.flag;
        }

        // Undoes the exponent-aligned transform of the 16-bit half at byte `at` (even) of a little-endian u32.
        __device__ __forceinline__ u32 untransform(u32 word, u32 at) {
            const u32 shift = 8 * (at & 3), half = (word >> shift) & 0xFFFF;
            const u32 sm = half & 0xFF, exponent = half >> 8;
            const u32 value = ((sm & 0x80) << 8) | (exponent << 7) | (sm & 0x7F);
            return (word & ~(0xFFFFu << shift)) | (value << shift);
        }

        // Elements [16 g, 16 g + 16) of a chunk of width W: raw planes' bytes merged into the rANS planes' bytes
        // already in `out`, the transform undone, written back with 16-byte stores. Every pointer 16-byte aligned.
        template <int W>
        __device__ __forceinline__ void mergeGroup(u8 *out, const Chunk &c, u32 g) {
            u32 w[4 * W];
            uint4 *target = (uint4 *)(out + 16ull * W * g);
            #pragma unroll
            for (int q = 0; q < W; ++q) {
                uint4 v = make_uint4(0, 0, 0, 0);
                if (c.rANSMask) v = target[q];
                w[4 * q] = v.x; w[4 * q + 1] = v.y; w[4 * q + 2] = v.z; w[4 * q + 3] = v.w;
            }
            #pragma unroll
            for (int p = 0; p < W; ++p) {
                if (c.rawMask & (1u << p)) {
                    const uint4 v = __ldg((const uint4 *)(c.planes[p] + 16ull * g));
                    const u32 r[4] = {v.x, v.y, v.z, v.w};
                    #pragma unroll
                    for (int k = 0; k < 16; ++k) {
                        const u32 byte = (r[k >> 2] >> (8 * (k & 3))) & 0xFF;
                        const int at = k * W + p;
                        w[at >> 2] = (w[at >> 2] & ~(0xFFu << (8 * (at & 3)))) | (byte << (8 * (at & 3)));
                    }
                }
            }
            if (c.transform == 1) {
                #pragma unroll
                for (int k = 0; k < 16; ++k) {
                    const int at = k * W + (W == 2 ? 0 : 2);
                    w[at >> 2] = untransform(w[at >> 2], at);
                }
            }
            #pragma unroll
            for (int q = 0; q < W; ++q) target[q] = make_uint4(w[4 * q], w[4 * q + 1], w[4 * q + 2], w[4 * q + 3]);
        }

        // Element i, one byte at a time: for outputs or planes that are not 16-byte aligned, and the last elements.
        __device__ __forceinline__ void mergeElement(u8 *out, const Chunk &c, u32 i) {
            u8 *element = out + (u64)i * c.width;
            for (u32 p = 0; p < c.width; ++p)
                if (c.rawMask & (1u << p)) element[p] = c.planes[p][i];
            if (c.transform == 1) {
                u8 *word = element + (c.width == 2 ? 0 : 2);
                const u32 sm = word[0], exponent = word[1];
                const u32 value = ((sm & 0x80) << 8) | (exponent << 7) | (sm & 0x7F);
                word[0] = (u8)(value & 0xFF);
                word[1] = (u8)(value >> 8);
            }
        }

        extern "C" __global__ void __launch_bounds__(THREADS)
        torpor_byteplane_decode(const u8 *const *inputs, const u64 *inputSizes, u8 *const *outputs,
                                const u64 *outputSizes, u64 *resultSizes, int *statuses, u32 count) {
            __shared__ Tables t;
            __shared__ Chunk c;
            const u32 chunk = blockIdx.x, thread = threadIdx.x;
            if (chunk >= count) return;
            const u8 *in = inputs[chunk];
            const u64 size = inputSizes[chunk], outSize = outputSizes[chunk];
            u8 *out = outputs[chunk];
            // The header and every plane's bounds, checked before any byte is written.
            if (thread == 0) {
                int status = TORPOR_OK;
                u32 width = 0, transform = 0, n = 0, header = 0, rawMask = 0, rANSMask = 0;
                if (size < 8) {
                    status = TORPOR_BAD;
                } else {
                    width = in[1];
                    transform = in[2];
                    n = load32(in + 4);
                    header = (8 + 12 * width + 15) & ~15u;
                    if (in[0] != 1 || (width != 2 && width != 4) || transform > 1 || (u64)n * width != outSize ||
                        size < header)
                        status = TORPOR_BAD;
                }
                for (u32 plane = 0; status == TORPOR_OK && plane < width; ++plane) {
                    const u8 *entry = in + 8 + 12 * plane;
                    const u32 encoding = entry[0], offset = load32(entry + 4), length = load32(entry + 8);
                    c.planes[plane] = 0;
                    if (offset < header || offset > size || length > size - offset) {
                        status = TORPOR_BAD;
                    } else if (encoding == 0) {
                        if (length != n) status = TORPOR_BAD;
                        c.planes[plane] = in + offset;
                        rawMask |= 1u << plane;
                    } else if (encoding == 1) {
                        rANSMask |= 1u << plane;
                    } else {
                        status = TORPOR_BAD;
                    }
                }
                c.width = width; c.transform = transform; c.n = n; c.rawMask = rawMask; c.rANSMask = rANSMask;
                c.status = status;
            }
            __syncthreads();
            if (thread < 32 && c.status == TORPOR_OK) {
                int status = TORPOR_OK;
                for (u32 plane = 0; status == TORPOR_OK && plane < c.width; ++plane) {
                    if (!(c.rANSMask & (1u << plane))) continue;
                    const u8 *entry = in + 8 + 12 * plane;
                    status = decodePlane(in + load32(entry + 4), load32(entry + 8), out, c.n, c.width, plane,
                                         thread, t);
                }
                if (thread == 0) c.status = status;
            }
            __syncthreads();
            if (c.status == TORPOR_OK && (c.rawMask || c.transform == 1)) {
                bool aligned = ((u64)out & 15) == 0;
                for (u32 plane = 0; plane < c.width; ++plane)
                    if (c.rawMask & (1u << plane)) aligned = aligned && ((u64)c.planes[plane] & 15) == 0;
                const u32 n = c.n, groups = aligned ? n / 16 : 0;
                if (c.width == 2) {
                    for (u32 g = thread; g < groups; g += THREADS) mergeGroup<2>(out, c, g);
                } else {
                    for (u32 g = thread; g < groups; g += THREADS) mergeGroup<4>(out, c, g);
                }
                for (u32 i = 16 * groups + thread; i < n; i += THREADS) mergeElement(out, c, i);
            }
            if (thread == 0) {
                statuses[chunk] = c.status;
                resultSizes[chunk] = c.status == TORPOR_OK ? outSize : 0;
            }
        }
        """#
}
