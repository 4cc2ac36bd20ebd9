import CTorporCUDA
import FoundationEssentials
public import TorporCheckpoint

/// The CUDA driver API (`libcuda.so.1`), loaded at run time.
///
/// Only what Torpor needs: devices, the primary context (shared with nvCOMP's static runtime and PyTorch),
/// streams, events, device memory and pinned host memory. On a machine without an NVIDIA driver, `init` throws
/// `GPUError` `.noDriver` and the CPU path is used.
public final class CUDADriver: Sendable {
    private let library: SharedLibrary
    let cuDeviceGetCount: CTorporCUDA_cuDeviceGetCount
    let cuDeviceGet: CTorporCUDA_cuDeviceGet
    let cuDeviceGetName: CTorporCUDA_cuDeviceGetName
    let cuDeviceTotalMem: CTorporCUDA_cuDeviceTotalMem
    let cuDeviceGetAttribute: CTorporCUDA_cuDeviceGetAttribute
    let cuDevicePrimaryCtxRetain: CTorporCUDA_cuDevicePrimaryCtxRetain
    let cuDevicePrimaryCtxRelease: CTorporCUDA_cuDevicePrimaryCtxRelease
    let cuCtxSetCurrent: CTorporCUDA_cuCtxSetCurrent
    let cuCtxSynchronize: CTorporCUDA_cuCtxSynchronize
    let cuMemGetInfo: CTorporCUDA_cuMemGetInfo
    let cuMemAlloc: CTorporCUDA_cuMemAlloc
    let cuMemFree: CTorporCUDA_cuMemFree
    let cuMemHostAlloc: CTorporCUDA_cuMemHostAlloc
    let cuMemFreeHost: CTorporCUDA_cuMemFreeHost
    let cuMemHostRegister: CTorporCUDA_cuMemHostRegister
    let cuMemHostUnregister: CTorporCUDA_cuMemHostUnregister
    let cuMemcpyHtoDAsync: CTorporCUDA_cuMemcpyHtoDAsync
    let cuMemcpyDtoHAsync: CTorporCUDA_cuMemcpyDtoHAsync
    let cuMemcpyDtoDAsync: CTorporCUDA_cuMemcpyDtoDAsync
    let cuMemsetD8Async: CTorporCUDA_cuMemsetD8Async
    let cuStreamCreate: CTorporCUDA_cuStreamCreate
    let cuStreamDestroy: CTorporCUDA_cuStreamDestroy
    let cuStreamSynchronize: CTorporCUDA_cuStreamSynchronize
    let cuStreamWaitEvent: CTorporCUDA_cuStreamWaitEvent
    let cuEventCreate: CTorporCUDA_cuEventCreate
    let cuEventDestroy: CTorporCUDA_cuEventDestroy
    let cuEventRecord: CTorporCUDA_cuEventRecord
    let cuEventSynchronize: CTorporCUDA_cuEventSynchronize
    let cuEventElapsedTime: CTorporCUDA_cuEventElapsedTime
    let cuModuleLoadData: CTorporCUDA_cuModuleLoadData
    let cuModuleUnload: CTorporCUDA_cuModuleUnload
    let cuModuleGetFunction: CTorporCUDA_cuModuleGetFunction
    let cuLaunchKernel: CTorporCUDA_cuLaunchKernel
    private let cuGetErrorName: CTorporCUDA_cuGetErrorName
    private let cuGetErrorString: CTorporCUDA_cuGetErrorString
    /// The driver's CUDA version, e.g. 13000.
    public let driverVersion: Int

    /// The environment variable naming another driver library (tests, unusual installs).
    public static let environmentVariable = "TORPOR_CUDA_DRIVER_PATH"

