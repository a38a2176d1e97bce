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
"""`RewardScorer` on its own: no trainer, a bare CPU `Accelerator` and a `TrainerState`."""

import math

import pytest
import torch
from conftest import fp32_accelerator
from transformers import TrainerState

from ppomax_trl import ppo_utils as pu
from ppomax_trl.modules import per_position_scores, sequence_inputs
from ppomax_trl.rewards import _reward_columns
from ppomax_trl.scoring import RewardScorer
from ppomax_trl.tiny import tiny_reward_model


PROMPTS = ["the movie was", "i loved", "what a"]
COMPLETION_IDS = [[40, 41, 1], [42, 43, 44, 45], [46, 1]]  # 1 is `<eos>`: rollouts 0 and 2 stopped


def rollout_batch(tokenizer):
    """Left-padded prompts and right-padded responses as the trainer's rollout batch holds them."""
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    width = max(map(len, prompts))
    queries = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    query_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    length = max(map(len, COMPLETION_IDS))
    responses = torch.tensor([ids + [tokenizer.pad_token_id] * (length - len(ids)) for ids in COMPLETION_IDS])
    response_mask = torch.tensor([[True] * len(ids) + [False] * (length - len(ids)) for ids in COMPLETION_IDS])
    stopped = torch.tensor([ids[-1] == tokenizer.eos_token_id for ids in COMPLETION_IDS])
    return {"queries": queries, "query_mask": query_mask, "responses": responses, "response_mask": response_mask,
            "stopped": stopped}  # fmt: skip


def make_scorer(tokenizer, reward_model=None, reward_funcs=(), **kwargs):
    scorer = RewardScorer(reward_model, list(reward_funcs), tokenizer, trainer_name="TestScorer", **kwargs)
    scorer.place(fp32_accelerator())
    return scorer


def score_rows(scorer, rows, batch, state=None):
    prompts, completions = scorer.decode(rows, batch)
    return scorer.rewards_per_func(prompts, completions, batch, _reward_columns(rows), state or TrainerState())


def rows_of(**columns):
    return [{"prompt": p, **{k: v[i] for k, v in columns.items()}} for i, p in enumerate(PROMPTS)]


def length_reward(completion_ids, **kwargs):
    return [float(len(ids)) for ids in completion_ids]


def test_reward_model_argument_and_a_function_weighted(tokenizer):
    reward_model = tiny_reward_model(tokenizer, seed=1)
    scorer = make_scorer(tokenizer, reward_model, [length_reward], reward_weights=[2.0, -0.5])
    batch, rows = rollout_batch(tokenizer), rows_of()
    per_func = score_rows(scorer, rows, batch)
    assert scorer.reward_func_names == ["Qwen2ForSequenceClassification", "length_reward"]
    # the reward model reads the policy's ids at the last real token, as `RewardTrainer` trained it
    inputs = sequence_inputs(batch, slice(None), tokenizer.pad_token_id)
    with torch.no_grad():
        per_position = per_position_scores(reward_model, inputs["input_ids"], inputs["attention_mask"])
    readout = pu.reward_readout_indices(inputs["input_ids"], inputs["attention_mask"], tokenizer.pad_token_id)
    expected_rm = per_position[torch.arange(len(PROMPTS)), readout]
    torch.testing.assert_close(per_func[:, 0], expected_rm)
    assert per_func[:, 1].tolist() == [3.0, 4.0, 2.0]
    scores = scorer.combine_rewards(per_func, TrainerState())
    torch.testing.assert_close(scores, 2.0 * expected_rm - 0.5 * per_func[:, 1])


def test_none_means_does_not_apply_and_is_left_out_of_the_sum(tokenizer):
    def only_first(prompts, **kwargs):
        return [1.0] + [None] * (len(prompts) - 1)

    scorer = make_scorer(tokenizer, None, [only_first, length_reward], reward_weights=[10.0, 1.0])
    per_func = score_rows(scorer, rows_of(), rollout_batch(tokenizer))
    assert per_func[0, 0] == 1.0 and per_func[1:, 0].isnan().all()
    assert scorer.combine_rewards(per_func, TrainerState()).tolist() == [13.0, 4.0, 2.0]
    stats = scorer.reward_func_stats(per_func)
    assert stats["rewards/only_first/mean"] == 1.0 and "rewards/only_first/std" not in stats  # one value: no std


