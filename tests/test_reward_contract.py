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
"""TRL 1.16 `GRPOTrainer`'s reward contract in every online trainer (issue 14, item 1): the arguments a reward function
gets, async functions, `reward_weights`, `None` for "does not apply", reward models mixed into `reward_funcs`, and the
per-function `rewards/<name>/mean|std` metrics."""

import asyncio
import functools
import math
from collections import defaultdict

import pytest
import torch
from conftest import PROMPTS, common_args, eos_biased
from datasets import Dataset
from transformers import AutoModelForSequenceClassification
from trl.data_utils import apply_chat_template, is_conversational

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer, PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


KINDS = ["ppo", "ppomax", "una"]
RM_TEXTS = ["completely different words for another vocabulary", "a second tokenizer, its own merges"]
# rows in dataset order: `value` is the row index, odd rows are "math", even rows "chat"
DATASET = Dataset.from_dict({
    "prompt": PROMPTS,
    "task": ["math" if i % 2 else "chat" for i in range(len(PROMPTS))],
    "value": [float(i) for i in range(len(PROMPTS))],
})  # fmt: skip
CONFIG_FIELDS = {
    "reward_weights", "total_episodes", "per_device_train_batch_size", "reward_context_overflow", "bf16", "use_cpu",
}  # fmt: skip


def build(kind, tmp_path, tokenizer, *, reward_model=None, dataset=DATASET, eval_dataset=None, **kwargs):
    """A trainer of `kind` on `dataset` (two updates of four rollouts); `kwargs` naming a config field go to the
    config, the rest to the trainer."""
    overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in CONFIG_FIELDS}
    config = common_args(tmp_path, stop_token="eos", temperature=1.0, top_p=1.0, response_length=6, **overrides)
    policy = eos_biased(tiny_causal_lm(tokenizer), tokenizer.eos_token_id)
    if kind == "ppo":
        return PPOTrainer(PPOConfig(**config), tokenizer, policy, None, reward_model, dataset,
                          eval_dataset=eval_dataset, **kwargs)  # fmt: skip
    if kind == "ppomax":
        return PPOMaxTrainer(PPOMaxConfig(**config, critic_warmup_steps=0), tokenizer, policy, None, reward_model,
                             dataset, eval_dataset=eval_dataset, **kwargs)  # fmt: skip
    return OnlineUNATrainer(OnlineUNAConfig(**config), tokenizer, policy, None, reward_model, dataset,
                            eval_dataset=eval_dataset, **kwargs)  # fmt: skip


def record_rollouts(trainer) -> list[tuple[list[dict], dict]]:
    """Every (rows, rollout batch) the trainer samples, in order."""
    seen, original = [], trainer.rollout

    def recording(rows, model):
        batch = original(rows, model)
        seen.append((rows, batch))
        return batch

    trainer.rollout = recording
    return seen


def sampled_ids(batch) -> list[list[int]]:
    return [r[m].tolist() for r, m in zip(batch["responses"], batch["response_mask"], strict=True)]


def sample_all_rows(trainer, seed=0):
    """One response for every dataset row, in dataset order."""
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    queries, query_mask = trainer._collate_prompts(rows)
    torch.manual_seed(seed)
    return rows, trainer.generate_responses(trainer.model, queries, query_mask, temperature=1.0, top_p=1.0)


def lengths_of(batch) -> torch.Tensor:
    return torch.tensor([len(ids) for ids in sampled_ids(batch)], dtype=torch.float32)


def nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def nanstd(values: list[float]) -> float:
    """TRL's `nanstd` (Bessel-corrected, NaNs ignored), written out."""
    kept = [v for v in values if not math.isnan(v)]
    if len(kept) < 2:
        return math.nan
    mean = sum(kept) / len(kept)
    return math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))


