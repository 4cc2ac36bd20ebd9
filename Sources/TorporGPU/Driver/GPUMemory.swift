public import CTorporCUDA
import FoundationEssentials
public import TorporCheckpoint

/// One GPU with its primary context made current on the calling thread.
///
/// The primary context is the one nvCOMP's static runtime and PyTorch use, so device pointers pass freely
/// between them and Torpor.
public final class GPUDevice: Sendable {
    public let driver: CUDADriver
    public let info: CUDADriver.DeviceInfo
    private let device: CTorporCUDA_Device
    nonisolated(unsafe) private let context: CTorporCUDA_Context

    /// Retains device `ordinal`'s primary context: the one place a device is opened.
    /// - Throws: `GPUError` `.noDevice` ("there is no GPU N: the driver sees M") for a device the driver does not see.
    public init(driver: CUDADriver, ordinal: Int) throws(GPUError) {
        self.driver = driver
        info = try driver.deviceInfo(ordinal)
        var device: CTorporCUDA_Device = 0
        try driver.check(driver.cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet(\(ordinal))")
        var context: CTorporCUDA_Context?
        try driver.check(driver.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain(\(ordinal))")
        self.device = device
        self.context = context!
        try makeCurrent()
    }

    deinit { _ = driver.cuDevicePrimaryCtxRelease(device) }

    /// Makes the context current on this thread (CUDA contexts are per thread).
    public func makeCurrent() throws(GPUError) {
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    }

    /// Free and total device memory.
    public func memoryInfo() throws(GPUError) -> (free: Int, total: Int) {
        try makeCurrent()
        var free = 0
        var total = 0
        try driver.check(driver.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }
}

extension GPUDevice {
    /// Waits until everything queued on a stream the caller owns (a `CUstream`, e.g. PyTorch's
    /// `torch.cuda.current_stream().cuda_stream`; nil: the legacy default stream) has run.
    public func synchronize(externalStream stream: UnsafeMutableRawPointer?) throws(GPUError) {
        try makeCurrent()
        try driver.check(driver.cuStreamSynchronize(stream.map { OpaquePointer($0) }), "cuStreamSynchronize")
    }

    /// Copies device memory to host memory, each piece `(address, destination)`; at pinned speed when the
    /// destinations are registered with the driver (`PinnedBuffer(registering:)`), which the caller keeps across
    /// copies: registering gigabytes costs tenths of a second of driver time and stalls the process's other CUDA
    /// calls.
    public func copyToHost(_ pieces: [(address: UInt64, destination: UnsafeMutableRawBufferPointer)])
        throws(GPUError)
    {
        guard pieces.contains(where: { $0.destination.count > 0 }) else { return }
        try makeCurrent()
        let stream = try GPUStream(device: self)
        for piece in pieces where piece.destination.count > 0 {
            try stream.copy(
                toHost: piece.destination.baseAddress!, fromDevice: piece.address, count: piece.destination.count)
        }
        try stream.synchronize()
    }
}

/// A CUDA stream, destroyed with its owner.
public final class GPUStream: @unchecked Sendable {
    let device: GPUDevice
    let handle: CTorporCUDA_Stream

    public init(device: GPUDevice) throws(GPUError) {
        self.device = device
        try device.makeCurrent()
        var stream: CTorporCUDA_Stream?
        try device.driver.check(
            device.driver.cuStreamCreate(&stream, UInt32(CTorporCUDA_StreamNonBlocking)), "cuStreamCreate")
        handle = stream!
    }

    deinit { _ = device.driver.cuStreamDestroy(handle) }

    /// The stream as nvCOMP takes it.
    var opaque: UnsafeMutableRawPointer { UnsafeMutableRawPointer(handle) }

    /// Waits until everything queued on the stream has run.
    public func synchronize() throws(GPUError) {
        try device.driver.check(device.driver.cuStreamSynchronize(handle), "cuStreamSynchronize")
    }

    /// Queues a copy of `count` bytes from pinned host memory to the device address `destination`.
    public func copy(toDevice destination: UInt64, from source: UnsafeRawPointer, count: Int) throws(GPUError) {
        try device.driver.check(
            device.driver.cuMemcpyHtoDAsync(destination, source, count, handle), "cuMemcpyHtoDAsync(\(count) bytes)")
    }

    /// Queues a copy of `count` bytes between device addresses.
    public func copy(toDevice destination: UInt64, fromDevice source: UInt64, count: Int) throws(GPUError) {
        try device.driver.check(
            device.driver.cuMemcpyDtoDAsync(destination, source, count, handle), "cuMemcpyDtoDAsync(\(count) bytes)")
    }

    /// Queues a copy of `count` bytes from the device address `source` to pinned host memory.
    public func copy(toHost destination: UnsafeMutableRawPointer, fromDevice source: UInt64, count: Int)
        throws(GPUError)
    {
        try device.driver.check(
            device.driver.cuMemcpyDtoHAsync(destination, source, count, handle), "cuMemcpyDtoHAsync(\(count) bytes)")
    }

    /// Makes later work on this stream wait for `event`.
    public func wait(for event: GPUEvent) throws(GPUError) {
        try device.driver.check(device.driver.cuStreamWaitEvent(handle, event.handle, 0), "cuStreamWaitEvent")
    }
}

/// A CUDA event, for ordering streams and timing.
public final class GPUEvent: @unchecked Sendable {
    let device: GPUDevice
    let handle: CTorporCUDA_Event

    public init(device: GPUDevice, timing: Bool = false) throws(GPUError) {
        self.device = device
        var event: CTorporCUDA_Event?
        let flags = timing ? CTorporCUDA_EventDefault : CTorporCUDA_EventDisableTiming
        try device.driver.check(device.driver.cuEventCreate(&event, UInt32(flags)), "cuEventCreate")
        handle = event!
    }

    deinit { _ = device.driver.cuEventDestroy(handle) }

    public func record(on stream: GPUStream) throws(GPUError) {
        try device.driver.check(device.driver.cuEventRecord(handle, stream.handle), "cuEventRecord")
    }

    public func synchronize() throws(GPUError) {
        try device.driver.check(device.driver.cuEventSynchronize(handle), "cuEventSynchronize")
    }

    /// Milliseconds from `start` to this event (both recorded with timing).
    public func milliseconds(since start: GPUEvent) throws(GPUError) -> Double {
        var value: Float = 0
        try device.driver.check(device.driver.cuEventElapsedTime(&value, start.handle, handle), "cuEventElapsedTime")
        return Double(value)
    }
}

/// Device memory, freed with its owner.
public final class DeviceBuffer: @unchecked Sendable {
    let device: GPUDevice
    /// The device address.
    public let address: CTorporCUDA_DevicePointer
    public let count: Int

    /// Allocates `count` bytes (at least 1) of device memory.
    /// - Throws: `GPUError` `.outOfMemory` naming the size and what is free.
    public init(device: GPUDevice, count: Int) throws(GPUError) {
        self.device = device
        self.count = count
        try device.makeCurrent()
        var pointer: CTorporCUDA_DevicePointer = 0
        let result = device.driver.cuMemAlloc(&pointer, max(count, 1))
        if result == CTorporCUDA_ErrorOutOfMemory {
            let free = (try? device.memoryInfo().free) ?? -1
            throw GPUError(
                .outOfMemory,
                "GPU \(device.info.ordinal) (\(device.info.name)) cannot allocate \(count) bytes; \(free) bytes are free"
            )
        }
        try device.driver.check(result, "cuMemAlloc(\(count))")
        address = pointer
    }

    deinit { _ = device.driver.cuMemFree(address) }

    /// The address `offset` bytes in, as a raw pointer for pointer tables.
    public func pointer(at offset: Int = 0) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: UInt(address) + UInt(offset))!
    }

    /// Copies `count` bytes from pinned host memory at `source` to `offset`, on `stream`.
    public func copy(from source: UnsafeRawPointer, count: Int, to offset: Int = 0, on stream: GPUStream)
        throws(GPUError)
    {
        precondition(offset + count <= self.count)
        try device.driver.check(
            device.driver.cuMemcpyHtoDAsync(address + UInt64(offset), source, count, stream.handle),
            "cuMemcpyHtoDAsync(\(count) bytes)")
    }

    /// Copies `count` bytes at `offset` to host memory at `destination`, on `stream`.
    public func copy(
        to destination: UnsafeMutableRawPointer, count: Int, from offset: Int = 0, on stream: GPUStream
    ) throws(GPUError) {
        precondition(offset + count <= self.count)
        try device.driver.check(
            device.driver.cuMemcpyDtoHAsync(destination, address + UInt64(offset), count, stream.handle),
            "cuMemcpyDtoHAsync(\(count) bytes)")
    }
}

/// Page-locked host memory: the only memory the GPU copies from at full speed (pageable copies run at a tenth).
public final class PinnedBuffer: @unchecked Sendable {
    let driver: CUDADriver
    public let pointer: UnsafeMutableRawPointer
    public let count: Int
    private let registered: Bool

