public import CTorporABI
import Dispatch
import FoundationEssentials
import Glibc
import Synchronization
import TorporCheckpoint
import TorporGPU

@_cdecl("torpor_save_options_init")
public func torpor_save_options_init(_ options: UnsafeMutablePointer<torpor_save_options>?) {
    guard let options else { return }
    options.pointee = torpor_save_options()
    options.pointee.gpu_encode = -1
    options.pointee.keep_memory = 1
}

/// The tensors a save names, checked and staged; where each one's bytes come from.
private struct SaveInput {
    var staged: StagedSafetensors
    var host: [(source: UnsafeRawPointer, index: Int)] = []
    var device: [Int32: [(address: UInt64, index: Int)]] = [:]
}

private func saveInput(
    _ tensors: UnsafePointer<torpor_tensor>?, _ count: Int64, metadata: [String: String],
    memory: (Int, String) throws(CheckpointError) -> MappedFile
) throws(CheckpointError) -> SaveInput {
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
    var input = SaveInput(staged: try StagedSafetensors(described, metadata: metadata, memory: memory))
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

private func seconds(since start: ContinuousClock.Instant) -> Double {
    (ContinuousClock.now - start) / .seconds(1)
}

/// The save's options: the caller's, or the defaults where it passed none.
private func saveSettings(_ options: UnsafePointer<torpor_save_options>?) -> torpor_save_options {
    var settings = torpor_save_options()
    torpor_save_options_init(&settings)
    if let options { settings = options.pointee }
    return settings
}

private func metadata(_ settings: torpor_save_options) throws(CheckpointError) -> [String: String] {
    guard let json = string(settings.metadata_json) else { return [:] }
    do {
        return try JSONDecoder().decode([String: String].self, from: Data(json.utf8))
    } catch {
        throw CheckpointError(
            .invalidArgument, "metadata_json must be a JSON object of strings, not \(json.prefix(200))")
    }
}

/// What a save holds until it ends and then gives back to `SaveMemory` (or frees): its staging region and its
/// GPU encoder.
private final class SaveLoan: @unchecked Sendable {
    let keep: Bool
    var region: StagingRegion?
    var encoder: (GPUBatchEncoder, SaveMemory.EncoderKey)?

    init(keep: Bool) { self.keep = keep }

    func end() {
        if let region { SaveMemory.shared.giveBack(region, keep: keep) }
        if let (encoder, key) = encoder { SaveMemory.shared.giveBack(encoder, key: key, keep: keep) }
        region = nil
        encoder = nil
    }
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
    let settings = saveSettings(options)
    let loan = SaveLoan(keep: settings.keep_memory != 0)
    do {
        let codecName = string(settings.codec) ?? "auto"
        guard let codec = CodecChoice(name: codecName) else {
            throw CheckpointError(
                .invalidArgument,
                "unknown codec \"\(codecName)\"; use one of: \(CodecChoice.names.joined(separator: ", "))")
        }
        var packOptions = PackOptions(
            codec: codec, chunkSize: settings.chunk_size > 0 ? Int(settings.chunk_size) : 1 << 20,
            workers: settings.threads > 0 ? Int(settings.threads) : nil)
        var capture = torpor_save_info()
        var started = ContinuousClock.now
        let input = try saveInput(tensors, count, metadata: try metadata(settings)) {
            (bytes, name) throws(CheckpointError) in
            let (region, reused) = try SaveMemory.shared.takeRegion(bytes)
            loan.region = region
            capture.memory_reused = reused ? 1 : 0
            return region.file(count: bytes, name: name)
        }
        let staged = input.staged
        capture.memory_seconds = seconds(since: started)

        // Capture every byte before returning: host tensors on every core, then device tensors.
        started = ContinuousClock.now
        let host = UncheckedSendable(input.host)
        DispatchQueue.concurrentPerform(iterations: input.host.count) { item in
            let (source, index) = host.value[item]
            let destination = staged.destination(of: index)
            destination.baseAddress!.copyMemory(from: source, byteCount: destination.count)
        }
        var copySeconds = seconds(since: started)
        // Device tensors: a snapshot in device memory where there is room (a device-to-device copy, so the
        // caller's next step waits milliseconds, not a copy over the host link), copied to the host in the
        // background; else straight to the host now. Either copy to the host goes into pinned memory, which a
        // kept staging region already is.
        let runtime = GPURuntime.shared
        var snapshots: [(snapshot: DeviceSnapshot, destinations: [UnsafeMutableRawBufferPointer])] = []
        for (ordinal, pieces) in input.device.sorted(by: { $0.key < $1.key }) {
            let device = try runtime.device(ordinal)
            let destinations = pieces.map { staged.destination(of: $0.index) }
            started = ContinuousClock.now
            try device.synchronize(externalStream: settings.stream)
            capture.wait_seconds += seconds(since: started)
            started = ContinuousClock.now
            if let snapshot = try DeviceSnapshot(
                device: device, pieces: zip(pieces, destinations).map { ($0.address, $1.count) },
                after: settings.stream)
            {
                snapshots.append((snapshot, destinations))
                capture.device_capture = max(capture.device_capture, 1)
            } else {
                try loan.region?.pin(on: device)
                try device.copyToHost(zip(pieces, destinations).map { ($0.address, $1) })
                capture.device_capture = 2
            }
            copySeconds += seconds(since: started)
        }
        capture.copy_seconds = copySeconds

        // Encode on the GPU when asked, or when the tensors came from one and nvCOMP is there.
        let wantsGPU = settings.gpu_encode > 0 || (settings.gpu_encode < 0 && !input.device.isEmpty)
        if wantsGPU {
            do {
                let ordinal = input.device.keys.min() ?? 0
                let key = SaveMemory.EncoderKey(
                    ordinal: ordinal, chunkSize: packOptions.chunkSize, nvcompPath: string(settings.nvcomp_path) ?? "")
                let encoder = try SaveMemory.shared.takeEncoder(key) { () throws(GPUError) in
                    try GPUBatchEncoder(
                        nvcomp: try runtime.nvcomp(string(settings.nvcomp_path)), device: try runtime.device(ordinal),
                        maxChunkBytes: packOptions.chunkSize)
                }
                loan.encoder = (encoder, key)
                packOptions.gpuEncoder = encoder
            } catch {
                guard settings.gpu_encode < 0 else { throw error }
                packOptions.gpuEncoder = nil  // "when available": the CPU codecs instead
            }
        }
        try packOptions.validate()
        let options = packOptions
        let pending = Mutex(UncheckedSendable(snapshots))
        let handle = SaveHandle(capture: capture) {
            defer { loan.end() }
            // The snapshots reach the host first, and their device memory is freed before the encoding starts.
            try pending.withLock { taken in
                defer { taken = UncheckedSendable([]) }
                for (snapshot, destinations) in taken.value {
                    try loan.region?.pin(on: snapshot.device)
                    try snapshot.copyToHost(destinations)
                }
            }
            return try staged.pack(to: path, options: options)
        }
        out.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
        return TORPOR_OK
    } catch {
        loan.end()
        return fail(error)
    }
}
