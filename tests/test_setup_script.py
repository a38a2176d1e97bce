# Copyright 2026 The ppomax_trl Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""README's set-up commands on a stock machine: which Python `scripts/run.sh` installs into.

`scripts/run.sh` runs in a copy of `scripts/` with a PATH of fake interpreters that log every call: a stock Debian
(`python3` only, externally managed: PEP 668), the same with `python`, an installable `python` (CI, pyenv), an active
virtualenv, and a machine without `python3-venv`. The fake system interpreter answers the PEP 668 probe with the real
Python and an EXTERNALLY-MANAGED marker, refuses pip, and its `-m venv` writes a fake virtualenv, so nothing is
installed. One test runs the selection for real with Debian's own `/usr/bin/python3` where there is one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "dirname", "rm", "mkdir", "chmod", "cat", "env", "tail", "mktemp", "grep")
FAKE_VENV = """#!{bash}
echo "VENV $0 $*" >> "$FAKE_LOG"
"""
# A system interpreter: pip refused when managed; `-m venv` writes FAKE_VENV (or fails like Debian without
# python3-venv: a half-made folder); anything else (the PEP 668 probe) runs the real Python, whose stdlib folder gets a
# marker through a sitecustomize when managed.
FAKE_SYSTEM = """#!{bash}
echo "{name} $*" >> "$FAKE_LOG"
if [ "$1 $2" = "-m pip" ]; then
    {pip}
fi
if [ "$1 $2" = "-m pytest" ]; then
    exit 0
fi
if [ "$1 $2" = "-m venv" ]; then
    dir=${{@: -1}}
    mkdir -p "$dir/bin"
    if [ -n "${{FAKE_NO_ENSUREPIP:-}}" ]; then echo "ensurepip is not available" >&2; exit 1; fi
    cat > "$dir/bin/python" <<'EOF'
{venv}EOF
    chmod +x "$dir/bin/python"
    exit 0
fi
exec env {pythonpath} {real} "$@"
"""
SITECUSTOMIZE = """import sysconfig
_get_path = sysconfig.get_path
sysconfig.get_path = lambda name, *a, **k: {marker_dir!r} if name == "stdlib" else _get_path(name, *a, **k)
"""


def assert_main_suite_then_vllm_tests(calls: list[str], main_python: str, repo: Path) -> None:
    """`run.sh test` without ARGS: the main suite with `main_python`, then the vLLM tests in `.venv-vllm` (built by
    scripts/vllm_env.sh with the system `python3`, never with the main environment's pip)."""
    main = calls.index(f"{main_python} -m pytest -q tests")
    assert calls[-1] == f"VENV {repo}/.venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests_vllm"
    vllm_installs = [call for call in calls[main:] if " -m pip install" in call]
    assert vllm_installs and all(call.startswith("VENV .venv-vllm/bin/python -m pip") for call in vllm_installs)


