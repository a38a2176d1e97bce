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
"""Shared offline fixtures: one tokenizer per session, tiny Qwen2 models built from configs (never downloaded)."""

import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
# Reproducible BLAS: MKL's default kernels round differently with the memory alignment of their inputs (about 1e-7 in
# fp32), so two forwards of the same rows could differ; tests assert exact invariants (ratio exactly 1 on the first
# minibatch, V_old = V). Must be set before torch loads MKL; subprocesses inherit it.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import pytest
from datasets import Dataset
from safetensors.torch import load_file

from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


PROMPTS = ["the movie was", "i loved", "what a", "the food", "a good cast", "the film", "the acting", "a bad"]


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture
def models(tokenizer):
    """Fresh (policy, reward model, value model) per test: trainers mutate them."""
    return (
        tiny_causal_lm(tokenizer, seed=0),
        tiny_reward_model(tokenizer, seed=1),
        tiny_reward_model(tokenizer, seed=2),
    )


@pytest.fixture(scope="session")
def prompt_dataset(tokenizer):
    """TRL 1.12 style: tokenized `input_ids` prompts."""
    return Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in PROMPTS]})


def fp32_accelerator():
    """A CPU `Accelerator` without mixed precision, for the engine's parts tested without a trainer. Accelerate keeps
    one shared state per process, and a trainer that ran before in bf16 would otherwise leave its autocast in place;
    `Trainer` resets that state the same way before it builds its own accelerator."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(cpu=True, mixed_precision="no")


def common_args(tmp_path, **overrides):
    """CPU-safe config kwargs for tiny runs."""
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=4,
        response_length=5,
        total_episodes=8,
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """Saved tiny policy and reward model folders (tokenizer included), for recipes that load from paths."""
    root = tmp_path_factory.mktemp("tiny_models")
    for name, model in (
        ("policy", tiny_causal_lm(tokenizer, seed=0)),
        ("reward", tiny_reward_model(tokenizer, seed=1)),
    ):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return {"policy": root / "policy", "reward": root / "reward"}


# ----------------------------------------------------------------------------------------------------------------------
# Recipe runs (tests/test_recipes*.py, tests/test_sweeps.py, tests/test_wandb_logging.py)
# ----------------------------------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"  # the clone's view: thin scripts that run the packaged recipes, links to their YAML files
EXIT_PROBE = Path(__file__).resolve().parent / "exit_probe"  # sitecustomize for recipe commands: see its docstring
CONFIGS = Path(str(resources.files("ppomax_trl.recipes"))) / "configs"  # what the wheel ships


def recipe_env(**overrides: str) -> dict[str, str]:
    """Environment of a recipe subprocess: offline, W&B disabled unless overridden."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TRL_EXPERIMENTAL_SILENCE": "1"}
    return {**env, **overrides}


def load_recipe(name: str):
    """The packaged recipe module `ppomax_trl.recipes.<name>`, for its `parse_args`, `make_parser` and `main`."""
    return importlib.import_module(f"ppomax_trl.recipes.{name}")


def run_recipe_command(
    cmd: list[str], output_dir: Path, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """Run `cmd` from `cwd` (default: the repository root); it must exit 0, leave a model in `output_dir`, and every
    launched process must have destroyed its process group before exiting (`tests/exit_probe`)."""
    env = dict(env or recipe_env())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXIT_PROBE), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="exit_probe_") as probe_dir:
        env["PPOMAX_EXIT_PROBE_DIR"] = probe_dir
        result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
        live_groups = [marker.read_text().strip() for marker in sorted(Path(probe_dir).iterdir())]
    assert result.returncode == 0, f"`{' '.join(cmd)}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert (output_dir / "model.safetensors").is_file(), sorted(os.listdir(output_dir))
    assert not live_groups, f"exited with the process group alive (call end_process_group after main): {live_groups}"
    return result


def two_process_launch(accelerate_config: str, recipe: str, *recipe_args: str) -> list[str]:
    """`accelerate launch -m ppomax_trl.recipes.<recipe>` on 2 CPU processes with
    `recipes/accelerate_configs/ci/<config>` (run from the repository root: ci/zero3.yaml names its JSON by a relative
    path)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(RECIPES / "accelerate_configs" / "ci" / f"{accelerate_config}.yaml"),
        "--num_processes", "2", "--main_process_port", str(port),
        "-m", f"ppomax_trl.recipes.{recipe}", *recipe_args,
    ]  # fmt: skip


def assert_trained_from(output_dir: Path, initial_dir: Path, max_change: float = 0.05) -> None:
    """Every tensor the saved checkpoint shares with the initial one kept its shape and moved, by a training-sized step
    (not emptied, left at its initial value or re-initialised: the ZeRO-3 saving traps)."""
    saved, initial = load_file(output_dir / "model.safetensors"), load_file(initial_dir / "model.safetensors")
    shared = sorted(saved.keys() & initial.keys())
    assert len(shared) >= len(initial) - 1, sorted(initial.keys() - saved.keys())  # a new head may replace one
    for name in shared:
        assert saved[name].shape == initial[name].shape, name
        change = (saved[name].float() - initial[name].float()).abs().max().item()
        assert 0 < change <= max_change, f"{name}: max change {change}"


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of an offline wandb run folder, keys as wandb stores them (`train/...`, `eval/...`).

    wandb 0.31 has no Python reader of the `.wandb` transaction log (`wandb.sdk.internal.datastore` and `wandb sync
    --view` are gone); `wandb leet inspect --json` prints its records, one JSON object a line.
    """
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [record["history"]["item"] for record in records if record["type"] == "history"]


def eos_biased(policy, eos_id: int, bias: float = 4.0):
    """`policy` with its EOS logit raised by `bias`, so that of a few sampled responses some stop and some run to the
    length cap."""

    def add_bias(module, inputs, logits):
        logits = logits.clone()
        logits[..., eos_id] += bias
        return logits

    policy.lm_head.register_forward_hook(add_bias)
    return policy
