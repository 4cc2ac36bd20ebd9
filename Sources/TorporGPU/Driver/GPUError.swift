public import TorporCheckpoint

/// A failure on the GPU path, naming what failed (the library, the call, the device, the chunk).
public typealias GPUError = CodedError<GPUErrorCode>

/// What kind of GPU failure an error is:
/// - `libraryNotFound`: a shared library (nvCOMP, the CUDA driver) is not installed where Torpor looks
/// - `symbolMissing`: the library lacks a function Torpor needs (a version too old or too new)
/// - `noDriver`: no NVIDIA driver (`libcuda.so.1`) on this machine
/// - `noDevice`: the driver is there, but not the device asked for
/// - `cuda`: a CUDA driver call failed
/// - `nvcomp`: an nvCOMP call or a chunk's status failed
/// - `corruptData`: decoded bytes do not match their size or checksum
/// - `io`: reading the container (or its host cache) failed
/// - `unsupported`: valid input this build cannot load on the GPU
public enum GPUErrorCode: String, ErrorCode {
    case libraryNotFound, symbolMissing, noDriver, noDevice, cuda, nvcomp, outOfMemory, invalidArgument
    case corruptData, io, unsupported
}