    /// Allocates `count` bytes of pinned memory.
    public init(device: GPUDevice, count: Int) throws(GPUError) {
        driver = device.driver
        self.count = count
        try device.makeCurrent()
        var pointer: UnsafeMutableRawPointer?
        try driver.check(
            driver.cuMemHostAlloc(&pointer, max(count, 1), UInt32(CTorporCUDA_MemHostAllocPortable)),
            "cuMemHostAlloc(\(count))")
        self.pointer = pointer!
        registered = false
    }

    /// Pins existing memory (a mapped file, say) in place: no copy.
    /// - Parameters:
    ///   - readOnly: the GPU only reads it (allowed on read-only mappings).
    public init(device: GPUDevice, registering pointer: UnsafeMutableRawPointer, count: Int, readOnly: Bool)
        throws(GPUError)
    {
        driver = device.driver
        self.count = count
        try device.makeCurrent()
        var flags = UInt32(CTorporCUDA_MemHostRegisterPortable)
        if readOnly { flags |= UInt32(CTorporCUDA_MemHostRegisterReadOnly) }
        try driver.check(driver.cuMemHostRegister(pointer, count, flags), "cuMemHostRegister(\(count) bytes)")
        self.pointer = pointer
        registered = true
    }

    deinit {
        if registered {
            _ = driver.cuMemHostUnregister(pointer)
        } else {
            _ = driver.cuMemFreeHost(pointer)
        }
    }
}
