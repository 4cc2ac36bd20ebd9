extension ContainerIndex {
    /// Reads an index from its JSON bytes (`JSONParser`, not `JSONDecoder`: about ten times faster, and every
    /// message names the member at fault).
    init(parsing bytes: UnsafeRawBufferPointer) throws(JSONFields.Failure) {
        let index = try JSONFields(parsing: bytes, in: "the index")
        let writer = try index.fields("writer")
        let source = try index.fields("source")
        self.init(
            writer: Writer(
                name: try writer.string("name"), version: try writer.string("version"),
                codecs: try writer.strings("codecs")),
            checksum: try index.string("checksum"),
            chunkSize: try index.int("chunkSize"),
            chunkAlignment: try index.int("chunkAlignment"),
            source: Source(
                fileName: try source.string("fileName"), size: try source.int("size"),
                sha256: try source.string("sha256")),
            metadata: try index.strings("metadata"),
            tensors: try index.objects("tensors") { "tensor \($0)" }.map { (tensor) throws(JSONFields.Failure) in
                Tensor(
                    name: try tensor.string("name"), dtype: try tensor.value("dtype", as: DType.self),
                    shape: try tensor.ints("shape"), dataOffsets: try tensor.ints("dataOffsets"),
                    codec: try tensor.string("codec"), firstChunk: try tensor.int("firstChunk"),
                    chunkCount: try tensor.int("chunkCount"), duplicateOf: try tensor.optionalString("duplicateOf"))
            })
    }
}
