#!/usr/bin/env bash
# Adds to .gpu/ (see prepare.sh) what the object-storage load benchmark needs on the GPU machine, which has no
# network: moto's S3 server for its Python 3.12, as a trimmed site folder (only the packages its image lacks, and
# botocore's service models cut to s3, sts and iam), compressed to .gpu/moto-site.tar.xz (about 10 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
wheels=$(mktemp -d)
site=$(mktemp -d)/moto-site
trap 'rm -rf "$wheels" "$(dirname "$site")"' EXIT
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$wheels" "moto[s3,server]==5.2.5"
mkdir -p "$site"
# The GPU image has werkzeug, jinja2, markupsafe, click, requests, urllib3, pyyaml, python-dateutil and six.
for name in moto boto3 botocore s3transfer jmespath cryptography cffi pycparser xmltodict responses flask \
    flask_cors blinker itsdangerous py_partiql_parser; do
    python3 -m zipfile -e "$(ls "$wheels"/"$name"-[0-9]*.whl | head -n 1)" "$site"
done
find "$site/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 ! -name sts ! -name iam -exec rm -rf {} +
mkdir -p .gpu
tar -cJf .gpu/moto-site.tar.xz -C "$(dirname "$site")" moto-site
du -sh .gpu/*
