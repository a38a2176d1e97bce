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
"""Rank-list reward model: losses against naive loops, data formats, metrics, TRL parity, training, DDP, PPO hand-off."""

import inspect
import itertools
import json
import math
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from torch.testing import assert_close
from transformers import AutoModelForSequenceClassification
from trl import RewardConfig, RewardTrainer

from ppomax_trl import (
    DataCollatorForRankList,
    PPOConfig,
    PPOTrainer,
    RankListRewardConfig,
    RankListRewardTrainer,
)
from ppomax_trl.losses import RANK_LIST_LOSS_TYPES, rank_list_loss
from ppomax_trl.rank_list import rank_list_statistics, ranked_to_pairs, summarize_rank_list_statistics
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


REPO = Path(__file__).resolve().parents[1]
ADJECTIVES = ["great", "good", "bad", "awful"]  # best first: the separable toy ranking
NOUNS = ["movie", "film", "food", "cast", "plot", "story", "show", "song"]


# ----------------------------------------------------------------------------------------------------------------------
# Naive twins (house style rule 8): plain Python loops over lists and pairs
# ----------------------------------------------------------------------------------------------------------------------
def _neg_logsigmoid(x: float) -> float:
    return math.log1p(math.exp(-x)) if x > 0 else -x + math.log1p(math.exp(x))


def naive_rank_list_loss(rewards, mask, loss_type, margins=None, scores=None, tau=1.0, center=None):
    """Mean over rankable lists of the per-list loss, written one pair / one position at a time."""
    per_list, centers = [], []
    for b in range(len(rewards)):
        slots = [k for k in range(len(rewards[b])) if mask[b][k]]
        r = {k: float(rewards[b][k]) for k in slots}
        s = {k: float(scores[b][k]) if scores is not None else -k for k in slots}
        pairs = [(i, j) for i, j in itertools.combinations(slots, 2) if s[i] > s[j]]
        if loss_type == "listnet":
            if len(slots) < 2:
                continue
            z_t = sum(math.exp(s[k] / tau) for k in slots)
            z_r = sum(math.exp(r[k]) for k in slots)
            value = -sum(math.exp(s[k] / tau) / z_t * (r[k] - math.log(z_r)) for k in slots)
        elif not pairs:
            continue
        elif loss_type == "listmle":
            value = 0.0
            for k in slots:
                competitors = [k] + [j for j in slots if s[j] < s[k]]  # k and every strictly worse completion
                value += math.log(sum(math.exp(r[j]) for j in competitors)) - r[k]
        else:
            terms = []
            for i, j in pairs:
                delta = r[i] - r[j] - (float(margins[b][i][j]) if margins is not None else 0.0)
                terms.append(_neg_logsigmoid(delta) if loss_type == "instructgpt" else -1 / (1 + math.exp(-delta)))
            value = sum(terms) / len(terms)
        per_list.append(value)
        centers.append((2 * sum(r.values()) / len(slots)) ** 2)
    loss = sum(per_list) / len(per_list)
    if center is not None:
        loss += center * sum(centers) / len(centers)
    return loss


def naive_statistics(rewards, mask, scores=None):
    """Per-list pair counts, exact order and Kendall tau-b, one pair at a time."""
    out = []
    for b in range(len(rewards)):
        slots = [k for k in range(len(rewards[b])) if mask[b][k]]
        r = [float(rewards[b][k]) for k in slots]
        s = [float(scores[b][k]) if scores is not None else -k for k in slots]
        n = len(slots)
        gold_pairs = [(i, j) for i, j in itertools.combinations(range(n), 2) if s[i] != s[j]]
        correct = sum((r[i] > r[j]) if s[i] > s[j] else (r[j] > r[i]) for i, j in gold_pairs)
        sign = lambda x: (x > 0) - (x < 0)  # noqa: E731
        conc = sum(sign(s[i] - s[j]) * sign(r[i] - r[j]) for i, j in itertools.combinations(range(n), 2))
        n0 = n * (n - 1) / 2
        n1 = sum(s[i] == s[j] for i, j in itertools.combinations(range(n), 2))
        n2 = sum(r[i] == r[j] for i, j in itertools.combinations(range(n), 2))
        tau = conc / math.sqrt((n0 - n1) * (n0 - n2)) if (n0 - n1) * (n0 - n2) > 0 else 0.0
        out.append(dict(pairs=len(gold_pairs), correct=correct, tau=tau, margin=r[0] - r[-1], tau_defined=n0 > n1))
    return out


