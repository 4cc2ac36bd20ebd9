public import TorporCheckpoint

/// Pieces of device memory copied into one new device buffer: a save's capture of GPU tensors in the time of a
/// device-to-device copy (a few milliseconds for gigabytes), after which the caller may change the tensors while
/// the snapshot goes to host memory (`copyToHost`) on another thread, off the caller's path. Its memory is freed
/// with it.
public final class DeviceSnapshot: @unchecked Sendable {
    public let device: GPUDevice
    private let buffer: DeviceBuffer
    /// Each piece's offset in the buffer and its byte count, in the order given.
    private let layout: [(offset: Int, count: Int)]

    /// Device memory the snapshot leaves free at least: a snapshot that would leave less is not taken.
    public static let reserveBytes = 1 << 30

    /// Copies `pieces` (device address, byte count) into a new buffer once the work queued on `externalStream`
    /// (nil: the legacy default stream) has run; returns when the copies are done. Returns nil, having copied
    /// nothing, when the device has not `reserveBytes` free beside the snapshot.
    public init?(
        device: GPUDevice, pieces: [(address: UInt64, count: Int)], after externalStream: UnsafeMutableRawPointer?
    ) throws(GPUError) {
        var layout: [(offset: Int, count: Int)] = []
        var total = 0
        for piece in pieces {
            layout.append((total, piece.count))
            total += (piece.count + 255) / 256 * 256
        }
        guard try device.memoryInfo().free >= total + Self.reserveBytes else { return nil }
        let buffer: DeviceBuffer
        do {
            buffer = try DeviceBuffer(device: device, count: total)
        } catch let error where error.code == .outOfMemory {
            return nil  // taken by someone else since the look
        }
        try device.synchronize(externalStream: externalStream)
        let stream = try GPUStream(device: device)
        for (piece, place) in zip(pieces, layout) where place.count > 0 {
            try stream.copy(
                toDevice: buffer.address + UInt64(place.offset), fromDevice: piece.address, count: place.count)
        }
        try stream.synchronize()
        self.device = device
        self.buffer = buffer
        self.layout = layout
    }

    /// Copies piece `i` to `destinations[i]` (as many bytes as the piece has), at pinned speed when the
    /// destinations are registered with the driver.
    public func copyToHost(_ destinations: [UnsafeMutableRawBufferPointer]) throws(GPUError) {
        precondition(destinations.count == layout.count)
        try device.copyToHost(
            zip(layout, destinations).map { place, destination in
                (buffer.address + UInt64(place.offset), destination)
            })
    }
}
