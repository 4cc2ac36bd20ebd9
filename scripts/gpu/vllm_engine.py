"""A real vLLM server on the GPU machine, driven over its HTTP contract, with timings: start, sleep, wake, reload,
greedy answers and time to the first token. Used by scripts/gpu/bench_vllm_e2e.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EngineError(RuntimeError):
    pass


class Engine:
    """``python -m vllm.entrypoints.openai.api_server`` on loopback with sleep mode, its log in ``log``."""

    def __init__(self, name: str, model: str, log: str, *, utilization: float, extra: list[str] = ()):
        self.name, self.model, self.log = name, model, log
        self.port = free_port()
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                   "--served-model-name", name, "--host", "127.0.0.1", "--port", str(self.port),
                   "--enable-sleep-mode", "--gpu-memory-utilization", str(utilization), "--max-model-len", "2048",
                   "--enforce-eager", *extra]
        self.started = time.perf_counter()
        with open(log, "wb") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True, env=dict(os.environ, VLLM_SERVER_DEV_MODE="1"))
        self.ready_s = None

    def wait_ready(self, timeout: float = 400) -> float:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise EngineError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2)
                self.ready_s = time.perf_counter() - self.started
                return self.ready_s
            if time.monotonic() > deadline:
                raise EngineError(f"{self.name} was not ready within {timeout} s:\n{self.tail()}")
            time.sleep(0.25)

    def tail(self, characters: int = 3000) -> str:
        with open(self.log, errors="replace") as handle:
            return handle.read()[-characters:]

    def log_seconds(self, pattern: str) -> list[float]:
        """Every number the log's lines matching ``pattern`` (a regex with one group) report."""
        with open(self.log, errors="replace") as handle:
            return [float(match.group(1)) for match in re.finditer(pattern, handle.read())]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    # ---- the contract ----

    def call(self, method: str, path: str, body=None, timeout: float = 300):
        """(seconds, status, decoded body)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            payload, status = error.read(), error.code
        seconds = time.perf_counter() - started
        try:
            decoded = json.loads(payload or b"null")
        except ValueError:
            decoded = payload.decode(errors="replace")
        return seconds, status, decoded

    def ok(self, method: str, path: str, body=None, timeout: float = 300) -> float:
        seconds, status, decoded = self.call(method, path, body, timeout)
        if status != 200:
            raise EngineError(f"{self.name}: {method} {path} answered {status}: {str(decoded)[:2000]}")
        return seconds

    def sleep(self, level: int) -> float:
        return self.ok("POST", f"/sleep?level={level}")

    def wake(self, *tags: str) -> float:
        query = "&".join(f"tags={tag}" for tag in tags)
        return self.ok("POST", "/wake_up" + (f"?{query}" if query else ""))

    def reload(self, weights_path: str | None = None) -> float:
        body = {"method": "reload_weights", "kwargs": {"weights_path": weights_path} if weights_path else {}}
        return self.ok("POST", "/collective_rpc", body)

    def greedy(self) -> list[str]:
        answers = []
        for prompt in PROMPTS:
            _, status, result = self.call("POST", "/v1/completions", {
                "model": self.name, "prompt": prompt, "max_tokens": 16, "temperature": 0})
            if status != 200:
                raise EngineError(f"{self.name}: completion answered {status}: {result}")
            answers.append(result["choices"][0]["text"])
        return answers

    def first_token_seconds(self, base: str | None = None, model: str | None = None) -> float:
        """Seconds from sending a streamed completion to its first token (to this engine, or ``base``)."""
        return first_token_seconds(base or f"http://127.0.0.1:{self.port}", model or self.name)

    def pids(self) -> list[int]:
        """The server and every process below it."""
        found, frontier = [], [self.process.pid]
        while frontier:
            pid = frontier.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as children:
                        frontier += [int(child) for child in children.read().split()]
        return found


def first_token_seconds(base: str, model: str) -> float:
    body = json.dumps({"model": model, "prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0,
                       "stream": True}).encode()
    request = urllib.request.Request(f"{base}/v1/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            if line.startswith(b"data: ") and b'"text"' in line:
                seconds = time.perf_counter() - started
                response.read()
                return seconds
    raise EngineError(f"{base}: the stream ended without a token")


def host_used_bytes() -> int:
    """Host RAM in use, MemTotal - MemAvailable (the page cache counts as available, tmpfs and pinned memory not)."""
    fields = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0]) * 1024
    return fields["MemTotal"] - fields["MemAvailable"]


def gpu_used_mib() -> int:
    output = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                            capture_output=True, text=True, check=True).stdout
    return int(output.split()[0])


def process_gpu_mib(pids: list[int]) -> int | None:
    """GPU memory the processes ``pids`` hold (nvidia-smi's compute apps), or None where it lists none of them
    (a container whose processes it cannot see)."""
    output = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                            capture_output=True, text=True).stdout
    held = [int(memory) for pid, memory in (line.split(",") for line in output.splitlines() if "," in line)
            if int(pid) in pids]
    return sum(held) if held else None


def drop_page_cache(directory: str) -> None:
    """Evicts ``directory``'s files from the page cache (clean pages; no privileges needed)."""
    os.sync()
    for root, _, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                descriptor = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(descriptor)
