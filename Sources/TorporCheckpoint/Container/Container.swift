import Dispatch
import FoundationEssentials
import Synchronization

/// A `.torpor` container opened for reading, with its structure validated.
///
/// Opening checks the preamble, the CRC-32 of the chunk table, the source header and the index, and that the
/// index, the stored safetensors header and the chunk table agree with each other. Chunk payloads are checked
/// as they are read: their stored CRC before decoding, their decoded CRC after.
public final class Container: Sendable {
    public let path: String
    public let index: ContainerIndex
    public let chunks: [ChunkRecord]
    /// The source file's safetensors header, parsed from the stored bytes.
    public let sourceHeader: SafetensorsHeader
    /// Whether the chunks' stored bytes are here (a container file), or only the metadata
    /// (`init(metadataOf:)`): then only a loader that reads the chunks from their source can use it.
    public let holdsChunks: Bool
    let preamble: Preamble
    let mapping: MappedFile

    /// Opens and validates the container at `path`.
    /// - Throws: `CheckpointError` (`.invalidContainer`, `.corruptData`, `.unsupported`, `.io`) naming the file.
    public convenience init(path: String) throws(CheckpointError) {
        try self.init(path: path, mapping: try MappedFile(path: path), holdsChunks: true)
    }

    /// Opens and validates the container that `source` holds from its metadata alone, with two reads: the
    /// preamble, then the chunk table, stored header and index at the file's end. The chunks stay in the source,
    /// for the GPU loader to read batch by batch (`LoadSource.ranges`); decoding on the CPU (`restore`, `read`,
    /// `tensorBytes`, `checkPadding`) throws `.unsupported`. The metadata sits in a sparse anonymous mapping of
    /// the file's size, so offsets are the file's; only the pages read take memory.
    /// - Throws: as `init(path:)`, naming `source.name`.
    public convenience init(metadataOf source: some ByteRangeSource) throws(CheckpointError) {
        let size = source.size
        let head = try source.bytes(0..<min(size, ContainerLayout.preambleSize))
        let parsed = head.withUnsafeBytes { bytes -> Result<Preamble, CheckpointError> in
            Result { () throws(CheckpointError) in try Preamble(parsing: bytes, fileSize: size, file: source.name) }
        }
        let preamble = try parsed.get()
        let mapping = try MappedFile(sparse: size, name: source.name)
        let base = UnsafeMutableRawPointer(mutating: mapping.bytes.baseAddress!)
        head.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        try source.read(preamble.chunkTableOffset..<size, into: base + preamble.chunkTableOffset)
        try self.init(path: source.name, mapping: mapping, holdsChunks: false)
    }

    private init(path: String, mapping: MappedFile, holdsChunks: Bool) throws(CheckpointError) {
        self.path = path
        self.mapping = mapping
        self.holdsChunks = holdsChunks
        let bytes = mapping.bytes
        preamble = try Preamble(parsing: bytes, fileSize: bytes.count, file: path)

        func region(_ offset: Int, _ length: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
        }
        func corrupt(_ what: String) -> CheckpointError {
            CheckpointError(.corruptData, "\(path): the \(what) fails its CRC-32 (the file is corrupted)")
        }
        let tableBytes = region(preamble.chunkTableOffset, preamble.chunkCount * ContainerLayout.chunkRecordSize)
        guard CRC32.checksum(tableBytes) == preamble.chunkTableCRC else { throw corrupt("chunk table") }
        let headerBytes = region(preamble.sourceHeaderOffset, preamble.sourceHeaderLength)
        guard CRC32.checksum(headerBytes) == preamble.sourceHeaderCRC else {
            throw corrupt("stored safetensors header")
        }
        let indexBytes = region(preamble.indexOffset, preamble.indexLength)
        guard CRC32.checksum(indexBytes) == preamble.indexCRC else { throw corrupt("index") }

        do {
            index = try ContainerIndex(parsing: indexBytes)
        } catch {
            throw CheckpointError(.invalidContainer, "\(path): the index is not valid (\(error))")
        }

        var records: [ChunkRecord] = []
        records.reserveCapacity(preamble.chunkCount)
        let dataRange = preamble.dataOffset..<(preamble.dataOffset + preamble.dataLength)
        for number in 0..<preamble.chunkCount {
            let (record, codecID) = ChunkRecord.load(from: tableBytes, at: number * ContainerLayout.chunkRecordSize)
            guard let record else {
                throw CheckpointError(
                    .unsupported,
                    "\(path): chunk \(number) uses codec id \(codecID), which this torpor does not know; upgrade torpor"
                )
            }
            guard record.offset >= dataRange.lowerBound, record.storedSize <= dataRange.upperBound - record.offset,
                record.offset <= dataRange.upperBound
            else {
                throw CheckpointError(.invalidContainer, "\(path): chunk \(number) lies outside the data region")
            }
            guard record.rawSize <= index.chunkSize else {
                throw CheckpointError(
                    .invalidContainer,
                    "\(path): chunk \(number) decodes to \(record.rawSize) bytes, more than the chunk size")
            }
            records.append(record)
        }
        chunks = records

        guard index.checksum == "crc32-ieee" else {
            throw CheckpointError(.unsupported, "\(path): checksum \"\(index.checksum)\" is not supported")
        }
        guard index.chunkSize > 0, index.chunkSize <= ContainerLayout.maximumChunkSize, index.chunkAlignment > 0 else {
            throw CheckpointError(.invalidContainer, "\(path): chunk size \(index.chunkSize) is out of range")
        }
        guard preamble.sourceHeaderLength >= 8 else {
            throw CheckpointError(.invalidContainer, "\(path): the stored safetensors header is truncated")
        }
        let jsonLength = headerBytes.loadLE(UInt64.self, at: 0)
        guard jsonLength == UInt64(preamble.sourceHeaderLength - 8), index.source.size >= preamble.sourceHeaderLength
        else {
            throw CheckpointError(.invalidContainer, "\(path): the stored safetensors header's length prefix is wrong")
        }
        sourceHeader = try SafetensorsHeader(
            headerJSON: UnsafeRawBufferPointer(rebasing: headerBytes[8...]),
            dataLength: index.source.size - preamble.sourceHeaderLength,
            file: "\(path) (stored header of \(index.source.fileName))")
        try Self.checkIndex(index, against: sourceHeader, chunks: records, path: path)
    }

