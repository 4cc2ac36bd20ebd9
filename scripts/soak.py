"""The gateway soak of docs/benchmarks.md (run by scripts/soak.sh): switching load with injected faults.

`torpor serve` fronts simulated engines on one GPU that holds two of them awake, so requests keep putting models to
sleep and waking others. Client threads send completions and chat completions, streamed and not, to every model.
Every --fault-every seconds one fault is injected, in turn:

  crash            the engine of a model exits at once (it is serving or asleep)
  hang_next_wake   an asleep model's next /wake_up never answers (the watchdog must catch it)
  hang_next_sleep  an awake model's next /sleep never answers
  fail_next_sleep  an awake model's next /sleep answers 500
  fail_next_wake   an asleep model's next /wake_up answers 500
  slow_wake        an asleep model's wakes take 30 times longer, for 20 s
  kill_serving     SIGKILL to the engine of a model while a streamed answer of it is under way
  gateway_restart  SIGKILL to the gateway itself (its engines are left behind), then `torpor serve` again

A fault's window runs from its injection until the model (every model, for a gateway restart) has answered 200 to
a request that began after the fault took effect (the engine failure it causes, seen in the gateway's metrics; the
gateway back up; the slow wake undone). Clients retry a request only when the gateway itself is down.

Checks, all required: every request got an answer; no 5xx (and no error event in a stream) for a request whose
model was outside every fault window while it ran; every fault took effect and was recovered from.

Loopback and unix sockets only; bounded by --minutes and --max-requests. Prints a table; writes JSON.
Usage: python3 scripts/soak.py TORPOR_BINARY OUTPUT_JSON [--minutes M] [--models N] [--clients C]
"""
import argparse
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "soak-admin-token-0123456789abcdef"
FAULTS = ["crash", "hang_next_wake", "fail_next_sleep", "kill_serving", "fail_next_wake", "hang_next_sleep",
          "slow_wake", "gateway_restart"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: how an operator (or this script) reaches an engine."""

    def __init__(self, path: str, timeout: float = 10):
        super().__init__("engine", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Gateway:
    def __init__(self, binary: str, work: str, models: int):
        self.binary, self.work = binary, work
        self.client_port, self.admin_port = free_port(), free_port()
        self.config = os.path.join(work, "soak.yaml")
        lines = [
            f'listen: {{client: "127.0.0.1:{self.client_port}", admin: "127.0.0.1:{self.admin_port}"}}',
            f"admin_token: {TOKEN}",
            f"state_dir: {work}/state",
            "limits: {queue_timeout_seconds: 90, upstream_read_timeout_seconds: 30}",
            "scheduler: {min_residency_seconds: 0.2, transition_timeout_seconds: 5, max_consecutive_failures: 5}",
            # Two awake (6 GiB each) and the others' residue (1.2 GiB each) fit.
            f'gpus: [{{id: "0", memory_gib: {2 * 7.2 + (models - 2) * 1.2 + 0.5:.1f}}}]',
            "models:",
        ]
        for index in range(models):
            lines.append(f"  - {{name: m{index}, preload: {str(index < 2).lower()}, engine: {{simulated: true, "
                         "time_scale: 0.02, tokens_per_second: 400}, weights_gib: 3, kv_cache_gib: 3}")
        with open(self.config, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        self.process = None
        self.log = open(os.path.join(work, "gateway.log"), "ab")
        self.down = threading.Event()

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "serve", "--config", self.config],
                                        stdout=self.log, stderr=self.log)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                states = [m["state"] for m in self.models()]
                if states and all(s in ("awake", "L1", "L2") for s in states):
                    self.down.clear()
                    return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise SystemExit(f"soak: torpor serve exited with {self.process.returncode}; see {self.log.name}")
            time.sleep(0.2)
        raise SystemExit("soak: the gateway's models did not all start within 120 s")

    def admin(self, method: str, path: str):
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            connection.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def models(self) -> list:
        return json.loads(self.admin("GET", "/admin/models")[1])["models"]

    def failures(self) -> dict:
        text = self.admin("GET", "/metrics")[1]
        return {m: float(v) for m, v in re.findall(r'torpor_engine_failures_total\{model="([^"]+)"\} (\S+)', text)}

    def engine_socket(self, model: str) -> str:
        return [m for m in self.models() if m["name"] == model][0]["engine_socket"]

    def engine_pid(self, model: str) -> int:
        socket_path = self.engine_socket(model)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    arguments = handle.read().split(b"\0")
            except OSError:
                continue
            if b"sim-engine" in arguments and socket_path.encode() in arguments:
                return int(pid)
        raise RuntimeError(f"no engine process serves {socket_path}")

    def fault(self, model: str, kind: str, factor: float | None = None) -> None:
        connection = UnixConnection(self.engine_socket(model))
        try:
            query = f"kind={kind}" + (f"&factor={factor}" if factor is not None else "")
            connection.request("POST", f"/sim/fault?{query}")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"injecting {kind} into {model}: HTTP {response.status}")
        finally:
            connection.close()

    def kill(self) -> None:
        self.down.set()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Load:
    """Client threads; every request's model, start, end, outcome and retries."""

    def __init__(self, gateway: Gateway, models: int, clients: int, max_requests: int):
        self.gateway, self.models, self.max_requests = gateway, models, max_requests
        self.records, self.lock, self.stopping = [], threading.Lock(), threading.Event()
        self.streaming = {}  # model -> number of streamed answers under way
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]

    def client(self, index: int) -> None:
        rng = random.Random(index)
        while not self.stopping.is_set():
            with self.lock:
                if len(self.records) >= self.max_requests:
                    return
            model = f"m{rng.randrange(self.models)}"
            stream, chat = rng.random() < 0.5, rng.random() < 0.5
            body = {"model": model, "max_tokens": rng.choice([4, 16, 64]), "temperature": 0, "stream": stream}
            if chat:
                body["messages"] = [{"role": "user", "content": f"soak {index}"}]
            else:
                body["prompt"] = f"soak {index}"
            path = "/v1/chat/completions" if chat else "/v1/completions"
            record = {"model": model, "stream": stream, "start": time.time(), "retries": 0}
            while True:
                outcome = self.send(path, body, model, stream)
                if outcome is None and self.gateway.down.is_set() and not self.stopping.is_set():
                    record["retries"] += 1  # the gateway itself is down: a client retries
                    time.sleep(0.2)
                    continue
                break
            record["end"], record["outcome"] = time.time(), outcome or "no answer"
            with self.lock:
                self.records.append(record)

    def send(self, path: str, body: dict, model: str, stream: bool):
        """The answer's status ("200", "502", ...), "stream error CODE", or None when nothing came back."""
        connection = http.client.HTTPConnection("127.0.0.1", self.gateway.client_port, timeout=180)
        if stream:
            with self.lock:
                self.streaming[model] = self.streaming.get(model, 0) + 1
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
            if response.status == 200 and stream:
                if '"error"' in text:
                    code = re.search(r'"code":\s*"?([^",}]+)', text)
                    return f"stream error {code.group(1) if code else '?'}"
                if "[DONE]" not in text:
                    return "stream cut short"
            return str(response.status)
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()
            if stream:
                with self.lock:
                    self.streaming[model] -= 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("torpor")
    parser.add_argument("output")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--fault-every", type=float, default=20, help="seconds between faults")
    parser.add_argument("--max-requests", type=int, default=500_000)
    args = parser.parse_args()
    if args.models < 4:
        raise SystemExit("soak: use 4 models or more")
    work = tempfile.mkdtemp(prefix="torpor-soak-")
    gateway = Gateway(os.path.abspath(args.torpor), work, args.models)
    gateway.start()
    load = Load(gateway, args.models, args.clients, args.max_requests)
    for thread in load.threads:
        thread.start()
    rng = random.Random(7)
    faults, began = [], time.time()
    end = began + args.minutes * 60
    try:
        while time.time() < end - args.fault_every and len(load.records) < args.max_requests:
            time.sleep(args.fault_every)
            kind = FAULTS[len(faults) % len(FAULTS)]
            faults.append(inject(gateway, load, kind, rng, args.models))
            print(f"soak: {time.time() - began:6.0f} s  {kind:16} {faults[-1]['model']}", flush=True)
        while time.time() < end:
            time.sleep(1)
    finally:
        load.stopping.set()
        for thread in load.threads:
            thread.join(timeout=200)
        final = {}
        try:
            final = {m["name"]: m["state"] for m in gateway.models()}
        finally:
            gateway.stop()
    report(load.records, faults, final, args, began, work)


