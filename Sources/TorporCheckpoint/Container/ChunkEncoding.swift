import Dispatch

/// How a pack turns its chunks into stored bytes: one at a time on the CPU's cores, streamed to the file in order, or
/// in windows whose float chunks the GPU encodes in one batch.
extension ContainerPacker {
    /// A chunk as it will be stored.
    struct EncodedChunk {
        var size = 0
        var codec = ChunkCodec.raw
        var rawCRC: UInt32 = 0
        var storedCRC: UInt32 = 0
    }

    /// Encodes `job` with its CPU codec into `output` (at least the job's size), or copies it raw where the
    /// encoding would not be smaller.
    static func encode(
        _ job: Job, source: SafetensorsFile, into output: UnsafeMutableRawBufferPointer, scratch: CodecScratch
    ) -> EncodedChunk {
        let input = UnsafeRawBufferPointer(rebasing: source.mapping.bytes[job.source])
        let rawCRC = job.rawCRC ?? CRC32.checksum(input)
        if job.codec != .raw,
            let written = ChunkCoder.encode(job.codec, input, dtype: job.dtype, into: output, scratch: scratch),
            written < input.count
        {
            let stored = UnsafeRawBufferPointer(rebasing: output[0..<written])
            return EncodedChunk(size: written, codec: job.codec, rawCRC: rawCRC, storedCRC: CRC32.checksum(stored))
        }
        output.copyMemory(from: input)
        return EncodedChunk(size: input.count, codec: .raw, rawCRC: rawCRC, storedCRC: rawCRC)
    }

    /// Encodes every job on `workers` cores through a ring a few chunks in size (`OrderedPipeline`) and writes each
    /// chunk as soon as those before it are written: no window waits for its slowest chunk, and the memory a pack
    /// touches stays at the ring's size, whatever the file's.
    /// - Returns: the chunk records, in job order.
    static func encodeInOrder(
        _ jobs: [Job], source: SafetensorsFile, workers: Int, chunkSize: Int, writer: ContainerFileWriter,
        progress: ProgressHandler?
    ) throws(CheckpointError) -> [ChunkRecord] {
        let results = UncheckedSendable(UnsafeMutableBufferPointer<EncodedChunk>.allocate(capacity: jobs.count))
        defer { results.value.deallocate() }
        var records: [ChunkRecord] = []
        records.reserveCapacity(jobs.count)
        let pipeline = OrderedPipeline(sizes: jobs.map(\.source.count), chunkSize: chunkSize, workers: workers)
        try pipeline.run { (number, slot, scratch) throws(CheckpointError) in
            results.value.initializeElement(
                at: number, to: encode(jobs[number], source: source, into: slot, scratch: scratch))
        } inOrder: { (number, slot) throws(CheckpointError) in
            let result = results.value[number]
            let stored = UnsafeRawBufferPointer(rebasing: slot[0..<result.size])
            let offset = try writer.appendChunk(stored, alignment: ContainerLayout.defaultChunkAlignment)
            records.append(
                ChunkRecord(
                    offset: offset, storedSize: result.size, rawSize: jobs[number].source.count,
                    storedCRC: result.storedCRC, rawCRC: result.rawCRC, codec: result.codec))
            progress?(.advanced(bytes: jobs[number].source.count))
        }
        return records
    }

