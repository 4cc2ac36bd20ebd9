import FoundationEssentials
import Glibc

/// Writes a container file front to back: the preamble's space, the chunks, then the trailing tables; the
/// preamble last, then fsync. `abandon()` removes a file that was not finished.
final class ContainerFileWriter {
    private let file: FileDescriptor
    private var position = ContainerLayout.pageAlignment
    private var staging: [UInt8] = []

    init(path: String) throws(CheckpointError) {
        file = try FileDescriptor.create(path)
    }

    /// Writes `chunks` one after the other, each at the next `alignment` boundary (zeros between), straight from
    /// the caller's memory with as few system calls as `pwritev` allows; returns their offsets.
    func appendChunks(_ chunks: [UnsafeRawBufferPointer], alignment: Int) throws(CheckpointError) -> [Int] {
        precondition(staging.isEmpty && alignment <= Self.zeros.count, "chunks follow chunks, at most page-aligned")
        let start = position
        var offsets: [Int] = []
        offsets.reserveCapacity(chunks.count)
        try Self.zeros.withBytes { (zeros) throws(CheckpointError) in
            var pieces: [UnsafeRawBufferPointer] = []
            pieces.reserveCapacity(2 * chunks.count)
            for chunk in chunks {
                let offset = ContainerLayout.align(position, to: alignment)
                if offset > position { pieces.append(UnsafeRawBufferPointer(rebasing: zeros[0..<(offset - position)])) }
                pieces.append(chunk)
                offsets.append(offset)
                position = offset + chunk.count
            }
            try file.write(pieces, at: start)
        }
        // Start writing them to disk now, as unpack does, so that the final fsync does not wait for the whole file.
        file.startWriteback(offset: start, count: position - start)
        return offsets
    }

    /// Writes one chunk at the next `alignment` boundary; returns its offset.
    func appendChunk(_ chunk: UnsafeRawBufferPointer, alignment: Int) throws(CheckpointError) -> Int {
        try appendChunks([chunk], alignment: alignment)[0]
    }

    private static let zeros = [UInt8](repeating: 0, count: ContainerLayout.pageAlignment)

    private func flush() throws(CheckpointError) {
        let start = position - staging.count
        try staging.withBytes { (bytes) throws(CheckpointError) in try file.write(bytes, at: start) }
        file.startWriteback(offset: start, count: staging.count)
        staging.removeAll(keepingCapacity: true)
    }

    /// Writes the chunk table, the source header and the index, then the preamble, and fsyncs.
    /// - Returns: the container's size in bytes.
    func finish(records: [ChunkRecord], sourceHeader: UnsafeRawBufferPointer, index: ContainerIndex)
        throws(CheckpointError) -> Int
    {
        var preamble = Preamble()
        preamble.dataOffset = ContainerLayout.pageAlignment
        preamble.dataLength = position - ContainerLayout.pageAlignment
        preamble.chunkTableOffset = ContainerLayout.align(position, to: ContainerLayout.pageAlignment)
        staging.append(contentsOf: repeatElement(0, count: preamble.chunkTableOffset - position))
        position = preamble.chunkTableOffset

        var table = [UInt8](repeating: 0, count: records.count * ContainerLayout.chunkRecordSize)
        table.withUnsafeMutableBytes { out in
            for (number, record) in records.enumerated() {
                record.store(into: out, at: number * ContainerLayout.chunkRecordSize)
            }
        }
        preamble.chunkCount = records.count
        preamble.chunkTableCRC = CRC32.checksum(table)
        staging.append(contentsOf: table)
        position += table.count

        preamble.sourceHeaderOffset = position
        preamble.sourceHeaderLength = sourceHeader.count
        preamble.sourceHeaderCRC = CRC32.checksum(sourceHeader)
        staging.append(contentsOf: sourceHeader)
        position += sourceHeader.count

        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json: [UInt8]
        do {
            json = Array(try encoder.encode(index))
        } catch {
            throw CheckpointError(.invalidArgument, "cannot encode the index of \(file.path): \(error)")
        }
        preamble.indexOffset = position
        preamble.indexLength = json.count
        preamble.indexCRC = CRC32.checksum(json)
        staging.append(contentsOf: json)
        position += json.count
        try flush()

        var head = preamble.serialized()
        head.append(contentsOf: repeatElement(0, count: ContainerLayout.pageAlignment - head.count))
        try head.withBytes { (bytes) throws(CheckpointError) in try file.write(bytes, at: 0) }
        try file.sync()
        file.close()
        return position
    }

    /// Closes and deletes an unfinished container.
    func abandon() {
        file.close()
        unlink(file.path)
    }
}
