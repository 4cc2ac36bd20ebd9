"""The gateway benchmark of docs/benchmarks.md (run by scripts/bench-gateway.sh).

1. Proxy overhead, with wrk: one simulated engine (fast: its answer costs well under a millisecond), reached
   straight, through `torpor serve` and through nginx `proxy_pass` (keep-alive upstream, no buffering), in one
   run on the same machine; completions with and without streaming. Requests/s and p50/p99 latency; the latency
   the gateway adds is its p50/p99 minus the engine's own.
2. Switch overhead: two simulated engines on a GPU that holds one; requests alternate between them, so every
   request puts one to sleep and wakes the other. What a switch adds beyond the engines' own /sleep and
   /wake_up calls = the client's latency of a switching request - the engine-side sleep and wake durations the
   gateway measured (its transition events) - the latency of the same request without a switch.

Usage: python3 scripts/bench_gateway.py TORPOR_BINARY OUTPUT_JSON [--duration SECONDS]
Prints a table; writes the JSON.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60, headers=None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not answer within {timeout} s")


def post(url: str, body: dict, headers=None) -> bytes:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.read()


def parse_wrk(output: str) -> dict:
    def seconds(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    latency = {}
    for pct, value in re.findall(r"^\s+(50|99)\.000%\s+(\S+)", output, re.M):
        latency[pct] = seconds(value)
    if not latency:
        for pct, value in re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.M):
            latency[pct] = seconds(value)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_second": rps,
        "p50_ms": latency["50"] * 1e3,
        "p99_ms": latency["99"] * 1e3,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
    }


def run_wrk(url: str, body: dict, duration: int, connections: int, work: str) -> dict:
    script = os.path.join(work, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write("wrk.body = [[" + json.dumps(body) + "]]\n")
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    return parse_wrk(output)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("torpor")
    parser.add_argument("output")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--switches", type=int, default=40)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="torpor-bench-gateway-")
    processes = []

    def start(command, log):
        process = subprocess.Popen(command, stdout=open(os.path.join(work, log), "w"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        processes.append(process)
        return process

    try:
        # The engine: a simulated vLLM that generates fast, so the proxies are what is measured.
        engine_port = free_port()
        start([args.torpor, "sim-engine", "--model", "bench", "--port", str(engine_port), "--gpu", f"bench-{os.getpid()}",
               "--gpu-ledger", os.path.join(work, "engine-gpu.json"), "--time-scale", "0.0001",
               "--tokens-per-second", "100000"], "engine.log")
        engine = f"http://127.0.0.1:{engine_port}"
        wait_http(engine + "/health")

        # nginx proxy_pass with a keep-alive upstream and no buffering (what SSE needs).
        nginx_port = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    upstream engine {{ server 127.0.0.1:{engine_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{nginx_port};
        location / {{
            proxy_pass http://engine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
""")
        start(["nginx", "-p", work, "-c", conf, "-g", "daemon off;"], "nginx.log")
        wait_http(f"http://127.0.0.1:{nginx_port}/health")

        # The gateway in front of the same engine.
        client_port, admin_port = free_port(), free_port()
        token = "bench-admin-token-0123456789"
        config = os.path.join(work, "gateway.yaml")
        with open(config, "w") as f:
            f.write(f"""
listen: {{client: "127.0.0.1:{client_port}", admin: "127.0.0.1:{admin_port}"}}
admin_token: {token}
state_dir: {work}/gateway
models:
  - name: bench
    preload: true
    engine: {{url: "{engine}"}}
    weights_gib: 1
    kv_cache_gib: 1
""")
        start([args.torpor, "serve", "--config", config, "--log-level", "warning"], "gateway.log")
        wait_http(f"http://127.0.0.1:{client_port}/health")
        wait_http(f"http://127.0.0.1:{admin_port}/admin/models", headers={"Authorization": f"Bearer {token}"})
        gateway = f"http://127.0.0.1:{client_port}"

        results = {"proxy": {}, "switch": {}}
        bodies = {
            "completion": {"model": "bench", "prompt": "hello", "max_tokens": 4, "temperature": 0},
            "stream": {"model": "bench", "prompt": "hello", "max_tokens": 4, "temperature": 0, "stream": True},
        }
        targets = {"engine": engine, "nginx": f"http://127.0.0.1:{nginx_port}", "torpor": gateway}
        # Latency with one connection (no queueing: what one request costs through each path), then
        # throughput with several connections (every core busy).
        for kind, body in bodies.items():
            for name, base in targets.items():
                post(base + "/v1/completions", body)  # warm-up
                latency = run_wrk(base + "/v1/completions", body, args.duration, 1, work)
                load = run_wrk(base + "/v1/completions", body, args.duration, args.connections, work)
                results["proxy"].setdefault(kind, {})[name] = {
                    "p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"],
                    "requests_per_second": load["requests_per_second"],
                    "loaded_p50_ms": load["p50_ms"], "loaded_p99_ms": load["p99_ms"],
                    "non_2xx": latency["non_2xx"] + load["non_2xx"],
                    "socket_errors": " ".join(x for x in [latency["socket_errors"], load["socket_errors"]] if x),
                }

        # Switches: a second gateway with two engines on a GPU that holds one.
        client2, admin2 = free_port(), free_port()
        config2 = os.path.join(work, "switch.yaml")
        with open(config2, "w") as f:
            f.write(f"""
listen: {{client: "127.0.0.1:{client2}", admin: "127.0.0.1:{admin2}"}}
admin_token: {token}
state_dir: {work}/switch
scheduler: {{min_residency_seconds: 0}}
gpus: [{{id: "0", memory_gib: 10}}]
models:
  - {{name: a, preload: true, engine: {{simulated: true, time_scale: 0.01, tokens_per_second: 100000}}, weights_gib: 3, kv_cache_gib: 3}}
  - {{name: b, engine: {{simulated: true, time_scale: 0.01, tokens_per_second: 100000}}, weights_gib: 3, kv_cache_gib: 3}}
""")
        start([args.torpor, "serve", "--config", config2, "--log-level", "warning"], "switch.log")
        auth = {"Authorization": f"Bearer {token}"}
        wait_http(f"http://127.0.0.1:{admin2}/admin/models", headers=auth)
        end = time.time() + 60
        while time.time() < end:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{admin2}/admin/models",
                                                               headers=auth)) as r:
                states = [m["state"] for m in json.load(r)["models"]]
            if states == ["awake", "L1"]:
                break
            time.sleep(0.1)
        base2 = f"http://127.0.0.1:{client2}/v1/completions"
        body = {"prompt": "hello", "max_tokens": 4, "temperature": 0}
        # Without a switch: the same request to the awake model.
        plain = []
        for _ in range(args.switches):
            started = time.perf_counter()
            post(base2, {**body, "model": "a"})
            plain.append(time.perf_counter() - started)
        switching = []
        for index in range(args.switches):
            model = "b" if index % 2 == 0 else "a"
            started = time.perf_counter()
            post(base2, {**body, "model": model})
            switching.append(time.perf_counter() - started)
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{admin2}/admin/events/recent",
                                                           headers=auth)) as r:
            events = json.load(r)
        sleeps = [e["duration_seconds"] for e in events if e["kind"] == "sleep"][-args.switches:]
        wakes = [e["duration_seconds"] for e in events if e["kind"] == "wake"][-args.switches:]
        baseline = statistics.median(plain)
        overheads = [s - sl - w - baseline for s, sl, w in zip(switching, sleeps, wakes)]
        overheads.sort()
        results["switch"] = {
            "switches": len(overheads),
            "request_without_switch_ms": baseline * 1e3,
            "request_with_switch_median_ms": statistics.median(switching) * 1e3,
            "engine_sleep_median_ms": statistics.median(sleeps) * 1e3,
            "engine_wake_median_ms": statistics.median(wakes) * 1e3,
            "added_median_ms": statistics.median(overheads) * 1e3,
            "added_p90_ms": overheads[int(0.9 * (len(overheads) - 1))] * 1e3,
            "added_max_ms": overheads[-1] * 1e3,
        }

        cpu = platform.processor() or ""
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except Exception:
            pass
        results["machine"] = {"cpu": cpu, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                              "wrk_latency": f"-t1 -c1 -d{args.duration}s",
                              "wrk_throughput": f"-t1 -c{args.connections} -d{args.duration}s"}
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)

        print(f"Proxy overhead ({results['machine']['cpu']}, {os.cpu_count()} cores, shared by the engine, wrk and "
              f"the proxy). Latency: wrk -t1 -c1 -d{args.duration}s; req/s: wrk -t1 -c{args.connections} "
              f"-d{args.duration}s")
        print(f"{'request':<11} {'path':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
        for kind, rows in results["proxy"].items():
            direct = rows["engine"]
            for name, row in rows.items():
                added50 = row["p50_ms"] - direct["p50_ms"]
                added99 = row["p99_ms"] - direct["p99_ms"]
                row["added_p50_ms"] = added50
                row["added_p99_ms"] = added99
                print(f"{kind:<11} {name:<8} {row['requests_per_second']:>9.0f} {row['p50_ms']:>8.3f} "
                      f"{row['p99_ms']:>8.3f} {added50:>10.3f} {added99:>10.3f}"
                      + (f"  errors: {row['non_2xx']} {row['socket_errors']}" if row["non_2xx"] or row["socket_errors"] else ""))
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
        s = results["switch"]
        print()
        print(f"Switch overhead over {s['switches']} switches (simulated engines, time scale 0.01):")
        print(f"  request without a switch  {s['request_without_switch_ms']:.2f} ms (median)")
        print(f"  request with a switch     {s['request_with_switch_median_ms']:.2f} ms (median)")
        print(f"  engine /sleep, /wake_up   {s['engine_sleep_median_ms']:.2f} ms + {s['engine_wake_median_ms']:.2f} ms (medians)")
        print(f"  added by the gateway      {s['added_median_ms']:.2f} ms median, {s['added_p90_ms']:.2f} ms p90, "
              f"{s['added_max_ms']:.2f} ms max")
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
