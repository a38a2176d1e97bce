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
"""Sequences never silently exceed a model's positions (issue 21, defect 7): a reward model that re-reads the text in
its own tokens (in `reward_funcs`, or the `reward_model` argument with `reward_processing_class`) and the ptx rows are
checked against `max_position_embeddings`, early where the length is known, at scoring where it is not; the user
chooses between an error and left truncation with a warning (`reward_context_overflow`)."""

import logging

import pytest
import torch
from conftest import PROMPTS, common_args
from datasets import Dataset
from test_reward_contract import (
    DATASET,
    RM_TEXTS,
    build,
    grpo_inputs,
    sample_all_rows,
    saved_reward_model,
)
from trl.data_utils import is_conversational

from ppomax_trl import PPOMaxConfig, PPOMaxTrainer
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


def longest_prompt(rm_tok) -> int:
    return max(len(rm_tok(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS)


def grpo_texts(rows, batch, tokenizer) -> list[str]:
    prompts, completions = grpo_inputs(rows, batch, tokenizer)
    assert not is_conversational({"prompt": prompts[0]})
    return [p + c for p, c in zip(prompts, completions, strict=True)]


@pytest.fixture
def rm_setup(tmp_path):
    rm_tok = build_tiny_tokenizer(RM_TEXTS, vocab_size=300)
    return rm_tok, saved_reward_model(tmp_path / "rm", rm_tok, seed=7)


def test_a_reward_funcs_model_whose_context_a_rollout_exceeds_stops_with_model_rollout_and_length(
    tmp_path, tokenizer, rm_setup
):
    rm_tok, cross_rm = rm_setup
    cross_rm.config.max_position_embeddings = longest_prompt(rm_tok) + 1  # every prompt fits, long rollouts do not
    trainer = build("una", tmp_path, tokenizer, reward_funcs=cross_rm)
    rows, batch = sample_all_rows(trainer)
    lengths = [len(rm_tok(t, add_special_tokens=False)["input_ids"]) for t in grpo_texts(rows, batch, tokenizer)]
    first = next(i for i, n in enumerate(lengths) if n > cross_rm.config.max_position_embeddings)
    with pytest.raises(
        ValueError,
        match=rf"rollout {first} at step 1 is {lengths[first]} tokens for reward function `rm`, whose "
        rf"max_position_embeddings is {cross_rm.config.max_position_embeddings}.*reward_context_overflow",
    ):
        trainer.rewards_per_func(rows, batch)


def test_truncate_left_scores_the_last_positions_and_warns_once(tmp_path, tokenizer, rm_setup, caplog):
    rm_tok, cross_rm = rm_setup
    context = longest_prompt(rm_tok) + 1
    cross_rm.config.max_position_embeddings = context
    trainer = build("una", tmp_path, tokenizer, reward_funcs=cross_rm, reward_context_overflow="truncate_left")
    rows, batch = sample_all_rows(trainer)
    sequences = [rm_tok(t, add_special_tokens=False)["input_ids"] for t in grpo_texts(rows, batch, tokenizer)]
    assert any(len(ids) > context for ids in sequences)
    with torch.no_grad():  # one unpadded forward per rollout over its last `context` tokens
        expected = torch.stack([cross_rm(input_ids=torch.tensor([ids[-context:]])).logits[0, 0] for ids in sequences])
    with caplog.at_level(logging.WARNING, logger="ppomax_trl.rollout"):
        torch.testing.assert_close(trainer.rewards_per_func(rows, batch)[:, 0], expected, rtol=1e-5, atol=1e-5)
        trainer.rewards_per_func(rows, batch)
    assert sum("reward_context_overflow" in r.getMessage() for r in caplog.records) == 1


def test_the_reward_model_argument_with_its_own_tokenizer_is_checked_too(tmp_path, tokenizer, rm_setup):
    rm_tok, cross_rm = rm_setup
    cross_rm.config.max_position_embeddings = longest_prompt(rm_tok) + 1
    trainer = build("ppo", tmp_path, tokenizer, reward_model=cross_rm, reward_processing_class=rm_tok)
    rows, batch = sample_all_rows(trainer)
    with pytest.raises(ValueError, match=r"tokens for the reward model \(`reward_model`\), whose max_position"):
        trainer.score(rows, batch)


@pytest.mark.parametrize("as_argument", [False, True], ids=["reward_funcs", "reward_model"])
def test_a_prompt_that_alone_exceeds_a_reward_model_context_fails_at_construction(
    tmp_path, tokenizer, rm_setup, as_argument
):
    rm_tok, cross_rm = rm_setup
    cross_rm.config.max_position_embeddings = longest_prompt(rm_tok) - 1
    sources = {"reward_model": cross_rm, "reward_processing_class": rm_tok} if as_argument else {
        "reward_funcs": cross_rm}  # fmt: skip
    with pytest.raises(ValueError, match=r"train prompt\(s\) alone exceed the context of .*max_position_embeddings"):
        build("ppomax", tmp_path, tokenizer, **sources)
    build("ppomax", tmp_path, tokenizer, reward_context_overflow="truncate_left", **sources)  # the user's choice


def test_ptx_rows_longer_than_the_policy_context_need_a_ptx_max_length_that_cuts_them(tmp_path, tokenizer):
    policy, reward_model = tiny_causal_lm(tokenizer), tiny_reward_model(tokenizer, seed=1)
    policy.config.max_position_embeddings = 24
    ptx = Dataset.from_dict({"text": [" ".join(["the movie was a good film"] * 8), "a bad cast"]})
    assert len(tokenizer(ptx[0]["text"])["input_ids"]) > 24
    config = dict(common_args(tmp_path, ptx_coef=0.5, ptx_batch_size=1), critic_warmup_steps=0)
    prompts = DATASET.select(range(4))
    with pytest.raises(ValueError, match=r"ptx row 0 has \d+ tokens, and `ptx_max_length=512` keeps more than the "
                       r"policy \(Qwen2ForCausalLM\)'s max_position_embeddings=24.*`ptx_max_length` <= 24"):  # fmt: skip
        PPOMaxTrainer(PPOMaxConfig(**config), tokenizer, policy, None, reward_model, prompts, ptx_dataset=ptx)
    trainer = PPOMaxTrainer(PPOMaxConfig(**config, ptx_max_length=24), tokenizer, policy, None, reward_model,
                            prompts, ptx_dataset=ptx)  # fmt: skip
    assert trainer._next_ptx_batch()["input_ids"].size(1) <= 24
