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
"""Eval metrics of `UNATrainer` and `RankListRewardTrainer` on 2 DDP CPU processes equal those of one process.

`una_metrics_script.py` evaluates 5 rows (lists) at eval batch sizes 1, 2 and 4, so the sampler always repeats rows
on one process to even out the last batch; pooled metrics drop them (`gather_for_metrics`). One launch of about 20 s
on 2 cores (each process on one thread). Run with `pytest -m distributed tests/distributed/test_una_metrics.py`.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "distributed" / "una_metrics_script.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("una_metrics_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_process_eval_metrics_equal_one_process_over_the_whole_set(tmp_path):
    # Two torch processes on 2 cores: one thread each, or they oversubscribe the cores.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TRL_EXPERIMENTAL_SILENCE": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes" / "accelerate_configs" / "ci" / "ddp.yaml"),
        "--num_processes", "2", "--main_process_port", str(_free_port()),
        str(SCRIPT), "--output_dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_processes"] == 2 and report["distributed_type"] == "DistributedType.MULTI_CPU"

    script = _load_script()
    reference = script.evaluate_all(str(tmp_path / "one_process"), batch_sizes=(5,))  # the whole set in one batch
    for name in ("una", "instructgpt", "listnet"):
        expected = reference[f"{name}_bs5"]
        assert {"eval_loss"} < expected.keys()
        for batch_size in script.BATCH_SIZES:
            got = report[f"{name}_bs{batch_size}"]
            assert got.keys() == expected.keys(), (name, batch_size)
            for key, value in expected.items():
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, batch_size, key)
