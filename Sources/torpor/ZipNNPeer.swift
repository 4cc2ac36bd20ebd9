import Foundation
import TorporCheckpoint

/// ZipNN (IBM's lossless compressor for model weights, PyPI `zipnn`) measured on the same bytes as `torpor bench
/// pack`, in the same run: its whole-buffer path, each safetensors file compressed with the file's float dtype as
/// `bytearray_dtype` and as many threads as torpor uses, then decompressed, hashed and compared with the original
/// (the hash's time stands for the SHA-256 of the input too, the same bytes, which a pack records); and the same
/// calls doing a command's work file to file, each output written beside its place, fsynced and renamed.
enum ZipNNPeer {
    /// The Python interpreter to use: `--zipnn-python`, else `TORPOR_ZIPNN_PYTHON`, else `python3`.
    static func python(_ option: String?) -> String {
        option ?? ProcessInfo.processInfo.environment["TORPOR_ZIPNN_PYTHON"] ?? "python3"
    }

    /// Measures ZipNN on `files`, or says why it could not.
    static func measure(files: [String], workDirectory: String, repeats: Int, threads: Int, python: String) -> Result<
        PackBenchmark.Peer, PeerUnavailable
    > {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            [python, "-W", "ignore", "-c", script, String(repeats), String(threads), workDirectory] + files
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do {
            try process.run()
        } catch {
            return .failure(PeerUnavailable("cannot run \(python): \(error)"))
        }
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus == 3 {
            return .failure(
                PeerUnavailable(
                    "not measured: \(python) has no zipnn package (`pip install zipnn`, or point --zipnn-python or "
                        + "TORPOR_ZIPNN_PYTHON at a Python that has it)"))
        }
        guard process.terminationStatus == 0,
            let report = try? JSONDecoder().decode(Report.self, from: stdout)
        else {
            let reason = stderr.split(separator: "\n").last.map(String.init) ?? "no output"
            return .failure(
                PeerUnavailable("not measured: \(python) failed (exit \(process.terminationStatus)): \(reason)"))
        }
        let megabytes = Double(report.bytes) / 1e6
        return .success(
            PackBenchmark.Peer(
                name: report.name, ratio: Double(report.compressedBytes) / Double(max(report.bytes, 1)),
                compressMBps: megabytes / report.compressSeconds,
                compressAndHashMBps: megabytes / (report.compressSeconds + report.hashSeconds),
                decompressMBps: megabytes / report.decompressSeconds,
                decompressAndHashMBps: megabytes / (report.decompressSeconds + report.hashSeconds),
                compressFileMBps: megabytes / report.compressFileSeconds,
                decompressFileMBps: megabytes / report.decompressFileSeconds,
                verifyFileMBps: megabytes / report.verifyFileSeconds, exact: report.exact))
    }

    struct PeerUnavailable: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    private struct Report: Decodable {
        var name: String
        var bytes: Int
        var compressedBytes: Int
        var compressSeconds: Double
        var decompressSeconds: Double
        var hashSeconds: Double
        var compressFileSeconds: Double
        var decompressFileSeconds: Double
        var verifyFileSeconds: Double
        var exact: Bool
    }

    /// Prints one JSON object: the sums over the files of each step's median time. Exits 3 without zipnn. The file
    /// steps write under the work directory and remove what they wrote.
    private static let script = #"""
        import hashlib, json, os, struct, sys, time
        try:
            import zipnn
        except ImportError:
            sys.exit(3)
        from importlib.metadata import version

        repeats, threads, work, files = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
        names = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
        steps = ["compress", "decompress", "hash", "compressFile", "decompressFile", "verifyFile"]
        total = {"bytes": 0, "compressedBytes": 0, "exact": True}
        total.update({step + "Seconds": 0.0 for step in steps})

        def median(values):
            return sorted(values)[len(values) // 2]

        def read(path):
            data = bytearray(os.path.getsize(path))
            with open(path, "rb", buffering=0) as file:
                view, done = memoryview(data), 0
                while done < len(data):
                    got = file.readinto(view[done:])
                    if not got:
                        raise OSError("%s: shorter than its size" % path)
                    done += got
            return data

        def write(path, data):  # as torpor writes a file: beside it, fsynced, renamed into place
            with open(path + ".partial", "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.rename(path + ".partial", path)
            directory = os.open(os.path.dirname(path), os.O_RDONLY)
            os.fsync(directory)
            os.close(directory)

        compressedPath = os.path.join(work, "zipnn-peer.znn")
        restoredPath = os.path.join(work, "zipnn-peer.safetensors")
        for path in files:
            data = open(path, "rb").read()
            digest = hashlib.sha256(data).hexdigest()
            header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
            weight = {}
            for name, tensor in header.items():
                if name != "__metadata__" and tensor["dtype"] in names:
                    end, start = tensor["data_offsets"][1], tensor["data_offsets"][0]
                    weight[tensor["dtype"]] = weight.get(tensor["dtype"], 0) + end - start
            dtype = names[max(weight, key=weight.get)] if weight else "bfloat16"
            codec = zipnn.ZipNN(input_format="byte", bytearray_dtype=dtype, threads=threads)
            times = {step: [] for step in steps}
            for run in range(repeats + 1):  # the first run is not timed, as torpor's first is not
                source = bytearray(data)  # ZipNN rearranges the buffer it is given
                started = time.perf_counter()
                compressed = codec.compress(source)
                times["compress"].append(time.perf_counter() - started)
                started = time.perf_counter()
                restored = codec.decompress(compressed)
                times["decompress"].append(time.perf_counter() - started)
                started = time.perf_counter()
                hashlib.sha256(restored).hexdigest()
                times["hash"].append(time.perf_counter() - started)
                total["exact"] = total["exact"] and bytes(restored) == data
                # A command's work, each step starting with nothing left to write back, as torpor's do.
                os.sync()
                started = time.perf_counter()
                write(compressedPath, codec.compress(read(path)))
                times["compressFile"].append(time.perf_counter() - started)
                os.sync()
                started = time.perf_counter()
                write(restoredPath, codec.decompress(read(compressedPath)))
                times["decompressFile"].append(time.perf_counter() - started)
                os.sync()
                started = time.perf_counter()
                checked = hashlib.sha256(codec.decompress(read(compressedPath))).hexdigest() == digest
                times["verifyFile"].append(time.perf_counter() - started)
                total["exact"] = total["exact"] and checked and read(restoredPath) == data
                os.remove(compressedPath)
                os.remove(restoredPath)
                if run == 0:
                    times = {step: [] for step in steps}
            total["bytes"] += len(data)
            total["compressedBytes"] += len(compressed)
            for step in steps:
                total[step + "Seconds"] += median(times[step])
        total["name"] = "zipnn %s (Python %d.%d, %d threads)" % (
            version("zipnn"), sys.version_info[0], sys.version_info[1], threads)
        print(json.dumps(total))
        """#
}