    /// Checks that every tensor of the index matches the stored header and is covered exactly by its chunks.
    private static func checkIndex(
        _ index: ContainerIndex, against header: SafetensorsHeader, chunks: [ChunkRecord], path: String
    ) throws(CheckpointError) {
        func fail(_ reason: String) -> CheckpointError { CheckpointError(.invalidContainer, "\(path): \(reason)") }
        guard index.tensors.count == header.tensors.count else {
            throw fail("the index lists \(index.tensors.count) tensors but the stored header \(header.tensors.count)")
        }
        let byName = Dictionary(header.tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for tensor in index.tensors {
            guard let described = byName[tensor.name], tensor.dataOffsets.count == 2,
                described.dtype == tensor.dtype, described.shape == tensor.shape,
                described.dataOffsets == tensor.dataOffsets[0]..<tensor.dataOffsets[1]
            else { throw fail("tensor \"\(tensor.name)\" in the index does not match the stored header") }
            guard tensor.firstChunk >= 0, tensor.chunkCount >= 0, tensor.firstChunk <= chunks.count,
                tensor.chunkCount <= chunks.count - tensor.firstChunk
            else { throw fail("tensor \"\(tensor.name)\" names chunks beyond the chunk table") }
            let covered = chunks[tensor.firstChunk..<(tensor.firstChunk + tensor.chunkCount)].reduce(0) {
                $0 + $1.rawSize
            }
            guard covered == described.byteCount else {
                throw fail(
                    "tensor \"\(tensor.name)\" is \(described.byteCount) bytes but its chunks decode to \(covered)")
            }
        }
    }

    /// The container's size in bytes.
    public var fileSize: Int { mapping.count }

    /// The file's first page (at most 4096 bytes): the preamble, which holds the CRC-32s of everything else.
    public var firstPage: [UInt8] { Array(mapping.bytes.prefix(min(4096, mapping.count))) }

    /// The stored bytes of every chunk, for summaries.
    public func storedBytes(of tensor: ContainerIndex.Tensor) -> Int {
        chunks[tensor.firstChunk..<(tensor.firstChunk + tensor.chunkCount)].reduce(0) { $0 + $1.storedSize }
    }

    /// The stored safetensors header with its 8-byte prefix.
    public var sourceHeaderBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(
            rebasing: mapping.bytes[
                preamble.sourceHeaderOffset..<(preamble.sourceHeaderOffset + preamble.sourceHeaderLength)])
    }

