#!/usr/bin/env bash
# The checkpoint tools end to end: build torpor, pack a real model, inspect the pack, verify it against the original,
# restore it and compare. MODEL defaults to the MiniLM bf16 fixture beside the repository; where that is absent,
# a synthetic bf16 model is generated.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release
torpor=.build/release/torpor

work=$(mktemp -d "${TMPDIR:-/tmp}/torpor-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
model=${MODEL:-../shared/fixtures/minilm-l6-bf16.safetensors}
if [ ! -e "$model" ]; then
    echo "demo: $model not found; generating a synthetic bf16 model" >&2
    model="$work/synthetic"
    python3 scripts/make_synthetic_model.py "$model"
fi

echo "== torpor pack $model"
"$torpor" pack "$model" "$work/packed"
echo "== torpor inspect (first lines)"
"$torpor" inspect "$work/packed" > "$work/inspect.txt"
head -n 12 "$work/inspect.txt"
echo "  ..."
tail -n 2 "$work/inspect.txt"
echo "== torpor verify --against"
"$torpor" verify "$work/packed" --against "$model"
echo "== torpor unpack"
"$torpor" unpack "$work/packed" "$work/restored"
if [ -d "$model" ]; then
    (cd "$model" && find . -type f ! -path './.git/*') | while read -r file; do cmp "$model/$file" "$work/restored/$file"; done
else
    cmp "$model" "$work/restored/$(basename "$model")"
fi
echo "== every restored file is byte-identical to the original"