def _batch(seed=0, with_ties=False):
    """A variable-K batch: K_b = 4, 2, 3, 4 with padding (and garbage in the padded slots)."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(4, 4, generator=g) * 2
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    rewards = rewards.masked_fill(~mask, 123.0)
    if with_ties:
        scores = torch.tensor([[3.0, 2.0, 2.0, 0.5], [1.0, 0.0, 9.0, 9.0], [5.0, 5.0, 1.0, 0.0], [2.0, 1.0, 1.0, 1.0]])
    else:
        scores = torch.tensor([[3.0, 2.5, 1.0, 0.5], [1.0, 0.0, 0.0, 0.0], [5.0, 4.0, 1.0, 0.0], [4.0, 3.0, 2.0, 1.0]])
    margins = torch.rand(4, 4, 4, generator=g)
    return rewards, mask, scores, margins


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_type", RANK_LIST_LOSS_TYPES)
@pytest.mark.parametrize("with_ties", [False, True])
@pytest.mark.parametrize("use_scores", [False, True])
def test_rank_list_loss_matches_naive_loops(loss_type, with_ties, use_scores):
    rewards, mask, scores, _ = _batch(seed=1, with_ties=with_ties)
    scores = scores if use_scores else None
    loss, stats = rank_list_loss(rewards, mask, loss_type, scores=scores, listnet_temperature=0.7)
    expected = naive_rank_list_loss(rewards.tolist(), mask.tolist(), loss_type, scores=scores, tau=0.7)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert stats["num_lists"] + stats["skipped_lists"] == 4


@pytest.mark.parametrize("loss_type", ["instructgpt", "sigmoid_no_log"])
def test_pair_losses_with_margins_and_centering_match_naive(loss_type):
    rewards, mask, scores, margins = _batch(seed=2, with_ties=True)
    loss, _ = rank_list_loss(rewards, mask, loss_type, margins, scores=scores, center_rewards_coefficient=0.1)
    expected = naive_rank_list_loss(
        rewards.tolist(), mask.tolist(), loss_type, margins=margins.tolist(), scores=scores.tolist(), center=0.1
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_sanity_values_at_equal_rewards():
    """Spec sanity table: ln 2 per pair and per list; ln K! per Plackett-Luce list; -1/2 for the bounded variant."""
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    rewards = torch.zeros(3, 4)
    assert rank_list_loss(rewards, mask)[0].item() == pytest.approx(math.log(2))
    expected_pl = (math.log(24) + math.log(6) + math.log(2)) / 3
    assert rank_list_loss(rewards, mask, "listmle")[0].item() == pytest.approx(expected_pl)
    assert rank_list_loss(rewards, mask, "sigmoid_no_log")[0].item() == pytest.approx(-0.5)


def test_k2_identities():
    """At K = 2: InstructGPT = Plackett-Luce = Bradley-Terry; list centring = TRL's (r_c + r_r)^2 term."""
    chosen, rejected = torch.randn(6), torch.randn(6)
    rewards = torch.stack([chosen, rejected], dim=1)  # (B, 2)
    bradley_terry = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
    assert_close(rank_list_loss(rewards)[0], bradley_terry)
    assert_close(rank_list_loss(rewards, loss_type="listmle")[0], bradley_terry)
    centred, _ = rank_list_loss(rewards, center_rewards_coefficient=0.01)
    assert_close(centred, bradley_terry + 0.01 * ((chosen + rejected) ** 2).mean())


@pytest.mark.parametrize("loss_type", RANK_LIST_LOSS_TYPES)
def test_padding_does_not_change_loss_or_gradient(loss_type):
    rewards, mask, scores, _ = _batch(seed=3)
    grads = []
    for fill in (0.0, 1e4, float("nan")):
        r = rewards.masked_fill(~mask, fill).requires_grad_()
        loss, _ = rank_list_loss(r, mask, loss_type, scores=scores)
        loss.backward()
        assert torch.isfinite(r.grad).all()
        grads.append((loss.detach(), r.grad))
    for loss, grad in grads[1:]:
        assert_close(loss, grads[0][0])
        assert_close(grad, grads[0][1])
    assert (grads[0][1][~mask] == 0).all()


def test_permuting_tied_completions_does_not_change_loss():
    rewards = torch.tensor([[1.0, 0.3, -0.2, -1.0]])
    scores = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    swapped = rewards[:, [0, 2, 1, 3]]
    for loss_type in ("instructgpt", "listmle", "listnet", "sigmoid_no_log"):
        assert_close(rank_list_loss(rewards, scores=scores, loss_type=loss_type)[0],
                     rank_list_loss(swapped, scores=scores, loss_type=loss_type)[0])  # fmt: skip


@pytest.mark.parametrize("loss_type", RANK_LIST_LOSS_TYPES)
def test_large_rewards_stay_finite(loss_type):
    rewards = (torch.tensor([[100.0, -100.0, 50.0, 0.0], [-100.0, 100.0, 0.0, 0.0]])).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    loss, _ = rank_list_loss(rewards, mask, loss_type)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(rewards.grad).all()


def test_shard_mean_equals_global_mean():
    rewards, mask, scores, _ = _batch(seed=4)
    full, _ = rank_list_loss(rewards, mask, scores=scores)
    halves = [rank_list_loss(rewards[s], mask[s], scores=scores[s])[0] for s in (slice(0, 2), slice(2, 4))]
    assert_close(full, (halves[0] + halves[1]) / 2)


