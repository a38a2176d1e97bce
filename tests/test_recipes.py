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
"""The `ppo_max` recipe (`ppomax_trl.recipes.ppo_max`, run by `recipes/ppo_max.py` in the clone), its tiny YAML and the
`ppomax-trl ppo` launcher, run end to end on tiny offline models."""

import json
import shutil
import sys
from importlib import resources
from pathlib import Path

import pytest
from conftest import CONFIGS, RECIPES, REPO, assert_trained_from, load_recipe, run_recipe_command, two_process_launch
from transformers import AutoModelForCausalLM

from ppomax_trl import PPOConfig, PPOMaxConfig
from ppomax_trl.cli import import_function, launch_command


RECIPE = RECIPES / "ppo_max.py"
TINY_YAML = CONFIGS / "ppo_max_tiny.yaml"
PROMPTS = ["the movie was", "i loved", "what a", "the food", "a good cast", "the film"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_model_dirs) -> dict[str, Path]:
    """Tiny policy and reward model folders (tokenizer included) and a folder with `train.jsonl` prompts."""
    root = tmp_path_factory.mktemp("assets")
    (root / "data").mkdir()
    (root / "data" / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return {**tiny_model_dirs, "data": root / "data"}


def _recipe_args(assets, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", str(TINY_YAML),
        "--model_name_or_path", str(assets["policy"]),
        "--reward_model_path", str(assets["reward"]),
        "--dataset_name", str(assets["data"]),
        "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


def _check_saved_policy(output_dir: Path, expected_episodes: int) -> None:
    policy = AutoModelForCausalLM.from_pretrained(output_dir)
    assert policy.config.model_type == "qwen2"
    logs = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert logs[0]["episode"] == expected_episodes  # 2 prompts per process per step
    assert "train_loss" in json.loads((output_dir / "train_results.json").read_text())


def test_tiny_yaml_parses_and_cli_flags_override():
    recipe = load_recipe("ppo_max")
    script_args, training_args, model_args = recipe.parse_args(["--config", str(TINY_YAML), "--max_steps", "3"])
    assert type(training_args) is PPOMaxConfig and script_args.trainer == "ppo_max"
    assert training_args.max_steps == 3 and training_args.response_length == 4 and training_args.use_cpu
    assert model_args.model_name_or_path == "tiny://policy" and training_args.reward_model_path == "tiny://reward"
    # `--trainer ppo` parses a plain PPOConfig: its defaults, not PPO-max's, for the fields the YAML leaves unset
    script_args, training_args, _ = recipe.parse_args(["--config", str(TINY_YAML), "--trainer", "ppo"])
    assert type(training_args) is PPOConfig and script_args.trainer == "ppo"
    assert training_args.reward_normalization == PPOConfig.reward_normalization != PPOMaxConfig.reward_normalization
    assert training_args.critic_warmup_steps == 1  # set in the YAML


def test_recipe_with_reward_functions_only(tmp_path, assets):
    recipe = load_recipe("ppo_max")
    args = _recipe_args(assets, tmp_path, "--trainer", "ppo", "--reward_model_path", "none")
    args += ["--reward_funcs", "ppomax_trl.demo:letter_o_reward"]
    recipe.main(*recipe.parse_args(args))
    _check_saved_policy(tmp_path, expected_episodes=2)
    with pytest.raises(ValueError, match="module:function"):
        import_function("ppomax_trl.demo.letter_o_reward")


def test_recipe_single_process(tmp_path, assets):
    run_recipe_command([sys.executable, str(RECIPE), *_recipe_args(assets, tmp_path)], tmp_path)
    _check_saved_policy(tmp_path, expected_episodes=2)
    assert (tmp_path / "value_model" / "model.safetensors").is_file()


def test_console_entry_point_launches_recipe(tmp_path, assets):
    exe = shutil.which("ppomax-trl")
    assert exe is not None, "pip install -e . should install the `ppomax-trl` console script"
    run_recipe_command([exe, "ppo", "--accelerate_config", "single_gpu", *_recipe_args(assets, tmp_path)], tmp_path)
    _check_saved_policy(tmp_path, expected_episodes=2)


def test_tiny_config_runs_as_it_is(tmp_path):
    """`tiny://` models and prompts are built in memory: the packaged tiny config needs no path (`--config` by name)."""
    recipe = load_recipe("ppo_max")
    recipe.main(*recipe.parse_args(["--config", "ppo_max_tiny", "--max_steps", "1", "--output_dir", str(tmp_path)]))
    _check_saved_policy(tmp_path, expected_episodes=2)
    assert (tmp_path / "value_model" / "model.safetensors").is_file()


def test_launch_command_resolves_configs():
    packaged = Path(str(resources.files("ppomax_trl.recipes")))
    cmd = launch_command("ppo_max", "zero3", 4, ["--config", "ppo_max_tiny", "--max_steps", "1"])
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[3:7] == ["--config_file", str(packaged / "accelerate_configs/zero3.yaml"), "--num_processes", "4"]
    assert cmd[7:] == ["-m", "ppomax_trl.recipes.ppo_max", "--config", str(TINY_YAML), "--max_steps", "1"]
    ci_config = str(REPO / "recipes/accelerate_configs/ci/ddp.yaml")
    assert launch_command("ppo_max", ci_config, None, [], main_process_port=29511)[3:7] == [
        "--config_file", ci_config, "--main_process_port", "29511",
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="not found|neither a file"):
        launch_command("ppo_max", "no_such_config", None, [])


@pytest.mark.distributed
@pytest.mark.parametrize("accelerate_config", ["ddp", "zero2", "zero3"])
def test_recipe_two_processes(tmp_path, assets, accelerate_config):
    run_recipe_command(two_process_launch(accelerate_config, "ppo_max", *_recipe_args(assets, tmp_path)), tmp_path)
    _check_saved_policy(tmp_path, expected_episodes=4)
    assert_trained_from(tmp_path, assets["policy"])
    critic = tmp_path / "value_model"  # a trained copy of the reward model (PPO-max's critic initialisation)
    assert_trained_from(critic, assets["reward"])


def test_sweep_trials_get_their_own_output_dir(tmp_path, assets, monkeypatch):
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    monkeypatch.setenv("WANDB_RUN_ID", "trial7")
    recipe = load_recipe("ppo_max")
    args = _recipe_args(assets, tmp_path / "out", "--trainer", "ppo", "--reward_model_path", "none")
    recipe.main(*recipe.parse_args([*args, "--reward_funcs", "ppomax_trl.demo:letter_o_reward"]))
    assert not (tmp_path / "out").exists()
    _check_saved_policy(tmp_path / "out-trial7", expected_episodes=2)
