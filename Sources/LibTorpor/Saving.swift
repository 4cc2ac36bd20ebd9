public import CTorporABI
import Dispatch
import FoundationEssentials
import Glibc
import Synchronization
import TorporCheckpoint
import TorporGPU

/// What a `torpor_save *` points to: a save whose bytes are captured and whose encoding and writing run on a
/// background thread.
final class SaveHandle: Sendable {
    private struct Outcome {
        var finished = false
        var status = TORPOR_OK
        var message = ""
        var sourceBytes = 0
        var containerBytes = 0
    }

    private let outcome = Mutex(Outcome())
    private let finished = DispatchSemaphore(value: 0)

    /// Runs `work` on a background thread, recording how it ends.
    init(_ work: @escaping @Sendable () throws -> PackedFile) {
        DispatchQueue.global(qos: .utility).async { [self] in
            var result = Outcome(finished: true)
            do {
                let packed = try work()
                result.sourceBytes = packed.sourceBytes
                result.containerBytes = packed.containerBytes
            } catch {
                result.status = fail(error)
                result.message = String(cString: torpor_last_error())
            }
            outcome.withLock { $0 = result }
            finished.signal()
        }
    }

    var isFinished: Bool { outcome.withLock { $0.finished } }

    /// Waits for the end; the status, with the message recorded as the caller thread's last error on failure.
    func wait() -> torpor_status {
        if !isFinished {
            finished.wait()
            finished.signal()  // later waits return at once
        }
        let (status, message) = outcome.withLock { ($0.status, $0.message) }
        return status == TORPOR_OK ? TORPOR_OK : fail(status, message)
    }

    var sizes: (source: Int, container: Int) { outcome.withLock { ($0.sourceBytes, $0.containerBytes) } }

    static func from(_ pointer: OpaquePointer?) -> SaveHandle? {
        pointer.map { Unmanaged<SaveHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
    }
}

@_cdecl("torpor_save_options_init")
public func torpor_save_options_init(_ options: UnsafeMutablePointer<torpor_save_options>?) {
    guard let options else { return }
    options.pointee = torpor_save_options()
    options.pointee.gpu_encode = -1
}

/// The tensors a save names, checked and staged; where each one's bytes come from.
private struct SaveInput {
    var staged: StagedSafetensors
    var host: [(source: UnsafeRawPointer, index: Int)] = []
    var device: [Int32: [(address: UInt64, index: Int)]] = [:]
}

private func saveInput(_ tensors: UnsafePointer<torpor_tensor>?, _ count: Int64, metadata: [String: String])
    throws(CheckpointError) -> SaveInput
{
    guard count >= 0, count == 0 || tensors != nil else {
        throw CheckpointError(.invalidArgument, "tensors must not be null for \(count) tensors")
    }
    var described: [StagedSafetensors.Tensor] = []
    for item in 0..<Int(count) {
        let tensor = tensors![item]
        guard let name = string(tensor.name) else {
            throw CheckpointError(.invalidArgument, "tensor \(item) has a null name")
        }
        guard let dtypeName = string(tensor.dtype), let dtype = DType(rawValue: dtypeName) else {
            throw CheckpointError(
                .invalidArgument,
                "tensor \"\(name)\": unknown dtype \"\(string(tensor.dtype) ?? "null")\"; use one of "
                    + DType.allCases.map(\.rawValue).joined(separator: ", "))
        }
        guard tensor.ndim >= 0, tensor.ndim <= TORPOR_MAX_DIMS, tensor.ndim == 0 || tensor.shape != nil else {
            throw CheckpointError(.invalidArgument, "tensor \"\(name)\": bad ndim \(tensor.ndim) or null shape")
        }
        let shape = (0..<Int(tensor.ndim)).map { Int(tensor.shape![$0]) }
        described.append(.init(name: name, dtype: dtype, shape: shape))
    }
    var input = SaveInput(staged: try StagedSafetensors(described, metadata: metadata))
    for item in 0..<Int(count) {
        let tensor = tensors![item]
        let expected = input.staged.ranges[item].count
        guard tensor.nbytes == expected else {
            throw CheckpointError(
                .invalidArgument,
                "tensor \"\(described[item].name)\": nbytes is \(tensor.nbytes), but \(described[item].dtype.rawValue) "
                    + "\(described[item].shape) is \(expected) bytes")
        }
        guard expected > 0 else { continue }
        guard let data = tensor.data else {
            throw CheckpointError(.invalidArgument, "tensor \"\(described[item].name)\" has null data")
        }
        if tensor.device < 0 {
            input.host.append((data, item))
        } else {
            input.device[tensor.device, default: []].append((UInt64(UInt(bitPattern: data)), item))
        }
    }
    return input
}

/// The staged file's memory, which the device copies write into (registered with the driver for them).
private func writableMemory(of staged: StagedSafetensors) -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(
        start: UnsafeMutableRawPointer(mutating: staged.mapping.bytes.baseAddress!), count: staged.mapping.count)
}

