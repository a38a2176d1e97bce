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

from ppomax_trl.losses import entropy_bonus_loss, language_modeling_loss, ppo_policy_loss, ppo_value_loss


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
