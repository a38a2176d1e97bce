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
"""Every packaged YAML config (`ppomax_trl/recipes/configs/`, linked from `recipes/configs/`) parses through its
recipe's parser, and the full-size ones are what their header says: launch commands that exist, GPU settings, PPO-max's
paper defaults, one InstructGPT chain. Nothing is trained."""

import re
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, RECIPES, load_recipe

from ppomax_trl import OnlineUNAConfig, PPOMaxConfig, RankListRewardConfig, UNAConfig
from ppomax_trl.recipes import RECIPES as COMMANDS
from ppomax_trl.recipes import resolve_accelerate_config


CONFIG_CLASSES = {
    "ppo_max": PPOMaxConfig,
    "reward_rank": RankListRewardConfig,
    "una": UNAConfig,
    "una_online": OnlineUNAConfig,
}
# configs of a task, not a recipe template: the recipe each runs (CPU runs of a real small model, not GPU templates)
TASK_CONFIGS = {"arithmetic": "ppo_max"}
ALL_CONFIGS = sorted(CONFIGS.glob("*.yaml"))
FULL_SIZE = [path for path in ALL_CONFIGS if not path.stem.endswith("_tiny") and path.stem not in TASK_CONFIGS]
# PPO-max's pieces, each of which the full-size config must leave at its paper default (house style rule 3)
PPO_MAX_PIECES = [
    "reward_normalization", "use_reward_clip", "reward_clip", "critic_warmup_steps", "whiten_advantages",
    "num_ppo_epochs", "vf_coef", "cliprange", "cliprange_value", "gamma", "lam", "kl_coef", "kl_estimator",
    "stop_token", "temperature", "top_p", "learning_rate", "value_learning_rate", "adam_beta2", "max_grad_norm",
]  # fmt: skip


def _parse(path: Path):
    """(recipe name, parsed dataclasses); `--use_cpu` so that `bf16: true` parses on a machine without a GPU."""
    name = path.stem.removesuffix("_tiny")
    name = TASK_CONFIGS.get(name, name)
    return name, load_recipe(name).parse_args(["--config", str(path), "--use_cpu", "true"])


def _as_parsed(key: str, value):
    """A YAML value as the parsed field holds it: `report_to` becomes a list, `"none"` the empty one."""
    if key == "report_to" and isinstance(value, str):
        return [] if value == "none" else [value]
    return value


def _launch_commands(text: str) -> list[str]:
    """The `ppomax-trl <command>` launch lines of a text, continuation lines joined, trailing `# comments` dropped."""
    text = re.sub(r"\\\n\s*", " ", text)
    lines = (line.split(" # ")[0].strip() for line in text.splitlines())
    return [" ".join(line.split()) for line in lines if re.match(r"ppomax-trl [\w-]+ --accelerate_config", line)]


def _header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return "\n".join(line.removeprefix("#").strip() for line in lines if line.startswith("#"))


def test_every_recipe_has_a_tiny_and_a_full_size_config():
    names = [*CONFIG_CLASSES, *TASK_CONFIGS]
    assert {path.stem for path in ALL_CONFIGS} == {*names, *(f"{name}_tiny" for name in names)}


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda path: path.stem)
def test_config_parses_with_its_recipe(path):
    """TrlParser rejects unknown YAML keys; each key must also reach the dataclass field of that name unchanged."""
    name, parsed = _parse(path)
    assert type(parsed[1]) is CONFIG_CLASSES[name]
    for key, value in yaml.safe_load(path.read_text()).items():
        owner = next(args for args in parsed if hasattr(args, key))
        parsed_value = getattr(owner, key)
        assert getattr(parsed_value, "value", parsed_value) == _as_parsed(key, value), key  # enums: their value


@pytest.mark.parametrize("path", FULL_SIZE, ids=lambda path: path.stem)
def test_full_size_config_is_a_gpu_run(path):
    name, (script_args, training_args, model_args) = _parse(path)
    assert "use_cpu" not in yaml.safe_load(path.read_text())
    assert training_args.bf16 and training_args.activation_checkpointing and model_args.dtype == "float32"
    assert training_args.report_to == ["wandb"] and training_args.output_dir == f"runs/{name}"
    assert training_args.eval_strategy == "steps" and script_args.dataset_test_split == "test"
    assert not model_args.model_name_or_path.startswith("path/to/")
    if hasattr(
        training_args, "num_rollouts"
    ):  # online: DeepSpeed needs each minibatch = the accumulated micro-batches
        minibatch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
        assert training_args.num_rollouts % minibatch == 0
        assert training_args.num_sample_generations > 0  # completion tables in W&B