    /// Loads and initializes the driver.
    /// - Throws: `GPUError` `.noDriver` without `libcuda.so.1`, `.noDevice` when it reports no device.
    public init(path: String? = nil) throws(GPUError) {
        let name = path ?? ProcessInfo.processInfo.environment[Self.environmentVariable] ?? "libcuda.so.1"
        do {
            library = try SharedLibrary(name)
        } catch {
            throw GPUError(.noDriver, "no NVIDIA driver on this machine (\(error.message))")
        }
        let cuInit = try library.function("cuInit", as: CTorporCUDA_cuInit.self)
        let cuDriverGetVersion = try library.function("cuDriverGetVersion", as: CTorporCUDA_cuDriverGetVersion.self)
        cuGetErrorName = try library.function("cuGetErrorName", as: CTorporCUDA_cuGetErrorName.self)
        cuGetErrorString = try library.function("cuGetErrorString", as: CTorporCUDA_cuGetErrorString.self)
        cuDeviceGetCount = try library.function("cuDeviceGetCount", as: CTorporCUDA_cuDeviceGetCount.self)
        cuDeviceGet = try library.function("cuDeviceGet", as: CTorporCUDA_cuDeviceGet.self)
        cuDeviceGetName = try library.function("cuDeviceGetName", as: CTorporCUDA_cuDeviceGetName.self)
        cuDeviceTotalMem = try library.function("cuDeviceTotalMem_v2", as: CTorporCUDA_cuDeviceTotalMem.self)
        cuDeviceGetAttribute = try library.function("cuDeviceGetAttribute", as: CTorporCUDA_cuDeviceGetAttribute.self)
        cuDevicePrimaryCtxRetain = try library.function(
            "cuDevicePrimaryCtxRetain", as: CTorporCUDA_cuDevicePrimaryCtxRetain.self)
        cuDevicePrimaryCtxRelease = try library.function(
            "cuDevicePrimaryCtxRelease_v2", as: CTorporCUDA_cuDevicePrimaryCtxRelease.self)
        cuCtxSetCurrent = try library.function("cuCtxSetCurrent", as: CTorporCUDA_cuCtxSetCurrent.self)
        cuCtxSynchronize = try library.function("cuCtxSynchronize", as: CTorporCUDA_cuCtxSynchronize.self)
        cuMemGetInfo = try library.function("cuMemGetInfo_v2", as: CTorporCUDA_cuMemGetInfo.self)
        cuMemAlloc = try library.function("cuMemAlloc_v2", as: CTorporCUDA_cuMemAlloc.self)
        cuMemFree = try library.function("cuMemFree_v2", as: CTorporCUDA_cuMemFree.self)
        cuMemHostAlloc = try library.function("cuMemHostAlloc", as: CTorporCUDA_cuMemHostAlloc.self)
        cuMemFreeHost = try library.function("cuMemFreeHost", as: CTorporCUDA_cuMemFreeHost.self)
        cuMemHostRegister = try library.function("cuMemHostRegister_v2", as: CTorporCUDA_cuMemHostRegister.self)
        cuMemHostUnregister = try library.function("cuMemHostUnregister", as: CTorporCUDA_cuMemHostUnregister.self)
        cuModuleLoadData = try library.function("cuModuleLoadData", as: CTorporCUDA_cuModuleLoadData.self)
        cuModuleUnload = try library.function("cuModuleUnload", as: CTorporCUDA_cuModuleUnload.self)
        cuModuleGetFunction = try library.function("cuModuleGetFunction", as: CTorporCUDA_cuModuleGetFunction.self)
        cuLaunchKernel = try library.function("cuLaunchKernel", as: CTorporCUDA_cuLaunchKernel.self)
        cuMemcpyHtoDAsync = try library.function("cuMemcpyHtoDAsync_v2", as: CTorporCUDA_cuMemcpyHtoDAsync.self)
        cuMemcpyDtoHAsync = try library.function("cuMemcpyDtoHAsync_v2", as: CTorporCUDA_cuMemcpyDtoHAsync.self)
        cuMemcpyDtoDAsync = try library.function("cuMemcpyDtoDAsync_v2", as: CTorporCUDA_cuMemcpyDtoDAsync.self)
        cuMemsetD8Async = try library.function("cuMemsetD8Async", as: CTorporCUDA_cuMemsetD8Async.self)
        cuStreamCreate = try library.function("cuStreamCreate", as: CTorporCUDA_cuStreamCreate.self)
        cuStreamDestroy = try library.function("cuStreamDestroy_v2", as: CTorporCUDA_cuStreamDestroy.self)
        cuStreamSynchronize = try library.function("cuStreamSynchronize", as: CTorporCUDA_cuStreamSynchronize.self)
        cuStreamWaitEvent = try library.function("cuStreamWaitEvent", as: CTorporCUDA_cuStreamWaitEvent.self)
        cuEventCreate = try library.function("cuEventCreate", as: CTorporCUDA_cuEventCreate.self)
        cuEventDestroy = try library.function("cuEventDestroy_v2", as: CTorporCUDA_cuEventDestroy.self)
        cuEventRecord = try library.function("cuEventRecord", as: CTorporCUDA_cuEventRecord.self)
        cuEventSynchronize = try library.function("cuEventSynchronize", as: CTorporCUDA_cuEventSynchronize.self)
        cuEventElapsedTime = try library.function("cuEventElapsedTime_v2", as: CTorporCUDA_cuEventElapsedTime.self)
        let initResult = cuInit(0)
        guard initResult == CTorporCUDA_Success else {
            let code: GPUError.Code = initResult == CTorporCUDA_ErrorNoDevice ? .noDevice : .cuda
            throw GPUError(code, "cuInit failed: \(Self.describe(initResult, cuGetErrorName, cuGetErrorString))")
        }
        var version: Int32 = 0
        _ = cuDriverGetVersion(&version)
        driverVersion = Int(version)
    }

