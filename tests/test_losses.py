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
"""Exact-value tests for `ppomax_trl.losses` against naive per-token loops (spec §2.10, §2.13; house-style rule 8)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from ppomax_trl.losses import (
    LOSS_AGG_MODES,
    aggregate_loss,
    entropy_bonus_loss,
    language_modeling_loss,
    ppo_policy_loss,
    ppo_value_loss,
)


DTYPE = torch.float64


def random_policy_batch(seed: int, batch: int = 6, length: int = 8, spread: float = 0.4):
    """Log-probs whose ratios land on both sides of a 0.2 clip range, advantages of both signs, a prefix mask."""
    generator = torch.Generator().manual_seed(seed)
    old_logprobs = -torch.rand(batch, length, generator=generator, dtype=DTYPE) * 4
    logprobs = old_logprobs + spread * torch.randn(batch, length, generator=generator, dtype=DTYPE)
    advantages = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return logprobs, old_logprobs, advantages, mask


# ---------------------------------------------------------------------------------------------------------------------
# Policy loss
# ---------------------------------------------------------------------------------------------------------------------
def naive_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange, num_tokens=None):
    """Token loop: max(-A rho, -A clip(rho)) summed over valid tokens / N, plus the diagnostics."""
    total, n_valid, n_clipped, kl2, kl3, ratios = 0.0, 0, 0, 0.0, 0.0, []
    for b in range(mask.size(0)):
        for t in range(mask.size(1)):
            if not mask[b, t]:
                continue
            log_ratio = logprobs[b, t].item() - old_logprobs[b, t].item()
            ratio = math.exp(log_ratio)
            advantage = advantages[b, t].item()
            unclipped = -advantage * ratio
            clipped = -advantage * min(max(ratio, 1.0 - cliprange), 1.0 + cliprange)
            total += max(unclipped, clipped)
            n_valid += 1
            n_clipped += clipped > unclipped
            kl2 += 0.5 * log_ratio**2
            kl3 += (ratio - 1.0) - log_ratio
            ratios.append(ratio)
    n = n_valid if num_tokens is None else num_tokens
    ratio_mean = sum(ratios) / n_valid
    stats = {
        "batch_loss": total / n_valid,
        "clipfrac": n_clipped / n_valid,
        "approxkl": kl2 / n_valid,
        "approxkl_k3": kl3 / n_valid,
        "ratio_mean": ratio_mean,
        "ratio_var": sum((r - ratio_mean) ** 2 for r in ratios) / n_valid,
    }
    return total / n, stats


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cliprange", [0.2, 0.05])
def test_ppo_policy_loss_matches_loop(seed, cliprange):
    logprobs, old_logprobs, advantages, mask = random_policy_batch(seed)
    loss, stats = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=cliprange)
    expected_loss, expected_stats = naive_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange)
    assert_close(loss, torch.tensor(expected_loss, dtype=DTYPE))
    assert set(stats) == set(expected_stats)
    for key, value in expected_stats.items():
        assert_close(stats[key].to(DTYPE), torch.tensor(value, dtype=DTYPE), msg=key)
        assert not stats[key].requires_grad
    assert 0.0 < stats["clipfrac"].item() < 1.0  # both branches are exercised


def test_ppo_policy_loss_hand_example():
    # eps = 0.2, one token per case, N = 3 (the 4th token is masked out)
    # A = 1,  rho = e^{ln 1.5} = 1.5: max(-1.5, -1.2) = -1.2  (clipped wins)
    # A = -2, rho = 0.5:               max(1.0, 1.6) = 1.6   (clipped wins)
    # A = 1,  rho = 0.5:               max(-0.5, -0.8) = -0.5 (unclipped wins)
    # loss = (-1.2 + 1.6 - 0.5) / 3 = -0.1 / 3, clipfrac = 2 / 3
    old = torch.zeros(1, 4, dtype=DTYPE)
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 0.5, 7.0]], dtype=DTYPE))
    advantages = torch.tensor([[1.0, -2.0, 1.0, 5.0]], dtype=DTYPE)
    mask = torch.tensor([[True, True, True, False]])
    loss, stats = ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2)
    assert loss.item() == pytest.approx(-0.1 / 3, rel=1e-12)
    assert stats["clipfrac"].item() == pytest.approx(2 / 3)
    assert stats["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 0.5) / 3)


def test_ppo_policy_loss_at_first_update():
    # rho = 1 everywhere: loss = -mean(A) over valid tokens, no clipping, zero KL, ratio exactly 1
    _, old_logprobs, advantages, mask = random_policy_batch(20)
    loss, stats = ppo_policy_loss(old_logprobs.clone(), old_logprobs, advantages, mask, cliprange=0.2)
    assert_close(loss, -advantages[mask].mean())
    assert stats["clipfrac"].item() == 0.0
    assert stats["approxkl"].item() == 0.0 and stats["approxkl_k3"].item() == 0.0
    assert stats["ratio_mean"].item() == 1.0 and stats["ratio_var"].item() == 0.0


def test_ppo_policy_loss_num_tokens_over_micro_batches():
    # a minibatch of 8 rows split into micro-batches of 3 and 5 rows with different token counts:
    # sum of micro losses with N = minibatch token count == the minibatch loss; per-micro means would differ
    logprobs, old_logprobs, advantages, mask = random_policy_batch(21, batch=8)
    mask[:3, 2:] = False  # the first micro-batch is much shorter
    full_loss, _ = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2)
    total_tokens = mask.sum()
    micro_losses, micro_means = [], []
    for rows in (slice(0, 3), slice(3, 8)):
        args = (logprobs[rows], old_logprobs[rows], advantages[rows], mask[rows])
        micro_losses.append(ppo_policy_loss(*args, cliprange=0.2, num_tokens=total_tokens)[0])
        micro_means.append(ppo_policy_loss(*args, cliprange=0.2)[0])
        expected, _ = naive_policy_loss(*args, cliprange=0.2, num_tokens=int(total_tokens))
        assert_close(micro_losses[-1], torch.tensor(expected, dtype=DTYPE))
    assert_close(micro_losses[0] + micro_losses[1], full_loss)
    assert not torch.allclose((micro_means[0] + micro_means[1]) / 2, full_loss)
    # a float num_tokens works too
    float_loss, _ = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2, num_tokens=40.0)
    assert_close(float_loss, full_loss * total_tokens / 40.0)


# ---------------------------------------------------------------------------------------------------------------------
# Options of current PPO stacks: clip-higher, dual clip, loss aggregation modes (verl's names)
# ---------------------------------------------------------------------------------------------------------------------
def naive_aggregate(per_row_losses, mode, num_tokens=None, num_sequences=None, norm_length=None):
    """`per_row_losses`: one list of valid-token losses per row; verl's four modes and Dr. GRPO's written out."""
    rows = [row for row in per_row_losses if row]  # an empty row counts as no sequence
    n = sum(len(row) for row in rows) if num_tokens is None else num_tokens
    s = len(rows) if num_sequences is None else num_sequences
    if mode == "token-mean":
        return sum(sum(row) for row in rows) / n
    if mode == "seq-mean-token-mean":
        return sum(sum(row) / len(row) for row in rows) / s
    if mode == "seq-mean-token-sum":
        return sum(sum(row) for row in rows) / s
    if mode == "seq-mean-token-sum-norm":  # verl: the token sum over the horizon alone, no sequence count
        return sum(sum(row) for row in rows) / norm_length
    assert mode == "dr-grpo", mode  # TRL's dr_grpo: the token sum over sequences x horizon
    return sum(sum(row) for row in rows) / (s * norm_length)


def naive_policy_loss_with_options(logprobs, old_logprobs, advantages, mask, *, eps_low, eps_high, dual_clip, **agg):
    """Token loop: l = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high)); l = min(l, -c A) where A < 0."""
    per_row, n_dual, n_valid = [], 0, 0
    for b in range(mask.size(0)):
        row = []
        for t in range(mask.size(1)):
            if not mask[b, t]:
                continue
            ratio = math.exp(logprobs[b, t].item() - old_logprobs[b, t].item())
            advantage = advantages[b, t].item()
            loss = max(-advantage * ratio, -advantage * min(max(ratio, 1.0 - eps_low), 1.0 + eps_high))
            if dual_clip is not None and advantage < 0 and loss > -dual_clip * advantage:
                loss, n_dual = -dual_clip * advantage, n_dual + 1
            row.append(loss)
            n_valid += 1
        per_row.append(row)
    return naive_aggregate(per_row, **agg), n_dual / n_valid


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("eps_low, eps_high, dual_clip", [(0.2, 0.2, None), (0.2, 0.28, None), (0.1, 0.3, 1.5)])
def test_ppo_policy_loss_options_match_loop(seed, mode, eps_low, eps_high, dual_clip):
    logprobs, old_logprobs, advantages, mask = random_policy_batch(seed, batch=8, spread=1.0)
    mask[2] = False  # an empty row: no token, no sequence
    loss, stats = ppo_policy_loss(
        logprobs, old_logprobs, advantages, mask, cliprange=0.5, cliprange_low=eps_low, cliprange_high=eps_high,
        dual_clip=dual_clip, loss_agg_mode=mode, norm_length=11,
    )  # fmt: skip
    expected, dual_share = naive_policy_loss_with_options(
        logprobs, old_logprobs, advantages, mask, eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip, mode=mode,
        norm_length=11,
    )  # fmt: skip
    assert_close(loss, torch.tensor(expected, dtype=DTYPE))
    assert_close(stats["batch_loss"], loss)
    if dual_clip is not None:
        assert stats["dual_clipfrac"].item() == pytest.approx(dual_share)
        assert dual_share > 0  # the bound is exercised
    else:
        assert "dual_clipfrac" not in stats


def test_clip_higher_and_dual_clip_hand_example():
    # A = 1, rho = 1.25: symmetric eps 0.2 gives max(-1.25, -1.2) = -1.2; eps_high 0.28 leaves -1.25 (clip-higher)
    # A = -1, rho = 5: standard PPO gives max(5, 1.2) = 5; dual clip c = 3 caps it at 3, with zero gradient
    old = torch.zeros(1, 2, dtype=DTYPE)
    logprobs = torch.log(torch.tensor([[1.25, 5.0]], dtype=DTYPE)).requires_grad_(True)
    advantages = torch.tensor([[1.0, -1.0]], dtype=DTYPE)
    mask = torch.tensor([[True, False]])
    assert ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2)[0].item() == pytest.approx(-1.2)
    higher = ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2, cliprange_high=0.28)[0]
    assert higher.item() == pytest.approx(-1.25)
    mask = torch.tensor([[False, True]])
    assert ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2)[0].item() == pytest.approx(5.0)
    dual, stats = ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2, dual_clip=3.0)
    assert dual.item() == pytest.approx(3.0) and stats["dual_clipfrac"].item() == 1.0
    dual.backward()
    assert logprobs.grad.abs().sum().item() == 0.0
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2, dual_clip=1.0)


def test_aggregate_loss_hand_example():
    # rows of 1 and 3 valid tokens: [2], [1, 1, 4]; an empty third row
    per_token = torch.tensor([[2.0, 9.0, 9.0], [1.0, 1.0, 4.0], [7.0, 7.0, 7.0]], dtype=DTYPE)
    mask = torch.tensor([[True, False, False], [True, True, True], [False, False, False]])
    expected = {
        "token-mean": 8 / 4,  # (2 + 6) / 4 tokens
        "seq-mean-token-mean": (2 + 2) / 2,  # row means 2 and 2, over 2 sequences
        "seq-mean-token-sum": (2 + 6) / 2,
        "seq-mean-token-sum-norm": (2 + 6) / 5,  # verl: C = 5, no sequence count
        "dr-grpo": (2 + 6) / (2 * 5),  # S = 2 sequences, C = 5
    }
    for mode, value in expected.items():
        assert aggregate_loss(per_token, mask, mode=mode, norm_length=5).item() == pytest.approx(value), mode
    # C defaults to the padded width T = 3
    assert aggregate_loss(per_token, mask, mode="seq-mean-token-sum-norm").item() == pytest.approx(8 / 3)
    assert aggregate_loss(per_token, mask, mode="dr-grpo").item() == pytest.approx(8 / (2 * 3))
    with pytest.raises(ValueError, match="loss aggregation mode"):
        aggregate_loss(per_token, mask, mode="sum")


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_loss_is_additive_over_micro_batches(mode):
    """Micro-batches given the minibatch's token and sequence counts sum to the minibatch's loss, in every mode."""
    generator = torch.Generator().manual_seed(5)
    per_token = torch.randn(7, 6, generator=generator, dtype=DTYPE)
    mask = torch.arange(6).unsqueeze(0) < torch.tensor([1, 6, 3, 0, 2, 5, 4]).unsqueeze(1)
    full = aggregate_loss(per_token, mask, mode=mode, norm_length=6)
    num_tokens, num_sequences = mask.sum(), (mask.sum(-1) > 0).sum()
    parts = [
        aggregate_loss(per_token[rows], mask[rows], mode=mode, num_tokens=num_tokens, num_sequences=num_sequences,
                       norm_length=6)
        for rows in (slice(0, 2), slice(2, 5), slice(5, 7))
    ]  # fmt: skip
    assert_close(sum(parts), full)


def verl_agg_loss_seq_mean_token_sum_norm(loss_mat, loss_mask, loss_scale_factor=None):
    """verl's `agg_loss(..., loss_agg_mode="seq-mean-token-sum-norm")` (verl/trainer/ppo/core_algos.py), written out:
    the token sums of the rows, summed, over `loss_scale_factor` (default the padded width)."""
    seq_losses = [
        sum(loss_mat[b, t].item() for t in range(loss_mat.size(1)) if loss_mask[b, t]) for b in range(len(loss_mat))
    ]
    return sum(seq_losses) / (loss_mask.size(-1) if loss_scale_factor is None else loss_scale_factor)


@pytest.mark.parametrize("norm_length", [None, 11])
def test_seq_mean_token_sum_norm_is_verls_and_dr_grpo_is_it_over_the_sequence_count(norm_length):
    """`seq-mean-token-sum-norm` is verl's `agg_loss` on the whole minibatch; `dr-grpo` (TRL's `dr_grpo`) is it divided
    by the number of sequences S, i.e. verl's normaliser is S times smaller."""
    generator = torch.Generator().manual_seed(8)
    per_token = torch.randn(6, 7, generator=generator, dtype=DTYPE)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor([3, 7, 0, 1, 5, 2]).unsqueeze(1)  # one empty row: S = 5
    verl = verl_agg_loss_seq_mean_token_sum_norm(per_token, mask, norm_length)
    loss = aggregate_loss(per_token, mask, mode="seq-mean-token-sum-norm", norm_length=norm_length)
    assert loss.item() == pytest.approx(verl, rel=1e-12)
    dr_grpo = aggregate_loss(per_token, mask, mode="dr-grpo", norm_length=norm_length)
    assert dr_grpo.item() == pytest.approx(verl / 5, rel=1e-12)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("num_processes", [1, 2, 3])