def test_loss_skips_and_errors():
    rewards = torch.randn(3, 3)
    scores = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # the second list is all tied
    loss, stats = rank_list_loss(rewards, scores=scores)
    assert stats["skipped_lists"] == 1 and stats["num_lists"] == 2 and stats["tied_pairs"] == 1
    assert loss.item() == pytest.approx(naive_rank_list_loss(rewards.tolist(), [[1] * 3] * 3, "instructgpt",
                                                             scores=scores.tolist()))  # fmt: skip
    with pytest.raises(ValueError, match="No list in the batch"):
        rank_list_loss(rewards[1:2], scores=scores[1:2])
    with pytest.raises(ValueError, match="No list in the batch"):
        rank_list_loss(rewards[:, :1])  # K = 1
    with pytest.raises(ValueError, match="non-increasing"):
        rank_list_loss(rewards, scores=scores.flip(-1))
    with pytest.raises(ValueError, match="Unknown rank-list loss_type"):
        rank_list_loss(rewards, loss_type="hinge")
    with pytest.raises(ValueError, match="pair losses only"):
        rank_list_loss(rewards, loss_type="listmle", margins=torch.zeros(3, 3, 3))


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_ties", [False, True])
def test_statistics_match_naive_and_accumulate_over_batches(with_ties):
    rewards, mask, scores, _ = _batch(seed=5, with_ties=with_ties)
    rewards[3, 1] = rewards[3, 2]  # a reward tie for tau-b
    stats = rank_list_statistics(rewards, mask, scores)
    for b, expected in enumerate(naive_statistics(rewards.tolist(), mask.tolist(), scores.tolist())):
        assert stats["num_pairs"][b] == expected["pairs"] and stats["num_correct"][b] == expected["correct"]
        assert stats["exact"][b] == float(expected["correct"] == expected["pairs"] > 0)
        assert stats["kendall_tau"][b].item() == pytest.approx(expected["tau"], abs=1e-6)
        assert stats["tau_defined"][b] == float(expected["tau_defined"])
        assert stats["margin"][b].item() == pytest.approx(expected["margin"], abs=1e-6)
    scipy_stats = pytest.importorskip("scipy.stats")
    for b in range(4):
        if stats["tau_defined"][b] and stats["kendall_tau"][b] != 0:
            k = int(mask[b].sum())
            tau = scipy_stats.kendalltau(rewards[b, :k].numpy(), scores[b, :k].numpy()).statistic
            assert stats["kendall_tau"][b].item() == pytest.approx(tau, abs=1e-6)

    def summarize(s):
        s = dict(
            s, pair_accuracy=s["num_correct"] / s["num_pairs"].clamp(min=1), num_lists=torch.ones(len(s["exact"]))
        )
        return {k: float(v.sum()) for k, v in s.items()}

    whole = summarize_rank_list_statistics(summarize(stats))
    parts = [summarize(rank_list_statistics(rewards[s], mask[s], scores[s])) for s in (slice(0, 1), slice(1, 4))]
    pooled = summarize_rank_list_statistics({k: parts[0][k] + parts[1][k] for k in parts[0]})
    assert pooled == pytest.approx(whole)
    assert whole["accuracy"] == pytest.approx(float(stats["num_correct"].sum() / stats["num_pairs"].sum()))