def saved_reward_model(folder, tokenizer, seed: int):
    """A tiny reward model saved with its tokenizer and loaded back: its `config._name_or_path` is the folder, from
    which GRPO (and these trainers) load the tokenizer it reads with."""
    tiny_reward_model(tokenizer, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return AutoModelForSequenceClassification.from_pretrained(folder)


def grpo_reward_model_scores(reward_model, rm_tok, prompts, completions) -> torch.Tensor:
    """TRL 1.16 `GRPOTrainer._calculate_rewards`, its reward-model branch, transcribed: prompt + completion text (or
    the chat template over the closed conversation), no special tokens added, right padding, `logits[:, 0]`."""
    if is_conversational({"prompt": prompts[0]}):
        messages = [{"messages": p + c} for p, c in zip(prompts, completions, strict=True)]
        texts = [apply_chat_template(x, rm_tok)["text"] for x in messages]
    else:
        texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    inputs = rm_tok(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    return reward_model(**inputs).logits[:, 0]


def grpo_inputs(rows, batch, tokenizer) -> tuple[list, list]:
    """What GRPO hands its reward functions for these rollouts: the dataset prompts and the completions decoded
    without special tokens (as assistant messages for conversational prompts)."""
    prompts = [row["prompt"] for row in rows]
    completions = [tokenizer.decode(ids, skip_special_tokens=True) for ids in sampled_ids(batch)]
    if isinstance(prompts[0], list):
        completions = [[{"role": "assistant", "content": c}] for c in completions]
    return prompts, completions


def same_tokenizer_scores(reward_model, batch) -> torch.Tensor:
    """A reward model over the policy's own ids, one unpadded forward per rollout."""
    scores = []
    for i in range(batch["responses"].size(0)):
        ids = torch.cat([batch["queries"][i][batch["query_mask"][i].bool()],
                         batch["responses"][i][batch["response_mask"][i]]])  # fmt: skip
        scores.append(reward_model(input_ids=ids[None]).logits[0, 0])
    return torch.stack(scores)


# ----------------------------------------------------------------------------------------------------------------------
# The arguments
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_a_grpo_reward_function_gets_every_argument(tmp_path, tokenizer, kind):
    calls = []

    def contract_reward(prompts, completions, completion_ids, task, value, trainer_state, log_extra, log_metric, **kw):
        calls.append(dict(prompts=prompts, completions=completions, completion_ids=completion_ids, task=task,
                          value=value, state=trainer_state, step=trainer_state.global_step, extra=kw))  # fmt: skip
        log_metric("contract/value_mean", sum(value) / len(value))
        log_extra("note", [f"row {int(v)}" for v in value])
        return [float(len(ids)) for ids in completion_ids]

    trainer = build(kind, tmp_path, tokenizer, reward_funcs=contract_reward)
    rollouts = record_rollouts(trainer)
    trainer.train()

    assert len(calls) == len(rollouts) == 2
    logged = [entry for entry in trainer.state.log_history if "contract/value_mean" in entry]
    assert len(logged) == 2
    stopped_with_eos = 0
    for step, (call, (rows, batch), entry) in enumerate(zip(calls, rollouts, logged, strict=True)):
        assert call["prompts"] == [row["prompt"] for row in rows]  # the dataset's prompts, as GRPO passes them
        ids = sampled_ids(batch)
        assert call["completion_ids"] == ids  # the sampled ids, unpadded, the stop token (EOS) included as in GRPO
        stopped_with_eos += sum(i[-1] == tokenizer.eos_token_id for i in ids)
        assert call["completions"] == tokenizer.batch_decode(ids, skip_special_tokens=True)
        assert call["task"] == [row["task"] for row in rows] and call["value"] == [row["value"] for row in rows]
        assert call["state"] is trainer.state and call["step"] == step  # the live TrainerState, before the update
        assert call["extra"] == {}  # nothing beyond GRPO's arguments
        assert entry["contract/value_mean"] == pytest.approx(sum(call["value"]) / 4)  # log_metric, as logged
        assert entry["rewards/contract_reward/mean"] == pytest.approx(nanmean([float(len(i)) for i in ids]))
    assert stopped_with_eos > 0


@pytest.mark.parametrize("kind", KINDS)
def test_conversational_prompts_and_completions_are_message_lists(tmp_path, tokenizer, kind):
    seen = []

    async def judge(prompts, completions, completion_ids, **kwargs):  # GRPO's conversational shapes, async
        seen.append((prompts, completions, completion_ids))
        return [float(len(c[0]["content"])) for c in completions]

    dataset = DATASET.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})
    trainer = build(kind, tmp_path, tokenizer, dataset=dataset, reward_funcs=judge)
    rows, batch = sample_all_rows(trainer)
    scores = trainer.score(rows, batch)
    (prompts, completions, completion_ids), = seen  # fmt: skip
    assert prompts == [[{"role": "user", "content": p}] for p in PROMPTS]
    expected = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    assert completions == [[{"role": "assistant", "content": text}] for text in expected]
    torch.testing.assert_close(scores, torch.tensor([float(len(text)) for text in expected]))