    /// Throws a `GPUError` naming `call` and the driver's error when `result` is not success.
    func check(_ result: CTorporCUDA_Result, _ call: @autoclosure () -> String) throws(GPUError) {
        guard result != CTorporCUDA_Success else { return }
        let code: GPUError.Code = result == CTorporCUDA_ErrorOutOfMemory ? .outOfMemory : .cuda
        throw GPUError(code, "\(call()) failed: \(Self.describe(result, cuGetErrorName, cuGetErrorString))")
    }

    private static func describe(
        _ result: CTorporCUDA_Result, _ name: CTorporCUDA_cuGetErrorName, _ message: CTorporCUDA_cuGetErrorString
    ) -> String {
        var namePointer: UnsafePointer<CChar>?
        var messagePointer: UnsafePointer<CChar>?
        _ = name(result, &namePointer)
        _ = message(result, &messagePointer)
        let text = [namePointer, messagePointer].compactMap { $0.map { String(cString: $0) } }
        return text.isEmpty ? "CUDA error \(result)" : text.joined(separator: ": ") + " (\(result))"
    }

    /// The number of devices the driver sees.
    public func deviceCount() throws(GPUError) -> Int {
        var count: Int32 = 0
        try check(cuDeviceGetCount(&count), "cuDeviceGetCount")
        return Int(count)
    }

    /// A device's name, memory and compute capability.
    public func deviceInfo(_ ordinal: Int) throws(GPUError) -> DeviceInfo {
        let count = try deviceCount()
        guard ordinal >= 0 && ordinal < count else {
            throw GPUError(.noDevice, "there is no GPU \(ordinal): the driver sees \(count)")
        }
        var device: CTorporCUDA_Device = 0
        try check(cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet(\(ordinal))")
        var name = [CChar](repeating: 0, count: 256)
        try check(cuDeviceGetName(&name, 255, device), "cuDeviceGetName")
        var bytes = 0
        try check(cuDeviceTotalMem(&bytes, device), "cuDeviceTotalMem")
        var major: Int32 = 0
        var minor: Int32 = 0
        try check(
            cuDeviceGetAttribute(&major, CTorporCUDA_DeviceAttributeComputeCapabilityMajor, device),
            "cuDeviceGetAttribute")
        try check(
            cuDeviceGetAttribute(&minor, CTorporCUDA_DeviceAttributeComputeCapabilityMinor, device),
            "cuDeviceGetAttribute")
        let length = name.firstIndex(of: 0) ?? name.count
        return DeviceInfo(
            ordinal: ordinal, name: String(decoding: name[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self),
            memoryBytes: bytes, computeCapability: "\(major).\(minor)")
    }

    /// What `deviceInfo` reports.
    public struct DeviceInfo: Sendable, Equatable {
        public var ordinal: Int
        public var name: String
        public var memoryBytes: Int
        public var computeCapability: String
    }
}