# ----------------------------------------------------------------------------------------------------------------------
# Collator and datasets
# ----------------------------------------------------------------------------------------------------------------------
def test_collator_flattens_real_completions_only():
    collator = DataCollatorForRankList(pad_token_id=0, pad_to_multiple_of=4)
    batch = collator(
        [
            {"completions_ids": [[1, 2, 3], [4, 5], [6]], "scores": [2.0, 1.0, 0.0], "margin": 0.5},
            {"completions_ids": [[7, 8], [9]], "scores": [1.0, 0.0], "margin": 0.0},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0], [4, 5, 0, 0], [6, 0, 0, 0], [7, 8, 0, 0], [9, 0, 0, 0]]
    assert batch["attention_mask"].sum(-1).tolist() == [3, 2, 1, 2, 1]
    assert batch["list_sizes"].tolist() == [3, 2]
    assert batch["scores"].tolist() == [[2.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert batch["margin"].tolist() == [0.5, 0.0]
    with pytest.raises(ValueError, match="pad_token_id"):
        DataCollatorForRankList()([{"completions_ids": [[1], [2]], "scores": [1.0, 0.0]}])


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer([" ".join(["the", "was", *ADJECTIVES, *NOUNS])] * 4)


def toy_lists(num_lists, seed=0, variable_k=False):
    rng = random.Random(seed)
    rows = {"prompt": [], "completions": []}
    for index in range(num_lists):
        size = 2 + index % 3 if variable_k else len(ADJECTIVES)
        adjectives = sorted(rng.sample(range(len(ADJECTIVES)), size))
        rows["prompt"].append(f"the {rng.choice(NOUNS)} was")
        rows["completions"].append([f" {ADJECTIVES[a]} {rng.choice(NOUNS)}" for a in adjectives])
    return Dataset.from_dict(rows)


def make_args(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=3e-3,
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    kwargs.update(overrides)
    return RankListRewardConfig(**kwargs)


@pytest.fixture(scope="module")
def trainer(tok, tmp_path_factory):
    """One trainer to call `_prepare_dataset` and `compute_loss` on (it is never trained)."""
    tmp_path = tmp_path_factory.mktemp("rank_list")
    return RankListRewardTrainer(
        tiny_reward_model(tok, seed=1), make_args(tmp_path), train_dataset=toy_lists(4), processing_class=tok
    )


def _prepare(trainer, rows, **overrides):
    args = make_args(Path(trainer.args.output_dir), **overrides) if overrides else trainer.args
    return trainer._prepare_dataset(Dataset.from_dict(rows), trainer.processing_class, args, "test")


def test_three_formats_text_conversational_and_tokenized(trainer, tok):
    eos = tok.eos_token
    ids = lambda text: tok(text)["input_ids"]  # noqa: E731

    # a) prompt + completions, best first; EOS appended as RewardTrainer does for standard text
    a = _prepare(trainer, {"prompt": ["p:"], "completions": [[" great", " good", " bad"]]})
    assert a[0]["completions_ids"] == [ids("p: great" + eos), ids("p: good" + eos), ids("p: bad" + eos)]
    assert a[0]["scores"] == [2.0, 1.0, 0.0]

    # b) prompt + completions + scores in any order: sorted by score, best first
    b = _prepare(trainer, {"prompt": ["p:"], "completions": [[" bad", " great", " good"]], "scores": [[1, 9, 5]]})
    assert b[0]["completions_ids"] == a[0]["completions_ids"] and b[0]["scores"] == [9.0, 5.0, 1.0]

    # c) TRL's chosen/rejected (K = 2), with its margin column
    c = _prepare(trainer, {"prompt": ["p:"], "chosen": [" great"], "rejected": [" bad"], "margin": [0.5]})
    assert c[0]["completions_ids"] == [ids("p: great" + eos), ids("p: bad" + eos)] and c[0]["margin"] == 0.5

    # conversational lists: the chat template renders prompt + completion messages
    user = [{"role": "user", "content": "hi"}]
    conv = _prepare(
        trainer,
        {"prompt": [user], "completions": [[[{"role": "assistant", "content": c}] for c in ("good", "bad")]]},
    )
    messages = user + [{"role": "assistant", "content": "good"}]
    expected = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert conv[0]["completions_ids"][0] == list(expected)
    conv_pair = _prepare(
        trainer,
        {"prompt": [user], "chosen": [[{"role": "assistant", "content": "good"}]],
         "rejected": [[{"role": "assistant", "content": "bad"}]]},
    )  # fmt: skip
    assert conv_pair[0]["completions_ids"] == conv[0]["completions_ids"]

    # tokenized rows: completions_ids (+ scores), and TRL's chosen_ids/rejected_ids
    tokenized = _prepare(trainer, {"completions_ids": [[[5, 6], [7], [8, 9]]], "scores": [[0.0, 2.0, 1.0]]})
    assert tokenized[0]["completions_ids"] == [[7], [8, 9], [5, 6]] and tokenized[0]["scores"] == [2.0, 1.0, 0.0]
    pair_ids = _prepare(trainer, {"chosen_ids": [[5, 6]], "rejected_ids": [[7]]})
    assert pair_ids[0]["completions_ids"] == [[5, 6], [7]] and pair_ids[0]["scores"] == [1.0, 0.0]

    # idempotent: RewardTrainer.evaluate() prepares an already prepared dataset again
    again = trainer._prepare_dataset(b, tok, trainer.args, "again")
    assert again[0]["completions_ids"] == b[0]["completions_ids"] and again[0]["scores"] == b[0]["scores"]


def test_streaming_dataset_is_prepared_lazily(trainer):
    streamed = Dataset.from_dict({"prompt": ["p:", "q:"], "completions": [[" good", " bad"], [" good"]]})
    prepared = trainer._prepare_dataset(streamed.to_iterable_dataset(), trainer.processing_class, trainer.args, "s")
    rows = list(prepared)
    assert len(rows) == 1 and rows[0]["scores"] == [1.0, 0.0] and len(rows[0]["completions_ids"]) == 2


def test_bad_inputs_raise_or_are_counted(trainer):
    with pytest.raises(ValueError, match="Row 1: 2 scores for 3 completions"):
        _prepare(
            trainer, {"prompt": ["a", "b"], "completions": [["x", "y"], ["x", "y", "z"]], "scores": [[1, 0], [1, 0]]}
        )
    with pytest.raises(ValueError, match="Row 0: non-finite score"):
        _prepare(trainer, {"prompt": ["a"], "completions": [["x", "y"]], "scores": [[1.0, float("nan")]]})
    with pytest.raises(ValueError, match="margin"):
        _prepare(trainer, {"completions_ids": [[[1], [2], [3]]], "margin": [0.5]})
    with pytest.raises(ValueError, match="Unrecognised rank-list dataset columns"):
        _prepare(trainer, {"prompt": ["a"], "completion": ["x"]})

    rows = {
        "prompt": ["a", "b", "c", "d"],
        "completions": [["x", "y"], ["x"], ["x", "y", "z"], ["x", "y"]],  # K = 1 in row 1
        "scores": [[1.0, 0.0], [1.0], [2.0, 2.0, 2.0], [0.0, 3.0]],  # row 2 all tied
    }
    dropped = _prepare(trainer, rows)
    assert len(dropped) == 2 and dropped["scores"] == [[1.0, 0.0], [3.0, 0.0]]
    assert trainer.skipped_lists["test"] == {"too_short": 1, "all_tied": 1, "too_long_completions": 0}
    kept = _prepare(trainer, rows, ties="keep")  # "keep": an all-tied list is ordered by its input order
    assert len(kept) == 3 and trainer.skipped_lists["test"]["all_tied"] == 0
    with pytest.raises(ValueError, match="no list with 2 or more"):
        _prepare(trainer, {"prompt": ["a"], "completions": [["x"]]})

    # max_length drops over-long completions from their list and keeps the order of the rest
    short = _prepare(trainer, {"completions_ids": [[[1] * 3, [2] * 9, [3] * 2, [4] * 2]]}, max_length=4)
    assert short[0]["completions_ids"] == [[1] * 3, [3] * 2, [4] * 2] and short[0]["scores"] == [3.0, 1.0, 0.0]
    assert trainer.skipped_lists["test"]["too_long_completions"] == 1


def test_config_validation(tmp_path):
    for bad, match in [
        (dict(loss_type="hinge"), "loss_type"),
        (dict(ties="random"), "ties"),
        (dict(margin_scale=-1.0), "margin_scale"),
        (dict(loss_type="listmle", margin_scale=1.0), "unset `margin_scale`"),
        (dict(listnet_temperature=0.0), "listnet_temperature"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_args(tmp_path, **bad)
    with pytest.raises(TypeError, match="RankListRewardConfig"):
        RankListRewardTrainer(tiny_reward_model(build_tiny_tokenizer()), RewardConfig(str(tmp_path), bf16=False),
                              train_dataset=toy_lists(2))  # fmt: skip


def test_ranked_to_pairs():
    rows = Dataset.from_dict({"prompt": ["p"], "completions": [["c", "a", "b", "d"]], "scores": [[2, 4, 3, 2]]})
    pairs = ranked_to_pairs(rows)
    assert list(zip(pairs["chosen"], pairs["rejected"], strict=True)) == [
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
        ("b", "c"),
        ("b", "d"),
    ]  # fmt: skip  (c and d are tied)
    assert len(ranked_to_pairs(rows, ties="keep")) == 6


def test_private_overrides_match_parent_signatures():
    """House style rule 9: fail loudly if TRL changes the private hooks we override."""
    for name, params in [
        ("_prepare_dataset", ["self", "dataset", "processing_class", "args", "dataset_name"]),
        ("_set_signature_columns_if_needed", ["self"]),
    ]:
        assert list(inspect.signature(getattr(RewardTrainer, name)).parameters) == params, name
        assert list(inspect.signature(getattr(RankListRewardTrainer, name)).parameters) == params, name
    init_source = inspect.getsource(RewardTrainer.__init__)
    # Our collator swap and pad-id fill rely on: prepare datasets, then Trainer.__init__ stores our collator object.
    assert init_source.index("self._prepare_dataset(") < init_source.index("super().__init__(")
    assert "data_collator=data_collator" in init_source
    assert list(inspect.signature(RewardTrainer.__init__).parameters) == list(
        inspect.signature(RankListRewardTrainer.__init__).parameters
    )


# ----------------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["plain", "margin", "center"])
def test_k2_equals_trl_reward_trainer_loss(tok, tmp_path, variant):
    rows = {"prompt": ["the film was", "i loved", "what a"], "chosen": [" great", " good food", " fine cast"],
            "rejected": [" awful plot", " bad", " bad show"]}  # fmt: skip
    if variant == "margin":
        rows["margin"] = [0.5, 0.0, 1.5]
    center = 0.01 if variant == "center" else None
    model = tiny_reward_model(tok, seed=3).eval()
    trl_trainer = RewardTrainer(
        model,
        RewardConfig(str(tmp_path / "trl"), bf16=False, use_cpu=True, report_to="none",
                     center_rewards_coefficient=center),
        train_dataset=Dataset.from_dict(rows), processing_class=tok,
    )  # fmt: skip
    ours = RankListRewardTrainer(
        model, make_args(tmp_path, center_rewards_coefficient=center), train_dataset=Dataset.from_dict(rows),
        processing_class=tok,
    )  # fmt: skip
    trl_batch = trl_trainer.data_collator(list(trl_trainer.train_dataset))
    our_batch = ours.data_collator(list(ours.train_dataset))
    with torch.no_grad():
        trl_loss = trl_trainer.compute_loss(model, trl_batch)
        our_loss = ours.compute_loss(model, our_batch)
    assert_close(our_loss, trl_loss, rtol=1e-5, atol=1e-6)
    assert ours._rank_sums["eval"]["num_pairs"] == 3
    ours.log({})  # the pairwise accuracy key is TRL's
    trl_trainer.log({})
    assert ours.state.log_history[-1]["eval_accuracy"] == pytest.approx(
        trl_trainer.state.log_history[-1]["eval_accuracy"]
    )


def test_k4_training_equals_trl_on_grouped_pairwise_expansion(tok, tmp_path):
    """Same lists, same order: B lists per step (K = 4, 4B forwards) trains exactly what TRL trains on the 6B pairs
    of the same lists (12B forwards), because the InstructGPT loss is the mean over the step's pairs."""
    lists = toy_lists(8, seed=3)
    common = dict(train_sampling_strategy="sequential", num_train_epochs=1)
    ours_model, trl_model = tiny_reward_model(tok, seed=5), tiny_reward_model(tok, seed=5)
    ours = RankListRewardTrainer(
        ours_model, make_args(tmp_path, per_device_train_batch_size=2, **common), train_dataset=lists,
        processing_class=tok,
    )  # fmt: skip
    trl_args = RewardConfig(
        str(tmp_path / "trl"), bf16=False, use_cpu=True, report_to="none", save_strategy="no", learning_rate=3e-3,
        per_device_train_batch_size=12, logging_steps=1, disable_tqdm=True, seed=0, **common,
    )  # fmt: skip
    trl_trainer = RewardTrainer(trl_model, trl_args, train_dataset=ranked_to_pairs(lists), processing_class=tok)
    ours.train()
    trl_trainer.train()
    assert ours.state.global_step == trl_trainer.state.global_step == 4
    for (name, p_ours), p_trl in zip(ours_model.named_parameters(), trl_model.parameters(), strict=True):
        assert_close(p_ours, p_trl, rtol=1e-4, atol=1e-5, msg=name)
    our_logs = [log for log in ours.state.log_history if "loss" in log]
    trl_logs = [log for log in trl_trainer.state.log_history if "loss" in log]
    assert [log["loss"] for log in our_logs] == pytest.approx([log["loss"] for log in trl_logs], rel=1e-5)
    assert [log["accuracy"] for log in our_logs] == pytest.approx([log["accuracy"] for log in trl_logs])


def test_one_forward_per_completion(tok, tmp_path):
    dataset = toy_lists(12, variable_k=True)  # K = 2, 3, 4, ...
    model = tiny_reward_model(tok, seed=1)
    trainer = RankListRewardTrainer(
        model, make_args(tmp_path, max_steps=3, per_device_train_batch_size=4), train_dataset=dataset,
        processing_class=tok,
    )  # fmt: skip
    rows_per_call = []
    handle = model.register_forward_hook(lambda module, args, kwargs, out: rows_per_call.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)  # fmt: skip
    trainer.train()
    handle.remove()
    total = sum(len(c) for c in dataset["completions"])
    assert len(rows_per_call) == 3  # one model call per step
    assert sum(rows_per_call) == total  # 12 lists in 3 steps: every completion forwarded exactly once
    assert trainer.state.log_history[0]["rank/list_size"] == pytest.approx(rows_per_call[0] / 4)


def test_training_raises_pairwise_accuracy_and_feeds_ppo(tok, tmp_path):
    model = tiny_reward_model(tok, seed=1)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = RankListRewardTrainer(
        model,
        make_args(tmp_path, num_train_epochs=1, per_device_train_batch_size=8, weight_decay=0.01),
        train_dataset=toy_lists(64, seed=0),
        eval_dataset=toy_lists(24, seed=1),
        processing_class=tok,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert before["eval_accuracy"] < 0.75 and after["eval_accuracy"] >= 0.85
    assert after["eval_rank/kendall_tau"] > before["eval_rank/kendall_tau"]
    assert after["eval_loss"] < before["eval_loss"]
    for key in ("eval_rank/exact_order_accuracy", "eval_rank/std_reward", "eval_rank/adjacent_margin"):
        assert math.isfinite(after[key])
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert all("accuracy" in log and "rank/kendall_tau" in log for log in train_logs)
    for name, param in model.named_parameters():
        assert not torch.equal(param.detach(), initial[name]), f"{name} did not change"

    # A plain sequence classifier checkpoint: the PPO trainer takes it as reward model (and critic initialisation).
    trainer.save_model()
    reward_model = AutoModelForSequenceClassification.from_pretrained(trainer.args.output_dir)
    assert type(reward_model).__name__ == "Qwen2ForSequenceClassification" and reward_model.config.num_labels == 1
    prompts = Dataset.from_dict({"input_ids": [tok(p)["input_ids"] for p in ["the movie was", "the food was"]]})
    ppo_args = PPOConfig(
        output_dir=str(tmp_path / "ppo"), bf16=False, gradient_checkpointing=False, report_to="none",
        per_device_train_batch_size=2, total_episodes=2, response_length=3, num_sample_generations=0,
    )  # fmt: skip
    ppo = PPOTrainer(ppo_args, tok, tiny_causal_lm(tok, seed=0), None, reward_model, prompts, None)
    assert ppo.reward_model is not None


@pytest.mark.parametrize(
    "loss_type, ties", [("listmle", "drop_pairs"), ("listnet", "keep"), ("sigmoid_no_log", "keep")]
)
def test_other_losses_train(tok, tmp_path, loss_type, ties):
    dataset = Dataset.from_dict(
        {"prompt": ["the film was"] * 4, "completions": [[" great", " good", " bad"]] * 4,
         "scores": [[3, 2, 2], [3, 1, 0], [1, 1, 0], [2, 1, 0]]}
    )  # fmt: skip
    trainer = RankListRewardTrainer(
        tiny_reward_model(tok, seed=1), make_args(tmp_path, loss_type=loss_type, ties=ties, max_steps=2),
        train_dataset=dataset, processing_class=tok,
    )  # fmt: skip
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 2 and all(math.isfinite(log["loss"]) for log in logs)
    # each step sees all 4 lists (12 real pairs); "drop_pairs" leaves 2 tied pairs out, "keep" orders them
    expected_tie_rate = 2 / 12 if ties == "drop_pairs" else 0.0
    assert all(log["rank/tie_rate"] == pytest.approx(expected_tie_rate) for log in logs)
    if loss_type == "listnet":
        assert "rank/listnet_kl" in logs[0]


def test_eval_metrics_pool_all_batches(tok, tmp_path):
    dataset = toy_lists(10, seed=2, variable_k=True)
    model = tiny_reward_model(tok, seed=4)
    results = []
    for batch_size in (3, 10):
        trainer = RankListRewardTrainer(
            model, make_args(tmp_path, per_device_eval_batch_size=batch_size), train_dataset=dataset,
            eval_dataset=dataset, processing_class=tok,
        )  # fmt: skip
        results.append(trainer.evaluate())
    for key in ("eval_accuracy", "eval_rank/exact_order_accuracy", "eval_rank/kendall_tau", "eval_rank/std_reward"):
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-5), key
    predictions = trainer.predict(trainer.eval_dataset).predictions  # (lists, K_max) rewards, NaN-padded
    assert predictions.shape == (10, 4) and int((~torch.isnan(torch.as_tensor(predictions))).sum()) == sum(
        len(c) for c in dataset["completions"]
    )


SPEED_KEYS = ("_runtime", "_samples_per_second", "_steps_per_second", "_model_preparation_time")


@pytest.mark.parametrize(
    "loss_type, extra",
    [("instructgpt", {}), ("listnet", {"ties": "keep"}), ("listmle", {"center_rewards_coefficient": 0.1})],
)
def test_eval_loss_and_metrics_are_pooled_over_the_eval_set(tok, tmp_path, loss_type, extra):
    """5 lists at eval batch sizes 1, 4 and 5 give the same metrics, and `eval_loss` is the loss of the whole eval set
    taken as one batch (the mean over lists of each list's loss)."""
    dataset = toy_lists(5, seed=2, variable_k=True)
    model = tiny_reward_model(tok, seed=4)
    results = {}
    for batch_size in (1, 4, 5):
        args = make_args(tmp_path, loss_type=loss_type, per_device_eval_batch_size=batch_size, **extra)
        trainer = RankListRewardTrainer(model, args, train_dataset=dataset, eval_dataset=dataset, processing_class=tok)
        metrics = trainer.evaluate()
        results[batch_size] = {k: v for k, v in metrics.items() if not k.endswith(SPEED_KEYS) and k != "epoch"}
    assert results[1].keys() == results[4].keys() == results[5].keys()
    for key, value in results[5].items():
        for batch_size in (1, 4):
            assert results[batch_size][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (key, batch_size)

    batch = trainer.data_collator(list(trainer.eval_dataset))
    with torch.no_grad():
        flat = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    mask = torch.arange(batch["scores"].shape[1])[None] < batch["list_sizes"][:, None]
    rewards = flat.new_zeros(mask.shape).masked_scatter(mask, flat)
    gold = batch["scores"] if extra.get("ties") != "keep" or loss_type == "listnet" else None
    expected, stats = rank_list_loss(rewards, mask, loss_type, scores=gold,
                                     center_rewards_coefficient=extra.get("center_rewards_coefficient"))  # fmt: skip
    assert results[5]["eval_loss"] == pytest.approx(expected.item(), rel=1e-5)
    if loss_type == "listnet":
        assert results[5]["eval_rank/listnet_kl"] == pytest.approx(stats["listnet_kl"].item(), rel=1e-5)


def test_skipped_lists_are_counted_in_the_logging_window_that_draws_them(tok, tmp_path):
    """Unrankable lists (K = 1, all tied) are dropped at preparation; each rides with the next rankable list (the
    trailing one with the last), so `rank/skipped_lists` counts them in the window that draws that list."""
    rows = {
        "prompt": [f"the {noun} was" for noun in NOUNS],
        "completions": [[" great", " bad"], [" good"], [" good", " bad"], [" bad", " awful"], [" great", " good"],
                        [" good", " awful"], [" great", " bad", " awful"], [" bad"]],
        "scores": [[1, 0], [1], [2, 1], [1, 1], [3, 3], [1, 0], [2, 1, 0], [0]],
    }  # fmt: skip  # unrankable: 1 (K = 1), 3 and 4 (all tied), 7 (K = 1, trailing)
    dataset = Dataset.from_dict(rows)
    args = make_args(tmp_path, per_device_train_batch_size=2, per_device_eval_batch_size=1, num_train_epochs=2,
                     logging_steps=2)  # fmt: skip  # 4 rankable lists: 2 steps per epoch, one window per epoch
    trainer = RankListRewardTrainer(tiny_reward_model(tok, seed=1), args, train_dataset=dataset,
                                    eval_dataset=dataset, processing_class=tok)  # fmt: skip
    assert trainer.skipped_lists["train"] == {"too_short": 2, "all_tied": 2, "too_long_completions": 0}
    assert trainer.train_dataset["skipped_lists"] == [0, 1, 2, 1]  # lists 0, 2, 5, 6 carry 1; 3, 4; 7 (trailing)
    trainer.train()
    windows = [log["rank/skipped_lists"] for log in trainer.state.log_history if "loss" in log]
    assert windows == [4, 4]
    assert trainer.evaluate()["eval_rank/skipped_lists"] == 4

    step_args = make_args(tmp_path, per_device_train_batch_size=2, num_train_epochs=1, logging_steps=1)
    trainer = RankListRewardTrainer(tiny_reward_model(tok, seed=1), step_args, train_dataset=dataset,
                                    processing_class=tok)  # fmt: skip
    trainer.train()
    steps = [log["rank/skipped_lists"] for log in trainer.state.log_history if "loss" in log]
    assert len(steps) == 2 and sum(steps) == 4


def test_reward_is_read_where_an_unpadded_forward_reads_it_when_pad_is_eos(tmp_path):
    """pad == EOS: the trainer sets `config.pad_token_id` from the tokenizer (as TRL's RewardTrainer), so the reward of
    a right-padded completion is the logit of that completion forwarded alone, unpadded."""
    tok = build_tiny_tokenizer()
    model = tiny_reward_model(tok, seed=3).eval()  # config.pad_token_id = 0, the tokenizer's own <pad>
    tok.pad_token = tok.eos_token
    rows = {"prompt": ["the film was", "i"], "completions": [[" great fun", " bad", " an awful plot"], [" ok", " no"]]}
    trainer = RankListRewardTrainer(model, make_args(tmp_path), train_dataset=Dataset.from_dict(rows),
                                    processing_class=tok)  # fmt: skip
    assert model.config.pad_token_id == tok.eos_token_id == trainer.data_collator.pad_token_id
    examples = list(trainer.train_dataset)
    batch = trainer.data_collator(examples)
    assert (batch["input_ids"] == tok.eos_token_id).sum() > sum(len(e["completions_ids"]) for e in examples)  # padded
    with torch.no_grad():
        _, outputs = trainer.compute_loss(model, batch, return_outputs=True)
        for b, example in enumerate(examples):
            for k, ids in enumerate(example["completions_ids"]):
                assert ids[-1] == tok.eos_token_id
                alone = model(input_ids=torch.tensor([ids])).logits.squeeze()
                assert_close(outputs["rewards"][b, k], alone, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# DDP: two CPU processes launched with accelerate
# ----------------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
def test_ddp_two_processes(tmp_path):
    # Two torch processes on 2 cores: one thread each, or they oversubscribe the cores.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TRL_EXPERIMENTAL_SILENCE": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes" / "accelerate_configs" / "ci" / "ddp.yaml"),
        "--num_processes", "2", "--main_process_port", str(_free_port()),
        str(REPO / "tests" / "distributed" / "rank_list_script.py"), "--output_dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_processes"] == 2 and report["distributed_type"] == "DistributedType.MULTI_CPU"
    assert report["global_step"] == 6  # 48 lists / (4 lists per device x 2 processes)
    logs = [log for log in report["log_history"] if "loss" in log]
    assert len(logs) == 3 and all(math.isfinite(log["loss"]) and "rank/kendall_tau" in log for log in logs)
    # every process holds the same weights
    checksums = [json.loads((tmp_path / f"rank{i}.json").read_text())["checksum"] for i in range(2)]
    assert checksums[0] == checksums[1]
    # eval over 7 lists on 2 processes (one list duplicated by the sampler) equals one process over all 7 lists
    reference = report["reference_eval_metrics"]
    for key, value in reference.items():
        assert report["eval_metrics"][f"eval_{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path).config.num_labels == 1
