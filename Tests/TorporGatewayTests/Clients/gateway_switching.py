"""Switches back and forth between the gateway's models with the official `openai` package, as users' code does.

Usage: python gateway_switching.py BASE_URL ROUNDS MODEL...
Each round asks every model, in turn, for a completion, a streamed completion, a chat completion and a streamed
chat completion (greedy). Prints one JSON object: per model, the texts of every round, and the models listed.
The Swift test asserts that every round gave the same texts, whatever slept and woke in between.
"""
import json
import sys

import openai


def texts(client: openai.OpenAI, model: str) -> dict:
    prompt = "The capital of France is"
    completion = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
    stream = "".join(
        chunk.choices[0].text
        for chunk in client.completions.create(
            model=model, prompt=prompt, max_tokens=8, temperature=0, stream=True
        )
        if chunk.choices
    )
    messages = [{"role": "user", "content": "Say something about sleep."}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
    chat_stream = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model=model, messages=messages, max_tokens=8, temperature=0, stream=True
        )
        if chunk.choices
    )
    return {
        "completion": completion.choices[0].text,
        "completion_stream": stream,
        "chat": chat.choices[0].message.content,
        "chat_stream": chat_stream,
    }


def main(base_url: str, rounds: int, models: list) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    seen = {model: [] for model in models}
    for _ in range(rounds):
        for model in models:
            seen[model].append(texts(client, model))
    listed = [m.id for m in client.models.list().data]
    print(json.dumps({"rounds": seen, "listed": listed}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
