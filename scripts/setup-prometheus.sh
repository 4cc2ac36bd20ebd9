#!/usr/bin/env bash
# Installs Debian's prometheus package (the server and promtool; apt-get, when missing and this runs as root) for
# the metrics tests: promtool checks the gateway's exposition and a real Prometheus scrapes it. Prints the
# directory that holds both commands; on failure the reason on the last line of stderr.
set -euo pipefail
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; } \
            >"${TMPDIR:-/tmp}/torpor-prometheus.log" 2>&1 \
            || { echo "cannot install prometheus: $(tail -n 1 "${TMPDIR:-/tmp}/torpor-prometheus.log")" >&2; exit 1; }
    else
        echo "prometheus is not installed (apt-get install prometheus, as root)" >&2
        exit 1
    fi
fi
dirname "$(command -v promtool)"
