#!/usr/bin/env python3
"""The object-storage benchmark of docs/benchmarks.md (run by scripts/bench-s3.sh).

    bench_s3.py TORPOR MOTO_PYTHON MODEL_DIR OUT.json [--repeat N] [--gpu]

Starts moto's S3 server on loopback, uploads the original model's files as plain objects and pushes its pack,
then measures, all on this machine in one run: a plain download of the original safetensors files and of the
pack's objects (curl signing with SigV4, one GET per object, one after the other), `torpor pull` (parallel ranged GETs, every
object's SHA-256 checked, fsynced), and `torpor verify s3://…` with an empty cache (pull, then decode and check
every chunk on the CPU: a load into host memory). Prints a table and writes JSON.

With --gpu (on a GPU machine: scripts/gpu/bench_s3_load.sh) the pack is made with `pack --gpu` (nvCOMP ANS) and
GPU loads are measured too: `torpor load s3://…` streaming the chunks by ranged GETs straight into the loader's
pinned ring, `torpor load --pull s3://…` with an empty cache (pull to disk, then load), and a load of the local
pack from the page cache. Load rows are timed as whole commands (CUDA start-up, opening the containers from their
metadata, the load), with the loader's own seconds beside them.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(command, env=None):
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def files_under(root):
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found.append((os.path.relpath(path, root), os.path.getsize(path)))
    return sorted(found)


def gpu_checks(torpor, env, endpoint, model, pack, work):
    """A streamed load is byte-exact; a bit flipped in a chunk in the store fails the load, naming the chunk."""
    checks = {}
    done = subprocess.run([torpor, "load", "s3://bench/pack", "--verify-against", model], env=env,
                          capture_output=True, text=True)
    checks["streamed_load_byte_exact"] = done.returncode == 0 and "verified" in done.stdout
    print("streamed load, compared with the original:", done.stdout.strip().splitlines()[-1:], done.stderr.strip())
    subprocess.run([torpor, "push", "-q", pack, "s3://bench/bad"], check=True, env=env)
    container = sorted(p for p, _ in files_under(pack) if p.endswith(".torpor"))[0]
    damaged = os.path.join(work, "damaged.torpor")
    shutil.copy(os.path.join(pack, container), damaged)
    with open(damaged, "r+b") as handle:
        handle.seek(4096 + 1000)  # inside the first chunk
        byte = handle.read(1)
        handle.seek(4096 + 1000)
        handle.write(bytes([byte[0] ^ 0x40]))
    subprocess.run(["curl", "-sf", "-T", damaged, "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "bench:bench",
                    f"{endpoint}/bench/bad/{container}", "-o", "/dev/null"], check=True)
    done = subprocess.run([torpor, "load", "s3://bench/bad"], env=env, capture_output=True, text=True)
    checks["corrupted_chunk_fails"] = done.returncode != 0 and "chunk" in done.stderr
    checks["corrupted_chunk_message"] = done.stderr.strip()
    print(f"streamed load of a pack with a flipped bit: exit {done.returncode}: {done.stderr.strip()}")
    return checks


def main():
    torpor, python, model, out = sys.argv[1:5]
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
    gpu = "--gpu" in sys.argv
    work = tempfile.mkdtemp(prefix="torpor-bench-s3-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/data.json")
                break
            except OSError:
                time.sleep(0.1)
        urllib.request.urlopen(urllib.request.Request(endpoint + "/bench", method="PUT"))
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                   AWS_ENDPOINT_URL=endpoint, TORPOR_S3_CACHE=os.path.join(work, "cache"))
        pack = os.path.join(work, "pack")
        subprocess.run([torpor, "pack", "-q"] + (["--gpu"] if gpu else []) + [model, pack], check=True)
        original = [(p, s) for p, s in files_under(model) if p.endswith(".safetensors")]
        packed = files_under(pack)
        for path, _ in original:
            subprocess.run(["curl", "-sf", "-T", os.path.join(model, path),
                            f"{endpoint}/bench/original/{path}", "-o", "/dev/null"], check=True)
        push = timed([torpor, "push", "-q", pack, "s3://bench/pack"], env)
        model_bytes = sum(s for _, s in original)
        stored = sum(s for _, s in packed)

        def curl_all(prefix, files):
            target = os.path.join(work, "curl")
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            started = time.perf_counter()
            for path, _ in files:
                subprocess.run(["curl", "-sf", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "bench:bench",
                                f"{endpoint}/bench/{prefix}/{path}", "-o",
                                os.path.join(target, path.replace("/", "_"))], check=True)
            subprocess.run(["sync"], check=True)
            return time.perf_counter() - started

        def pull(parallelism, range_megabytes):
            target = os.path.join(work, "pulled")
            shutil.rmtree(target, ignore_errors=True)
            return timed([torpor, "pull", "-q", "--parallelism", str(parallelism), "--range-megabytes",
                          str(range_megabytes), "s3://bench/pack", target], env)

        def verify():
            shutil.rmtree(os.path.join(work, "cache"), ignore_errors=True)
            return timed([torpor, "verify", "-q", "s3://bench/pack"], env)

        loader_seconds = {}

        def load(key, arguments):
            shutil.rmtree(os.path.join(work, "cache"), ignore_errors=True)
            started = time.perf_counter()
            done = subprocess.run([torpor, "load", "--json"] + arguments, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                sys.exit(f"torpor load {' '.join(arguments)} failed ({done.returncode}): {done.stderr}")
            loader_seconds.setdefault(key, []).append(json.loads(done.stdout)["seconds"][0])
            return wall

        runs = {
            "curl_original": [curl_all("original", original) for _ in range(repeat)],
            "curl_pack": [curl_all("pack", packed) for _ in range(repeat)],
            "pull_1": [pull(1, 8) for _ in range(repeat)],
            "pull_8": [pull(8, 8) for _ in range(repeat)],
            "pull_8_32": [pull(8, 32) for _ in range(repeat)],
        }
        if not gpu:  # `pack --gpu` chunks decode only on a GPU
            runs["pull_verify_8"] = [verify() for _ in range(repeat)]
        if gpu:
            runs["load_stream_8"] = [load("load_stream_8", ["--parallelism", "8", "--range-megabytes", "8",
                                                      "s3://bench/pack"])
                                     for _ in range(repeat)]
            runs["load_stream_8_32"] = [load("load_stream_8_32", ["--parallelism", "8", "--range-megabytes", "32",
                                                            "s3://bench/pack"])
                                        for _ in range(repeat)]
            runs["load_stream_16_32"] = [load("load_stream_16_32", ["--parallelism", "16", "--range-megabytes", "32",
                                                                    "s3://bench/pack"]) for _ in range(repeat)]
            runs["load_pull_8"] = [load("load_pull_8", ["--pull", "s3://bench/pack"]) for _ in range(repeat)]
            runs["load_local"] = [load("load_local", [pack]) for _ in range(repeat)]
            checks = gpu_checks(torpor, env, endpoint, model, pack, work)
    finally:
        moto.kill()
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("plain download of the original safetensors (curl)", "curl_original", model_bytes),
        ("plain download of the pack's objects (curl)", "curl_pack", stored),
        ("torpor pull, 1 ranged GET of 8 MiB at a time", "pull_1", stored),
        ("torpor pull, 8 ranged GETs of 8 MiB in flight", "pull_8", stored),
        ("torpor pull, 8 ranged GETs of 32 MiB in flight", "pull_8_32", stored),
    ]
    if not gpu:
        rows.append(("torpor verify s3:// (pull 8 x 32 MiB + decode every chunk)", "pull_verify_8", stored))
    if gpu:
        rows += [
            ("torpor load s3:// to the GPU, streamed: 8 ranged GETs of 8 MiB in flight", "load_stream_8", stored),
            ("torpor load s3:// to the GPU, streamed: 8 ranged GETs of 32 MiB", "load_stream_8_32", stored),
            ("torpor load s3:// to the GPU, streamed: 16 ranged GETs of 32 MiB (the default)", "load_stream_16_32", stored),
            ("torpor load --pull s3:// to the GPU (empty cache: pull 8 x 32 MiB, then load)", "load_pull_8", stored),
            ("torpor load of the local pack to the GPU (page cache; no store)", "load_local", stored),
        ]
    result = {"checks": checks if gpu else None, "model_bytes": model_bytes, "stored_bytes": stored, "ratio": stored / model_bytes,
              "push_seconds": push, "repeat": repeat, "rows": []}
    baseline = statistics.median(runs["curl_original"])
    print(f"model {model_bytes / 1e6:.1f} MB, pack {stored / 1e6:.1f} MB ({stored / model_bytes:.4f}); "
          f"push {push:.2f} s ({stored / 1e6 / push:.0f} MB/s)")
    print(f"| path | seconds (median of {repeat}) | MB/s moved | model MB/s | vs plain download of the original |")
    print("|---|---|---|---|---|")
    for label, key, moved in rows:
        seconds = statistics.median(runs[key])
        row = {"path": label, "key": key, "seconds": seconds, "all_seconds": runs[key],
               "moved_mb_per_s": moved / 1e6 / seconds, "model_mb_per_s": model_bytes / 1e6 / seconds,
               "speedup": baseline / seconds}
        if key in loader_seconds:
            row["loader_seconds"] = statistics.median(loader_seconds[key])
            row["loader_model_mb_per_s"] = model_bytes / 1e6 / row["loader_seconds"]
        result["rows"].append(row)
        loader = (f" (loader alone: {row['loader_seconds']:.3f} s, {row['loader_model_mb_per_s']:.0f} model MB/s)"
                  if "loader_seconds" in row else "")
        print(f"| {label} | {seconds:.3f} | {row['moved_mb_per_s']:.0f} | {row['model_mb_per_s']:.0f} | "
              f"{row['speedup']:.2f}x |{loader}")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