def test_aggregate_loss_is_invariant_to_process_sharding(mode, num_processes):
    """The trainer's convention: each of P processes gets the minibatch's counts divided by P and sums its
    micro-batch losses; DDP then averages over processes. The average must be the minibatch's loss in every mode."""
    generator = torch.Generator().manual_seed(9)
    per_token = torch.randn(6, 5, generator=generator, dtype=DTYPE)
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([1, 5, 3, 0, 2, 4]).unsqueeze(1)
    full = aggregate_loss(per_token, mask, mode=mode, norm_length=7)
    num_tokens = mask.sum() / num_processes
    num_sequences = (mask.sum(-1) > 0).sum() / num_processes
    shards = torch.arange(6).tensor_split(num_processes)
    per_process = [
        sum(
            aggregate_loss(per_token[rows], mask[rows], mode=mode, num_tokens=num_tokens, num_sequences=num_sequences,
                           norm_length=7, num_processes=num_processes)
            for rows in shard.tensor_split(2)  # two micro-batches per process
        )
        for shard in shards
    ]  # fmt: skip
    assert_close(sum(per_process) / num_processes, full)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_entropy_bonus_is_aggregated_like_the_policy_loss(mode):
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 4, 5, generator=generator, dtype=DTYPE)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [True, False, False, False]])
    loss, per_token_entropy = entropy_bonus_loss(logits, mask, loss_agg_mode=mode, norm_length=4)
    entropy = -(F.softmax(logits, -1) * F.log_softmax(logits, -1)).sum(-1)
    rows = [[entropy[b, t].item() for t in range(4) if mask[b, t]] for b in range(3)]
    assert loss.item() == pytest.approx(-naive_aggregate(rows, mode, norm_length=4), rel=1e-12)
    assert_close(per_token_entropy, entropy)


