#!/usr/bin/env python3
"""Prints the rows of bench_vllm_e2e.py (docs/bench/gpu/vllm-e2e.json) as a Markdown table: one line per run, size,
path and codec, with the median of the repeated wakes (first uses of a host cache on their own line) and the ratios
the targets are stated in. Usage: e2e_table.py [FILE.json] (bench_vllm_e2e.py prints it at the end of a run)."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        key = (row.get("run", 1), row["size"], row["path"], row["codec"], bool(row.get("first_use")))
        groups[key].append(row)
    lines = ["| run | model | path | codec | n | wake ms (median) | steps ms (median) | host RAM asleep GB | "
             "GPU held asleep MiB | first token ms | same text |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (run, size, path, codec, first), members in groups.items():
        wake = statistics.median(row["wake_ms"] for row in members)
        steps = {}
        for name in members[0].get("steps", {}):
            values = [row["steps"][name] for row in members if isinstance(row["steps"].get(name), (int, float))]
            if values:
                steps[name] = round(statistics.median(values), 1)
            elif members[0]["steps"][name]:
                steps[name] = members[0]["steps"][name]
        step_text = ", ".join(f"{name.removesuffix('_ms')} {value}" for name, value in steps.items())
        host = [row["host_ram_gb"] for row in members if row.get("host_ram_gb") is not None]
        gpu = [row["gpu_asleep_mib"] for row in members if row.get("gpu_asleep_mib") is not None]
        first_token = [row["first_token_ms"] for row in members if row.get("first_token_ms") is not None]
        same = all(row.get("same_text") for row in members)
        label = path + (" (first use)" if first else "")
        wake_text = f"{wake / 1000:.1f} s" if path == "cold start" else f"{wake:.0f}"
        cells = [str(run), f"{size} ({members[0]['model_gb']} GB)", label, codec, str(len(members)), wake_text,
                 step_text, f"{max(host):.2f}" if host else "—", str(max(gpu)) if gpu else "—",
                 f"{statistics.median(first_token):.0f}" if first_token else "—", "yes" if same else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> str:
    """The target ratios per run and size: host-cache L2 wake (steady) against the L1 wake and vLLM's L2 wake."""
    out = []
    by = defaultdict(list)
    for row in rows:
        by[(row.get("run", 1), row["size"])].append(row)
    for (run, size), members in sorted(by.items()):
        def median(path: str, codec: str | None = None, first: bool = False):
            values = [row for row in members if row["path"] == path and (codec is None or row["codec"] == codec)
                      and bool(row.get("first_use")) == first]
            return (statistics.median(row["wake_ms"] for row in values),
                    max(row["host_ram_gb"] for row in values)) if values else (None, None)

        l1, l1_host = median("L1 sleep+wake (vLLM)")
        l2, _ = median("L2 + reload_weights safetensors, page cache (vLLM)")
        cache, cache_host = median("L2 + Torpor reload, pinned host cache", "ans16")
        if l1 and l2 and cache:
            out.append(f"- run {run}, {size}: host-cache L2 wake (ans16) {cache:.0f} ms = {cache / l1:.2f} × the L1 "
                       f"wake ({l1:.0f} ms) and {cache / l2:.3f} × vLLM's L2 wake with safetensors ({l2:.0f} ms), "
                       f"holding {cache_host:.2f} GB = {cache_host / l1_host:.2f} × L1's {l1_host:.2f} GB")
    return "\n".join(out)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "docs/bench/gpu/vllm-e2e.json"
    with open(path) as handle:
        rows = json.load(handle)
    print(table(rows))
    print()
    print(ratios(rows))


if __name__ == "__main__":
    main()
