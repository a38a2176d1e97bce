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
"""The console entry point, its recipe subcommands as a wheel user meets them, and the offline demo."""

import importlib
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import torch
from conftest import REPO

from ppomax_trl import PPOMaxConfig, PPOMaxTrainer
from ppomax_trl.cli import launch_command, main
from ppomax_trl.demo import letter_o_reward, run_demo
from ppomax_trl.recipes import RECIPES, accelerate_config_names, resolve_config_argument


def test_entry_point_is_installed_and_lists_demo():
    exe = shutil.which("ppomax-trl")
    assert exe is not None, "pip install -e . should install the `ppomax-trl` console script"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out
    with pytest.raises(SystemExit):
        main([])  # a subcommand is required


def test_letter_o_reward():
    assert letter_o_reward([], ["oooo", "abcd", "", "o a"]) == [1.0, 0.0, 0.0, 1 / 3]


def test_demo_runs_offline_and_reports_held_out_reward(tmp_path):
    result = run_demo(output_dir=str(tmp_path), num_updates=2)
    assert set(result) == {"before", "after", "seconds"}
    assert all(math.isfinite(v) for v in result.values())
    assert 0.0 <= result["before"] <= 1.0 and 0.0 <= result["after"] <= 1.0


def test_critic_from_policy_backbone_when_only_reward_funcs(tmp_path, tokenizer, models, prompt_dataset):
    from conftest import common_args

    policy = models[0]
    trainer = PPOMaxTrainer(PPOMaxConfig(**common_args(tmp_path)), tokenizer, policy, None, None, prompt_dataset, None,
                            reward_funcs=letter_o_reward)  # fmt: skip
    critic_backbone = dict(trainer.model.value_model.model.named_parameters())
    for name, param in policy.model.named_parameters():
        assert torch.equal(param, critic_backbone[name]), name
    assert trainer.model.value_model.score.out_features == 1


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "ppomax_trl", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout


# ----------------------------------------------------------------------------------------------------------------------
# The recipe subcommands as a pip user meets them: packaged resources, --config from any folder, --help, errors
# ----------------------------------------------------------------------------------------------------------------------
RECIPE_FLAGS = {  # flags only the recipe's own parser knows
    "ppo": ["--kl_coef", "--critic_warmup_steps", "--reward_funcs", "--value_model_path", "--trainer"],
    "reward": ["--loss_type", "--ties"],
    "una": ["--beta", "--ref_model_path", "--score_normalizer"],
    "una-online": ["--una_reference", "--reward_model_path", "--reward_funcs"],
}
PLACEHOLDER = re.compile(r"<[^<>\s]+>")  # `<repo-url>`, `<clone>`, ...


def _cli_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def test_recipes_configs_and_accelerate_configs_are_packaged():
    """What a wheel-only install needs is package data, found through importlib.resources (not a clone's folders)."""
    root = resources.files("ppomax_trl.recipes")
    for recipe in RECIPES.values():
        assert root.joinpath(f"{recipe.module}.py").is_file()
        for config in (recipe.module, f"{recipe.module}_tiny"):
            assert root.joinpath("configs", f"{config}.yaml").is_file(), config
        module = importlib.import_module(f"ppomax_trl.recipes.{recipe.module}")
        assert callable(module.main) and callable(module.parse_args) and callable(module.make_parser)
    for name in ("single_gpu", "multi_gpu", "zero2", "zero3"):
        assert root.joinpath("accelerate_configs", f"{name}.yaml").is_file(), name
    assert set(accelerate_config_names()) == {"single_gpu", "multi_gpu", "zero2", "zero3"}