@pytest.mark.parametrize("kind", KINDS)
def test_log_extra_columns_join_the_completions_table(tmp_path, tokenizer, kind):
    def noted_reward(prompts, completions, value, log_extra, **kwargs):
        log_extra("note", [f"row {int(v)}" for v in value])
        return [1.0] * len(completions)

    trainer = build(kind, tmp_path, tokenizer, reward_funcs=noted_reward, eval_dataset=DATASET)
    table = trainer.generate_completions()
    assert [row["query"] for row in table] == PROMPTS
    assert [row["note"] for row in table] == [f"row {i}" for i in range(len(PROMPTS))]


# ----------------------------------------------------------------------------------------------------------------------
# Async functions
# ----------------------------------------------------------------------------------------------------------------------
class Rendezvous:
    """Two async reward functions that each wait for the other: they finish only when run concurrently."""

    def __init__(self):
        self.events = defaultdict(dict)
        self.steps = []

    def make(self, me: str, other: str):
        async def reward(prompts, completions, completion_ids, trainer_state, **kwargs):
            events = self.events[trainer_state.global_step]
            for name in (me, other):
                events.setdefault(name, asyncio.Event())
            events[me].set()
            await asyncio.wait_for(events[other].wait(), timeout=5)
            self.steps.append((me, trainer_state.global_step))
            return [float(len(ids)) for ids in completion_ids]

        reward.__name__ = me
        return reward


@pytest.mark.parametrize("kind", KINDS)
def test_async_reward_functions_run_concurrently(tmp_path, tokenizer, kind):
    meet = Rendezvous()
    trainer = build(kind, tmp_path, tokenizer, reward_funcs=[meet.make("left", "right"), meet.make("right", "left")],
                    reward_weights=[1.0, 0.5])  # fmt: skip
    rollouts = record_rollouts(trainer)
    trainer.train()
    assert sorted(meet.steps) == [("left", 0), ("left", 1), ("right", 0), ("right", 1)]
    logged = [e for e in trainer.state.log_history if "rewards/left/mean" in e]
    assert len(logged) == len(rollouts) == 2
    for (_, batch), entry in zip(rollouts, logged, strict=True):
        lengths = lengths_of(batch)
        assert entry["rewards/left/mean"] == pytest.approx(lengths.mean().item())
        assert entry["rewards/right/std"] == pytest.approx(lengths.std().item())


class AsyncJudge:
    """A callable instance with an async `__call__` (GRPO detects these too)."""

    async def __call__(self, prompts, completions, completion_ids, **kwargs):
        await asyncio.sleep(0)
        return [2.0] * len(completions)


async def offset_reward(prompts, completions, completion_ids, offset, **kwargs):
    await asyncio.sleep(0)
    return [offset + len(ids) for ids in completion_ids]


def test_async_callables_and_partials_also_inside_a_running_event_loop(tmp_path, tokenizer):
    trainer = build(
        "ppo", tmp_path, tokenizer, reward_funcs=[AsyncJudge(), functools.partial(offset_reward, offset=1)]
    )
    assert trainer.reward_func_names == ["AsyncJudge", "offset_reward"]
    rows, batch = sample_all_rows(trainer)

    async def called_from_a_coroutine():  # e.g. a notebook: the caller's event loop is running
        return trainer.score(rows, batch)

    scores = asyncio.run(called_from_a_coroutine())
    torch.testing.assert_close(scores, 2.0 + 1.0 + lengths_of(batch))
    torch.testing.assert_close(trainer.score(rows, batch), scores)  # and outside one


