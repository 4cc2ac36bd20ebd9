public import CTorporABI
import FoundationEssentials
import Glibc
import Synchronization
import TorporCheckpoint
import TorporGPU

/// What a `torpor_container *` points to: the open container and the C strings `torpor_tensor_info_at` hands out,
/// which live as long as it.
final class ContainerHandle {
    let container: Container
    let names: [UnsafeMutablePointer<CChar>]
    let dtypes: [UnsafeMutablePointer<CChar>]
    let codecs: [UnsafeMutablePointer<CChar>]
    let metadataJSON: UnsafeMutablePointer<CChar>
    let numbers: [String: Int]

    init(_ container: Container) {
        self.container = container
        let tensors = container.index.tensors
        names = tensors.map { strdup($0.name)! }
        dtypes = tensors.map { strdup($0.dtype.rawValue)! }
        codecs = tensors.map { strdup($0.codec)! }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = (try? encoder.encode(container.sourceHeader.metadata)).map { String(decoding: $0, as: UTF8.self) }
        metadataJSON = strdup(json ?? "{}")!
        var numbers: [String: Int] = [:]
        for (number, tensor) in tensors.enumerated() { numbers[tensor.name] = number }
        self.numbers = numbers
    }

    deinit {
        for pointer in names + dtypes + codecs { free(pointer) }
        free(metadataJSON)
    }

    static func from(_ pointer: OpaquePointer?) -> ContainerHandle? {
        pointer.map { Unmanaged<ContainerHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
    }

    /// The tensors `names` asks for with the sizes the caller gave, checked: known, not repeated, right sizes.
    func requests(_ names: UnsafePointer<UnsafePointer<CChar>?>?, _ sizes: UnsafePointer<Int64>?, _ count: Int64)
        throws(CheckpointError) -> [(name: String, size: Int)]
    {
        guard count >= 0, count == 0 || (names != nil && sizes != nil) else {
            throw CheckpointError(.invalidArgument, "names and sizes must be given for \(count) tensors")
        }
        var seen = Set<String>()
        var requests: [(name: String, size: Int)] = []
        for item in 0..<Int(count) {
            guard let name = string(names![item]) else {
                throw CheckpointError(.invalidArgument, "tensor name \(item) is a null pointer")
            }
            guard let number = numbers[name] else {
                throw CheckpointError(.invalidArgument, "\(container.path): no tensor named \"\(name)\"")
            }
            guard seen.insert(name).inserted else {
                throw CheckpointError(.invalidArgument, "the tensor \"\(name)\" is asked for twice")
            }
            let expected = container.index.tensors[number].byteCount
            guard Int(sizes![item]) == expected else {
                throw CheckpointError(
                    .invalidArgument,
                    "\(container.path): tensor \"\(name)\" has \(expected) bytes, its destination \(sizes![item])")
            }
            requests.append((name, expected))
        }
        return requests
    }
}

@_cdecl("torpor_open")
public func torpor_open(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> torpor_status {
    guard let path = string(path), let out else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_open: path and out must not be null")
    }
    out.pointee = nil
    do {
        let handle = ContainerHandle(try Container(path: path))
        out.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
        return TORPOR_OK
    } catch {
        return fail(error)
    }
}

@_cdecl("torpor_close")
public func torpor_close(_ container: OpaquePointer?) {
    guard let container else { return }
    Unmanaged<ContainerHandle>.fromOpaque(UnsafeRawPointer(container)).release()
}

@_cdecl("torpor_tensor_count")
public func torpor_tensor_count(_ container: OpaquePointer?) -> Int64 {
    Int64(ContainerHandle.from(container)?.container.index.tensors.count ?? 0)
}

@_cdecl("torpor_metadata_json")
public func torpor_metadata_json(_ container: OpaquePointer?) -> UnsafePointer<CChar>? {
    ContainerHandle.from(container).map { UnsafePointer($0.metadataJSON) }
}

@_cdecl("torpor_tensor_info_at")
public func torpor_tensor_info_at(
    _ container: OpaquePointer?, _ index: Int64, _ out: UnsafeMutablePointer<torpor_tensor_info>?
) -> torpor_status {
    guard let handle = ContainerHandle.from(container), let out else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_tensor_info_at: container and out must not be null")
    }
    let tensors = handle.container.index.tensors
    guard index >= 0, index < tensors.count else {
        return fail(
            TORPOR_ERROR_INVALID_ARGUMENT, "tensor index \(index) is out of range: the container has \(tensors.count)")
    }
    let number = Int(index)
    let tensor = tensors[number]
    guard tensor.shape.count <= Int(TORPOR_MAX_DIMS) else {
        return fail(
            TORPOR_ERROR_UNSUPPORTED,
            "tensor \"\(tensor.name)\" has \(tensor.shape.count) dimensions, more than \(TORPOR_MAX_DIMS)")
    }
    var info = torpor_tensor_info()
    info.name = UnsafePointer(handle.names[number])
    info.dtype = UnsafePointer(handle.dtypes[number])
    info.codec = UnsafePointer(handle.codecs[number])
    info.ndim = Int32(tensor.shape.count)
    withUnsafeMutableBytes(of: &info.shape) { shape in
        for (axis, size) in tensor.shape.enumerated() {
            shape.storeBytes(of: Int64(size), toByteOffset: 8 * axis, as: Int64.self)
        }
    }
    info.nbytes = Int64(tensor.byteCount)
    let chunks = handle.container.chunks[tensor.firstChunk..<(tensor.firstChunk + tensor.chunkCount)]
    info.gpu_only = chunks.contains { !$0.codec.runsOnCPU } ? 1 : 0
    out.pointee = info
    return TORPOR_OK
}

