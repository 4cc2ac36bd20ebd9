#!/usr/bin/env bash
# Installs moto's S3 server (moto[server], from PyPI) into a venv under ~/.cache/torpor/ and prints the venv's
# python (scripts/setup-venv.sh). The storage tests start `python -m moto.server` on loopback as a real
# S3-protocol server.
set -euo pipefail
version=5.2.5
exec "$(dirname "$0")/setup-venv.sh" "moto-$version" "moto[server]==$version" moto.server boto3