    /// Encodes the jobs in windows: each window's GPU chunks in one batch, its CPU chunks on the pool, and one
    /// window written while the next is encoded.
    /// - Returns: the chunk records, in job order.
    static func encodeInBatches(
        _ jobs: [Job], source: SafetensorsFile, gpuEncoder: any BatchChunkEncoder, pool: WorkerPool, chunkSize: Int,
        writer: ContainerFileWriter, progress: ProgressHandler?
    ) throws(CheckpointError) -> [ChunkRecord] {
        // A chunk's slot holds its encoding or, where that is not smaller, its raw bytes; the CPU codecs give up
        // on encodings larger than the raw size, the GPU's need their bound.
        var slotSizes = jobs.map(\.source.count)
        for (number, job) in jobs.enumerated() where !job.codec.runsOnCPU {
            slotSizes[number] = max(
                slotSizes[number], try gpuEncoder.maxEncodedSize(job.codec, rawSize: job.source.count))
        }
        // Within about 512 MiB of output buffers: the GPU's batches pay a fixed cost each.
        let layout = OutputWindows(
            slotSizes: slotSizes,
            targetBytes: OutputWindows.targetBytes(workers: pool.workers, chunkSize: chunkSize, memoryLimit: 512 << 20))
        // Two output buffers: one window is written while the next is encoded.
        let outputs = (0..<2).map { _ in UncheckedSendable(WorkingMemory.allocate(layout.bufferBytes)) }
        let writing = DispatchGroup()
        let writeFailure = FailureBox()
        defer {
            writing.wait()
            for buffer in outputs { WorkingMemory.deallocate(buffer.value) }
        }
        let records = UncheckedSendable(RecordList())
        records.value.items.reserveCapacity(jobs.count)
        for (windowNumber, window) in layout.windows.enumerated() {
            let buffer = outputs[windowNumber % 2]
            func output(_ slot: Int) -> UnsafeMutableRawBufferPointer {
                let start = layout.slotOffsets[window.lowerBound + slot]
                return UnsafeMutableRawBufferPointer(
                    rebasing: buffer.value[start..<(start + slotSizes[window.lowerBound + slot])])
            }
            var encoded = [EncodedChunk](repeating: EncodedChunk(), count: window.count)
            // The GPU's chunks in one batch; it computes their checksums too.
            let gpuSlots = (0..<window.count).filter { !jobs[window.lowerBound + $0].codec.runsOnCPU }
            if !gpuSlots.isEmpty {
                let batch = gpuSlots.map { slot in
                    let job = jobs[window.lowerBound + slot]
                    return BatchChunk(
                        codec: job.codec, dtype: job.dtype,
                        input: UnsafeRawBufferPointer(rebasing: source.mapping.bytes[job.source]), output: output(slot))
                }
                let results = try gpuEncoder.encode(batch)
                for (slot, (chunk, result)) in zip(gpuSlots, zip(batch, results)) {
                    if result.size < chunk.input.count {
                        encoded[slot] = EncodedChunk(
                            size: result.size, codec: chunk.codec, rawCRC: result.rawCRC, storedCRC: result.storedCRC)
                    } else {
                        chunk.output.copyMemory(from: chunk.input)
                        encoded[slot] = EncodedChunk(
                            size: chunk.input.count, codec: .raw, rawCRC: result.rawCRC, storedCRC: result.rawCRC)
                    }
                }
            }
            encoded.withUnsafeMutableBufferPointer { results in
                let results = UncheckedSendable(results)
                let cpuSlots = (0..<window.count).filter { jobs[window.lowerBound + $0].codec.runsOnCPU }
                pool.run(jobs: cpuSlots.count) { (job: Int, scratch: CodecScratch) -> Void in
                    let slot = cpuSlots[job]
                    results.value[slot] = encode(
                        jobs[window.lowerBound + slot], source: source, into: output(slot), scratch: scratch)
                }
            }
            // Write this window while the next one is encoded.
            writing.wait()
            if let error = writeFailure.error { throw error }
            let jobSizes = window.map { jobs[$0].source.count }
            let starts = window.map { layout.slotOffsets[$0] }
            let written = UncheckedSendable((writer: writer, encoded: encoded))
            DispatchQueue.global().async(group: writing) {
                let (writer, encoded) = written.value
                do throws(CheckpointError) {
                    let stored = zip(starts, encoded).map { start, result in
                        UnsafeRawBufferPointer(rebasing: buffer.value[start..<(start + result.size)])
                    }
                    let offsets = try writer.appendChunks(stored, alignment: ContainerLayout.defaultChunkAlignment)
                    for (slot, result) in encoded.enumerated() {
                        records.value.items.append(
                            ChunkRecord(
                                offset: offsets[slot], storedSize: result.size, rawSize: jobSizes[slot],
                                storedCRC: result.storedCRC, rawCRC: result.rawCRC, codec: result.codec))
                        progress?(.advanced(bytes: jobSizes[slot]))
                    }
                } catch {
                    writeFailure.record(error)
                }
            }
        }
        writing.wait()
        if let error = writeFailure.error { throw error }
        return records.value.items
    }
}

/// Chunk records appended by the writing thread, read after it finished.
private final class RecordList { var items: [ChunkRecord] = [] }
