#!/usr/bin/env bash
# Installs the OpenAI clients other projects wrote — the `openai` SDK, LiteLLM (its SDK and its proxy), `llm` and
# langchain-openai, from PyPI — into a venv under ~/.cache/torpor/ (scripts/setup-venv.sh) and prints its python.
# The clients' test drives the gateway with each of them.
set -euo pipefail
requirements="litellm[proxy]==1.79.3 llm==0.27.1 langchain-openai==1.0.2"
venv=$("$(dirname "$0")/setup-venv.sh" clients-1 "litellm[proxy]==1.79.3" litellm)
if ! "$venv" -c "import litellm, llm, langchain_openai, openai" 2>/dev/null; then
    # shellcheck disable=SC2086
    "$(dirname "$venv")/pip" install -q $requirements >&2 || { echo "cannot install $requirements" >&2; exit 1; }
fi
echo "$venv"