def inject(gateway: Gateway, load: Load, kind: str, rng: random.Random, models: int) -> dict:
    names = [f"m{i}" for i in range(models)]
    states = {m["name"]: m["state"] for m in gateway.models()}
    awake = [n for n in names if states.get(n) == "awake"] or names
    asleep = [n for n in names if states.get(n) in ("L1", "L2")] or names
    fault = {"kind": kind, "injected": time.time()}
    before = gateway.failures()
    if kind == "gateway_restart":
        fault["model"] = "all"
        gateway.kill()
        gateway.start()
        fault["effect"] = time.time()
        return fault
    if kind == "kill_serving":
        deadline = time.time() + 10
        while time.time() < deadline:
            with load.lock:
                serving = [m for m, n in load.streaming.items() if n > 0 and states.get(m) == "awake"]
            if serving:
                break
            time.sleep(0.05)
        model = rng.choice(serving or awake)
        fault["model"] = model
        os.kill(gateway.engine_pid(model), signal.SIGKILL)
    else:
        model = rng.choice(awake if kind in ("crash", "fail_next_sleep", "hang_next_sleep") else asleep)
        fault["model"] = model
        if kind == "slow_wake":
            gateway.fault(model, "slow_wake", 30)
            time.sleep(20)
            gateway.fault(model, "slow_wake", 1)
            fault["effect"] = time.time()
            return fault
        try:
            gateway.fault(model, kind)
        except (OSError, RuntimeError) as error:
            # A crashing engine exits before it answers: that is the fault. Otherwise the engine went away
            # meanwhile (a sleep or a restart), and the fault was not injected.
            if not (kind == "crash" and isinstance(error, http.client.RemoteDisconnected)):
                fault["note"] = f"not injected: {error}"
                fault["effect"] = time.time()
                return fault
    # The fault takes effect when the gateway counts the engine's failure (a sleep or wake fault waits for the
    # switching load to sleep or wake that model).
    deadline = time.time() + 60
    while time.time() < deadline:
        if gateway.failures().get(model, 0) > before.get(model, 0):
            fault["effect"] = time.time()
            break
        time.sleep(0.2)
    return fault


