"""The gateway driven by OpenAI clients other projects wrote: the openai SDK (sync and async), LiteLLM's SDK, a
LiteLLM proxy in front of the gateway, `llm` (its CLI, with the gateway as an extra OpenAI-compatible model) and
langchain-openai. Each lists models, completes, streams; the model `m1` sleeps at the start, so its first request
waits for a wake. Prints one JSON object with a row per check; exits 1 when one fails.

Usage: real_clients.py CLIENT_URL (the gateway's client listener, e.g. http://127.0.0.1:8080)
"""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

base = sys.argv[1].rstrip("/")
api = base + "/v1"
rows = []


def check(name, ok, **details):
    rows.append({"check": name, "ok": bool(ok), **details})


def attempt(name, body):
    try:
        body()
    except Exception as error:  # a failed client is a failed row, and the others still run
        check(name, False, error=repr(error)[:500])


messages = [{"role": "user", "content": "Say hello"}]


def openai_sync():
    import openai
    client = openai.OpenAI(base_url=api, api_key="unused", max_retries=0)
    ids = [model.id for model in client.models.list()]
    chat = client.chat.completions.create(model="m1", messages=messages, max_tokens=5)
    parts = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, max_tokens=5, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(part.choices[0].delta.content or "" for part in parts if part.choices)
    usage = [part.usage for part in parts if part.usage]
    embedding = client.embeddings.create(model="m0", input=["a", "b"])
    check("openai (sync)", {"m0", "m1", "gpt-4o-mini"} <= set(ids) and chat.choices[0].message.content and text
          and usage and usage[-1].completion_tokens > 0 and len(embedding.data) == 2, models=ids)


def openai_async():
    import openai

    async def run():
        client = openai.AsyncOpenAI(base_url=api, api_key="unused", max_retries=0)
        answers = await asyncio.gather(*[
            client.completions.create(model=model, prompt="Once upon", max_tokens=4)
            for model in ("m0", "m1", "m0", "m1")])
        return [answer.choices[0].text for answer in answers]

    texts = asyncio.run(run())
    check("openai (async, 4 at once across two models)", len(texts) == 4 and all(texts))


def litellm_sdk():
    import litellm
    answer = litellm.completion(model="openai/m0", api_base=api, api_key="unused", messages=messages,
                                max_tokens=5)
    stream = litellm.completion(model="openai/m1", api_base=api, api_key="unused", messages=messages,
                                max_tokens=5, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    check("LiteLLM SDK", answer.choices[0].message.content and text)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def litellm_proxy():
    import openai
    port = free_port()
    directory = tempfile.mkdtemp()
    config = os.path.join(directory, "litellm.yaml")
    with open(config, "w") as handle:
        handle.write(f"""model_list:
  - model_name: team-model
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{api}", api_key: unused}}
  - model_name: sleeper
    litellm_params: {{model: openai/m1, api_base: "{api}", api_key: unused}}
""")
    binary = os.path.join(os.path.dirname(sys.executable), "litellm")
    log = open(os.path.join(directory, "proxy.log"), "w")
    proxy = subprocess.Popen([binary, "--config", config, "--host", "127.0.0.1", "--port", str(port)],
                             stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, LITELLM_LOG="ERROR"),
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proxy.poll() is not None:
                    raise AssertionError("the LiteLLM proxy did not start: " + open(log.name).read()[-2000:])
                time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}", api_key="unused", max_retries=0)
        chat = client.chat.completions.create(model="team-model", messages=messages, max_tokens=5)
        text = "".join(part.choices[0].delta.content or "" for part in client.chat.completions.create(
            model="sleeper", messages=messages, max_tokens=5, stream=True) if part.choices)
        check("LiteLLM proxy in front of the gateway", chat.choices[0].message.content and text)
    finally:
        # The proxy (and whatever it started) goes: SIGTERM, then SIGKILL if it lingers.
        os.killpg(proxy.pid, signal.SIGTERM)
        try:
            proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proxy.pid, signal.SIGKILL)
            proxy.wait()


def llm_cli():
    directory = tempfile.mkdtemp()
    with open(os.path.join(directory, "extra-openai-models.yaml"), "w") as handle:
        handle.write(f"- model_id: torpor-m1\n  model_name: m1\n  api_base: \"{api}\"\n")
    binary = os.path.join(os.path.dirname(sys.executable), "llm")
    result = subprocess.run([binary, "-m", "torpor-m1", "--no-log", "-o", "max_tokens", "5", "Say hello"],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, LLM_USER_PATH=directory, OPENAI_API_KEY="unused"))
    check("llm (CLI)", result.returncode == 0 and result.stdout.strip(), stderr=result.stderr[-500:])


def langchain():
    from langchain_openai import ChatOpenAI
    chat = ChatOpenAI(base_url=api, api_key="unused", model="m0", max_tokens=5, max_retries=0)
    answer = chat.invoke("Say hello")
    streamed = "".join(chunk.content for chunk in ChatOpenAI(
        base_url=api, api_key="unused", model="m1", max_tokens=5, max_retries=0).stream("Say hello"))
    check("langchain-openai", answer.content and streamed)


for name, body in [("openai (sync)", openai_sync), ("openai (async)", openai_async), ("LiteLLM SDK", litellm_sdk),
                   ("LiteLLM proxy", litellm_proxy), ("llm (CLI)", llm_cli), ("langchain-openai", langchain)]:
    attempt(name, body)
print(json.dumps({"ok": all(row["ok"] for row in rows) and len(rows) == 6, "rows": rows}))
sys.exit(0 if all(row["ok"] for row in rows) and len(rows) == 6 else 1)
