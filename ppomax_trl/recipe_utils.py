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
"""What every script in `recipes/` does the same way around its trainer: sweep output folders, tokenizer, data splits,
reward loading, and the TRL script tail (train, metrics, state, model, evaluation, push). Each recipe keeps what differs:
its models, its trainer and the trainer's arguments."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .cli import import_function


if TYPE_CHECKING:
    from datasets import Dataset
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


def load_tokenizer(model_args: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of `model_name_or_path`; EOS doubles as the pad token when it has none."""
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_splits(
    script_args: ScriptArguments, training_args: TrainingArguments, prompt_column: str = "prompt"
) -> tuple[Dataset, Dataset | None]:
    """The train split, and the test split when `eval_strategy` is not `"no"`; `prompt_column` is renamed `prompt`."""
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
        reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, **kwargs)
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