def test_training_inside_a_running_event_loop(tmp_path, tokenizer):
    trainer = build("ppomax", tmp_path, tokenizer, reward_funcs=functools.partial(offset_reward, offset=0))

    async def main():
        trainer.train()

    asyncio.run(main())
    assert trainer.state.global_step == 2


# ----------------------------------------------------------------------------------------------------------------------
# Weights and None
# ----------------------------------------------------------------------------------------------------------------------
def value_reward(prompts, completions, value, **kwargs):
    return list(value)


def length_reward(prompts, completions, completion_ids, **kwargs):
    return [float(len(ids)) for ids in completion_ids]


def math_only(prompts, completions, task, value, **kwargs):
    return [v if t == "math" else None for t, v in zip(task, value, strict=True)]


async def chat_only(prompts, completions, task, value, **kwargs):
    return [10.0 * v if t == "chat" else None for t, v in zip(task, value, strict=True)]


@pytest.mark.parametrize("kind", KINDS)
def test_reward_weights_weight_each_function(tmp_path, tokenizer, kind):
    trainer = build(kind, tmp_path, tokenizer, reward_funcs=[value_reward, length_reward], reward_weights=[2.0, -0.5])
    rows, batch = sample_all_rows(trainer)
    values = torch.tensor(DATASET["value"], dtype=torch.float32)
    torch.testing.assert_close(trainer.score(rows, batch), 2.0 * values - 0.5 * lengths_of(batch))


def test_reward_weights_must_match_the_reward_functions(tmp_path, tokenizer, models):
    with pytest.raises(ValueError, match=r"`reward_weights` has 1 weight\(s\) but there are 2 reward functions \(2 "):
        build("ppo", tmp_path, tokenizer, reward_funcs=[value_reward, length_reward], reward_weights=[1.0])
    # the `reward_model` argument counts: it is reward function 0
    message = r"has 3 weight\(s\) but there are 2 reward functions \(the `reward_model` argument and 1 entry of"
    for kind in KINDS:
        with pytest.raises(ValueError, match=message):
            build(kind, tmp_path, tokenizer, reward_model=models[1], reward_funcs=value_reward,
                  reward_weights=[1.0, 1.0, 1.0])  # fmt: skip
    with pytest.raises(ValueError, match="reward_weights"):
        PPOConfig(**common_args(tmp_path, reward_weights=[1.0, float("nan")]))


@pytest.mark.parametrize("kind", KINDS)
def test_none_means_the_function_does_not_apply(tmp_path, tokenizer, kind):
    trainer = build(kind, tmp_path, tokenizer, reward_funcs=[math_only, chat_only, length_reward],
                    reward_weights=[1.0, 2.0, 0.5])  # fmt: skip
    rows, batch = sample_all_rows(trainer)
    per_func = trainer.rewards_per_func(rows, batch)
    lengths = lengths_of(batch)
    nan = math.nan
    expected_per_func = torch.tensor([[i if i % 2 else nan, nan if i % 2 else 10.0 * i, lengths[i]] for i in range(8)])
    torch.testing.assert_close(per_func, expected_per_func, equal_nan=True)
    # nan-aware weighted sum: a `None` leaves that function out of the rollout's sum
    expected = [(1.0 * i if i % 2 else 2.0 * 10.0 * i) + 0.5 * lengths[i].item() for i in range(8)]
    torch.testing.assert_close(trainer.score(rows, batch), torch.tensor(expected))


