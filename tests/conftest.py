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

import os
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import pytest
from datasets import Dataset

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