def test_ppo_policy_loss_gradient_vanishes_where_clipped_branch_wins():
    # eps = 0.2; each column is one case, N = 5 valid tokens (the last column is padding)
    #   A > 0, rho = 1.5 > 1.2: clipped term -1.2 A is the max, constant  -> grad 0
    #   A < 0, rho = 0.5 < 0.8: clipped term -0.8 A is the max, constant  -> grad 0
    #   A > 0, rho = 0.5 < 0.8: unclipped -A rho is the max  -> d/dlogp = -A rho / N
    #   A < 0, rho = 1.5 > 1.2: unclipped -A rho is the max  -> d/dlogp = -A rho / N
    #   A > 0, rho = 1.1 inside the range: both terms agree  -> d/dlogp = -A rho / N
    old = torch.zeros(1, 6, dtype=DTYPE)
    ratios = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.1, 3.0]], dtype=DTYPE)
    advantages = torch.tensor([[2.0, -3.0, 2.0, -3.0, 0.7, 1.0]], dtype=DTYPE)
    mask = torch.tensor([[True, True, True, True, True, False]])
    logprobs = torch.log(ratios).requires_grad_(True)
    loss, stats = ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2)
    loss.backward()
    n = 5
    expected = [0.0, 0.0, -2.0 * 0.5 / n, 3.0 * 1.5 / n, -0.7 * 1.1 / n, 0.0]
    assert_close(logprobs.grad, torch.tensor([expected], dtype=DTYPE))
    assert stats["clipfrac"].item() == pytest.approx(2 / 5)


