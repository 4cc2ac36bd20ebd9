"""Operator features of the gateway on real vLLM (issue 16), run by gateway_gpu.py between the switching checks and
the faults: the engines' own metrics and the gateway's token counts, request ids reaching vLLM, and configuration
reloads — an alias added to a running model (same engine process), a model removed (its engine stopped, 404) and
added back (started from its pack, same answers)."""
from __future__ import annotations

import os
import time
import urllib.error
import urllib.request


def metrics_text(gateway, path: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{gateway.admin_port}{path}",
                                     headers={"Authorization": f"Bearer {gateway.token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def sample(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def engine_pid(gateway, model: str) -> int | None:
    _, body = gateway.admin("GET", f"/admin/models/{model}")
    return body.get("engine_pid") if isinstance(body, dict) else None


def run(gateway, client, reference: dict, config_path: str, record, answers) -> None:
    """``answers(client, model)``: the four answers the switching checks compare."""
    # vLLM's own metrics through the gateway, from an engine on its private socket; the gateway's token counts.
    status, engine = metrics_text(gateway, "/admin/models/big/metrics")
    record("the engine's own metrics through the gateway", status == 200 and "vllm:" in engine,
           status=status, vllm_series=len([line for line in engine.splitlines() if line.startswith("vllm:")]))
    _, own = metrics_text(gateway, "/metrics")
    completion = sample(own, 'torpor_completion_tokens_total{model="big"}')
    prompt = sample(own, 'torpor_prompt_tokens_total{model="big"}')
    added = sample(own, 'torpor_added_latency_seconds_count{model="big"}')
    record("token counts from vLLM's usage, and the latency the gateway adds", bool(completion) and bool(prompt)
           and bool(added), completion_tokens=completion, prompt_tokens=prompt, added_latency_samples=added)

    # A request id reaches vLLM and comes back.
    raw = client.with_raw_response.completions.create(
        model="small-a", prompt="Hello", max_tokens=2, extra_headers={"X-Request-Id": "gpu-check-7"})
    record("a request id through the gateway", raw.headers.get("x-request-id") == "gpu-check-7",
           returned=raw.headers.get("x-request-id"))

    with open(config_path) as handle:
        original = handle.read()

    def reload(text: str) -> tuple[int, object]:
        with open(config_path, "w") as handle:
            handle.write(text)
        return gateway.admin("POST", "/admin/reload")

    # An alias added to a running model: the same engine process serves it under the new name.
    pid = engine_pid(gateway, "small-a")
    aliased = original.replace("  - name: small-a\n", "  - name: small-a\n    aliases: [gpt-4o-mini]\n")
    status, change = reload(aliased)
    same = client.completions.create(model="gpt-4o-mini", prompt="Hello", max_tokens=2, temperature=0)
    direct = client.completions.create(model="small-a", prompt="Hello", max_tokens=2, temperature=0)
    record("reload: an alias for a running model", status == 200 and change.get("updated") == ["small-a"]
           and engine_pid(gateway, "small-a") == pid and same.choices[0].text == direct.choices[0].text,
           change=change, pid_before=pid, pid_after=engine_pid(gateway, "small-a"))

    # A model removed: drained, its engine stopped, its name 404; added back: started from its pack, same answers.
    removed_pid = engine_pid(gateway, "small-b")
    without = aliased[:aliased.index("  - name: small-b")]
    status, change = reload(without)
    deadline = time.monotonic() + 120
    while "small-b" in gateway.states() and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        client.completions.create(model="small-b", prompt="Hello", max_tokens=2)
        refused = None
    except Exception as error:  # openai.NotFoundError
        refused = getattr(error, "status_code", repr(error))
    record("reload: a model removed", status == 200 and change.get("removed") == ["small-b"] and refused == 404
           and removed_pid is not None and not os.path.exists(f"/proc/{removed_pid}"),
           change=change, answer_status=refused)
    # Added back while big and small-a are awake and fill the GPU: it is started (and put to sleep) only where it
    # fits beside them, so its first request starts it, making room as any request does.
    status, change = reload(aliased)
    listed = gateway.states().get("small-b")
    started = time.monotonic()
    same = answers(client, "small-b") == reference["small-b"]
    record("reload: the model added back answers as before", status == 200 and change.get("added") == ["small-b"]
           and listed is not None and same, change=change, state_after_reload=listed,
           first_answers_s=round(time.monotonic() - started, 1))
    with open(config_path, "w") as handle:
        handle.write(original)