def test_wheel_ships_recipes_configs_and_license(tmp_path):
    """`pip wheel` of a copy of the tree: the recipes, both kinds of config and the LICENSE are in the wheel."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "benchmarks", "tests", "docs", "wandb",
    ))  # fmt: skip
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."]
    subprocess.run(cmd, cwd=source, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("ppomax_trl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in RECIPES.values():
        assert f"ppomax_trl/recipes/{recipe.module}.py" in names
        assert f"ppomax_trl/recipes/configs/{recipe.module}_tiny.yaml" in names
        assert f"ppomax_trl/recipes/configs/{recipe.module}.yaml" in names
    for name in accelerate_config_names():
        assert f"ppomax_trl/recipes/accelerate_configs/{name}.yaml" in names
    (license_file,) = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    assert "Apache License" in zipfile.ZipFile(wheel).read(license_file).decode()


def test_config_argument_resolves_against_the_callers_folder(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "work").mkdir()
    mine = tmp_path / "configs" / "mine.yaml"
    mine.write_text("max_steps: 1\n")
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_config_argument(["--config", "../configs/mine.yaml", "--x", "1"]) == [
        "--config",
        str(mine),
        "--x",
        "1",
    ]
    assert resolve_config_argument(["--config=../configs/mine.yaml"]) == [f"--config={mine}"]
    packaged = Path(str(resources.files("ppomax_trl.recipes"))) / "configs" / "ppo_max_tiny.yaml"
    assert resolve_config_argument(["--config", "ppo_max_tiny"]) == ["--config", str(packaged)]  # a packaged name
    (tmp_path / "work" / "ppo_max_tiny").write_text("max_steps: 1\n")  # a file of that name in the folder wins
    assert resolve_config_argument(["--config", "ppo_max_tiny"]) == [
        "--config",
        str(tmp_path / "work" / "ppo_max_tiny"),
    ]
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "work" / "configs" / "mine.yaml"))):
        resolve_config_argument(["--config", "configs/mine.yaml"])


def test_relative_config_runs_from_another_folder(tmp_path):
    """`ppomax-trl ppo --config ../configs/mine.yaml` from a folder unrelated to the clone: the file is the caller's,
    the run lands in the caller's folder."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "work").mkdir()
    packaged = Path(str(resources.files("ppomax_trl.recipes"))) / "configs" / "ppo_max_tiny.yaml"
    (tmp_path / "configs" / "mine.yaml").write_text(packaged.read_text().replace("max_steps: 2", "max_steps: 1"))
    cmd = [shutil.which("ppomax-trl"), "ppo", "--config", "../configs/mine.yaml", "--output_dir", "out"]
    result = subprocess.run(
        cmd, cwd=tmp_path / "work", env=_cli_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "work" / "out" / "model.safetensors").is_file()


def test_help_shows_the_recipes_own_arguments(capsys):
    for command, flags in RECIPE_FLAGS.items():
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        for flag in [*flags, "--output_dir", "--learning_rate", "--config", "--accelerate_config", "--num_processes"]:
            assert flag in out, (command, flag)
    out = subprocess.run([shutil.which("ppomax-trl"), "ppo", "-h"], capture_output=True, text=True, check=True).stdout
    assert "--kl_coef" in out and "--accelerate_config" in out  # through the console script too


def test_bad_paths_fail_early_with_a_message_and_no_placeholder(tmp_path):
    exe = shutil.which("ppomax-trl")
    for args, looked_for in [
        (["ppo", "--config", "missing.yaml"], tmp_path / "missing.yaml"),
        (["una", "--accelerate_config", "no_such_config", "--config", "una_tiny"], tmp_path / "no_such_config"),
    ]:
        result = subprocess.run(
            [exe, *args], cwd=tmp_path, env=_cli_env(), capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode != 0
        message = result.stderr.strip()
        assert message.startswith("ppomax-trl: ") and "Traceback" not in message, message[-3000:]
        assert str(looked_for) in message and "names: " in message, message
        assert not PLACEHOLDER.search(message), message
    for accelerate_config, args in [("zero3", ["--config", "nope.yaml"]), ("nope", [])]:
        with pytest.raises(SystemExit) as error:
            launch_command("ppo_max", accelerate_config, None, args)
        assert not PLACEHOLDER.search(str(error.value)), error.value


def test_recipes_command_lists_packaged_files(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    root = Path(str(resources.files("ppomax_trl.recipes")))
    for path in [root / "ppo_max.py", root / "configs" / "una_tiny.yaml", root / "accelerate_configs" / "zero3.yaml"]:
        assert str(path) in out
