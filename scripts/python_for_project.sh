#!/usr/bin/env bash
# Prints the absolute path of the Python that scripts/run.sh and .ci/run install into and run with; messages go to
# stderr. The first rule that applies wins:
#
#   1. $PYTHON, if set (your choice, used as it is);
#   2. the active environment: $VIRTUAL_ENV/bin/python (an activated virtualenv), else $CONDA_PREFIX/bin/python;
#   3. the project virtualenv .venv/bin/python (repository root), if an earlier run created it;
#   4. `python` on PATH, if installs into it are allowed: no PEP 668 EXTERNALLY-MANAGED file in its stdlib folder (or
#      it is itself a virtualenv). This is today's behaviour, and CI's (pyenv, Docker python images);
#   5. otherwise (a stock Debian/Ubuntu/Homebrew machine: only `python3`, or an externally managed `python`): create
#      .venv with `python3 -m venv .venv` (or `python -m venv`) and use it; later runs reuse it (rule 3).
#
# Debian/Ubuntu need the `python3-venv` package for rule 5 (venv's pip comes from ensurepip); without it the half-made
# .venv is removed and the apt command is printed. A .venv without pip is re-created over itself.
set -euo pipefail
say() { echo "python_for_project: $*" >&2; }

if [ -n "${PYTHON:-}" ]; then
    case $PYTHON in
        */*) [ -x "$PYTHON" ] && { [[ $PYTHON == /* ]] && echo "$PYTHON" || echo "$PWD/$PYTHON"; } ;;
        *) command -v "$PYTHON" ;;
    esac || { say "PYTHON=$PYTHON is not an executable"; exit 1; }
    exit 0
fi
cd "$(dirname "$0")/.."
venv=$PWD/.venv

# Exit 0 when pip may install into interpreter $1: a virtualenv, or no EXTERNALLY-MANAGED marker (PEP 668).
installs_allowed() {
    "$1" -c 'import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(sys.prefix == sys.base_prefix and os.path.isfile(marker))' 2>/dev/null
}

for env_python in "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" "${CONDA_PREFIX:+$CONDA_PREFIX/bin/python}"; do
    if [ -n "$env_python" ] && [ -x "$env_python" ]; then
        echo "$env_python"
        exit 0
    fi
done
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import pip" 2>/dev/null; then
    echo "$venv/bin/python"
    exit 0
fi
if command -v python >/dev/null && installs_allowed python; then
    command -v python
    exit 0
fi

base=$(command -v python3 || command -v python || true)
if [ -z "$base" ]; then
    say "no python3 on PATH; install Python >= 3.11 (Debian/Ubuntu: sudo apt-get install python3 python3-venv)"
    exit 1
fi
had_venv=$([ -e "$venv" ] && echo yes || true)
say "creating the project virtualenv $venv with $base (installs into that Python are not allowed)"
if ! "$base" -m venv "$venv" >&2 || ! "$venv/bin/python" -c "import pip" 2>/dev/null; then
    [ -n "$had_venv" ] || rm -rf "$venv"
    version=$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 3)
    say "could not create $venv with pip. On Debian/Ubuntu install venv support, then re-run:"
    say "    sudo apt-get install python3-venv    # or python$version-venv"
    exit 1
fi
echo "$venv/bin/python"