    /// Checks that nothing but zero padding lies between the preamble, the chunks and the chunk table, so that a
    /// flipped bit anywhere in the file is caught, not only inside chunks.
    public func checkPadding() throws(CheckpointError) {
        try requireChunks()
        let bytes = mapping.bytes
        func checkZero(_ range: Range<Int>, _ what: String) throws(CheckpointError) {
            guard range.lowerBound < range.upperBound else { return }
            if bytes[range].contains(where: { $0 != 0 }) {
                throw CheckpointError(
                    .corruptData, "\(path): non-zero bytes in the padding \(what) (the file is corrupted)")
            }
        }
        try checkZero(ContainerLayout.preambleSize..<preamble.dataOffset, "after the preamble")
        var cursor = preamble.dataOffset
        for (number, chunk) in chunks.enumerated().sorted(by: { $0.element.offset < $1.element.offset }) {
            guard chunk.offset >= cursor else {
                throw CheckpointError(.invalidContainer, "\(path): chunk \(number) overlaps the chunk before it")
            }
            try checkZero(cursor..<chunk.offset, "before chunk \(number)")
            cursor = chunk.offset + chunk.storedSize
        }
        try checkZero(cursor..<preamble.chunkTableOffset, "after the last chunk")
    }

    /// A placed chunk and where its decoded bytes go in the restored file.
    struct Piece: Sendable {
        var placement: ChunkPlacement
        var outputOffset: Int
    }

    /// Every chunk placement in restored-file order (a deduplicated chunk appears once per tensor using it).
    func pieces() -> [Piece] {
        var pieces: [Piece] = []
        pieces.reserveCapacity(chunks.count)
        let dataStart = preamble.sourceHeaderLength
        for (number, tensor) in index.tensors.enumerated().sorted(by: {
            $0.element.dataOffsets[0] < $1.element.dataOffsets[0]
        }) {
            for placement in placements(ofTensor: number) {
                pieces.append(
                    Piece(
                        placement: placement, outputOffset: dataStart + tensor.dataOffsets[0] + placement.offsetInTensor
                    ))
            }
        }
        return pieces
    }

    /// Checks and decodes one chunk into `output` (its raw size).
    func decode(_ placement: ChunkPlacement, into output: UnsafeMutableRawBufferPointer, scratch: CodecScratch)
        throws(CheckpointError)
    {
        let record = chunks[placement.chunk]
        let stored = UnsafeRawBufferPointer(
            rebasing: mapping.bytes[record.offset..<(record.offset + record.storedSize)])
        let storedCRC = CRC32.checksum(stored)
        guard storedCRC == record.storedCRC else {
            throw CheckpointError(.corruptData, storedCRCFailure(placement, found: storedCRC))
        }
        do {
            try ChunkCoder.decode(record.codec, stored, into: output, scratch: scratch)
        } catch {
            throw CheckpointError(
                .corruptData, "\(describe(placement)): cannot decode \(record.codec.name) data: \(error.reason)")
        }
        let rawCRC = CRC32.checksum(UnsafeRawBufferPointer(output))
        guard rawCRC == record.rawCRC else {
            throw CheckpointError(.corruptData, decodedCRCFailure(placement, found: rawCRC))
        }
    }

    /// The GPU codecs (nvCOMP) this container's chunks use, which the CPU cannot decode.
    public var gpuCodecs: [ChunkCodec] {
        Set(chunks.map(\.codec)).filter { !$0.runsOnCPU }.sorted { $0.rawValue < $1.rawValue }
    }

    /// Throws when a chunk needs a GPU to decode, naming the codecs and what to do, before any work starts.
    public func requireCPUCodecs() throws(CheckpointError) {
        let codecs = gpuCodecs
        guard !codecs.isEmpty else { return }
        let count = chunks.count { !$0.codec.runsOnCPU }
        throw CheckpointError(
            .unsupported,
            "\(path): \(count) of its \(chunks.count) chunks use GPU codecs (\(codecs.map(\.name).joined(separator: ", "))), "
                + "which only nvCOMP on an NVIDIA GPU decodes: load it with `torpor load` there, or repack it "
                + "without --gpu")
    }

    /// Throws unless the chunks' bytes are here (see `holdsChunks`).
    func requireChunks() throws(CheckpointError) {
        guard !holdsChunks else { return }
        throw CheckpointError(
            .unsupported,
            "\(path): only its metadata was read, its chunks stay where they are; pull it to decode it on the CPU, "
                + "or load it on a GPU")
    }