def test_grpo_keywords_columns_state_and_logging_buffers(tokenizer):
    seen = {}

    def spy(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, **columns):
        seen.update(prompts=prompts, completions=completions, completion_ids=completion_ids, state=trainer_state,
                    columns=columns)  # fmt: skip
        log_extra("judge", ["a", "b", "c"])
        log_metric("judge/calls", 1.0)
        log_metric("judge/calls", 3.0)
        return [0.0] * len(prompts)

    scorer = make_scorer(tokenizer, None, [spy])
    state = TrainerState(global_step=5)
    batch = rollout_batch(tokenizer)
    score_rows(scorer, rows_of(answer=["x", "y", "z"]), batch, state)
    assert seen["prompts"] == PROMPTS and seen["state"] is state and seen["columns"] == {"answer": ["x", "y", "z"]}
    assert seen["completion_ids"] == COMPLETION_IDS  # up to and including the stop token
    assert seen["completions"] == [tokenizer.decode(ids, skip_special_tokens=True) for ids in COMPLETION_IDS]
    assert scorer.last_extra_columns == {"judge": ["a", "b", "c"]}
    assert scorer.pop_metrics() == {"judge/calls": 2.0}
    assert scorer.pop_metrics() == {}  # popped


def test_async_functions_run_together_and_match_sync(tokenizer):
    async def async_length(completion_ids, **kwargs):
        return [float(len(ids)) for ids in completion_ids]

    scorer = make_scorer(tokenizer, None, [async_length, length_reward])
    per_func = score_rows(scorer, rows_of(), rollout_batch(tokenizer))
    assert torch.equal(per_func[:, 0], per_func[:, 1])


def test_errors_name_the_function_and_the_step(tokenizer):
    def text_reward(prompts, **kwargs):
        return ["good"] * len(prompts)

    def never(prompts, **kwargs):
        return [None] * len(prompts)

    def infinite(prompts, **kwargs):
        return [math.inf] * len(prompts)

    batch, rows = rollout_batch(tokenizer), rows_of()
    with pytest.raises(TypeError, match="`text_reward` returned 'good'"):
        score_rows(make_scorer(tokenizer, None, [text_reward]), rows, batch)
    with pytest.raises(ValueError, match="Rollout 0 at step 7 has no score"):
        score_rows(make_scorer(tokenizer, None, [never]), rows, batch, TrainerState(global_step=6))
    with pytest.raises(ValueError, match="Non-finite reward scores at step 1 .* `infinite`"):
        score_rows(make_scorer(tokenizer, None, [infinite]), rows, batch)
    with pytest.raises(ValueError, match="needs a reward"):
        RewardScorer(None, [], tokenizer, trainer_name="TestScorer")
    with pytest.raises(ValueError, match="`reward_weights` has 1 weight"):
        RewardScorer(None, [length_reward, length_reward], tokenizer, reward_weights=[1.0])


def test_reward_model_in_reward_funcs_is_scored_as_grpo(tokenizer):
    rm = tiny_reward_model(tokenizer, seed=3)
    scorer = make_scorer(tokenizer, None, [rm], reward_processing_classes=[tokenizer])
    batch, rows = rollout_batch(tokenizer), rows_of()
    per_func = score_rows(scorer, rows, batch)
    prompts, completions = scorer.decode(rows, batch)
    with torch.no_grad():  # one unpadded forward per rollout over `prompt + completion`, no special tokens added
        expected = torch.stack([
            rm(input_ids=torch.tensor([tokenizer(p + c, add_special_tokens=False)["input_ids"]])).logits[0, 0]
            for p, c in zip(prompts, completions, strict=True)
        ])  # fmt: skip
    torch.testing.assert_close(per_func[:, 0], expected, rtol=1e-5, atol=1e-5)
