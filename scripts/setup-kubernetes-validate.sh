#!/usr/bin/env bash
# Installs kubernetes-validate (from PyPI; it carries the Kubernetes schemas, so validating needs no cluster and no
# network) into a venv under ~/.cache/torpor/ and prints the venv's python (scripts/setup-venv.sh). The deployment
# tests validate deploy/kubernetes/ with it.
set -euo pipefail
version=1.37.0
exec "$(dirname "$0")/setup-venv.sh" "kubernetes-validate-$version" "kubernetes-validate==$version" kubernetes_validate
