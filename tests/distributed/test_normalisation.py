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
"""Losses and decisions that must not depend on the process layout (runs of `normalisation_script.py`)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close


pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "distributed" / "normalisation_script.py"
DDP_CONFIG = REPO / "recipes" / "accelerate_configs" / "ci" / "ddp.yaml"


def _run(output_dir: Path, *script_args: str, processes: int = 1, timeout: int = 300) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TRL_EXPERIMENTAL_SILENCE": "1"}
    if processes > 1:
        env["OMP_NUM_THREADS"] = "1"  # two torch processes on 2 cores: one thread each
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        launcher = [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG),
            "--num_processes", str(processes), "--main_process_port", str(port),
        ]  # fmt: skip
    else:
        launcher = [sys.executable]
    cmd = [*launcher, str(SCRIPT), "--output_dir", str(output_dir), *script_args]
    try:
        result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(cmd)}` did not finish in {timeout} s (processes out of step?)")
    assert result.returncode == 0, f"`{' '.join(cmd)}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-5000:]}"


def test_minibatch_loss_is_a_global_token_mean(tmp_path):
    """1 process x 4 rows, 1 process x 2 micro-batches of 2, and 2 processes x 2 rows (responses of 5, 1, 3, 2
    tokens, ptx rows of unequal lengths) must produce the same gradients: the token counts that normalise the PPO and
    ptx losses are the minibatch's, over all processes and micro-batches."""
    layouts = {
        "one_process": ((), 1),
        "micro_batches": (("--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"), 1),
        "two_processes": (("--per_device_train_batch_size", "2"), 2),
    }
    gradients = {}
    for name, (extra, processes) in layouts.items():
        _run(tmp_path / name, "--check", "gradients", *extra, processes=processes)
        gradients[name] = torch.load(tmp_path / name / "gradients.pt")
    reference = gradients["one_process"]
    assert any(n.startswith("policy.") for n in reference) and any(n.startswith("value_model.") for n in reference)
    for name in ("micro_batches", "two_processes"):
        assert sorted(gradients[name]) == sorted(reference)
        for key, grad in reference.items():
            assert_close(gradients[name][key], grad, rtol=1e-4, atol=1e-7, msg=f"{name}: {key}")


def test_global_advantage_whitening_and_sequence_means_do_not_depend_on_the_layout(tmp_path):
    """`whiten_advantages_globally` with `loss_agg_mode="seq-mean-token-mean"`: 1 process x 4 rows and 2 processes x
    2 rows give the same gradients (the whitening statistics and the sequence count are the whole batch's); per-process
    whitening (TRL 1.12) does not, which is what the option is for."""
    gradients = {}
    for name, advantages, processes, extra in (
        ("one_process", "global_whitening", 1, ()),
        ("two_processes", "global_whitening", 2, ("--per_device_train_batch_size", "2")),
        ("two_processes_local", "local_whitening", 2, ("--per_device_train_batch_size", "2")),
    ):
        _run(tmp_path / name, "--check", "gradients", "--advantages", advantages, *extra, processes=processes)
        gradients[name] = torch.load(tmp_path / name / "gradients.pt")
    reference = gradients["one_process"]
    for key, grad in reference.items():
        assert_close(gradients["two_processes"][key], grad, rtol=1e-4, atol=1e-7, msg=key)
    policy_keys = [key for key in reference if key.startswith("policy.")]
    assert any(not torch.allclose(gradients["two_processes_local"][k], reference[k], rtol=1e-2) for k in policy_keys)


def test_warmup_early_stop_is_one_decision_for_all_processes(tmp_path):
    """Rank 0's local value loss is under `critic_warmup_loss_threshold`, rank 1's is far above it: the averaged loss
    decides, both ranks run the same steps and end with identical policy and critic weights."""
    _run(tmp_path, "--check", "warmup_threshold", processes=2, timeout=180)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    # the set-up: only rank 0's own loss crosses the threshold at the first warm-up step
    assert ranks[0]["local_warmup_value_losses"][0] < 1.0 < ranks[1]["local_warmup_value_losses"][0]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 3 + 2  # full warm-up (mean loss > 1), 2 updates
    assert ranks[0]["critic_warmup_done"] == ranks[1]["critic_warmup_done"] == 3
    weights = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    assert sorted(weights[0]) == sorted(weights[1])
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_reward_function_metrics_are_pooled_over_processes_as_grpo_pools_them(tmp_path):
    """2 processes: `rewards/<name>/mean|std` are over both processes' rollouts (a function returning None on one
    process is averaged over the other's), `log_metric` values are averaged over processes (a name logged on one
    process only does not hang the other), and each process trains on the weighted nan-aware sum of its own rollouts."""
    _run(tmp_path, "--check", "reward_contract", processes=2)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    weights = {"length_reward": 1.0, "rank_0_only": -0.5, "async_text_length": 0.25}
    logged = [e for e in ranks[0]["log_history"] if "rewards/length_reward/mean" in e]
    assert len(logged) == 2  # two updates of 2 rollouts per process
    for update, entry in enumerate(logged):
        values = {name: [v for r in ranks for n, step, vs in r["returned"] if n == name and step == update for v in vs]
                  for name in weights}  # fmt: skip
        assert len(values["length_reward"]) == 4 and values["rank_0_only"][2:] == [None, None]
        for name, both in values.items():
            applied = torch.tensor([v for v in both if v is not None], dtype=torch.float64)
            assert entry[f"rewards/{name}/mean"] == pytest.approx(applied.mean().item(), abs=1e-6), (update, name)
            assert entry[f"rewards/{name}/std"] == pytest.approx(applied.std().item(), abs=1e-6), (update, name)
        assert entry["contract/rank"] == pytest.approx(0.5) and entry["contract/rank_1_only"] == pytest.approx(5.0)
        for rank, report in enumerate(ranks):
            mine = {n: vs for n, step, vs in report["returned"] if step == update}
            expected = [sum(weights[n] * mine[n][i] for n in weights if mine[n][i] is not None) for i in range(2)]
            assert report["trained_scores"][update] == pytest.approx(expected, abs=1e-5), (rank, update)
