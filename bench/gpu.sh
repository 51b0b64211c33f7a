#!/usr/bin/env bash
# vislang's GPU benchmark: one self-contained script for a single-H200 machine without network
# access, under 8 minutes. It installs nothing from the network: python3 with CUDA PyTorch comes
# with the machine, other packages come as wheels in .whl/ (made by bench/gpu_wheels.sh and
# carried with the repository). From the repository root:  bash bench/gpu.sh
# Results: printed, and written under $OUT (or bench/gpu-results/).
#   1. training step vislang vs OpenCLIP, ViT-B-16, batch 256, bf16: samples/s, MFU, peak memory
#   2. FLIP: image-tower step at mask 0.5 and 0.75 vs 0
#   3. exact accumulation (GradCache) K=4 x 64 vs 4 ordinary steps of 64
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vislang-site .whl/*.whl
  export PYTHONPATH="/tmp/vislang-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
out="${OUT:-bench/gpu-results}"
mkdir -p "$out"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"; } | tee "$out/machine.txt"
timeout 300 python3 bench/train_throughput.py --device cuda --arch ViT-B-16 --batch 256 --precision bf16 \
  --rounds 2 2>&1 | tee "$out/train_throughput.txt"
timeout 120 python3 bench/train_throughput.py --device cuda --arch ViT-B-16 --batch 256 --precision bf16 \
  --flip --rounds 1 2>&1 | tee "$out/flip.txt"
timeout 90 python3 bench/grad_cache.py --device cuda --preset ViT-B-16 --micro 64 --accum 4 --precision bf16 \
  --rounds 2 2>&1 | tee "$out/grad_cache.txt"