def test_ppo_policy_loss_gradient_matches_loop_gradient():
    logprobs, old_logprobs, advantages, mask = random_policy_batch(22, spread=0.5)
    logprobs.requires_grad_(True)
    loss, _ = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2)
    loss.backward()
    n = mask.sum().item()
    expected = torch.zeros_like(old_logprobs)
    for b, t in mask.nonzero().tolist():
        ratio = math.exp(logprobs[b, t].item() - old_logprobs[b, t].item())
        advantage = advantages[b, t].item()
        clipped_ratio = min(max(ratio, 0.8), 1.2)
        if -advantage * ratio >= -advantage * clipped_ratio:  # unclipped wins (ties only at rho inside the range)
            expected[b, t] = -advantage * ratio / n
    assert_close(logprobs.grad, expected)
    assert (expected == 0).any() and (expected != 0).any()


def test_ppo_policy_loss_degenerate_log_ratio_stays_finite():
    old = torch.tensor([[-80.0, 0.0]], dtype=DTYPE)
    logprobs = torch.tensor([[0.0, -80.0]], dtype=DTYPE, requires_grad=True)
    advantages = torch.tensor([[-1.0, 1.0]], dtype=DTYPE)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, stats = ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logprobs.grad).all()
    assert all(torch.isfinite(value) for value in stats.values())
    # log-ratio clamped at +-20: token 0 gives max(e^20, 1.2) = e^20, token 1 max(-e^-20, -0.8) = -e^-20
    assert loss.item() == pytest.approx((math.exp(20.0) - math.exp(-20.0)) / 2, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# Value loss
# ---------------------------------------------------------------------------------------------------------------------
def naive_value_loss(values, old_values, returns, mask, cliprange_value, num_tokens=None):
    total, n_valid, n_clipped = 0.0, 0, 0
    for b, t in mask.nonzero().tolist():
        v, v_old, r = values[b, t].item(), old_values[b, t].item(), returns[b, t].item()
        unclipped = (v - r) ** 2
        if cliprange_value is None:
            total += unclipped
        else:
            v_clip = v_old + min(max(v - v_old, -cliprange_value), cliprange_value)
            clipped = (v_clip - r) ** 2
            total += max(unclipped, clipped)
            n_clipped += clipped > unclipped
        n_valid += 1
    n = n_valid if num_tokens is None else num_tokens
    return 0.5 * total / n, n_clipped / n_valid


def random_value_batch(seed: int, batch: int = 6, length: int = 8):
    generator = torch.Generator().manual_seed(seed)
    old_values = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    values = old_values + 0.4 * torch.randn(batch, length, generator=generator, dtype=DTYPE)
    returns = old_values + torch.randn(batch, length, generator=generator, dtype=DTYPE)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return values, old_values, returns, mask


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cliprange_value", [0.2, None])
def test_ppo_value_loss_matches_loop(seed, cliprange_value):
    values, old_values, returns, mask = random_value_batch(seed)
    loss, stats = ppo_value_loss(values, old_values, returns, mask, cliprange_value=cliprange_value)
    expected_loss, expected_clipfrac = naive_value_loss(values, old_values, returns, mask, cliprange_value)
    assert_close(loss, torch.tensor(expected_loss, dtype=DTYPE))
    assert stats["clipfrac"].item() == pytest.approx(expected_clipfrac)
    if cliprange_value is not None:
        assert 0.0 < expected_clipfrac < 1.0
    # num_tokens larger than the valid count: the same sum over a bigger N
    n_loss, _ = ppo_value_loss(values, old_values, returns, mask, cliprange_value=cliprange_value, num_tokens=100)
    expected_n_loss, _ = naive_value_loss(values, old_values, returns, mask, cliprange_value, num_tokens=100)
    assert_close(n_loss, torch.tensor(expected_n_loss, dtype=DTYPE))


def test_ppo_value_loss_hand_example():
    # c = 0.2, N = 2 valid tokens
    # V = 1.0, V_old = 0.5, R = 2.0: V_clip = 0.7; max((1 - 2)^2, (0.7 - 2)^2) = max(1, 1.69) = 1.69 (clipped)
    # V = 0.1, V_old = 0.0, R = 1.0: V_clip = 0.1; both 0.81
    # loss = 0.5 * (1.69 + 0.81) / 2 = 0.625; unclipped only: 0.5 * (1 + 0.81) / 2 = 0.4525
    values = torch.tensor([[1.0, 0.1, 5.0]], dtype=DTYPE)
    old_values = torch.tensor([[0.5, 0.0, -5.0]], dtype=DTYPE)
    returns = torch.tensor([[2.0, 1.0, 9.0]], dtype=DTYPE)
    mask = torch.tensor([[True, True, False]])
    loss, stats = ppo_value_loss(values, old_values, returns, mask, cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.625)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    loss, stats = ppo_value_loss(values, old_values, returns, mask, cliprange_value=None)
    assert loss.item() == pytest.approx(0.4525)
    assert stats["clipfrac"].item() == 0.0


def test_ppo_value_loss_gradient():
    values, old_values, returns, mask = random_value_batch(30)
    values.requires_grad_(True)
    loss, _ = ppo_value_loss(values, old_values, returns, mask, cliprange_value=0.2)
    loss.backward()
    n = mask.sum().item()
    expected = torch.zeros_like(old_values)
    for b, t in mask.nonzero().tolist():
        v, v_old, r = values[b, t].item(), old_values[b, t].item(), returns[b, t].item()
        v_clip = v_old + min(max(v - v_old, -0.2), 0.2)
        if (v - r) ** 2 > (v_clip - r) ** 2:
            expected[b, t] = (v - r) / n  # d/dV 0.5 (V - R)^2 / N
        elif abs(v - v_old) < 0.2:  # inside the range both branches are V itself (tie: full gradient)
            expected[b, t] = (v - r) / n
        # else: the clipped branch is the max and constant in V: zero gradient
    assert_close(values.grad, expected)
    assert (expected[mask] == 0).any() and (expected[mask] != 0).any()


# ---------------------------------------------------------------------------------------------------------------------
# Entropy bonus
# ---------------------------------------------------------------------------------------------------------------------
def test_entropy_bonus_matches_explicit_formula():
    generator = torch.Generator().manual_seed(40)
    logits = 3 * torch.randn(3, 5, 11, generator=generator, dtype=DTYPE)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [True] * 3 + [False] * 2])
    loss, per_token_entropy = entropy_bonus_loss(logits, mask)
    expected_entropy = torch.zeros(3, 5, dtype=DTYPE)
    for b in range(3):
        for t in range(5):
            probs = torch.softmax(logits[b, t], -1).tolist()
            expected_entropy[b, t] = -sum(p * math.log(p) for p in probs)
    assert_close(per_token_entropy, expected_entropy)
    assert_close(loss, -expected_entropy[mask].sum() / mask.sum())
    assert not per_token_entropy.requires_grad
    loss_n, _ = entropy_bonus_loss(logits, mask, num_tokens=50)
    assert_close(loss_n, -expected_entropy[mask].sum() / 50)


