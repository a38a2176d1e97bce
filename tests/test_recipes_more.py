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
"""The `reward_rank`, `una` and `una_online` recipes (`ppomax_trl.recipes.*`, run by `recipes/*.py` in the clone), their
tiny YAMLs and `ppomax-trl reward|una|una-online`, run end to end on tiny offline models; plus the InstructGPT chain
reward_rank -> ppo_max."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, RECIPES, assert_trained_from, load_recipe, run_recipe_command, two_process_launch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from ppomax_trl import OnlineUNAConfig, RankListRewardConfig, UNAConfig


PROMPTS = ["the movie was", "i loved", "what a", "the food", "a good cast", "the film"]


def _write_jsonl(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_model_dirs) -> dict[str, Path]:
    """Tiny policy and reward model folders (tokenizer included) and one data folder per recipe."""
    root = tmp_path_factory.mktemp("assets")
    ranked = [{"prompt": p, "completions": [" great and wonderful", " fine", " bad and sad"]} for p in PROMPTS[:3]]
    ranked += [
        {"prompt": p, "completions": [" awful", " lovely", " ok"], "scores": [0.0, 2.0, 1.0]} for p in PROMPTS[3:]
    ]
    feedback = [
        {"prompt": PROMPTS[0], "chosen": " great", "rejected": " bad"},
        {"prompt": PROMPTS[1], "chosen": " it all", "rejected": " nothing"},
        {"prompt": PROMPTS[2], "completion": " lovely film", "label": True},
        {"prompt": PROMPTS[3], "completion": " was cold", "label": False},
        {"prompt": PROMPTS[4], "completion": " and plot", "score": 0.8},
        {"prompt": PROMPTS[5], "completion": " was awful", "score": 0.1},
    ]
    return {
        **tiny_model_dirs,
        "prompts": _write_jsonl(root / "prompts", [{"prompt": p} for p in PROMPTS]),
        "ranked": _write_jsonl(root / "ranked", ranked),
        "feedback": _write_jsonl(root / "feedback", feedback),
    }


def _reward_args(assets, output_dir: Path, model: str = "policy") -> list[str]:
    # the SFT policy as the base: a new 1-label score head on its backbone, as in InstructGPT
    return [
        "--config", str(CONFIGS / "reward_rank_tiny.yaml"),
        "--model_name_or_path", str(assets[model]),
        "--dataset_name", str(assets["ranked"]),
        "--output_dir", str(output_dir),
    ]  # fmt: skip


def _una_args(assets, output_dir: Path) -> list[str]:
    return [
        "--config", str(CONFIGS / "una_tiny.yaml"),
        "--model_name_or_path", str(assets["policy"]),
        "--dataset_name", str(assets["feedback"]),
        "--output_dir", str(output_dir),
    ]  # fmt: skip


def _una_online_args(assets, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", str(CONFIGS / "una_online_tiny.yaml"),
        "--model_name_or_path", str(assets["policy"]),
        "--reward_model_path", str(assets["reward"]),
        "--dataset_name", str(assets["prompts"]),
        "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


def _cli(command: str, *args: str) -> list[str]:
    exe = shutil.which("ppomax-trl")
    assert exe is not None, "pip install -e . should install the `ppomax-trl` console script"
    return [exe, command, "--accelerate_config", "single_gpu", *args]


def _logs(output_dir: Path) -> list[dict]:
    assert "train_loss" in json.loads((output_dir / "train_results.json").read_text())
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def _check_reward_model(output_dir: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    logs = _logs(output_dir)
    assert logs[0]["rank/list_size"] == 3 and "accuracy" in logs[0]
    assert (output_dir / "tokenizer.json").is_file()  # `--reward_model_path` consumers load it as is


def _check_policy(output_dir: Path, metric: str) -> None:
    assert AutoModelForCausalLM.from_pretrained(output_dir).config.model_type == "qwen2"
    assert any(metric in entry for entry in _logs(output_dir)), _logs(output_dir)


def test_tiny_yamls_parse_and_cli_flags_override():
    cases = [
        ("reward_rank", "reward_rank_tiny.yaml", RankListRewardConfig),
        ("una", "una_tiny.yaml", UNAConfig),
        ("una_online", "una_online_tiny.yaml", OnlineUNAConfig),
    ]
    for recipe_name, yaml_name, config_cls in cases:
        recipe = load_recipe(recipe_name)
        args = ["--config", str(CONFIGS / yaml_name), "--max_steps", "3"]
        script_args, training_args, model_args = recipe.parse_args(args)
        assert type(training_args) is config_cls, recipe_name
        assert training_args.max_steps == 3 and training_args.use_cpu and not training_args.bf16
        assert model_args.model_name_or_path == "tiny://policy"  # built in memory: the config runs as it is
        assert script_args.dataset_name.startswith("tiny://")
    script_args, training_args, _ = load_recipe("una_online").parse_args(
        ["--config", str(CONFIGS / "una_online_tiny.yaml"), "--reward_funcs", "a:b", "c:d"]
    )
    assert script_args.reward_model_path == "tiny://reward"  # a script argument, not a config field
    assert script_args.reward_funcs == ["a:b", "c:d"] and training_args.response_length == 4


@pytest.mark.parametrize("name", ["reward_rank", "una", "una_online"])
def test_tiny_config_runs_as_it_is(tmp_path, name):
    """`tiny://` models and data are built in memory: the packaged tiny config needs no path (`--config` by name)."""
    recipe = load_recipe(name)
    recipe.main(*recipe.parse_args(["--config", f"{name}_tiny", "--max_steps", "1", "--output_dir", str(tmp_path)]))
    assert (tmp_path / "model.safetensors").is_file() and len(_logs(tmp_path)) >= 1


def test_reward_rank_recipe_then_ppo_max_chain(tmp_path, assets):
    """InstructGPT: SFT policy -> rank-list reward model (recipe) -> PPO-max with that reward model and critic."""
    reward_dir = tmp_path / "reward_model"
    run_recipe_command(
        [sys.executable, str(RECIPES / "reward_rank.py"), *_reward_args(assets, reward_dir)], reward_dir
    )
    _check_reward_model(reward_dir)
    ppo_dir = tmp_path / "ppo"
    cmd = [
        sys.executable, str(RECIPES / "ppo_max.py"),
        "--config", str(CONFIGS / "ppo_max_tiny.yaml"),
        "--model_name_or_path", str(assets["policy"]),
        "--reward_model_path", str(reward_dir),
        "--dataset_name", str(assets["prompts"]),
        "--output_dir", str(ppo_dir),
    ]  # fmt: skip
    run_recipe_command(cmd, ppo_dir)
    assert AutoModelForCausalLM.from_pretrained(ppo_dir).config.model_type == "qwen2"
    assert len(_logs(ppo_dir)) >= 2
    critic = AutoModelForSequenceClassification.from_pretrained(ppo_dir / "value_model")  # initialised from the RM
    assert critic.config.num_labels == 1


def test_reward_cli_launches_recipe(tmp_path, assets):
    run_recipe_command(_cli("reward", *_reward_args(assets, tmp_path, model="reward")), tmp_path)
    _check_reward_model(tmp_path)


def test_una_cli_launches_recipe(tmp_path, assets):
    run_recipe_command(_cli("una", *_una_args(assets, tmp_path)), tmp_path)
    _check_policy(tmp_path, "una/loss/score")


def test_una_online_cli_launches_recipe(tmp_path, assets):
    run_recipe_command(_cli("una-online", *_una_online_args(assets, tmp_path)), tmp_path)
    _check_policy(tmp_path, "una/target_mean")


def test_una_online_recipe_with_reward_functions_only(tmp_path, assets):
    recipe = load_recipe("una_online")
    args = _una_online_args(assets, tmp_path, "--reward_model_path", "none")
    recipe.main(*recipe.parse_args([*args, "--reward_funcs", "ppomax_trl.demo:letter_o_reward"]))
    _check_policy(tmp_path, "una/target_mean")
    with pytest.raises(ValueError, match="Give a reward"):
        recipe.main(*recipe.parse_args(_una_online_args(assets, tmp_path, "--reward_model_path", "none")))


@pytest.mark.distributed
def test_reward_rank_recipe_two_processes(tmp_path, assets):
    run_recipe_command(two_process_launch("ddp", "reward_rank", *_reward_args(assets, tmp_path)), tmp_path)
    _check_reward_model(tmp_path)
    # 6 lists, 2 per process per step: 2 processes make 2 steps per epoch (a single process makes 3)
    assert _logs(tmp_path)[0]["epoch"] == pytest.approx(0.5)
    assert_trained_from(tmp_path, assets["policy"])  # the backbone; the new score head has no initial counterpart


@pytest.mark.distributed
def test_una_recipe_two_processes(tmp_path, assets):
    run_recipe_command(two_process_launch("ddp", "una", *_una_args(assets, tmp_path)), tmp_path)
    _check_policy(tmp_path, "una/loss/score")
    # 6 rows, 2 per process per step: 2 processes make 2 steps per epoch (a single process makes 3)
    assert _logs(tmp_path)[0]["epoch"] == pytest.approx(0.5)
    assert_trained_from(tmp_path, assets["policy"])


@pytest.mark.distributed
def test_una_online_recipe_two_processes(tmp_path, assets):
    run_recipe_command(two_process_launch("ddp", "una_online", *_una_online_args(assets, tmp_path)), tmp_path)
    _check_policy(tmp_path, "una/target_mean")
    assert _logs(tmp_path)[0]["episode"] == 4  # 2 prompts per process per update
    assert_trained_from(tmp_path, assets["policy"])
