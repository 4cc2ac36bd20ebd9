#!/usr/bin/env bash
# setup-venv.sh NAME REQUIREMENTS MODULE...: installs REQUIREMENTS (space-separated, from PyPI) into a venv under ~/.cache/torpor/NAME
# — never into the repository — unless the venv already imports every MODULE, and prints the venv's python. On
# failure it prints the reason on the last line of stderr. The setup-*.sh scripts of the test tools use it.
set -euo pipefail
name=$1 requirement=$2
read -r -a requirements <<<"$requirement"
shift 2
venv=${TORPOR_CACHE:-$HOME/.cache/torpor}/$name
imports=$(IFS=,; echo "import $*")
if ! "$venv/bin/python" -c "$imports" 2>/dev/null; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv" >"$venv.log" 2>&1 ||
        ! "$venv/bin/pip" install -q "${requirements[@]}" >>"$venv.log" 2>&1; then
        echo "cannot install $requirement: $(tail -n 1 "$venv.log")" >&2
        exit 1
    fi
fi
echo "$venv/bin/python"
