#!/usr/bin/env bash
# Prepare, on a machine with pip access, the wheels bench/gpu.sh needs on a GPU machine that has
# python3 + torch but no network: the Python packages vislang and the OpenCLIP comparison use
# beyond that machine's image (pydantic, open_clip_torch, ftfy, webdataset, ...), for CPython 3.12
# on x86-64 Linux, into .whl/ (git-ignored; carry it with the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 webdataset==0.2.86 braceexpand==0.1.7
ls -1 .whl