    /// Decodes the whole source file, every chunk checked before any callback sees its bytes.
    ///
    /// The chunks decode on every core (`OrderedPipeline`): `each` gets every range of the restored file once, on
    /// any thread and in any order (a positional write, a comparison); `inOrder` gets the same ranges strictly in
    /// file order, header first, on the calling thread (a running digest).
    public func restore(
        workers: Int? = nil,
        progress: ProgressHandler? = nil,
        each: @Sendable (_ bytes: UnsafeRawBufferPointer, _ offset: Int) throws(CheckpointError) -> Void = { _, _ in },
        inOrder: (_ bytes: UnsafeRawBufferPointer, _ offset: Int) throws(CheckpointError) -> Void
    ) throws(CheckpointError) {
        try requireChunks()
        try requireCPUCodecs()
        try each(sourceHeaderBytes, 0)
        try inOrder(sourceHeaderBytes, 0)
        progress?(.advanced(bytes: sourceHeaderBytes.count))
        let pieces = pieces()
        let workers = WorkerPool.count(workers)
        let pipeline = OrderedPipeline(
            sizes: pieces.map { chunks[$0.placement.chunk].rawSize }, chunkSize: index.chunkSize, workers: workers)
        try pipeline.run { (piece, slot, scratch) throws(CheckpointError) in
            try decode(pieces[piece].placement, into: slot, scratch: scratch)
            try each(UnsafeRawBufferPointer(slot), pieces[piece].outputOffset)
        } inOrder: { (piece, slot) throws(CheckpointError) in
            try inOrder(UnsafeRawBufferPointer(slot), pieces[piece].outputOffset)
            progress?(.advanced(bytes: slot.count))
        }
    }

    /// Decodes the named tensors into caller memory, each `destination` exactly the tensor's size: every chunk
    /// checked (stored and decoded CRC-32) and decoded on every core.
    /// - Throws: `.invalidArgument` for an unknown name or a destination of the wrong size, `.unsupported` for
    ///   chunks only a GPU decodes, `.corruptData` naming the tensor and chunk that fails a check. The
    ///   destinations then hold unspecified bytes.
    public func read(
        _ requests: [(name: String, destination: UnsafeMutableRawBufferPointer)], workers: Int? = nil
    ) throws(CheckpointError) {
        try requireChunks()
        var numbers: [String: Int] = [:]
        for (number, tensor) in index.tensors.enumerated() { numbers[tensor.name] = number }
        var pieces: [(placement: ChunkPlacement, output: UnsafeMutableRawBufferPointer)] = []
        for request in requests {
            guard let number = numbers[request.name] else {
                throw CheckpointError(.invalidArgument, "\(path): no tensor named \"\(request.name)\"")
            }
            let tensor = index.tensors[number]
            guard request.destination.count == tensor.byteCount else {
                throw CheckpointError(
                    .invalidArgument,
                    "\(path): tensor \"\(request.name)\" has \(tensor.byteCount) bytes, the destination \(request.destination.count)"
                )
            }
            for placement in placements(ofTensor: number) {
                if !chunks[placement.chunk].codec.runsOnCPU { try requireCPUCodecs() }
                let start = placement.offsetInTensor
                let size = chunks[placement.chunk].rawSize
                pieces.append(
                    (placement, UnsafeMutableRawBufferPointer(rebasing: request.destination[start..<(start + size)])))
            }
        }
        let jobs = UncheckedSendable(pieces)
        try WorkerPool(workers: workers).run(jobs: pieces.count) {
            (job: Int, scratch: CodecScratch) throws(CheckpointError) -> Void in
            try decode(jobs.value[job].placement, into: jobs.value[job].output, scratch: scratch)
        }
    }

    /// Decodes one tensor's bytes.
    public func tensorBytes(_ name: String) throws(CheckpointError) -> [UInt8] {
        try requireChunks()
        guard let number = index.tensors.firstIndex(where: { $0.name == name }) else {
            throw CheckpointError(.invalidArgument, "\(path): no tensor named \"\(name)\"")
        }
        let tensor = index.tensors[number]
        var bytes = [UInt8](repeating: 0, count: tensor.byteCount)
        let scratch = CodecScratch()
        try bytes.withMutableBytes { (out) throws(CheckpointError) in
            for placement in placements(ofTensor: number) {
                let start = placement.offsetInTensor
                let size = chunks[placement.chunk].rawSize
                try decode(
                    placement, into: UnsafeMutableRawBufferPointer(rebasing: out[start..<(start + size)]),
                    scratch: scratch)
            }
        }
        return bytes
    }
}

/// The first error of a background task, read by the thread that waits for it.
final class FailureBox: Sendable {
    private let first = Mutex<CheckpointError?>(nil)

    func record(_ error: CheckpointError) {
        first.withLock { if $0 == nil { $0 = error } }
    }

    var error: CheckpointError? { first.withLock { $0 } }
}
