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
"""`recipes/sweeps/*.yaml` validated offline with the W&B sweep engine (`sweeps`), and one proposed PPO-max trial run
on tiny models with wandb offline. A sweep cannot be created without a W&B server, so this is as far as CI goes.

Sweeps run the full-size configs (`recipes/configs/<recipe>.yaml`); the offline trial swaps in the tiny twin
(`<recipe>_tiny.yaml`) and keeps every swept flag."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import wandb  # noqa: F401  (installed by .ci/run; the trial below logs through it)
import yaml
from conftest import REPO, load_recipe, wandb_history


with warnings.catch_warnings():  # sweeps 0.3.0 still spells a pydantic v1 config key
    warnings.simplefilter("ignore", UserWarning)
    import sweeps


SWEEPS = sorted((REPO / "recipes" / "sweeps").glob("*.yaml"))
PROMPTS = ["the movie was", "i loved", "what a", "the food"]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _base_config(config: dict) -> str:
    command = config["command"]
    return command[command.index("--config") + 1]


def _tiny_twin(base_config: str) -> Path:
    """`recipes/configs/<recipe>_tiny.yaml` for `recipes/configs/<recipe>.yaml`: the same recipe, CPU-sized."""
    return REPO / base_config.replace(".yaml", "_tiny.yaml")


def _candidates(spec: dict) -> list:
    """Values a parameter can take: its `value`, its `values`, or the bounds of its distribution."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def _as_flags(proposal: dict) -> list[str]:
    """What `wandb agent` substitutes for `${args}`: one `--name=value` per parameter."""
    return [f"--{name}={item['value']}" for name, item in sorted(proposal.items())]


def test_sweep_files_exist():
    assert {path.stem for path in SWEEPS} >= {"ppo_max", "reward_rank", "una"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda path: path.stem)
def test_sweep_validates_and_proposes(path):
    config = sweeps.SweepConfig(_load(path))  # raises jsonschema.ValidationError on a bad spec
    assert config["method"] in {"grid", "random", "bayes"}
    assert config["metric"]["name"].startswith(("train/", "eval/"))
    assert (REPO / config["program"]).is_file()

    command = config["command"]
    assert command[:3] == ["${env}", "accelerate", "launch"] and command[-1] == "${args}"
    assert command[command.index("--num_processes") + 1] == "2"
    assert (REPO / command[command.index("--config_file") + 1]).is_file()
    assert command[command.index("--config_file") + 2 : command.index("--config")] == [
        "--num_processes",
        "2",
        "${program}",
    ]
    assert _base_config(config) == f"recipes/configs/{Path(config['program']).stem}.yaml"  # the full-size run
    assert (REPO / _base_config(config)).is_file() and _tiny_twin(_base_config(config)).is_file()
    assert "run_name" not in config["parameters"] and "output_dir" not in config["parameters"]
    for name in ("learning_rate", "kl_coef"):
        if name in config["parameters"]:
            assert config["parameters"][name]["distribution"] == "log_uniform_values"

    run = sweeps.next_run(config, [], validate=True)
    assert run is not None and set(run.config) == set(config["parameters"])


@pytest.mark.parametrize("path", SWEEPS, ids=lambda path: path.stem)
def test_sweep_parameters_are_recipe_flags(path):
    config = _load(path)
    recipe = load_recipe(Path(config["program"]).stem)
    base = ["--config", str(REPO / _base_config(config)), "--use_cpu", "true"]  # `bf16: true` parses without a GPU
    for name, spec in config["parameters"].items():
        for value in _candidates(spec):
            parsed = recipe.parse_args([*base, f"--{name}={value}"])  # an unknown flag exits through argparse
            field = next(getattr(args, name) for args in parsed if hasattr(args, name))
            if isinstance(value, float):
                assert field == pytest.approx(value), name
            elif name == "report_to":
                assert field == [value] or field == value, name
            else:
                assert str(field) in (str(value), f"IntervalStrategy.{str(value).upper()}"), name


def test_ppo_max_trial_logs_to_wandb_offline(tmp_path, tiny_model_dirs):
    config = sweeps.SweepConfig(_load(REPO / "recipes" / "sweeps" / "ppo_max.yaml"))
    proposal = sweeps.next_run(config, [], validate=True).config
    proposal["critic_warmup_steps"] = {"value": 1}  # keep one PPO update in the two tiny steps

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))

    cmd = [
        sys.executable, str(REPO / config["program"]),
        "--config", str(_tiny_twin(_base_config(config))),
        "--model_name_or_path", str(tiny_model_dirs["policy"]),
        "--reward_model_path", str(tiny_model_dirs["reward"]),
        "--dataset_name", str(tmp_path / "data"),
        "--output_dir", str(tmp_path / "out"),
        *_as_flags(proposal),
    ]  # fmt: skip
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_PROJECT": "ppomax-trl-sweep-test",
        "WANDB_SILENT": "true",
    }
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), sorted(os.listdir(tmp_path))
    # the sweep metric, under the name wandb stores it (what the sweep controller reads)
    assert any(config["metric"]["name"] in row for row in wandb_history(runs[0]))