def report(records: list, faults: list, final: dict, args, began: float, work: str) -> None:
    # Each fault's window: from injection until its model (all models, for a gateway restart) answered 200 to a
    # request that began after the effect.
    for fault in faults:
        effect = fault.get("effect")
        if effect is None:
            continue
        recovered = {}
        for record in records:
            if record["outcome"] == "200" and record["start"] >= effect:
                model = record["model"]
                if model == fault["model"] or fault["model"] == "all":
                    recovered[model] = min(recovered.get(model, record["end"]), record["end"])
        expected = [f"m{i}" for i in range(args.models)] if fault["model"] == "all" else [fault["model"]]
        if all(m in recovered for m in expected):
            fault["recovered"] = max(recovered[m] for m in expected)
            fault["recovery_seconds"] = round(fault["recovered"] - fault["injected"], 2)

    def in_window(record: dict) -> bool:
        for fault in faults:
            if fault["model"] not in (record["model"], "all"):
                continue
            closed = fault.get("recovered", float("inf"))
            if record["start"] <= closed and record["end"] >= fault["injected"]:
                return True
        return False

    outcomes, healthy_failures, unanswered = {}, [], []
    for record in records:
        outcomes[record["outcome"]] = outcomes.get(record["outcome"], 0) + 1
        if record["outcome"] == "no answer":
            unanswered.append(record)
        elif record["outcome"] != "200" and not in_window(record):
            healthy_failures.append(record)
    unrecovered = [f for f in faults if "recovered" not in f]
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.platform()})",
        "minutes": round((time.time() - began) / 60, 1), "models": args.models, "clients": args.clients,
        "requests": len(records), "retried_while_gateway_down": sum(r["retries"] > 0 for r in records),
        "outcomes": outcomes, "faults": faults, "final_states": final,
        "unanswered": len(unanswered), "failures_on_healthy_models": healthy_failures[:20],
        "failures_on_healthy_models_count": len(healthy_failures), "unrecovered_faults": len(unrecovered),
    }
    result["passed"] = not unanswered and not healthy_failures and not unrecovered
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"\n| soak: {result['minutes']} min, {args.models} models, {args.clients} clients | value |")
    print("|---|---|")
    print(f"| requests | {len(records)} |")
    for outcome, count in sorted(outcomes.items()):
        print(f"| answered {outcome} | {count} |")
    print(f"| retried while the gateway was down | {result['retried_while_gateway_down']} |")
    print(f"| unanswered | {len(unanswered)} |")
    print(f"| non-200 on a model outside every fault window | {len(healthy_failures)} |")
    print(f"| faults injected / recovered | {len(faults)} / {len(faults) - len(unrecovered)} |")
    print()
    print("| fault | count | recovered | slowest recovery, s from injection |")
    print("|---|---|---|---|")
    for kind in FAULTS:
        of_kind = [f for f in faults if f["kind"] == kind]
        if of_kind:
            times = [f["recovery_seconds"] for f in of_kind if "recovery_seconds" in f]
            print(f"| {kind} | {len(of_kind)} | {len(times)} | {max(times) if times else '-'} |")
    print(f"\nsoak: {'PASSED' if result['passed'] else 'FAILED'}; details in {args.output}, logs in {work}")
    if result["passed"]:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