@pytest.mark.parametrize("kind", KINDS)
def test_a_rollout_no_function_applies_to_is_an_error_naming_it(tmp_path, tokenizer, kind):
    def none_for_rows_2_and_4(prompts, completions, value, **kwargs):
        return [None if v in (2, 4) else 1.0 for v in value]

    trainer = build(kind, tmp_path, tokenizer, reward_funcs=[math_only, none_for_rows_2_and_4])
    rows, batch = sample_all_rows(trainer)
    message = (
        r"Rollout 2 at step 1 has no score: every reward function \(math_only, none_for_rows_2_and_4\) returned None "
        r"for it \(\{'prompt': 'what a', 'completion': .*, 'task': 'chat', 'value': 2.0\}\); rollouts without a "
        r"score: \[2, 4\]"
    )
    with pytest.raises(ValueError, match=message):
        trainer.score(rows, batch)


def test_a_non_finite_reward_names_the_function(tmp_path, tokenizer):
    def nan_for_row_1(prompts, completions, value, **kwargs):
        return [math.nan if v == 1 else 0.0 for v in value]  # NaN is a bug; `None` means "does not apply"

    trainer = build("una", tmp_path, tokenizer, reward_funcs=[length_reward, nan_for_row_1])
    rows, batch = sample_all_rows(trainer)
    with pytest.raises(ValueError, match=r"Non-finite reward scores at step 1 for rollouts \[1\] from reward function "
                                         r"`nan_for_row_1`: \[nan\]"):  # fmt: skip
        trainer.score(rows, batch)


