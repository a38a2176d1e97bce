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
"""Golden trajectories (issue 23): every logged metric and a digest of every weight of `PPOTrainer`, `PPOMaxTrainer`
and `OnlineUNATrainer`, fp32 and CPU bf16, one process and two (DDP), plus a run resumed mid-way, equal those recorded
in `tests/golden/reference.json`.

The reference pins behaviour across refactors of the rollout engine: a change that moves a trajectory on purpose
re-records it (`python tests/golden/trajectory.py --record` on the commit before the change, then again after it,
saying why in the commit). Exact equality needs the machine the reference was recorded on (torch build and CPU
kernels, `fingerprint`); elsewhere sampling may take another path after a rounding difference, so only what does not
depend on the kernels is compared: metric names per row, step counts and logged integers, checkpoint files, every
rank holding the same weights, and a resumed run ending bit-identical to the full one.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest


GOLDEN = Path(__file__).resolve().parent / "golden" / "trajectory.py"


def _golden():
    spec = importlib.util.spec_from_file_location("golden_trajectory", GOLDEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golden = _golden()
REFERENCE = json.loads(golden.REFERENCE.read_text())
SAME_MACHINE = REFERENCE["fingerprint"] == golden.fingerprint()


def assert_matches_reference(results: dict, num_processes: str) -> None:
    expected = REFERENCE[num_processes]
    assert sorted(results) == sorted(expected)
    for key, got in results.items():
        want = expected[key]
        assert got["checkpoint_files"] == want["checkpoint_files"], key
        assert len(got["metrics"]) == len(want["metrics"]), key
        for step, (got_row, want_row) in enumerate(zip(got["metrics"], want["metrics"], strict=True)):
            assert got_row.keys() == want_row.keys(), (key, step, got_row.keys() ^ want_row.keys())
            for name, value in want_row.items():
                if SAME_MACHINE or not isinstance(value, float):
                    same = got_row[name] == value or (math.isnan(got_row[name]) and math.isnan(value))
                    assert same, (key, step, name, got_row[name], value)
        if SAME_MACHINE:
            assert (got["digest"], got["resumed_digest"]) == (want["digest"], want["resumed_digest"]), key
        assert got["resumed_digest"] == got["digest"], key  # resuming at step 2 ends where the full run ends


def test_one_process_trajectories_equal_the_reference(tmp_path):
    golden.run_all(str(tmp_path))
    assert_matches_reference(json.loads((tmp_path / "golden_1.json").read_text()), "1")


@pytest.mark.distributed
def test_two_process_trajectories_equal_the_reference(tmp_path):
    result = golden.launch_two_processes(str(tmp_path))
    assert result.returncode == 0, result.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{rank}_digests.json").read_text()) for rank in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank holds the same weights
    assert_matches_reference(json.loads((tmp_path / "golden_2.json").read_text()), "2")
