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

    /// Queues `bytes` at the next `alignment` boundary; returns the absolute offset.
    func appendChunk(_ bytes: UnsafeRawBufferPointer, alignment: Int) throws(CheckpointError) -> Int {
        let offset = ContainerLayout.align(position, to: alignment)
        staging.append(contentsOf: repeatElement(0, count: offset - position))
        staging.append(contentsOf: bytes)
        position = offset + bytes.count
        if staging.count >= 8 << 20 { try flush() }
        return offset
    }

    private func flush() throws(CheckpointError) {
        let start = position - staging.count
        try staging.withBytes { (bytes) throws(CheckpointError) in try file.write(bytes, at: start) }
        // Start writing it to disk now, as unpack does, so that the final fsync does not wait for the whole file.
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