def test_entropy_bonus_gradient_matches_explicit_formula():
    generator = torch.Generator().manual_seed(41)
    logits = (2 * torch.randn(2, 4, 9, generator=generator, dtype=DTYPE)).requires_grad_(True)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    loss, _ = entropy_bonus_loss(logits, mask)
    (grad,) = torch.autograd.grad(loss, logits)
    # reference: -(1/N) sum_t m_t (-sum_v p log p), written with log_softmax
    reference_logits = logits.detach().clone().requires_grad_(True)
    log_probs = torch.log_softmax(reference_logits, -1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    reference_loss = -(entropy * mask).sum() / mask.sum()
    (reference_grad,) = torch.autograd.grad(reference_loss, reference_logits)
    assert_close(loss, reference_loss)
    assert_close(grad, reference_grad)
    assert (grad[~mask] == 0).all() and (grad[mask] != 0).any()


def test_entropy_bonus_uniform_and_peaked():
    # uniform logits over V = 7: H = ln 7; a nearly one-hot distribution: H ~ 0; large shifts stay finite
    logits = torch.zeros(1, 2, 7, dtype=DTYPE)
    logits[0, 1, 3] = 1e4
    logits[0, 0] += 1e4
    loss, entropy = entropy_bonus_loss(logits, torch.tensor([[True, True]]))
    assert entropy[0, 0].item() == pytest.approx(math.log(7), rel=1e-10)
    assert entropy[0, 1].item() == pytest.approx(0.0, abs=1e-12)
    assert loss.item() == pytest.approx(-math.log(7) / 2, rel=1e-10)


# ---------------------------------------------------------------------------------------------------------------------
# PPO-ptx language-modeling loss
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_language_modeling_loss_matches_cross_entropy(ignore_index):
    generator = torch.Generator().manual_seed(50)
    vocab = 13
    logits = torch.randn(3, 6, vocab, generator=generator)
    labels = torch.randint(1, vocab, (3, 6), generator=generator)
    labels[0, :3] = ignore_index  # a masked prompt
    labels[1, -2:] = ignore_index  # right padding
    labels[2, 0] = 5  # position 0 is never a target (nothing predicts it)
    loss, stats = language_modeling_loss(logits, labels, ignore_index=ignore_index)
    expected = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=ignore_index, reduction="mean"
    )
    assert_close(loss, expected)
    # naive twin: -mean log softmax(z_s)[u_{s+1}] over targets, and greedy accuracy
    total, count, correct = 0.0, 0, 0
    for b in range(3):
        for s in range(5):
            target = labels[b, s + 1].item()
            if target == ignore_index:
                continue
            log_probs = torch.log_softmax(logits[b, s].double(), -1)
            total -= log_probs[target].item()
            count += 1
            correct += int(logits[b, s].argmax().item() == target)
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    assert stats["accuracy"].item() == pytest.approx(correct / count)
    assert not stats["accuracy"].requires_grad