@pytest.mark.parametrize("path", FULL_SIZE, ids=lambda path: path.stem)
def test_full_size_config_header_gives_launch_commands(path):
    """The header's 1-GPU and 8-GPU commands run this YAML (by its packaged name, so from any folder) through its
    recipe's subcommand, with packaged accelerate configs; the recipe's docstring gives the same two commands."""
    commands = _launch_commands(_header(path))
    assert len(commands) == 2, commands
    command = next(name for name, recipe in COMMANDS.items() if recipe.module == path.stem)
    one_gpu, eight_gpus = commands
    assert one_gpu == f"ppomax-trl {command} --accelerate_config single_gpu --config {path.stem}"
    match = re.fullmatch(
        rf"ppomax-trl {command} --accelerate_config (\w+) --num_processes 8 --config {path.stem}", eight_gpus
    )
    assert match and match[1] != "single_gpu", eight_gpus
    for line in commands:
        config_file = resolve_accelerate_config(line.split("--accelerate_config ")[1].split()[0])
        assert yaml.safe_load(config_file.read_text())["mixed_precision"] == "bf16"
    assert _launch_commands(load_recipe(path.stem).__doc__) == commands


def test_clone_recipes_folder_points_at_the_packaged_files():
    """`recipes/` in the clone holds no copies: its scripts run the packaged modules, its YAML files are links."""
    for recipe in COMMANDS.values():
        script = (RECIPES / f"{recipe.module}.py").read_text()
        assert f"from ppomax_trl.recipes.{recipe.module} import main, parse_args" in script
        assert "def main" not in script and len(script.splitlines()) < 40
    for path in ALL_CONFIGS:
        assert (RECIPES / "configs" / path.name).resolve() == path.resolve()
    for name in ("single_gpu", "multi_gpu", "zero2", "zero3"):
        assert (RECIPES / "accelerate_configs" / f"{name}.yaml").resolve() == resolve_accelerate_config(name).resolve()


@pytest.mark.parametrize("config", ["ppo_max", "arithmetic"])
def test_ppo_max_configs_keep_the_paper_defaults(config):
    _, (script_args, training_args, _) = _parse(CONFIGS / f"{config}.yaml")
    defaults = PPOMaxConfig(output_dir="x", use_cpu=True)
    assert script_args.trainer == "ppo_max" and script_args.value_model_path is None  # critic from the RM ([P] §5.3.3)
    for name in PPO_MAX_PIECES:
        assert getattr(training_args, name) == getattr(defaults, name), name


def test_arithmetic_config_is_the_benchmarks_ppo_max_run():
    """`--config arithmetic` is the `ppo_max` run of benchmarks/arithmetic.py: the same model, task, reward, batch,
    length, budget and sampling (what the numbers in docs/benchmarks.md were measured with)."""
    _, (script_args, training_args, model_args) = _parse(CONFIGS / "arithmetic.yaml")
    assert model_args.model_name_or_path == "smollm2://SmolLM2-135M-Instruct" and model_args.dtype == "float32"
    assert script_args.dataset_name == "arithmetic://" and training_args.reward_model_path == "none"  # functions only
    assert script_args.reward_funcs == ["ppomax_trl.arithmetic:exact_match_reward"]
    assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps == 8
    assert training_args.num_mini_batches == 1 and training_args.max_steps == 60
    assert training_args.response_length == 32 and (training_args.temperature, training_args.top_p) == (0.8, 0.9)
    assert training_args.use_cpu and not training_args.bf16 and training_args.seed == 0


def test_full_size_configs_form_the_instructgpt_chain():
    """SFT model -> reward_rank (reward model) -> ppo_max and una_online score with it; all start from one SFT model."""
    configs = {path.stem: yaml.safe_load(path.read_text()) for path in FULL_SIZE}
    assert configs["ppo_max"]["reward_model_path"] == configs["reward_rank"]["output_dir"]
    assert configs["una_online"]["reward_model_path"] == configs["reward_rank"]["output_dir"]
    assert len({config["model_name_or_path"] for config in configs.values()}) == 1