# ----------------------------------------------------------------------------------------------------------------------
# Reward models in `reward_funcs`
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_reward_models_and_functions_mixed(tmp_path, tokenizer, kind):
    rm_tok = build_tiny_tokenizer(RM_TEXTS, vocab_size=300)
    own_rm = tiny_reward_model(tokenizer, seed=3)  # the `reward_model` argument: reads the policy's ids
    cross_rm = saved_reward_model(tmp_path / "org" / "cross-rm", rm_tok, seed=5)  # in `reward_funcs`, own tokenizer
    trainer = build(kind, tmp_path, tokenizer, reward_model=own_rm, reward_funcs=[cross_rm, length_reward],
                    reward_weights=[0.5, -2.0, 0.25])  # fmt: skip
    assert trainer.reward_func_names == ["Qwen2ForSequenceClassification", "cross-rm", "length_reward"]
    loaded_tok = trainer.reward_processing_classes[0]  # loaded from the model's folder, as GRPO loads it
    text = f"{PROMPTS[0]} and more{rm_tok.eos_token}"
    assert (
        loaded_tok(text)["input_ids"] == rm_tok(text)["input_ids"] and loaded_tok.pad_token_id == rm_tok.pad_token_id
    )
    assert not any(p.requires_grad for p in cross_rm.parameters())
    rows, batch = sample_all_rows(trainer)
    assert batch["stopped"].any() and not batch["stopped"].all()
    with torch.no_grad():
        own = same_tokenizer_scores(own_rm, batch)
        cross = grpo_reward_model_scores(cross_rm, rm_tok, *grpo_inputs(rows, batch, tokenizer))
    per_func = trainer.rewards_per_func(rows, batch)
    torch.testing.assert_close(per_func, torch.stack([own, cross, lengths_of(batch)], dim=1), rtol=1e-5, atol=1e-5)
    expected = 0.5 * own - 2.0 * cross + 0.25 * lengths_of(batch)
    torch.testing.assert_close(trainer.score(rows, batch), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_reward_processing_classes_give_a_model_its_tokenizer(tmp_path, tokenizer, kind):
    rm_tok = build_tiny_tokenizer(RM_TEXTS, vocab_size=300)
    rm_tok.pad_token = None  # GRPO: a reward tokenizer without a pad token pads with EOS
    cross_rm = tiny_reward_model(rm_tok, seed=6)  # in memory: no folder to load a tokenizer from
    with pytest.raises(ValueError, match=r"`reward_funcs\[1\]` is a reward model.*`reward_processing_classes`"):
        build(kind, tmp_path, tokenizer, reward_funcs=[value_reward, cross_rm])
    with pytest.raises(ValueError, match=r"`reward_processing_classes` has 1 entries but `reward_funcs` has 2"):
        build(kind, tmp_path, tokenizer, reward_funcs=[value_reward, cross_rm], reward_processing_classes=[rm_tok])
    trainer = build(kind, tmp_path, tokenizer, reward_funcs=[value_reward, cross_rm],
                    reward_processing_classes=[None, rm_tok])  # fmt: skip
    assert trainer.reward_func_names == ["value_reward", "Qwen2ForSequenceClassification"]
    assert trainer.reward_processing_classes[1].pad_token == rm_tok.eos_token and rm_tok.pad_token is None
    # as GRPO does: the model reads its score at the last token that is not its tokenizer's pad (here EOS)
    assert cross_rm.config.pad_token_id == rm_tok.eos_token_id
    rows, batch = sample_all_rows(trainer)
    with torch.no_grad():
        expected = grpo_reward_model_scores(
            cross_rm, trainer.reward_processing_classes[1], *grpo_inputs(rows, batch, tokenizer)
        )
    values = torch.tensor(DATASET["value"], dtype=torch.float32)
    torch.testing.assert_close(trainer.score(rows, batch), values + expected, rtol=1e-5, atol=1e-5)


def test_a_reward_model_path_in_reward_funcs_loads_model_and_tokenizer(tmp_path, tokenizer, tiny_model_dirs):
    trainer = build("ppomax", tmp_path, tokenizer, reward_funcs=[str(tiny_model_dirs["reward"]), value_reward])
    assert trainer.reward_func_names == ["reward", "value_reward"]
    loaded = trainer.reward_funcs[0]
    assert isinstance(loaded, torch.nn.Module) and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.config.num_labels == 1
    rows, batch = sample_all_rows(trainer)
    with torch.no_grad():
        expected = grpo_reward_model_scores(
            loaded, trainer.reward_processing_classes[0], *grpo_inputs(rows, batch, tokenizer)
        )
    values = torch.tensor(DATASET["value"], dtype=torch.float32)
    torch.testing.assert_close(trainer.score(rows, batch), expected + values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conversational", [False, True], ids=["text", "chat"])
def test_reward_funcs_models_score_as_grpo_and_the_reward_model_argument_as_reward_trainer(
    tmp_path, tokenizer, conversational
):
    """One rule (README, reward-function contract): a model in `reward_funcs` is scored exactly as TRL 1.16's GRPO
    scores it, stopped completions and not; the `reward_model` argument keeps the `RewardTrainer` read-out (its
    tokens pinned in test_rollout_semantics), which differs from GRPO's on these rollouts."""
    rm_tok = build_tiny_tokenizer(RM_TEXTS, vocab_size=300)
    cross_rm = saved_reward_model(tmp_path / "rm", rm_tok, seed=7)
    dataset = DATASET.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]}) if conversational \
        else DATASET  # fmt: skip
    as_func = build("una", tmp_path, tokenizer, dataset=dataset, reward_funcs=cross_rm)
    as_argument = build("una", tmp_path, tokenizer, dataset=dataset, reward_model=cross_rm,
                        reward_processing_class=rm_tok)  # fmt: skip
    rows, batch = sample_all_rows(as_func)
    assert batch["stopped"].any() and not batch["stopped"].all()
    with torch.no_grad():
        grpo = grpo_reward_model_scores(cross_rm, rm_tok, *grpo_inputs(rows, batch, tokenizer))
    torch.testing.assert_close(as_func.score(rows, batch), grpo, rtol=1e-6, atol=1e-6)
    assert ((as_argument.score(rows, batch) - grpo).abs() > 1e-4).any()


