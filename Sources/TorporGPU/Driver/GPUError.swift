/// A failure on the GPU path, naming what failed (the library, the call, the device, the chunk).
public struct GPUError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable {
            case libraryNotFound
            case symbolMissing
            case noDriver
            case noDevice
            case cuda
            case nvcomp
            case outOfMemory
            case invalidArgument
            case corruptData
            case io
            case unsupported
        }
        fileprivate let base: Base
        private init(_ base: Base) { self.base = base }

        /// A shared library (nvCOMP, the CUDA driver) is not installed where Torpor looks.
        public static let libraryNotFound = Code(.libraryNotFound)
        /// The library lacks a function Torpor needs (a version too old or too new).
        public static let symbolMissing = Code(.symbolMissing)
        /// No NVIDIA driver (`libcuda.so.1`) on this machine.
        public static let noDriver = Code(.noDriver)
        /// The driver is there, but not the device asked for.
        public static let noDevice = Code(.noDevice)
        /// A CUDA driver call failed.
        public static let cuda = Code(.cuda)
        /// An nvCOMP call or a chunk's status failed.
        public static let nvcomp = Code(.nvcomp)
        public static let outOfMemory = Code(.outOfMemory)
        public static let invalidArgument = Code(.invalidArgument)
        /// Decoded bytes do not match their size or checksum.
        public static let corruptData = Code(.corruptData)
        /// Reading the container (or its host cache) failed.
        public static let io = Code(.io)
        /// Valid input this build cannot load on the GPU.
        public static let unsupported = Code(.unsupported)

        public var description: String { base.rawValue }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