def _interpreter(folder: Path, name: str, managed: bool, tmp_path: Path) -> None:
    bash = shutil.which("bash")
    pythonpath = ""
    if managed:
        marker_dir = tmp_path / "stdlib"
        marker_dir.mkdir(exist_ok=True)
        (marker_dir / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use a venv\n")
        site = tmp_path / "managed_site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(marker_dir=str(marker_dir)))
        pythonpath = f"PYTHONPATH={site}"
    pip = 'echo "error: externally-managed-environment" >&2; exit 1' if managed else "exit 0"
    script = folder / name
    script.write_text(
        FAKE_SYSTEM.format(
            bash=bash, name=name, pip=pip, venv=FAKE_VENV.format(bash=bash), pythonpath=pythonpath, real=sys.executable
        )
    )
    script.chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """(repo, run): a copy of scripts/ in `repo`, and `run(interpreters, *args, **env)` that runs
    `bash scripts/run.sh test ARGS` with only `interpreters` ({name: managed}) and basic tools on PATH."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        (tools / tool).symlink_to(shutil.which(tool))
    log = tmp_path / "calls.log"
    log.touch()

    def run(interpreters: dict[str, bool], *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        fake = tmp_path / "bin"
        fake.mkdir(exist_ok=True)
        for name, managed in interpreters.items():
            _interpreter(fake, name, managed, tmp_path)
        start = len(log.read_text().splitlines())
        environ = {"PATH": f"{fake}:{tools}", "HOME": str(tmp_path), "FAKE_LOG": str(log), **env}
        result = subprocess.run(
            ["bash", "scripts/run.sh", "test", *args],
            check=False,
            cwd=repo,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            executable=shutil.which("bash"),
        )
        return result, log.read_text().splitlines()[start:]

    return repo, run


@pytest.mark.parametrize(
    "interpreters", [{"python3": True}, {"python3": True, "python": True}], ids=["python3", "both"]
)
def test_stock_machine_creates_and_reuses_the_project_venv(machine, interpreters):
    repo, run = machine
    venv_python = f"{repo}/.venv/bin/python"
    result, calls = run(interpreters, "-x")
    assert result.returncode == 0, result.stderr
    assert f"python3 -m venv {repo}/.venv" in calls
    assert f"VENV {venv_python} -m pip install --disable-pip-version-check torch==2.13.0" in calls
    assert calls[-1] == f"VENV {venv_python} -m pytest -q -x"
    assert not [call for call in calls if " -m pip" in call and not call.startswith("VENV")]  # never the system's

    result, calls = run(interpreters)  # the second run reuses .venv
    assert result.returncode == 0, result.stderr
    # (the vLLM environment is made with the system python3 on its first run: `python3 -m venv .venv-vllm`)
    assert not [call for call in calls if not call.startswith("VENV") and call != "python3 -m venv .venv-vllm"]
    assert_main_suite_then_vllm_tests(calls, f"VENV {venv_python}", repo)


def test_installable_python_is_used_as_today(machine):
    """CI and pyenv: `python` takes the installs, no .venv (so .ci/run's later `python` and `ruff` see them)."""
    repo, run = machine
    result, calls = run({"python": False, "python3": True})
    assert result.returncode == 0, result.stderr
    assert "python -m pip install --disable-pip-version-check torch==2.13.0" in calls
    assert_main_suite_then_vllm_tests(calls, "python", repo)
    assert not (repo / ".venv").exists()


def test_active_virtualenv_and_python_variable_win(machine, tmp_path):
    repo, run = machine
    active = tmp_path / "active"
    (active / "bin").mkdir(parents=True)
    (active / "bin" / "python").write_text(FAKE_VENV.format(bash=shutil.which("bash")))
    (active / "bin" / "python").chmod(0o755)
    result, calls = run({"python3": True}, VIRTUAL_ENV=str(active))
    assert result.returncode == 0, result.stderr
    assert_main_suite_then_vllm_tests(calls, f"VENV {active}/bin/python", repo)
    assert not (repo / ".venv").exists()

    result, calls = run({"python3": True}, PYTHON=str(active / "bin" / "python"))
    assert_main_suite_then_vllm_tests(calls, f"VENV {active}/bin/python", repo)


def test_missing_python3_venv_prints_the_apt_command(machine):
    repo, run = machine
    result, calls = run({"python3": True}, FAKE_NO_ENSUREPIP="1")
    assert result.returncode != 0
    assert "sudo apt-get install python3-venv" in result.stderr
    assert not (repo / ".venv").exists()  # the half-made folder is gone: the next run tries again
    assert not [call for call in calls if " -m pip" in call]


DEBIAN_PYTHON = Path("/usr/bin/python3")
DEBIAN_PROBE = (
    "import ensurepip, os, sys, sysconfig\n"
    "sys.exit(not os.path.isfile(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"
)


@pytest.mark.skipif(
    not DEBIAN_PYTHON.is_file()
    or subprocess.run([DEBIAN_PYTHON, "-c", DEBIAN_PROBE], check=False, capture_output=True).returncode != 0,
    reason="needs an externally managed /usr/bin/python3 with venv support (Debian 12 + python3-venv)",
)
def test_real_externally_managed_python3_gets_a_venv(tmp_path):
    """The real thing on Debian: PATH has only /usr/bin/python3 (PEP 668 marker); a .venv with pip is created."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        (tools / tool).symlink_to(shutil.which(tool))
    (tools / "python3").symlink_to("/usr/bin/python3")
    result = subprocess.run(
        ["bash", "scripts/python_for_project.sh"],
        check=False,
        cwd=tmp_path,
        env={"PATH": str(tools), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        executable=shutil.which("bash"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{tmp_path}/.venv/bin/python"
    probe = "import sys, pip; print(sys.prefix)"
    assert subprocess.check_output([result.stdout.strip(), "-c", probe], text=True).strip() == f"{tmp_path}/.venv"