def test_reward_funcs_models_score_as_grpo_in_a_bf16_run(tmp_path, tokenizer):
    """GRPO calls a reward model in its own dtype, outside the training autocast: under CPU bf16 autocast the score of
    an fp32 reward model in `reward_funcs` is still GRPO's fp32 score, bit for bit."""
    rm_tok = build_tiny_tokenizer(RM_TEXTS, vocab_size=300)
    cross_rm = saved_reward_model(tmp_path / "rm", rm_tok, seed=7)
    trainer = build("ppomax", tmp_path, tokenizer, reward_funcs=cross_rm, bf16=True, use_cpu=True)
    assert trainer.accelerator.mixed_precision == "bf16"
    rows, batch = sample_all_rows(trainer)
    with torch.no_grad():
        grpo = grpo_reward_model_scores(cross_rm, rm_tok, *grpo_inputs(rows, batch, tokenizer))
    torch.testing.assert_close(trainer.score(rows, batch), grpo, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Per-function metrics
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_per_function_rewards_are_logged_as_grpo_logs_them(tmp_path, tokenizer, kind):
    rm = tiny_reward_model(tokenizer, seed=4)
    rm.config._name_or_path = "some-org/tiny-rm"
    seen = []

    def recording_math_only(prompts, completions, task, value, **kwargs):
        scores = math_only(prompts, completions, task, value)
        seen.append([math.nan if s is None else s for s in scores])
        return scores

    trainer = build(kind, tmp_path, tokenizer, reward_model=rm, reward_funcs=recording_math_only,
                    eval_dataset=DATASET, total_episodes=12)  # fmt: skip
    rollouts = record_rollouts(trainer)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "rewards/tiny-rm/mean" in entry]
    assert len(logged) == len(rollouts) == len(seen) == 3
    for entry, (_, batch), math_scores in zip(logged, rollouts, seen, strict=True):
        with torch.no_grad():
            rm_scores = same_tokenizer_scores(rm, batch).tolist()
        assert entry["rewards/tiny-rm/mean"] == pytest.approx(nanmean(rm_scores), abs=1e-5)
        assert entry["rewards/tiny-rm/std"] == pytest.approx(nanstd(rm_scores), abs=1e-5)
        # mean and std over the rollouts the function applies to, as GRPO's nanmean/nanstd; none to log: no key
        for stat, expected in (("mean", nanmean(math_scores)), ("std", nanstd(math_scores))):
            key = f"rewards/recording_math_only/{stat}"
            assert key not in entry if math.isnan(expected) else entry[key] == pytest.approx(expected)
    assert any("rewards/recording_math_only/std" in entry for entry in logged)
    metrics = trainer.evaluate()
    # eval: pooled over the whole eval set (8 rows, 4 of them math)
    assert metrics["eval_rewards/recording_math_only/mean"] == pytest.approx(nanmean(seen[-1])) == 4.0
    assert metrics["eval_rewards/recording_math_only/std"] == pytest.approx(nanstd([1.0, 3.0, 5.0, 7.0]))
    assert trainer.state.log_history[-1]["eval_rewards/tiny-rm/std"] == metrics["eval_rewards/tiny-rm/std"]


def test_a_repeated_name_gets_a_suffix(tmp_path, tokenizer):
    trainer = build("ppo", tmp_path, tokenizer, reward_funcs=[length_reward, length_reward])
    assert trainer.reward_func_names == ["length_reward", "length_reward_2"]


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation: each batch's own columns
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_reward_functions_get_each_batchs_own_columns_in_evaluation(tmp_path, tokenizer, kind):
    """As GRPO passes each batch's columns: an eval set without a train column (`task`, `value`) evaluates, samples
    and logs completions, and a column only the eval set has (`difficulty`) reaches the functions."""
    calls = []

    def column_reward(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, **columns):
        calls.append({"prompts": list(prompts), **columns})
        return [float(len(ids)) for ids in completion_ids]

    eval_set = Dataset.from_dict({"prompt": PROMPTS[:4], "difficulty": [10, 11, 12, 13]})
    trainer = build(kind, tmp_path, tokenizer, reward_funcs=column_reward, eval_dataset=eval_set)
    trainer.evaluate()
    trainer.generate_completions()
    assert len(calls) >= 2
    for call in calls:
        assert set(call) == {"prompts", "difficulty"}
        assert call["difficulty"] == [10 + PROMPTS.index(p) for p in call["prompts"]]
    calls.clear()
    rows, batch = sample_all_rows(trainer)
    trainer.rewards_per_func(rows, batch)
    assert set(calls[0]) == {"prompts", "task", "value"} and calls[0]["value"] == DATASET["value"]