@_cdecl("torpor_read")
public func torpor_read(
    _ container: OpaquePointer?, _ names: UnsafePointer<UnsafePointer<CChar>?>?,
    _ destinations: UnsafePointer<UnsafeMutableRawPointer?>?, _ sizes: UnsafePointer<Int64>?, _ count: Int64,
    _ threads: Int32
) -> torpor_status {
    guard let handle = ContainerHandle.from(container) else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_read: the container is null")
    }
    do {
        let requests = try handle.requests(names, sizes, count)
        var buffers: [(name: String, destination: UnsafeMutableRawBufferPointer)] = []
        for (item, request) in requests.enumerated() {
            let destination = destinations?[item]
            guard destination != nil || request.size == 0 else {
                throw CheckpointError(.invalidArgument, "the destination of \"\(request.name)\" is a null pointer")
            }
            buffers.append((request.name, UnsafeMutableRawBufferPointer(start: destination, count: request.size)))
        }
        try handle.container.read(buffers, workers: threads > 0 ? Int(threads) : nil)
        return TORPOR_OK
    } catch {
        return fail(error)
    }
}

/// The GPU side, shared by every call: the driver and nvCOMP are loaded once, one loader is kept per device (it
/// keeps its pinned ring and staging buffers between loads), and one pinned host cache per cache file.
final class GPURuntime: Sendable {
    static let shared = GPURuntime()

    private struct State {
        var driver: CUDADriver?
        var nvcomp: [String: NVCOMPLibrary] = [:]
        var loaders: [Int: GPULoader] = [:]
        var hostCaches: [String: HostCache] = [:]
    }

    private let state = Mutex(State())
    private let opening = Mutex(())

    func driver() throws(GPUError) -> CUDADriver {
        try state.withLock { (state: inout State) throws(GPUError) -> CUDADriver in
            if let driver = state.driver { return driver }
            let driver = try CUDADriver()
            state.driver = driver
            return driver
        }
    }

    func nvcomp(_ path: String?) throws(GPUError) -> NVCOMPLibrary {
        try state.withLock { (state: inout State) throws(GPUError) -> NVCOMPLibrary in
            if let library = state.nvcomp[path ?? ""] { return library }
            let library = try NVCOMPLibrary(explicitPath: path)
            state.nvcomp[path ?? ""] = library
            return library
        }
    }

    func device(_ ordinal: Int32) throws(GPUError) -> GPUDevice {
        // The device's own check names an ordinal the driver does not see.
        return try GPUDevice(driver: driver(), ordinal: Int(ordinal))
    }

    func loader(device ordinal: Int32, nvcompPath: String?, nvrtcPath: String?) throws(GPUError) -> GPULoader {
        let nvcomp = try nvcomp(nvcompPath)
        let device = try device(ordinal)
        return state.withLock { state in
            if let loader = state.loaders[Int(ordinal)] { return loader }
            var options = GPULoadOptions()
            options.nvrtcPath = nvrtcPath
            let loader = GPULoader(nvcomp: nvcomp, device: device, options: options)
            state.loaders[Int(ordinal)] = loader
            return loader
        }
    }

    /// The container's pinned host cache under `directory`, filled when missing or stale, mapped and registered
    /// once per process.
    /// Opening is serialized, so a cache that one thread is filling or registering (torpor_host_cache_open in the
    /// background) is waited for by a load on another, not made twice.
    func hostCache(_ container: Container, directory: String?, device: GPUDevice) throws(GPUError) -> HostCache {
        let path = HostCache.defaultPath(for: container.path, directory: directory ?? "/dev/shm")
        return try opening.withLock { _ throws(GPUError) -> HostCache in
            let (_, rewritten) = try HostCache.prepare(container, path: path)
            if !rewritten, let cache = state.withLock({ $0.hostCaches[path] }) { return cache }
            let cache = try HostCache(container: container, path: path, device: device)
            state.withLock { $0.hostCaches[path] = cache }
            return cache
        }
    }
}

