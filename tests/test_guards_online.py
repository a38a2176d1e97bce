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
"""Early, named errors of the online trainers: bad prompts, bad reward functions, non-finite losses, empty budgets."""

import pytest
import torch
from conftest import PROMPTS, common_args
from datasets import Dataset
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer, PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.tiny import tiny_causal_lm


def constant_reward(prompts, completions, **kwargs):
    return [1.0] * len(completions)


def test_prompt_longer_than_the_policy_context_is_rejected_with_its_row(tmp_path, tokenizer, models):
    policy, reward_model, value_model = models
    for model in models:
        model.config.max_position_embeddings = 16
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS[:4]]
    prompts[2] = prompts[2] * 6  # longer than 16 - response_length
    assert len(prompts[2]) + 5 > 16 >= max(len(p) for i, p in enumerate(prompts) if i != 2) + 5
    args = PPOConfig(**common_args(tmp_path))  # response_length=5
    with pytest.raises(ValueError, match=r"row 2 has \d+ tokens.*max_position_embeddings=16.*<= 11 tokens"):
        PPOTrainer(args, tokenizer, policy, None, reward_model, Dataset.from_dict({"input_ids": prompts}), value_model)


@pytest.mark.parametrize("column", ["prompt", "input_ids"])
def test_missing_prompt_is_named_by_row(tmp_path, tokenizer, column):
    values = list(PROMPTS[:4]) if column == "prompt" else [tokenizer(p)["input_ids"] for p in PROMPTS[:4]]
    values[1] = None
    args = OnlineUNAConfig(**common_args(tmp_path))
    with pytest.raises(ValueError, match=rf"no `{column}` in row\(s\) \[1\]"):
        OnlineUNATrainer(args, tokenizer, tiny_causal_lm(tokenizer), None, None, Dataset.from_dict({column: values}),
                         reward_funcs=constant_reward)  # fmt: skip


def returns_none(prompts, completions, **kwargs):
    return None


def returns_a_float(prompts, completions, **kwargs):
    return 1.0


def returns_none_for_one(prompts, completions, **kwargs):
    return [None] + [1.0] * (len(completions) - 1)


def returns_a_string(prompts, completions, **kwargs):
    return [1.0, "2"] + [1.0] * (len(completions) - 2)


def returns_too_few(prompts, completions, **kwargs):
    return [1.0] * (len(completions) - 1)


@pytest.mark.parametrize(
    "func, error, message",
    [
        (returns_none, TypeError, r"`returns_none` returned NoneType; it must return a list"),
        (returns_a_float, TypeError, r"`returns_a_float` returned float"),
        (returns_a_string, TypeError, r"`returns_a_string` returned '2' for rollout\(s\) \[1\]"),
        (returns_too_few, ValueError, r"`returns_too_few` returned 3 scores for 4 completions"),
        # `None` means "does not apply" (GRPO); with a single function, that rollout has no score at all
        (
            returns_none_for_one,
            ValueError,
            (
                r"Rollout 0 at step 1 has no score: every reward function \(returns_none_for_one\) returned None for "
                r"it \(\{'prompt': .*, 'completion': .*\}\); rollouts without a score: \[0\]"
            ),
        ),
    ],
)
def test_bad_reward_function_output_names_the_function(tmp_path, tokenizer, prompt_dataset, func, error, message):
    args = PPOConfig(**common_args(tmp_path))
    trainer = PPOTrainer(args, tokenizer, tiny_causal_lm(tokenizer), None, None, prompt_dataset, reward_funcs=func)
    with pytest.raises(error, match=message):
        trainer.train()


def test_non_finite_loss_stops_before_the_update(tmp_path, tokenizer, prompt_dataset):
    """Rewards of 1e30 in plain PPO overflow the value loss: the run stops at step 1 naming the loss terms, and no
    optimizer step touches the weights."""

    def huge_reward(prompts, completions, **kwargs):
        return [1e30] * len(completions)

    args = PPOConfig(**common_args(tmp_path))
    trainer = PPOTrainer(args, tokenizer, tiny_causal_lm(tokenizer), None, None, prompt_dataset,
                         reward_funcs=huge_reward)  # fmt: skip
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with pytest.raises(FloatingPointError, match=r"Non-finite loss at step 1 .*'value': inf.*not applied"):
        trainer.train()
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name


def test_an_empty_update_budget_is_rejected():
    with pytest.raises(ValueError, match="`total_episodes` must be >= 1"):
        PPOMaxConfig(output_dir="unused", total_episodes=0, bf16=False)


class _BarTotals(TrainerCallback):
    def __init__(self, trainer):
        self.trainer, self.totals = trainer, []

    def on_step_end(self, args, state, control, **kwargs):
        bars = [cb.training_bar for cb in self.trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback)]
        self.totals.append((bars[0].total, state.max_steps))


def test_progress_bar_follows_an_early_end_of_the_critic_warmup(tmp_path, tokenizer, models, prompt_dataset):
    """The warm-up (3 cycles, on top of 2 updates) ends after its first cycle: the bar's total shrinks with it."""
    policy, reward_model, _ = models
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=3, critic_warmup_loss_threshold=1e9,
                                      disable_tqdm=False))  # fmt: skip
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset)
    bars = _BarTotals(trainer)
    trainer.add_callback(bars)
    trainer.train()
    assert trainer.state.global_step == 1 + 2
    assert bars.totals[-1] == (3, 3)
