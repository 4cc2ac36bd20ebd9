"""Drives an engine with the official `openai` Python package, as users' code does.

Usage: python openai_client_check.py BASE_URL MODEL
Prints one JSON object with what the client saw; the Swift test asserts on it.
"""
import json
import sys

import openai


def main(base_url: str, model: str) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)
    models = [m.id for m in client.models.list().data]
    completion = client.completions.create(model=model, prompt="hi", max_tokens=5, temperature=0)
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0
    )
    streamed = []
    finish = None
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0, stream=True
    ):
        if chunk.choices:
            streamed.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    stream_text = []
    for chunk in client.completions.create(model=model, prompt="hi", max_tokens=5, temperature=0, stream=True):
        stream_text.append(chunk.choices[0].text)
    try:
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=1)
        not_found = None
    except openai.NotFoundError as error:
        not_found = {"status": error.status_code, "message": str(error)}
    print(json.dumps({
        "models": models,
        "completion": completion.choices[0].text,
        "completion_finish": completion.choices[0].finish_reason,
        "completion_tokens": completion.usage.completion_tokens,
        "chat": chat.choices[0].message.content,
        "chat_role": chat.choices[0].message.role,
        "chat_stream": "".join(streamed),
        "chat_stream_finish": finish,
        "completion_stream": "".join(stream_text),
        "not_found": not_found,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
