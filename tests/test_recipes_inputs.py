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
"""What a user names is what a recipe uses: no reward model nobody named, local data files as `datasets` reads them,
and a mistyped flag stopped in one line before anything is launched. The CLI cases run the real `ppomax-trl` entry
point in a subprocess, offline (`HF_HUB_OFFLINE=1`)."""

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import CONFIGS, recipe_env, run_recipe_command
from datasets import Dataset, DatasetDict
from trl import ScriptArguments

from ppomax_trl.cli import main
from ppomax_trl.recipe_utils import load_splits


PROMPTS = ["the movie was", "i loved", "what a", "the food", "a good cast", "the film"]
TINY_RUN = ["--max_steps", "1", "--critic_warmup_steps", "0"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ppomax_trl", *args]


def _run(cmd: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=recipe_env(OMP_NUM_THREADS="1", **env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return result, time.monotonic() - start


def _prompt_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return folder


def _config_without_reward_model(tmp_path: Path) -> Path:
    """`ppo_max_tiny` with no reward model named: the user passes only what the command line says."""
    config = yaml.safe_load((CONFIGS / "ppo_max_tiny.yaml").read_text())
    del config["reward_model_path"], config["model_name_or_path"], config["dataset_name"]
    path = tmp_path / "no_reward.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ----------------------------------------------------------------------------------------------------------------------
# 1. A reward model is used only when one is named
# ----------------------------------------------------------------------------------------------------------------------
def test_reward_funcs_alone_train_without_any_reward_model(tmp_path, tiny_model_dirs):
    (tmp_path / "my_rewards.py").write_text(
        "def reward_len(completions, **kwargs):\n    return [float(len(c)) for c in completions]\n"
    )
    output_dir = tmp_path / "out"
    cmd = _cli(
        "ppo", "--config", str(_config_without_reward_model(tmp_path)), *TINY_RUN,
        "--model_name_or_path", str(tiny_model_dirs["policy"]),
        "--dataset_name", str(_prompt_folder(tmp_path)),
        "--reward_funcs", "my_rewards:reward_len",
        "--output_dir", str(output_dir),
    )  # fmt: skip
    run_recipe_command(cmd, output_dir, env=recipe_env(PYTHONPATH=str(tmp_path), OMP_NUM_THREADS="1"), cwd=tmp_path)
    logs = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    reward_keys = {key for entry in logs for key in entry if key.startswith("rewards/")}
    assert reward_keys and all(key.startswith("rewards/reward_len/") for key in reward_keys), reward_keys


def test_no_reward_fails_fast_and_says_how_to_pass_one(tmp_path, tiny_model_dirs):
    output_dir = tmp_path / "out"
    cmd = _cli(
        "ppo", "--config", str(_config_without_reward_model(tmp_path)), *TINY_RUN,
        "--model_name_or_path", str(tiny_model_dirs["policy"]),
        "--dataset_name", str(_prompt_folder(tmp_path)),
        "--output_dir", str(output_dir),
    )  # fmt: skip
    result, seconds = _run(cmd, tmp_path)
    assert result.returncode != 0
    assert "--reward_funcs module:function" in result.stderr and "--reward_model_path" in result.stderr
    assert "pythia" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert seconds < 120 and not output_dir.exists()  # stopped before loading anything (no Hub retries)


def test_sft_model_path_names_the_policy_as_in_trl_1_12():
    """TRL 1.12's PPO script loaded the policy from `--sft_model_path`; the recipe takes it when
    `--model_name_or_path` is not given, and uses no reward model unless one is named."""
    from ppomax_trl.recipes import ppo_max

    for trainer in ("ppo_max", "ppo"):
        _, training_args, model_args = ppo_max.parse_args(["--trainer", trainer, "--sft_model_path", "p"])
        assert training_args.reward_model_path is None and training_args.sft_model_path == "p"
        ppo_max.resolve_policy_path(training_args, model_args)
        assert model_args.model_name_or_path == "p"
    _, training_args, model_args = ppo_max.parse_args(["--sft_model_path", "p", "--model_name_or_path", "q"])
    with pytest.raises(ValueError, match="--sft_model_path"):
        ppo_max.resolve_policy_path(training_args, model_args)


# ----------------------------------------------------------------------------------------------------------------------
# 2. Local data: files as `datasets` reads them, `save_to_disk` folders, and an error saying what was tried
# ----------------------------------------------------------------------------------------------------------------------
def test_cli_reads_a_local_jsonl_file(tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    output_dir = tmp_path / "out"
    cmd = _cli("ppo", "--config", "ppo_max_tiny", *TINY_RUN, "--dataset_name", "prompts.jsonl", "--output_dir", "out")
    run_recipe_command(cmd, output_dir, env=recipe_env(OMP_NUM_THREADS="1"), cwd=tmp_path)


def _splits(name: str, eval_strategy: str = "no", prompt_column: str = "prompt", **script_args):
    script_args = ScriptArguments(dataset_name=name, **script_args)
    return load_splits(script_args, SimpleNamespace(eval_strategy=eval_strategy), prompt_column)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_local_data_files(tmp_path, suffix):
    path = tmp_path / f"prompts{suffix}"
    rows = Dataset.from_dict({"prompt": PROMPTS})
    {".jsonl": rows.to_json, ".csv": rows.to_csv, ".parquet": rows.to_parquet}.get(suffix, rows.to_json)(str(path))
    train, evaluation = _splits(str(path))
    assert train["prompt"] == PROMPTS and evaluation is None
    train, _ = _splits(str(path), dataset_train_split="mine")  # the file is the train split, whatever its name
    assert train["prompt"] == PROMPTS


def test_saved_folders_and_data_folders(tmp_path, monkeypatch):
    rows = Dataset.from_dict({"text": PROMPTS})
    rows.save_to_disk(tmp_path / "saved_dataset")
    DatasetDict({"train": rows, "test": rows.select(range(2))}).save_to_disk(tmp_path / "saved_dict")
    (tmp_path / "files").mkdir()
    rows.to_json(tmp_path / "files" / "train.jsonl")
    monkeypatch.chdir(tmp_path)  # relative names are relative to the current folder
    train, _ = _splits("saved_dataset", prompt_column="text")
    assert train["prompt"] == PROMPTS
    train, evaluation = _splits(str(tmp_path / "saved_dict"), eval_strategy="steps")
    assert train.num_rows == 6 and evaluation.num_rows == 2
    train, _ = _splits("files")
    assert train["text"] == PROMPTS


def test_missing_data_says_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        _splits("prompts.jsonl")
    message = str(error.value)
    assert str(tmp_path / "prompts.jsonl") in message and "Hub" in message, message
    with pytest.raises(ValueError) as error:
        _splits("nobody/no_such_dataset")  # offline: a Hub name that cannot be loaded
    message = str(error.value)
    assert str(tmp_path / "nobody" / "no_such_dataset") in message and "Hub" in message, message
    Dataset.from_dict({"prompt": PROMPTS}).to_json(tmp_path / "p.jsonl")
    with pytest.raises(ValueError, match="--dataset_test_split"):
        _splits("p.jsonl", eval_strategy="steps")  # one file, one split: no test split to evaluate on


# ----------------------------------------------------------------------------------------------------------------------
# 8. A mistyped flag: one line with the close matches, exit 2, nothing launched
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", [["--learning_rat", "1e-5"], ["--learnin_rate=1e-5"]])
def test_mistyped_flag_is_one_line_and_exit_2(tmp_path, flag):
    cmd = _cli("ppo", "--config", "ppo_max_tiny", "--max_steps", "1", "--output_dir", "out", *flag)
    result, _ = _run(cmd, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()  # nothing launched: no accelerate warning, no traceback, no run folder
    assert len(lines) == 1 and "did you mean --learning_rate?" in lines[0], result.stderr[-3000:]
    assert lines[0].startswith("ppomax-trl ppo: error: unknown flag ") and not (tmp_path / "out").exists()


def test_mistyped_config_key_is_one_line_and_exit_2(tmp_path):
    config = yaml.safe_load((CONFIGS / "una_tiny.yaml").read_text())
    config["learnin_rate"] = config.pop("learning_rate")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config))
    result, _ = _run(_cli("una", "--config", "mine.yaml", "--output_dir", "out"), tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "learnin_rate" in lines[0] and "did you mean learning_rate?" in lines[0], lines
    assert str(tmp_path / "mine.yaml") in lines[0] and not (tmp_path / "out").exists()


def test_mistyped_flag_when_the_recipe_runs_directly(tmp_path):
    cmd = [sys.executable, "-m", "ppomax_trl.recipes.una", "--config", "una_tiny", "--learning_rat", "1e-5"]
    result, _ = _run(cmd, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "did you mean --learning_rate?" in result.stderr.strip().splitlines()[-1]


def test_mistyped_launcher_flag_is_suggested(capsys):
    assert main(["reward", "--num_proceses", "2", "--config", "reward_rank_tiny"]) == 2
    assert "did you mean --num_processes?" in capsys.readouterr().err