@_cdecl("torpor_device_options_init")
public func torpor_device_options_init(_ options: UnsafeMutablePointer<torpor_device_options>?) {
    guard let options else { return }
    options.pointee = torpor_device_options()
    options.pointee.source = Int32(TORPOR_SOURCE_FILE.rawValue)
}

/// The caller's options, or the defaults where it passed none.
private func deviceSettings(_ options: UnsafePointer<torpor_device_options>?) -> torpor_device_options {
    var settings = torpor_device_options()
    torpor_device_options_init(&settings)
    if let options { settings = options.pointee }
    return settings
}

@_cdecl("torpor_load_device")
public func torpor_load_device(
    _ container: OpaquePointer?, _ names: UnsafePointer<UnsafePointer<CChar>?>?, _ pointers: UnsafePointer<UInt64>?,
    _ sizes: UnsafePointer<Int64>?, _ count: Int64, _ options: UnsafePointer<torpor_device_options>?
) -> torpor_status {
    guard let handle = ContainerHandle.from(container) else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_load_device: the container is null")
    }
    let settings = deviceSettings(options)
    do {
        let requests = try handle.requests(names, sizes, count)
        var destinations: [String: UInt64] = [:]
        for (item, request) in requests.enumerated() {
            let pointer = pointers?[item] ?? 0
            guard pointer != 0 || request.size == 0 else {
                throw CheckpointError(.invalidArgument, "the device pointer of \"\(request.name)\" is null")
            }
            destinations[request.name] = pointer
        }
        guard !destinations.isEmpty else { return TORPOR_OK }
        let runtime = GPURuntime.shared
        let loader = try runtime.loader(
            device: settings.device, nvcompPath: string(settings.nvcomp_path), nvrtcPath: string(settings.nvrtc_path))
        try loader.device.synchronize(externalStream: settings.stream)
        let source: LoadSource
        switch settings.source {
        case Int32(TORPOR_SOURCE_FILE.rawValue): source = .file(direct: settings.direct != 0)
        case Int32(TORPOR_SOURCE_HOST_CACHE.rawValue):
            source = .hostCache(
                try runtime.hostCache(handle.container, directory: string(settings.cache_dir), device: loader.device))
        default:
            throw CheckpointError(.invalidArgument, "unknown source \(settings.source): use 0 (file) or 1 (host cache)")
        }
        _ = try loader.load(handle.container, from: source, into: .pointers(destinations))
        return TORPOR_OK
    } catch {
        return fail(error)
    }
}

@_cdecl("torpor_host_cache_open")
public func torpor_host_cache_open(
    _ container: OpaquePointer?, _ options: UnsafePointer<torpor_device_options>?
) -> torpor_status {
    guard let handle = ContainerHandle.from(container) else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_host_cache_open: the container is null")
    }
    let settings = deviceSettings(options)
    do {
        let runtime = GPURuntime.shared
        _ = try runtime.hostCache(
            handle.container, directory: string(settings.cache_dir), device: try runtime.device(settings.device))
        return TORPOR_OK
    } catch {
        return fail(error)
    }
}

@_cdecl("torpor_host_cache_prepare")
public func torpor_host_cache_prepare(
    _ containerPath: UnsafePointer<CChar>?, _ cacheDirectory: UnsafePointer<CChar>?,
    _ pathOut: UnsafeMutablePointer<CChar>?, _ capacity: Int
) -> torpor_status {
    guard let containerPath = string(containerPath) else {
        return fail(TORPOR_ERROR_INVALID_ARGUMENT, "torpor_host_cache_prepare: the container path is null")
    }
    do {
        let container = try Container(path: containerPath)
        let path = HostCache.defaultPath(for: container.path, directory: string(cacheDirectory) ?? "/dev/shm")
        _ = try HostCache.prepare(container, path: path)
        if let pathOut {
            let bytes = Array(path.utf8CString)
            guard bytes.count <= capacity else {
                return fail(
                    TORPOR_ERROR_INVALID_ARGUMENT,
                    "the host cache path \(path) needs \(bytes.count) bytes; path_capacity is \(capacity)")
            }
            bytes.withUnsafeBufferPointer { pathOut.update(from: $0.baseAddress!, count: bytes.count) }
        }
        return TORPOR_OK
    } catch {
        return fail(error)
    }
}