@_cdecl("torpor_save_start")
public func torpor_save_start(
    _ path: UnsafePointer<CChar>?, _ tensors: UnsafePointer<torpor_tensor>?, _ count: Int64,
    _ options: UnsafePointer<torpor_save_options>?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> torpor_status {
    guard let path = string(path), let out else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_save_start: path and out must not be null")
    }
    out.pointee = nil
    var settings = torpor_save_options()
    torpor_save_options_init(&settings)
    if let options { settings = options.pointee }
    do {
        var metadata: [String: String] = [:]
        if let json = string(settings.metadata_json) {
            do {
                metadata = try JSONDecoder().decode([String: String].self, from: Data(json.utf8))
            } catch {
                throw CheckpointError(
                    .invalidArgument, "metadata_json must be a JSON object of strings, not \(json.prefix(200))")
            }
        }
        let codecName = string(settings.codec) ?? "auto"
        guard let codec = CodecChoice(name: codecName) else {
            throw CheckpointError(
                .invalidArgument,
                "unknown codec \"\(codecName)\"; use one of: \(CodecChoice.names.joined(separator: ", "))")
        }
        var packOptions = PackOptions(
            codec: codec, chunkSize: settings.chunk_size > 0 ? Int(settings.chunk_size) : 1 << 20,
            workers: settings.threads > 0 ? Int(settings.threads) : nil)
        let input = try saveInput(tensors, count, metadata: metadata)
        let staged = input.staged

        // Capture every byte before returning: host tensors on every core, then device tensors.
        let host = UncheckedSendable(input.host)
        DispatchQueue.concurrentPerform(iterations: input.host.count) { item in
            let (source, index) = host.value[item]
            let destination = staged.destination(of: index)
            destination.baseAddress!.copyMemory(from: source, byteCount: destination.count)
        }
        // Device tensors: a snapshot in device memory where there is room (a device-to-device copy, so the
        // caller's next step waits milliseconds, not a copy over the host link), copied to the host in the
        // background; else straight to the host now.
        let runtime = GPURuntime.shared
        var snapshots: [(snapshot: DeviceSnapshot, destinations: [UnsafeMutableRawBufferPointer])] = []
        for (ordinal, pieces) in input.device.sorted(by: { $0.key < $1.key }) {
            let device = try runtime.device(ordinal)
            let destinations = pieces.map { staged.destination(of: $0.index) }
            if let snapshot = try DeviceSnapshot(
                device: device, pieces: zip(pieces, destinations).map { ($0.address, $1.count) },
                after: settings.stream)
            {
                snapshots.append((snapshot, destinations))
            } else {
                try device.synchronize(externalStream: settings.stream)
                try device.copyToHost(
                    zip(pieces, destinations).map { ($0.address, $1) }, through: writableMemory(of: staged))
            }
        }

        // Encode on the GPU when asked, or when the tensors came from one and nvCOMP is there.
        let wantsGPU = settings.gpu_encode > 0 || (settings.gpu_encode < 0 && !input.device.isEmpty)
        if wantsGPU {
            do {
                let ordinal = input.device.keys.min() ?? 0
                packOptions.gpuEncoder = try GPUBatchEncoder(
                    nvcomp: try runtime.nvcomp(string(settings.nvcomp_path)), device: try runtime.device(ordinal),
                    maxChunkBytes: packOptions.chunkSize)
            } catch {
                guard settings.gpu_encode < 0 else { throw error }
                packOptions.gpuEncoder = nil  // "when available": the CPU codecs instead
            }
        }
        try packOptions.validate()
        let options = packOptions
        let pending = Mutex(UncheckedSendable(snapshots))
        let handle = SaveHandle {
            // The snapshots reach the host first, and their device memory is freed before the encoding starts.
            try pending.withLock { taken in
                defer { taken = UncheckedSendable([]) }
                for (snapshot, destinations) in taken.value {
                    try snapshot.copyToHost(destinations, through: writableMemory(of: staged))
                }
            }
            return try staged.pack(to: path, options: options)
        }
        out.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
        return TORPOR_OK
    } catch {
        return fail(error)
    }
}

@_cdecl("torpor_save_done")
public func torpor_save_done(_ save: OpaquePointer?) -> Int32 {
    SaveHandle.from(save)?.isFinished ?? true ? 1 : 0
}

@_cdecl("torpor_save_wait")
public func torpor_save_wait(_ save: OpaquePointer?) -> torpor_status {
    guard let handle = SaveHandle.from(save) else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_save_wait: the save is null")
    }
    return handle.wait()
}

@_cdecl("torpor_save_sizes")
public func torpor_save_sizes(
    _ save: OpaquePointer?, _ sourceBytes: UnsafeMutablePointer<Int64>?, _ containerBytes: UnsafeMutablePointer<Int64>?
) -> torpor_status {
    guard let handle = SaveHandle.from(save) else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_save_sizes: the save is null")
    }
    let status = handle.wait()
    guard status == TORPOR_OK else { return status }
    let sizes = handle.sizes
    sourceBytes?.pointee = Int64(sizes.source)
    containerBytes?.pointee = Int64(sizes.container)
    return TORPOR_OK
}

@_cdecl("torpor_save_free")
public func torpor_save_free(_ save: OpaquePointer?) {
    guard let save, let handle = SaveHandle.from(save) else { return }
    _ = handle.wait()
    Unmanaged<SaveHandle>.fromOpaque(UnsafeRawPointer(save)).release()
}
