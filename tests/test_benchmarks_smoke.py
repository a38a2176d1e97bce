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
"""Smoke run of `benchmarks/ppo_vs_trl112.py`: TRL 1.12 (in its cached venv) and both ppomax_trl trainers train.

The first run creates `benchmarks/.venv-trl112` with `pip install --no-deps trl==1.12.0`, so it needs PyPI (about 30 s);
later runs reuse it (about 30 s in total for the three tiny runs).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "ppo_vs_trl112.py"


@pytest.mark.slow
def test_benchmark_smoke_reports_every_implementation(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["setting"] == "tiny" and report["workload"]["updates"] == 3
    summary = report["summary"]
    assert set(summary) == {"trl112", "ppomax_ppo", "ppomax_max", "una_online"}
    assert summary["trl112"]["trl"] == "1.12.0"
    assert summary["ppomax_ppo"]["trl"] != "1.12.0"  # the system TRL, not the venv's
    for impl, row in summary.items():
        for key in ("s_per_update", "peak_rss_mb"):
            assert math.isfinite(row[key]) and row[key] > 0, (impl, key, row[key])
    assert set(report["ratios"]) == {
        "ppomax_ppo/trl112", "ppomax_max/trl112", "ppomax_max/ppomax_ppo", "una_online/ppomax_max"
    }  # fmt: skip
    for name, ratio in report["ratios"].items():
        assert math.isfinite(ratio["time"]) and math.isfinite(ratio["memory"]), name
    assert {run["impl"] for run in report["runs"]} == set(summary)
    for run in report["runs"]:
        assert run["timed_updates"] == 2 and len(run["s_per_update_all"]) == 2
