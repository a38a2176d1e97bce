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
"""A reward failure on one rank stops every rank with the same error (issue 21, defect 5).

`reward_errors_script.py` runs three short online UNA trainings on 2 DDP CPU processes whose reward function fails on
rank 1 only (no score, an exception, NaN). Before the fix rank 1 raised alone and rank 0 waited in its next collective:
"Connection closed by peer", or a hang for the collective timeout (20 s in the script; 30 minutes by default). One
launch of about 20 s on 2 cores.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "distributed" / "reward_errors_script.py"


def test_a_reward_failure_on_one_rank_raises_the_same_error_on_every_rank(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TRL_EXPERIMENTAL_SILENCE": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes" / "accelerate_configs" / "ci" / "ddp.yaml"),
        "--num_processes", "2", "--main_process_port", str(port),
        str(SCRIPT), "--output_dir", str(tmp_path),
    ]  # fmt: skip
    # a hang would end at the script's 20 s collective timeout; the rest is start-up of two processes
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-6000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert reports[0] == reports[1], reports  # the same error type and message on both ranks
    expected = {
        "none": ("ValueError", r"Rollout \d+ at step 1 has no score: every reward function \(reward_none\)"),
        "raises": ("KeyError", r"'judge_score'"),
        "nan": ("ValueError", r"Non-finite reward scores at step 1 .* from reward function `reward_nan`.*prompt of"),
    }
    for mode, (kind, pattern) in expected.items():
        error = reports[0][mode]
        assert error is not None and error["type"] == kind, (mode, error)
        message = error["message"].strip('"')  # str(KeyError) quotes its message
        assert message.startswith("Scoring failed on rank 1 of 2 at step 1, reward function(s) reward_"), error
        assert re.search(pattern, message), (mode, message)