def test_language_modeling_loss_accuracy_hand_example():
    # V = 3, one row of 3 labels [x, 2, 1]: position 0 predicts 2 (argmax 2: correct), position 1 predicts 1
    # (argmax 0: wrong). The label at position 0 is never a target. accuracy = 1 / 2
    logits = torch.tensor([[[0.0, 0.0, 5.0], [5.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[7, 2, 1]])
    loss, stats = language_modeling_loss(logits, labels)
    assert stats["accuracy"].item() == pytest.approx(0.5)
    lse = math.log(2 + math.exp(5.0))
    # -(log p(2 | s0) + log p(1 | s1)) / 2 = ((lse - 5) + (lse - 0)) / 2
    assert loss.item() == pytest.approx((2 * lse - 5.0) / 2, rel=1e-6)


def test_language_modeling_loss_accuracy_ignores_non_targets():
    # ignore_index = 0 and the greedy prediction at the ignored position is 0 as well: it must not count as a hit
    # targets: position 0 -> label 2 (argmax 1: wrong), position 1 -> label 0 ignored (argmax 0), so accuracy = 0
    logits = torch.tensor([[[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[1, 2, 0]])
    loss, stats = language_modeling_loss(logits, labels, ignore_index=0)
    assert stats["accuracy"].item() == 0.0
    assert loss.item() == pytest.approx(math.log(2 + math.exp(5.0)), rel=1e-6)  # -log p(2 | s0) = lse - 0


def test_language_modeling_loss_without_targets_raises():
    logits = torch.randn(2, 4, 5)
    labels = torch.full((2, 4), -100)
    labels[:, 0] = 3  # only position 0 has a label, and it is never a target after the shift
    with pytest.raises(ValueError, match="no target tokens"):
        language_modeling_loss(logits, labels)
