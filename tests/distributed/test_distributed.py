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
"""Two-process CPU runs of `ppo_script.py` under DDP, DeepSpeed ZeRO-2 and ZeRO-3, launched with `accelerate launch`,
and of `config_script.py`: configurations of `tests/test_configurations.py` (precision, pad == EOS, LR schedule) on 2
processes, checked by the same invariants (`config_probes.py`) plus identical weights on every rank.

Each run takes 10-17 s on 2 cores; the first DeepSpeed run also JIT-compiles `deepspeed_shm_comm_op` once (about a
minute, cached in the torch extensions dir). Run them with `pytest -m distributed tests/distributed`.
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from config_probes import ON_POLICY_KEYS
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification


pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "distributed" / "ppo_script.py"
CONFIG_SCRIPT = REPO / "tests" / "distributed" / "config_script.py"
CONFIGS = REPO / "recipes" / "accelerate_configs" / "ci"
NUM_PROCESSES = 2
LAUNCH_TIMEOUT_S = 600
EXPECTED = {  # accelerate config -> (distributed type in the report, ZeRO stage)
    "ddp": ("DistributedType.MULTI_CPU", None),
    "zero2": ("DistributedType.DEEPSPEED", 2),
    "zero3": ("DistributedType.DEEPSPEED", 3),
}
_RUNS: dict[tuple, Path] = {}  # one launch per (config, script args) per pytest process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(config: str, output_dir: Path, script_args: tuple[str, ...], script: Path = SCRIPT) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "WANDB_MODE": "disabled",
        "TRL_EXPERIMENTAL_SILENCE": "1",
    }
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",  # `accelerate launch` of this interpreter
        "--config_file", str(CONFIGS / f"{config}.yaml"),
        "--num_processes", str(NUM_PROCESSES),
        "--main_process_port", str(_free_port()),
        str(script), "--output_dir", str(output_dir), *script_args,
    ]  # fmt: skip
    result = subprocess.run(
        cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S
    )
    (output_dir / "launch.log").write_text(f"$ {' '.join(cmd)}\n{result.stdout}\n--- stderr ---\n{result.stderr}")
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(cmd)}` exited with {result.returncode} (full log: {output_dir / 'launch.log'}).\n"
            f"--- stdout (tail) ---\n{result.stdout[-3000:]}\n--- stderr (tail) ---\n{result.stderr[-6000:]}"
        )


def _run(tmp_path_factory, config: str, *script_args: str, script: Path = SCRIPT) -> Path:
    """Output dir of a finished run, launching it on first use."""
    key = (script.name, config, *script_args)
    if key not in _RUNS:
        output_dir = tmp_path_factory.mktemp(f"{config}{''.join(script_args).replace('-', '_')}")
        _launch(config, output_dir, script_args, script)
        _RUNS[key] = output_dir
    return _RUNS[key]


def _read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def _check_run(output_dir: Path, config: str) -> None:
    report = _read_json(output_dir / "report.json")
    distributed_type, zero_stage = EXPECTED[config]
    assert report["num_processes"] == NUM_PROCESSES
    assert report["distributed_type"] == distributed_type
    assert report["zero_stage"] == zero_stage
    num_steps = report["global_step"]
    assert num_steps == report["critic_warmup_steps"] + 2  # total_episodes 8 / (2 per device * 2 processes)
    assert report["batch_size"] == NUM_PROCESSES * report["local_batch_size"]

    # metrics: one log per step (logging_steps=1), pooled over processes, every value finite
    logs = [entry for entry in report["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in logs] == list(range(1, num_steps + 1))
    for entry in logs:
        for key in ("loss", "grad_norm", "learning_rate", "objective/scores", "objective/kl", "ppomax/running_mean"):
            assert key in entry, f"{key} not logged at step {entry['step']}: {sorted(entry)}"
        for key, value in entry.items():
            assert isinstance(value, int | float) and math.isfinite(value), f"step {entry['step']}: {key}={value}"
        assert entry["grad_norm"] > 0
        assert entry["episode"] == entry["step"] * report["batch_size"]
    assert any("train_runtime" in entry for entry in report["log_history"])

    # held-out evaluation over an uneven split (5 prompts on 2 processes): every prompt counted once
    eval_metrics = report["eval_metrics"]
    for key in ("objective/scores", "ppomax/score_std", "ppomax/score_p50", "ppomax/response_length"):
        assert math.isfinite(eval_metrics[f"eval_{key}"]), key
    assert 0 < eval_metrics["eval_ppomax/response_length"] <= 5
    assert len(report["completions"]) == report["eval_rows"]
    assert all(math.isfinite(row["score"]) for row in report["completions"])

    # running reward moments: every process holds the same state, pooled over the scores of *both* processes
    ranks = [_read_json(output_dir / f"rank{i}.json") for i in range(NUM_PROCESSES)]
    for rank in ranks:
        assert rank["global_step"] == num_steps
        assert rank["reward_moments"] == ranks[0]["reward_moments"]
    moments = ranks[0]["reward_moments"]
    assert (
        moments["count"] == num_steps * report["batch_size"] == num_steps * NUM_PROCESSES * report["local_batch_size"]
    )
    assert moments["mean"] == pytest.approx(logs[-1]["ppomax/running_mean"], rel=1e-6, abs=1e-9)
    _assert_ranks_hold_identical_weights(output_dir, "rank{}_trained_state.pt")

    # models the trainer built: the reference equals the initial policy; a critic equals what it was copied from
    assert report["ref_init_max_abs_diff"] == 0.0
    if report["critic"] != "given":
        assert report["critic_init_max_abs_diff"] == 0.0

    # parameters: both models moved; the policy stayed bit-identical through the critic warm-up
    assert report["policy_max_abs_change"] > 1e-4
    assert report["value_max_abs_change"] > 1e-4
    if report["critic_warmup_steps"] > 0:
        assert report["policy_max_abs_change_in_warmup"] == 0.0
    if zero_stage is not None:  # DeepSpeed clips in `engine.step()` with `gradient_clipping` from `max_grad_norm`
        assert report["deepspeed_gradient_clipping"] == report["max_grad_norm"]

    # saved folder: policy at the root, critic in value_model/, both equal to the live trained weights (ZeRO-3 trap:
    # not empty, not the initial or a random init)
    initial = torch.load(output_dir / "initial_state.pt")
    trained = torch.load(output_dir / "trained_state.pt")
    policy = AutoModelForCausalLM.from_pretrained(output_dir)
    value_model = AutoModelForSequenceClassification.from_pretrained(output_dir / "value_model")
    for name, model in (("policy", policy), ("value_model", value_model)):
        loaded = dict(model.named_parameters())
        assert sorted(loaded) == sorted(trained[name])
        for key, param in loaded.items():
            assert param.numel() > 0 and param.shape == trained[name][key].shape, key
            assert_close(param.detach(), trained[name][key], rtol=0, atol=0, msg=f"{name}.{key} differs from training")
        assert any(not torch.equal(loaded[key], initial[name][key]) for key in loaded), f"{name} saved untrained"


def _assert_ranks_hold_identical_weights(output_dir: Path, file_pattern: str) -> None:
    """Every process holds bit-identical trained policy and critic weights (and digests of them)."""
    states = [torch.load(output_dir / file_pattern.format(i)) for i in range(NUM_PROCESSES)]
    ranks = [_read_json(output_dir / f"rank{i}.json") for i in range(NUM_PROCESSES)]
    for name, digest_key in (("policy", "policy_digest"), ("value_model", "value_digest")):
        if states[0][name] is None:
            assert all(state[name] is None for state in states), name
            continue
        differing = {}
        for rank, state in enumerate(states[1:], start=1):
            assert sorted(state[name]) == sorted(states[0][name]), (rank, name)
            for key, tensor in state[name].items():
                if not torch.equal(tensor, states[0][name][key]):
                    differing[f"rank {rank} {name}.{key}"] = (
                        (tensor.float() - states[0][name][key].float()).abs().max()
                    )
        assert not differing, f"trained weights differ between processes (max |difference|): {differing}"
        assert len({rank[digest_key] for rank in ranks}) == 1, [rank[digest_key] for rank in ranks]


def _assert_same_training(output_dir: Path, reference_dir: Path) -> None:
    """Same seeds, same global batch: DeepSpeed must train the same weights as DDP (up to float reordering)."""
    trained = torch.load(output_dir / "trained_state.pt")
    reference = torch.load(reference_dir / "trained_state.pt")
    # atol 1e-5 is 1% of one AdamW step (lr 1e-3): Adam divides by sqrt(v), so float reordering in the gradient of an
    # element whose gradient is near 0 moves its step by ~1e-6; a wrong step size (e.g. bias correction after a
    # warm-up that advanced the policy's step count) moves every element by ~1e-4 or more
    for name in ("policy", "value_model"):
        for key, value in reference[name].items():
            assert_close(trained[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}.{key}")
    # grad norms too: AdamW hides a constant gradient scale (e.g. a wrong 1/accumulation-steps factor), the norm doesn't
    for key in ("loss", "grad_norm"):
        values = [e[key] for e in _read_json(output_dir / "report.json")["log_history"] if "loss" in e]
        reference = [e[key] for e in _read_json(reference_dir / "report.json")["log_history"] if "loss" in e]
        assert values == pytest.approx(reference, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("trainer", ["ppo", "ppomax"])
def test_ddp(tmp_path_factory, trainer):
    _check_run(_run(tmp_path_factory, "ddp", "--trainer", trainer), "ddp")


def test_deepspeed_zero2(tmp_path_factory):
    pytest.importorskip("deepspeed")
    _check_run(_run(tmp_path_factory, "zero2", "--trainer", "ppomax"), "zero2")


def test_deepspeed_zero3(tmp_path_factory):
    pytest.importorskip("deepspeed")
    _check_run(_run(tmp_path_factory, "zero3", "--trainer", "ppomax"), "zero3")


def test_deepspeed_zero3_sharded_generation(tmp_path_factory):
    """`ds3_gather_for_generation=False`: generate from the sharded policy; plain PPO (4 PPO epochs, whitening)."""
    pytest.importorskip("deepspeed")
    _check_run(_run(tmp_path_factory, "zero3", "--trainer", "ppo", "--no_ds3_gather"), "zero3")


@pytest.mark.parametrize("trainer, critic", [("ppomax", "reward"), ("ppo", "policy")])
def test_deepspeed_zero3_init_from_pretrained(tmp_path_factory, trainer, critic):
    """Models loaded after the config, so `zero3_init_flag` partitions them at load: the reference copy and a critic
    built by the trainer (from the reward model, or from the policy backbone) must copy gathered weights."""
    pytest.importorskip("deepspeed")
    args = ("--trainer", trainer, "--from_pretrained", "--critic", critic)
    _check_run(_run(tmp_path_factory, "zero3", *args), "zero3")


@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_deepspeed_matches_ddp(tmp_path_factory, config):
    pytest.importorskip("deepspeed")
    reference = _run(tmp_path_factory, "ddp", "--trainer", "ppomax")
    _assert_same_training(_run(tmp_path_factory, config, "--trainer", "ppomax"), reference)


def test_deepspeed_gradient_accumulation_matches_ddp(tmp_path_factory):
    """Micro-batches of 1 with 2 accumulation steps: DeepSpeed must neither rescale (`scale_wrt_gas=False`) nor step
    early, so ZeRO-2 trains exactly what DDP trains with full micro-batches."""
    pytest.importorskip("deepspeed")
    reference = _run(tmp_path_factory, "ddp", "--trainer", "ppomax")
    args = ("--trainer", "ppomax", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2")
    output_dir = _run(tmp_path_factory, "zero2", *args)
    _check_run(output_dir, "zero2")
    _assert_same_training(output_dir, reference)


# ----------------------------------------------------------------------------------------------------------------------
# Configurations on 2 processes (`config_script.py`): precision, pad == EOS, LR schedules
# ----------------------------------------------------------------------------------------------------------------------
CONFIG_RUNS = [  # accelerate config, trainer, precision, tokenizer, schedule
    ("ddp", "ppomax", "bf16", "pad_eq_eos", "linear_warmup"),
    ("zero2", "ppomax", "bf16", "pad_eq_eos", "constant_warmup_ratio"),
    ("ddp", "ppo", "fp32", "pad_ne_eos", "linear"),
    ("ddp", "una", "bf16", "pad_ne_eos", "constant_warmup_ratio"),
]
CONFIG_CASES = [pytest.param(run, id="-".join(run)) for run in CONFIG_RUNS]
CONFIG_PPOMAX_CASES = [pytest.param(run, id="-".join(run)) for run in CONFIG_RUNS if run[1] == "ppomax"]


def _config_run(tmp_path_factory, run: tuple[str, ...]) -> tuple[Path, list[dict]]:
    """Output dir and per-rank reports of a `config_script.py` launch (launched on first use)."""
    config, trainer, precision, tokenizer, schedule = run
    if config != "ddp":
        pytest.importorskip("deepspeed")
    args = ("--trainer", trainer, "--precision", precision, "--tokenizer", tokenizer, "--schedule", schedule)
    output_dir = _run(tmp_path_factory, config, *args, script=CONFIG_SCRIPT)
    ranks = [_read_json(output_dir / f"rank{i}.json") for i in range(NUM_PROCESSES)]
    distributed_type, zero_stage = EXPECTED[config]
    for report in ranks:
        assert report["num_processes"] == NUM_PROCESSES and report["distributed_type"] == distributed_type
        assert report["zero_stage"] == zero_stage
        assert report["num_updates"] == 2  # total_episodes 16 / (4 rollouts per process * 2 processes)
        assert report["global_step"] == report["critic_warmup_steps"] + report["num_updates"]
    return output_dir, ranks


@pytest.mark.parametrize("run", CONFIG_CASES)
def test_config_ranks_hold_identical_weights(tmp_path_factory, run):
    output_dir, _ = _config_run(tmp_path_factory, run)
    _assert_ranks_hold_identical_weights(output_dir, "rank{}.pt")


@pytest.mark.parametrize("run", CONFIG_CASES)
def test_config_runs_in_the_configured_precision(tmp_path_factory, run):
    _, ranks = _config_run(tmp_path_factory, run)
    bf16 = run[2] == "bf16"
    for report in ranks:
        assert report["mixed_precision"] == ("bf16" if bf16 else "no")
        assert report["update_head_dtypes"] == ["torch.bfloat16" if bf16 else "torch.float32"]


@pytest.mark.parametrize("run", CONFIG_CASES)
def test_config_first_minibatch_of_every_update_is_on_policy(tmp_path_factory, run):
    """Ratio exactly 1 and value clip fraction exactly 0 (PPO, PPO-max), UNA log-ratio exactly 0, on every rank."""
    _, ranks = _config_run(tmp_path_factory, run)
    failures = {}
    for report in ranks:
        steps = report["first_minibatch"]
        assert sorted(steps, key=int) == [str(s) for s in range(report["global_step"])]
        off = {s: r for s, r in steps.items() if any(r.get(key, 0) != 0 for key in ON_POLICY_KEYS)}
        if off:
            failures[f"rank {report['process_index']}"] = off
    assert not failures, f"first minibatch off-policy: {failures}"
    if run[1] != "ppomax" and run[4] == "linear":  # lr > 0 from the first step: the record is live
        assert all(report["later_minibatch_moved"] for report in ranks)


@pytest.mark.parametrize("run", CONFIG_CASES)
def test_config_rollout_score_is_the_reward_models_own_forward(tmp_path_factory, run):
    _, ranks = _config_run(tmp_path_factory, run)
    mismatches = [f"rank {r['process_index']}: {m}" for r in ranks for m in r["score_mismatches"]]
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("run", CONFIG_CASES)
def test_config_nothing_after_a_stop_token_reaches_a_loss(tmp_path_factory, run):
    _, ranks = _config_run(tmp_path_factory, run)
    assert all(report["num_after_stop"] > 0 for report in ranks), "no response stopped before the last position"
    problems = [f"rank {r['process_index']}: {p}" for r in ranks for p in r["after_stop_problems"]]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("run", CONFIG_PPOMAX_CASES)
def test_config_critic_warmup_trains_the_critic_alone(tmp_path_factory, run):
    """Policy weights and AdamW state (DeepSpeed's flat fp32 partitions under ZeRO-2) bit-identical through the
    warm-up, the critic moved, on every rank."""
    _, ranks = _config_run(tmp_path_factory, run)
    problems = [f"rank {r['process_index']}: {p}" for r in ranks for p in r["warmup_problems"]]
    assert not problems, "\n".join(problems)
