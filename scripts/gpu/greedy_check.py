#!/usr/bin/env python3
"""Is a random-weight model's greedy text stable on real vLLM, before and after vLLM's own level-1 sleep and wake?

bench_vllm_e2e.py compares every wake's greedy answers with the safetensors engine's first ones. For the 14B shape
every row differed, vLLM's own level-1 wake included, while Torpor's cold starts matched; this prints the answers
(twice before any sleep, after a level-1 wake, after a reset of the prefix cache, and again) so the rows can be read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vllm_e2e import make_model  # noqa: E402
from vllm_engine import Engine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="14b")
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--utilization", type=float, default=0.31)
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args()
    work = f"/tmp/torpor-greedy-{arguments.size}"
    shutil.rmtree(work, ignore_errors=True)
    make_model(work, arguments.size, arguments.tokenizer)
    engine = Engine("greedy", work, f"{os.path.dirname(arguments.out)}/greedy-engine.log",
                    utilization=arguments.utilization)
    answers = {}
    try:
        engine.wait_ready()
        answers["first"] = engine.greedy()
        answers["second"] = engine.greedy()
        engine.sleep(1)
        engine.wake()
        answers["after L1 wake"] = engine.greedy()
        engine.ok("POST", "/reset_prefix_cache")
        answers["after a prefix-cache reset"] = engine.greedy()
        answers["again"] = engine.greedy()
    finally:
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)
    for label, texts in answers.items():
        print(f"{label:28} {json.dumps(texts)}")
    with open(arguments.out, "w") as handle:
        json.dump({"size": arguments.size, "answers": answers}, handle, indent=1)


if __name__ == "__main__":
    main()
