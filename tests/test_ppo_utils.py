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
"""Exact-value tests for `ppomax_trl.ppo_utils`.

Every vectorised function is compared with a naive twin written here (python loops or numpy on the valid entries,
house-style rule 8), following the equations of `docs/ppo_max_spec.md` §2.3, §2.7 and §2.8.
"""

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from ppomax_trl.ppo_utils import (
    MIN_RUNNING_STD,
    AdaptiveKLController,
    CollapseMonitor,
    FixedKLController,
    RunningMoments,
    batch_moments,
    compute_decoupled_gae,
    compute_gae,
    exact_div,
    explained_variance,
    first_true_indices,
    kl_estimate,
    last_token_indices,
    length_adaptive_lam,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    masked_whiten_global,
    merge_moments,
    reparameterize_scores,
    token_rewards,
    truncate_after_stop,
)


DTYPE = torch.float64


def random_prefix_mask(generator: torch.Generator, batch: int, length: int, min_len: int = 0) -> torch.Tensor:
    """`(B, T)` bool mask, true on `0..L_b` with random lengths in `[min_len, T]` (0 gives an empty row)."""
    lengths = torch.randint(min_len, length + 1, (batch,), generator=generator)
    return torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)


# ---------------------------------------------------------------------------------------------------------------------
# exact_div
# ---------------------------------------------------------------------------------------------------------------------
def test_exact_div():
    assert exact_div(12, 4, "batch") == 3
    with pytest.raises(ValueError, match="batch"):
        exact_div(10, 4, "batch")
    with pytest.raises(ValueError):
        exact_div(4, 0, "batch")


# ---------------------------------------------------------------------------------------------------------------------
# Response masks
# ---------------------------------------------------------------------------------------------------------------------
def naive_first_true(row: list[bool]) -> int:
    for t, value in enumerate(row):
        if value:
            return t
    return len(row)


def test_first_true_indices_matches_loop():
    generator = torch.Generator().manual_seed(0)
    bools = torch.rand(32, 9, generator=generator) < 0.15
    bools[0] = False  # no True: T
    bools[1] = True  # first position
    bools[2] = False
    bools[2, -1] = True  # last position only
    result = first_true_indices(bools)
    expected = torch.tensor([naive_first_true(row) for row in bools.tolist()])
    assert result.dtype == torch.long
    assert result.tolist() == expected.tolist()
    assert result[:3].tolist() == [9, 0, 8]


def naive_truncate(responses, stop_token_ids, pad_token_id):
    """Per-row loop: keep tokens up to and including the first stop; a row made only of padding is empty."""
    stops = set(stop_token_ids or [])
    truncated, mask, stopped = [], [], []
    for row in responses.tolist():
        length = len(row)
        last = length - 1
        did_stop = False
        for t, token in enumerate(row):
            if token in stops:
                last, did_stop = t, True
                break
        if not did_stop and all(token == pad_token_id for token in row):
            last = -1
        truncated.append([token if t <= last else pad_token_id for t, token in enumerate(row)])
        mask.append([t <= last for t in range(length)])
        stopped.append(did_stop)
    return torch.tensor(truncated), torch.tensor(mask), torch.tensor(stopped)


def test_truncate_after_stop_hand_example():
    pad, eos, eot = 0, 1, 2
    responses = torch.tensor(
        [
            [5, 6, eos, 7, 8],  # stop at 2: [5, 6, eos, pad, pad]
            [5, 6, 7, 8, 9],  # no stop: full length
            [eos, 6, eos, 8, 9],  # stop at 0: only the stop token is kept
            [5, 6, 7, 8, eos],  # stop at the last position
            [5, eot, 7, eos, 9],  # the second stop id, first occurrence wins
            [5, 6, eos, pad, pad],  # already padded after its stop
        ]
    )
    truncated, mask, stopped = truncate_after_stop(responses, stop_token_ids=[eos, eot], pad_token_id=pad)
    assert truncated.tolist() == [
        [5, 6, eos, pad, pad],
        [5, 6, 7, 8, 9],
        [eos, pad, pad, pad, pad],
        [5, 6, 7, 8, eos],
        [5, eot, pad, pad, pad],
        [5, 6, eos, pad, pad],
    ]
    assert mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [3, 5, 1, 5, 2, 3]
    assert stopped.tolist() == [True, False, True, True, True, True]
    # the stop token is the last real token: L = index of the stop
    assert last_token_indices(mask).tolist() == [2, 4, 0, 4, 1, 2]
    assert responses[0, 3] == 7  # the input is not modified


def test_truncate_after_stop_all_padding_row_is_empty():
    # the generator stopped every sequence before this chunk: L = -1, nothing is scored or trained
    responses = torch.tensor([[0, 0, 0], [5, 1, 0], [0, 5, 6], [0, 1, 0]])
    truncated, mask, stopped = truncate_after_stop(responses, stop_token_ids=[1], pad_token_id=0)
    assert mask.tolist() == [[False] * 3, [True, True, False], [True] * 3, [True, True, False]]
    assert truncated.tolist() == [[0, 0, 0], [5, 1, 0], [0, 5, 6], [0, 1, 0]]
    assert stopped.tolist() == [False, True, False, True]
    assert last_token_indices(mask).tolist() == [-1, 1, 2, 1]


@pytest.mark.parametrize("stop_token_ids", [[1], [1, 2, 3], None, []])
def test_truncate_after_stop_matches_loop(stop_token_ids):
    generator = torch.Generator().manual_seed(1)
    pad = 0
    # ids 1..9, so stops (1, 2, 3) are frequent; pad only appears after we insert it
    responses = torch.randint(1, 10, (64, 7), generator=generator)
    responses[0] = pad  # an all-padding row
    responses[1, 0] = pad  # a pad id followed by real tokens is not an empty row
    truncated, mask, stopped = truncate_after_stop(responses, stop_token_ids=stop_token_ids, pad_token_id=pad)
    expected_truncated, expected_mask, expected_stopped = naive_truncate(responses, stop_token_ids, pad)
    assert truncated.tolist() == expected_truncated.tolist()
    assert mask.tolist() == expected_mask.tolist()
    assert stopped.tolist() == expected_stopped.tolist()
    assert (truncated[~mask] == pad).all()
    if not stop_token_ids:
        assert not stopped.any()
        assert mask[1:].all()
    else:
        assert stopped.any() and not stopped.all()  # both kinds of row are exercised


# ---------------------------------------------------------------------------------------------------------------------
# Masked statistics
# ---------------------------------------------------------------------------------------------------------------------
def random_values_and_mask(seed: int, shape=(6, 11)):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(*shape, generator=generator, dtype=DTYPE) * 3 + 1
    mask = torch.rand(*shape, generator=generator) < 0.6
    return values, mask


def test_masked_sum_and_mean_match_numpy():
    values, mask = random_values_and_mask(2)
    valid = values.numpy()[mask.numpy()]
    assert_close(masked_sum(values, mask), torch.tensor(valid.sum(), dtype=DTYPE))
    assert_close(masked_mean(values, mask), torch.tensor(valid.mean(), dtype=DTYPE))
    # per-row means
    expected_rows = [values[b][mask[b]].numpy().mean() if mask[b].any() else 0.0 for b in range(values.size(0))]
    assert_close(masked_mean(values, mask, dim=1), torch.tensor(expected_rows, dtype=DTYPE))
    # an empty mask gives 0, not NaN
    empty = torch.zeros_like(mask)
    assert masked_mean(values, empty).item() == 0.0


@pytest.mark.parametrize("unbiased", [True, False])
def test_masked_var_matches_numpy(unbiased):
    values, mask = random_values_and_mask(3)
    valid = values.numpy()[mask.numpy()]
    expected = np.var(valid, ddof=1 if unbiased else 0)
    assert_close(masked_var(values, mask, unbiased=unbiased), torch.tensor(expected, dtype=DTYPE))


def test_masked_var_needs_two_values_when_unbiased():
    values = torch.tensor([1.0, 2.0, 3.0], dtype=DTYPE)
    one = torch.tensor([False, True, False])
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(values, one, unbiased=True)
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(values, torch.zeros(3, dtype=torch.bool), unbiased=True)
    assert masked_var(values, one, unbiased=False).item() == 0.0
    # two values: (1 - 1.5)^2 + (2 - 1.5)^2 = 0.5, / (2 - 1) = 0.5 unbiased, / 2 = 0.25 biased
    two = torch.tensor([True, True, False])
    assert masked_var(values, two, unbiased=True).item() == pytest.approx(0.5)
    assert masked_var(values, two, unbiased=False).item() == pytest.approx(0.25)


@pytest.mark.parametrize("shift_mean", [True, False])
@pytest.mark.parametrize("unbiased", [True, False])
def test_masked_whiten_matches_numpy(shift_mean, unbiased):
    values, mask = random_values_and_mask(4)
    eps = 1e-8
    np_values, np_mask = values.numpy(), mask.numpy()
    valid = np_values[np_mask]
    mean, var = valid.mean(), valid.var(ddof=1 if unbiased else 0)
    expected = np.zeros_like(np_values)
    for index in zip(*np.nonzero(np_mask), strict=True):
        expected[index] = (np_values[index] - mean) / math.sqrt(var + eps) + (0.0 if shift_mean else mean)
    result = masked_whiten(values, mask, shift_mean=shift_mean, eps=eps, unbiased=unbiased)
    assert_close(result, torch.from_numpy(expected))
    assert (result[~mask] == 0).all()
    whitened_valid = result[mask].numpy()
    assert whitened_valid.mean() == pytest.approx(0.0 if shift_mean else mean, abs=1e-9)
    assert whitened_valid.var(ddof=1 if unbiased else 0) == pytest.approx(1.0, rel=1e-6)


def test_masked_whiten_constant_input_stays_finite():
    values = torch.full((2, 3), 4.0, dtype=DTYPE)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    result = masked_whiten(values, mask)
    assert torch.isfinite(result).all()
    assert (result == 0).all()
    assert_close(masked_whiten(values, mask, shift_mean=False), values * mask)


# ---------------------------------------------------------------------------------------------------------------------
# Running moments (spec §2.3)
# ---------------------------------------------------------------------------------------------------------------------
def test_running_moments_prior():
    state = RunningMoments()
    assert (state.mean, state.var, state.count) == (0.0, 1.0, 0.0)
    assert state.std == 1.0


def test_merge_into_empty_prior_returns_batch_moments():
    scores = torch.tensor([1.0, 2.0, 4.0, 9.0], dtype=DTYPE)
    mean, var, count = batch_moments(scores)
    # hand: mean = 16 / 4 = 4, squared deviations 9 + 4 + 0 + 25 = 38, population var = 38 / 4 = 9.5
    assert (mean, var, count) == (4.0, 9.5, 4)
    state = merge_moments(RunningMoments(), mean, var, count)
    assert (state.mean, state.var, state.count) == (4.0, 9.5, 4)
    # Bessel: sqrt(38 / 3)
    assert state.std == pytest.approx(math.sqrt(38.0 / 3.0), rel=1e-14)


def test_merge_moments_equals_whole_history():
    rng = np.random.default_rng(5)
    state = RunningMoments()
    history = []
    for step, size in enumerate([1, 7, 3, 64, 2, 1, 33, 5]):
        # shifting location and scale, so a wrong merge (EMA, mean of variances...) cannot pass by accident
        batch = rng.normal(loc=3.0 * step - 5.0, scale=0.5 + step, size=size)
        history.append(batch)
        mean, var, count = batch_moments(torch.from_numpy(batch))
        assert mean == pytest.approx(batch.mean(), rel=1e-12, abs=1e-12)
        assert var == pytest.approx(batch.var(), rel=1e-12, abs=1e-12)
        assert count == size
        state = merge_moments(state, mean, var, count)
        pooled = np.concatenate(history)
        assert state.count == pooled.size
        assert state.mean == pytest.approx(pooled.mean(), rel=1e-12, abs=1e-12)
        assert state.var == pytest.approx(pooled.var(), rel=1e-12, abs=1e-12)
        if pooled.size > 1:
            assert state.std == pytest.approx(pooled.std(ddof=1), rel=1e-12)
        else:
            assert state.std == 1.0  # n' = 1: std undefined, no rescaling
    assert isinstance(state.mean, float) and isinstance(state.var, float)


def test_running_std_floor_when_scores_identical():
    state = RunningMoments()
    for size in (3, 5):
        state = merge_moments(state, *batch_moments(torch.full((size,), 2.5)))
    assert state.mean == 2.5
    assert state.var == 0.0
    assert state.count == 8
    assert state.std == MIN_RUNNING_STD
    normalized = reparameterize_scores(
        torch.full((3,), 2.5), mean=state.mean, std=state.std, mode="normalize", clip=None
    )
    assert torch.isfinite(normalized).all() and (normalized == 0).all()


def test_running_moments_state_dict_roundtrip():
    state = merge_moments(RunningMoments(), 1.25, 0.5, 10)
    state = merge_moments(state, -3.0, 2.0, 7)
    saved = state.state_dict()
    assert set(saved) == {"mean", "var", "count"}
    # a checkpoint may hand back tensors or ints
    restored = RunningMoments.from_state_dict({key: torch.tensor(value, dtype=DTYPE) for key, value in saved.items()})
    assert restored == state
    assert all(isinstance(getattr(restored, key), float) for key in saved)
    assert restored.std == state.std
    assert RunningMoments.from_state_dict({"mean": 1, "var": 2, "count": 3}) == RunningMoments(1.0, 2.0, 3.0)


def test_batch_moments_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        batch_moments(torch.zeros(0))


class FakeProcessGroup:
    """`world_size` ranks run as threads; `all_reduce_sum` sums the tensors every rank contributed to the same call."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size, timeout=30)
        self.slots: list[torch.Tensor | None] = [None] * world_size
        self.calls = [0] * world_size

    def all_reduce_sum_for(self, rank: int):
        def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
            self.calls[rank] += 1
            self.slots[rank] = tensor.clone()
            self.barrier.wait()  # every rank has deposited its tensor
            total = self.slots[0].clone()
            for other in self.slots[1:]:
                total = total + other
            self.barrier.wait()  # every rank has read the slots before anyone overwrites them
            return total

        return all_reduce_sum

    def run(self, fn, shards):
        with ThreadPoolExecutor(self.world_size) as pool:
            futures = [pool.submit(fn, shards[r], self.all_reduce_sum_for(r)) for r in range(self.world_size)]
            return [future.result() for future in futures]


@pytest.mark.parametrize("shard_sizes", [(4, 4, 4), (1, 9, 5), (0, 6, 3)])
def test_batch_moments_pooled_over_ranks(shard_sizes):
    rng = np.random.default_rng(sum(shard_sizes))
    # each rank draws from a different distribution: averaging local moments would be wrong
    shards = [rng.normal(loc=4.0 * r, scale=1.0 + r, size=n) for r, n in enumerate(shard_sizes)]
    pooled = np.concatenate(shards)
    group = FakeProcessGroup(len(shards))
    results = group.run(batch_moments, [torch.from_numpy(shard).float() for shard in shards])
    pooled32 = pooled.astype(np.float32).astype(np.float64)  # the shards were handed over as float32
    for mean, var, count in results:
        assert count == pooled.size
        assert mean == pytest.approx(pooled32.mean(), rel=1e-12, abs=1e-12)
        assert var == pytest.approx(pooled32.var(), rel=1e-12, abs=1e-12)
    assert len(set(results)) == 1  # every rank computes the same numbers, no broadcast needed
    assert group.calls == [2] * len(shards)

    # merging the pooled moments on each rank reproduces the history statistics of spec §2.3
    state = merge_moments(RunningMoments(), *results[0])
    assert state.std == pytest.approx(pooled32.std(ddof=1), rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# Reparameterization ([P] Eq. 18, spec §2.4-2.5)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["none", "scale", "normalize"])
@pytest.mark.parametrize("clip", [None, 0.8])
def test_reparameterize_scores(mode, clip):
    scores = torch.tensor([-3.0, -0.4, 0.0, 0.7, 2.5, 10.0], dtype=DTYPE)
    original = scores.clone()
    mean, std = 0.5, 2.0
    result = reparameterize_scores(scores, mean=mean, std=std, mode=mode, clip=clip)
    expected = []
    for r in original.tolist():
        value = {"none": r, "scale": r / std, "normalize": (r - mean) / std}[mode]
        if clip is not None:
            value = min(max(value, -clip), clip)
        expected.append(value)
    assert_close(result, torch.tensor(expected, dtype=DTYPE))
    assert torch.equal(scores, original)
    if clip is not None:
        assert (result.abs() <= clip).all() and (result.abs() == clip).any()


def test_reparameterize_scores_bad_mode():
    with pytest.raises(ValueError, match="Unknown reward normalization"):
        reparameterize_scores(torch.zeros(2), mean=0.0, std=1.0, mode="whiten", clip=None)


# ---------------------------------------------------------------------------------------------------------------------
# KL estimators (spec §2.7)
# ---------------------------------------------------------------------------------------------------------------------
def test_kl_estimators_match_formulas():
    generator = torch.Generator().manual_seed(6)
    logprobs = -torch.rand(4, 9, generator=generator, dtype=DTYPE) * 5
    ref_logprobs = -torch.rand(4, 9, generator=generator, dtype=DTYPE) * 5
    log_ratio = (logprobs - ref_logprobs).numpy()
    expected = {
        "k1": log_ratio,
        "k2": 0.5 * log_ratio**2,
        "k3": np.exp(-log_ratio) - 1.0 + log_ratio,
    }
    for name, value in expected.items():
        assert_close(kl_estimate(logprobs, ref_logprobs, name), torch.from_numpy(value))
    # k3 = (pi_ref / pi_old - 1) - log(pi_ref / pi_old) >= 0, k2 >= 0, k1 takes both signs here
    k3 = kl_estimate(logprobs, ref_logprobs, "k3")
    ratio_ref_old = torch.exp(ref_logprobs - logprobs)
    assert_close(k3, (ratio_ref_old - 1) - torch.log(ratio_ref_old))
    assert (k3 >= 0).all() and (kl_estimate(logprobs, ref_logprobs, "k2") >= 0).all()
    k1 = kl_estimate(logprobs, ref_logprobs, "k1")
    assert (k1 < 0).any() and (k1 > 0).any()
    # equal log-probs (padding): exactly 0 for every estimator
    for name in ("k1", "k2", "k3"):
        assert (kl_estimate(logprobs, logprobs, name) == 0).all()


def test_k1_and_k3_are_unbiased_over_the_full_distribution():
    # E_{a ~ pi_old}[k(l_a)] over every action equals KL(pi_old || pi_ref) exactly for k1 and k3
    generator = torch.Generator().manual_seed(7)
    old = torch.log_softmax(torch.randn(5, 13, generator=generator, dtype=DTYPE), -1)
    ref = torch.log_softmax(torch.randn(5, 13, generator=generator, dtype=DTYPE), -1)
    true_kl = np.array(
        [
            sum(math.exp(o) * (o - r) for o, r in zip(row_o, row_r, strict=True))
            for row_o, row_r in zip(old.tolist(), ref.tolist(), strict=True)
        ]
    )
    for name in ("k1", "k3"):
        expectation = (old.exp() * kl_estimate(old, ref, name)).sum(-1)
        assert_close(expectation, torch.from_numpy(true_kl))
    # k2 is biased
    k2_expectation = (old.exp() * kl_estimate(old, ref, "k2")).sum(-1)
    assert not torch.allclose(k2_expectation, torch.from_numpy(true_kl))


def test_k3_stays_finite_for_degenerate_ratios():
    logprobs = torch.tensor([-100.0, 0.0], dtype=DTYPE)
    ref_logprobs = torch.tensor([0.0, -100.0], dtype=DTYPE)
    k3 = kl_estimate(logprobs, ref_logprobs, "k3")
    assert torch.isfinite(k3).all() and (k3 >= 0).all()
    assert k3[1].item() == pytest.approx(math.exp(-100.0) - 1.0 + 100.0)


def test_kl_estimate_bad_estimator():
    with pytest.raises(ValueError, match="Unknown KL estimator"):
        kl_estimate(torch.zeros(1, 2), torch.zeros(1, 2), "k4")


# ---------------------------------------------------------------------------------------------------------------------
# KL controllers
# ---------------------------------------------------------------------------------------------------------------------
def test_fixed_kl_controller():
    controller = FixedKLController(0.05)
    for kl in (0.0, 1.0, 100.0, -5.0):
        controller.update(kl, n_steps=64)
        assert controller.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(controller.state_dict())
    assert other.value == 0.05 and controller.state_dict() == {"value": 0.05}


def test_adaptive_kl_controller_hand_example():
    # e = clip(12 / 6 - 1, -0.2, 0.2) = 0.2; value = 0.1 * (1 + 0.2 * 100 / 10000) = 0.1 * 1.002
    controller = AdaptiveKLController(value=0.1, target=6.0, horizon=10000.0)
    controller.update(12.0, n_steps=100)
    assert controller.value == pytest.approx(0.1002, rel=1e-15)
    # e = clip(6.6 / 6 - 1) = 0.1 (inside the clip); value *= 1 + 0.1 * 100 / 10000
    controller.update(6.6, n_steps=100)
    assert controller.value == pytest.approx(0.1002 * 1.001, rel=1e-12)


def test_adaptive_kl_controller_matches_naive_formula():
    value, target, horizon = 0.2, 4.0, 500.0
    controller = AdaptiveKLController(value=value, target=target, horizon=horizon)
    kls = [4.0, 10.0, 0.0, 3.5, 4.9, 100.0, 2.0, 4.4]  # errors 0, +1.5 (clipped), -1 (clipped), inside, ...
    n_steps = [16, 32, 8, 64, 16, 1, 128, 16]
    seen_errors = []
    for kl, steps in zip(kls, n_steps, strict=True):
        error = kl / target - 1.0
        seen_errors.append(error)
        if error > 0.2:
            error = 0.2
        elif error < -0.2:
            error = -0.2
        value = value * (1.0 + error * steps / horizon)
        controller.update(kl, n_steps=steps)
        assert controller.value == pytest.approx(value, rel=1e-13)
    assert max(seen_errors) > 0.2 and min(seen_errors) < -0.2
    restored = AdaptiveKLController(value=1.0, target=1.0, horizon=1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored == controller
    restored.update(5.0, n_steps=10)
    controller.update(5.0, n_steps=10)
    assert restored.value == controller.value


# ---------------------------------------------------------------------------------------------------------------------
# Token rewards (spec §2.7)
# ---------------------------------------------------------------------------------------------------------------------
def naive_token_rewards(per_token_kl, scores, mask, kl_coef):
    batch, length = mask.shape
    rewards = [[0.0] * length for _ in range(batch)]
    non_score = [[0.0] * length for _ in range(batch)]
    for b in range(batch):
        last = -1
        for t in range(length):
            if mask[b, t]:
                non_score[b][t] = -kl_coef * per_token_kl[b, t].item()
                rewards[b][t] = non_score[b][t]
                last = t
        if last >= 0:
            rewards[b][last] += scores[b].item()
    return torch.tensor(rewards, dtype=DTYPE), torch.tensor(non_score, dtype=DTYPE)


def test_token_rewards_hand_example():
    # kl_coef = 0.5; row 0 has L = 1: r = [-0.5 * 2, -0.5 * 4 + 10, 0] = [-1, 8, 0] (the score is not at L + 1 = 2)
    # row 1 is empty: no score, all zeros
    per_token_kl = torch.tensor([[2.0, 4.0, 6.0], [1.0, 1.0, 1.0]], dtype=DTYPE)
    scores = torch.tensor([10.0, 7.0], dtype=DTYPE)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    rewards, non_score = token_rewards(per_token_kl, scores, mask, kl_coef=0.5)
    assert rewards.tolist() == [[-1.0, 8.0, 0.0], [0.0, 0.0, 0.0]]
    assert non_score.tolist() == [[-1.0, -2.0, 0.0], [0.0, 0.0, 0.0]]


def test_token_rewards_match_loop():
    generator = torch.Generator().manual_seed(8)
    batch, length = 16, 10
    per_token_kl = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    scores = torch.randn(batch, generator=generator, dtype=DTYPE) * 5
    mask = random_prefix_mask(generator, batch, length)
    mask[0] = False
    mask[1] = True
    rewards, non_score = token_rewards(per_token_kl, scores, mask, kl_coef=0.07)
    expected_rewards, expected_non_score = naive_token_rewards(per_token_kl, scores, mask, 0.07)
    assert_close(rewards, expected_rewards)
    assert_close(non_score, expected_non_score)
    assert (rewards[~mask] == 0).all() and (non_score[~mask] == 0).all()
    # the score sits exactly at L: rewards - non-score rewards is the score there and 0 elsewhere
    last = last_token_indices(mask)
    for b in range(batch):
        diff = rewards[b] - non_score[b]
        if last[b] >= 0:
            assert diff[last[b]].item() == pytest.approx(scores[b].item())
            diff[last[b]] = 0
        assert (diff == 0).all()


# ---------------------------------------------------------------------------------------------------------------------
# GAE (spec §2.8)
# ---------------------------------------------------------------------------------------------------------------------
def naive_gae(rewards, values, mask, gamma, lam):
    """Per sequence over its valid positions t = 0..L, with V_{L+1} = 0 and A_{L+1} = 0; `lam` a float or one per
    row."""
    batch, length = mask.shape
    advantages = np.zeros((batch, length))
    returns = np.zeros((batch, length))
    for b in range(batch):
        lam_b = float(lam[b]) if isinstance(lam, (list, tuple, torch.Tensor)) else lam
        last = int(mask[b].sum()) - 1
        next_advantage = 0.0
        for t in range(last, -1, -1):
            next_value = float(values[b, t + 1]) if t < last else 0.0
            delta = float(rewards[b, t]) + gamma * next_value - float(values[b, t])
            next_advantage = delta + gamma * lam_b * next_advantage
            advantages[b, t] = next_advantage
            returns[b, t] = next_advantage + float(values[b, t])
    return torch.from_numpy(advantages), torch.from_numpy(returns)


def test_gae_hand_example():
    # gamma = 0.5, lam = 0.5, one sequence with L = 1 (T = 3)
    # delta_1 = r_1 + 0.5 * V_2 - V_1 = 1 + 0 - 2 = -1            (V_2 := 0, the padding value 99 is ignored)
    # delta_0 = r_0 + 0.5 * V_1 - V_0 = 0 + 0.5 * 2 - 1 = 0
    # A_1 = -1, A_0 = 0 + 0.25 * (-1) = -0.25;  R = A + V = [0.75, 1, 0]
    rewards = torch.tensor([[0.0, 1.0, 5.0]], dtype=DTYPE)
    values = torch.tensor([[1.0, 2.0, 99.0]], dtype=DTYPE)
    mask = torch.tensor([[True, True, False]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=0.5, lam=0.5)
    assert advantages.tolist() == [[0.0 - 0.25, -1.0, 0.0]]
    assert returns.tolist() == [[0.75, 1.0, 0.0]]


@pytest.mark.parametrize("seed", range(6))
def test_gae_matches_loop(seed):
    generator = torch.Generator().manual_seed(100 + seed)
    rng = np.random.default_rng(seed)
    gamma, lam = {0: (1.0, 0.95), 1: (1.0, 1.0), 2: (0.9, 0.0)}.get(seed, tuple(rng.uniform(0.5, 1.0, size=2)))
    batch, length = 12, 9
    rewards = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    values = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    mask = random_prefix_mask(generator, batch, length)
    mask[0] = False
    mask[1] = True
    mask[2] = False
    mask[2, 0] = True
    advantages, returns = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    expected_advantages, expected_returns = naive_gae(rewards, values, mask, gamma, lam)
    assert_close(advantages, expected_advantages)
    assert_close(returns, expected_returns)
    assert (advantages[~mask] == 0).all() and (returns[~mask] == 0).all()
    assert_close(returns[mask], (advantages + values)[mask])


def test_gae_ignores_padding_values_and_rewards():
    generator = torch.Generator().manual_seed(9)
    batch, length = 8, 7
    rewards = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    values = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    mask = random_prefix_mask(generator, batch, length, min_len=1)
    mask[0, -1] = False  # at least one padded row
    reference = compute_gae(rewards, values, mask, gamma=0.99, lam=0.9)
    noisy_values = torch.where(mask, values, 1e3 * torch.randn(batch, length, generator=generator, dtype=DTYPE))
    noisy_rewards = torch.where(mask, rewards, 1e3 * torch.randn(batch, length, generator=generator, dtype=DTYPE))
    perturbed = compute_gae(noisy_rewards, noisy_values, mask, gamma=0.99, lam=0.9)
    assert_close(perturbed[0], reference[0], rtol=0, atol=0)
    assert_close(perturbed[1], reference[1], rtol=0, atol=0)
    # and a padded row gives the same numbers as the unpadded sequence on its own
    length_0 = int(mask[0].sum())
    alone = compute_gae(rewards[:1, :length_0], values[:1, :length_0], mask[:1, :length_0], gamma=0.99, lam=0.9)
    assert_close(alone[0], reference[0][:1, :length_0])
    assert_close(alone[1], reference[1][:1, :length_0])


def test_gae_with_gamma_lam_one_is_the_monte_carlo_return():
    # gamma = lam = 1: A_t + V_t telescopes to sum_{k >= t} r_k over the valid positions
    generator = torch.Generator().manual_seed(10)
    rewards = torch.randn(5, 6, generator=generator, dtype=DTYPE)
    values = torch.randn(5, 6, generator=generator, dtype=DTYPE)
    mask = random_prefix_mask(generator, 5, 6, min_len=1)
    _, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    masked_rewards = rewards * mask
    reward_to_go = masked_rewards.flip(1).cumsum(1).flip(1) * mask
    assert_close(returns, reward_to_go)


# ---------------------------------------------------------------------------------------------------------------------
# Per-sequence and decoupled lambdas (VAPO, VC-PPO)
# ---------------------------------------------------------------------------------------------------------------------
def naive_length_adaptive_lam(mask, alpha):
    """lambda_b = min(max(1 - 1 / (alpha l_b), 0), 1), an empty response counted as length 1."""
    out = []
    for row in mask.tolist():
        length = max(sum(bool(x) for x in row), 1)
        out.append(min(max(1.0 - 1.0 / (alpha * length), 0.0), 1.0))
    return torch.tensor(out, dtype=DTYPE)


def test_length_adaptive_lam_hand_example():
    # VAPO's alpha = 0.05: lambda = 1 - 20 / l, so l <= 20 gives 0, l = 40 gives 0.5, l = 100 gives 0.8
    lengths = [0, 1, 10, 20, 40, 100]
    mask = torch.arange(100).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    assert length_adaptive_lam(mask, alpha=0.05).tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.5, 0.8])
    assert length_adaptive_lam(mask, alpha=0.5).tolist() == pytest.approx([0.0, 0.0, 0.8, 0.9, 0.95, 0.98])
    with pytest.raises(ValueError, match="alpha"):
        length_adaptive_lam(mask, alpha=0.0)


@pytest.mark.parametrize("alpha", [0.05, 0.3, 2.0])
def test_length_adaptive_lam_matches_loop(alpha):
    generator = torch.Generator().manual_seed(int(alpha * 100))
    mask = random_prefix_mask(generator, 16, 30)
    assert_close(length_adaptive_lam(mask.to(DTYPE), alpha=alpha), naive_length_adaptive_lam(mask, alpha))


@pytest.mark.parametrize("seed", range(3))
def test_gae_with_one_lambda_per_sequence_matches_loop(seed):
    generator = torch.Generator().manual_seed(200 + seed)
    batch, length = 10, 9
    rewards = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    values = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    mask = random_prefix_mask(generator, batch, length)
    lam = torch.rand(batch, generator=generator, dtype=DTYPE)
    advantages, returns = compute_gae(rewards, values, mask, gamma=0.97, lam=lam)
    expected_advantages, expected_returns = naive_gae(rewards, values, mask, 0.97, lam.tolist())
    assert_close(advantages, expected_advantages)
    assert_close(returns, expected_returns)
    # a constant per-row lambda is the scalar one
    scalar = compute_gae(rewards, values, mask, gamma=0.97, lam=0.9)
    per_row = compute_gae(rewards, values, mask, gamma=0.97, lam=torch.full((batch,), 0.9, dtype=DTYPE))
    assert_close(per_row[0], scalar[0], rtol=0, atol=0)


@pytest.mark.parametrize("value_lam", [1.0, 0.5])
def test_decoupled_gae_matches_two_loops(value_lam):
    generator = torch.Generator().manual_seed(21)
    batch, length = 8, 7
    rewards = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    values = torch.randn(batch, length, generator=generator, dtype=DTYPE)
    mask = random_prefix_mask(generator, batch, length, min_len=1)
    policy_lam = torch.rand(batch, generator=generator, dtype=DTYPE)
    advantages, returns = compute_decoupled_gae(rewards, values, mask, gamma=1.0, lam=policy_lam, value_lam=value_lam)
    expected_advantages, _ = naive_gae(rewards, values, mask, 1.0, policy_lam.tolist())
    _, expected_returns = naive_gae(rewards, values, mask, 1.0, value_lam)
    assert_close(advantages, expected_advantages)
    assert_close(returns, expected_returns)
    if value_lam == 1.0:  # VC-PPO's critic targets: the Monte-Carlo reward-to-go, whatever the critic says
        assert_close(returns, (rewards * mask).flip(1).cumsum(1).flip(1) * mask)
    # the same lambda for both is plain GAE
    same = compute_decoupled_gae(rewards, values, mask, gamma=1.0, lam=0.95, value_lam=0.95)
    plain = compute_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert_close(same[0], plain[0], rtol=0, atol=0)
    assert_close(same[1], plain[1], rtol=0, atol=0)


def test_decoupled_gae_hand_example():
    # one sequence, L = 1, gamma = 1: delta = [0 + 2 - 1, 1 + 0 - 2] = [1, -1]
    # policy lam = 0: A = delta = [1, -1];  critic lam = 1: R = reward-to-go = [1, 1]
    rewards = torch.tensor([[0.0, 1.0]], dtype=DTYPE)
    values = torch.tensor([[1.0, 2.0]], dtype=DTYPE)
    mask = torch.tensor([[True, True]])
    advantages, returns = compute_decoupled_gae(rewards, values, mask, gamma=1.0, lam=0.0, value_lam=1.0)
    assert advantages.tolist() == [[1.0, -1.0]]
    assert returns.tolist() == [[1.0, 1.0]]


# ---------------------------------------------------------------------------------------------------------------------
# Global advantage whitening (REINFORCE++)
# ---------------------------------------------------------------------------------------------------------------------
def naive_global_whiten(shards, masks, shift_mean=True, unbiased=True, eps=1e-8):
    """numpy over the valid entries of every shard pooled, written back into each shard's shape (0 at padding)."""
    pooled = np.concatenate([x.numpy()[m.numpy()] for x, m in zip(shards, masks, strict=True)])
    mean, var = pooled.mean(), pooled.var(ddof=1 if unbiased else 0)
    out = []
    for x, m in zip(shards, masks, strict=True):
        w = (x.numpy() - mean) / np.sqrt(var + eps)
        if not shift_mean:
            w = w + mean
        out.append(torch.from_numpy(w * m.numpy()))
    return out


@pytest.mark.parametrize("shift_mean", [True, False])
@pytest.mark.parametrize("unbiased", [True, False])
def test_masked_whiten_global_single_process_is_masked_whiten(shift_mean, unbiased):
    values, mask = random_values_and_mask(31)
    result = masked_whiten_global(values, mask, shift_mean=shift_mean, unbiased=unbiased)
    assert_close(result, masked_whiten(values, mask, shift_mean=shift_mean, unbiased=unbiased))
    assert_close(result, naive_global_whiten([values], [mask], shift_mean, unbiased)[0])


@pytest.mark.parametrize("rows", [(3, 3, 3), (1, 6, 2), (0, 4, 5)])
def test_masked_whiten_global_pools_every_process(rows):
    """Shards of different sizes and distributions: every rank gets the whitening of the pooled batch, which a
    per-process `masked_whiten` does not give."""
    generator = torch.Generator().manual_seed(sum(rows))
    shards = [3.0 * r + (1 + r) * torch.randn(n, 7, generator=generator, dtype=DTYPE) for r, n in enumerate(rows)]
    masks = [random_prefix_mask(generator, n, 7, min_len=1) for n in rows]
    group = FakeProcessGroup(len(rows))

    def whiten(shard_and_mask, all_reduce_sum):
        return masked_whiten_global(*shard_and_mask, all_reduce_sum=all_reduce_sum)

    results = group.run(whiten, list(zip(shards, masks, strict=True)))
    for result, expected in zip(results, naive_global_whiten(shards, masks), strict=True):
        assert_close(result, expected)
    assert group.calls == [2] * len(rows)
    big = max(range(len(rows)), key=lambda r: rows[r])
    assert not torch.allclose(results[big], masked_whiten(shards[big], masks[big]))


def test_masked_whiten_global_needs_two_values():
    with pytest.raises(ValueError, match="at least 2"):
        masked_whiten_global(torch.ones(1, 3), torch.tensor([[True, False, False]]))


# ---------------------------------------------------------------------------------------------------------------------
# Explained variance
# ---------------------------------------------------------------------------------------------------------------------
def test_explained_variance_matches_numpy():
    generator = torch.Generator().manual_seed(11)
    targets = torch.randn(6, 8, generator=generator, dtype=DTYPE) * 2
    predictions = targets + 0.5 * torch.randn(6, 8, generator=generator, dtype=DTYPE)
    mask = torch.rand(6, 8, generator=generator) < 0.7
    y, v = targets.numpy()[mask.numpy()], predictions.numpy()[mask.numpy()]
    expected = 1.0 - np.var(y - v) / np.var(y)
    result = explained_variance(predictions, targets, mask)
    assert_close(result, torch.tensor(expected, dtype=DTYPE))
    assert 0.0 < result.item() < 1.0
    assert explained_variance(targets, targets, mask).item() == pytest.approx(1.0)


def naive_explained_variance(predictions, targets, mask):
    """Loop twin: 1 - Var[y - v] / Var[y] over the masked positions, population variances, in Python floats."""
    pairs = [(predictions[i, j].item(), targets[i, j].item()) for i in range(mask.size(0)) for j in range(mask.size(1))
             if mask[i, j]]  # fmt: skip

    def var(xs):
        mean = sum(xs) / len(xs)
        return sum((x - mean) ** 2 for x in xs) / len(xs)

    return 1.0 - var([y - v for v, y in pairs]) / var([y for _, y in pairs])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_explained_variance_matches_a_loop_and_is_nan_without_return_variance(dtype):
    generator = torch.Generator().manual_seed(12)
    values = torch.randn(4, 7, generator=generator, dtype=dtype)
    returns = values + 0.3 * torch.randn(4, 7, generator=generator, dtype=dtype)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor([7, 2, 5, 1]).unsqueeze(1)
    result = explained_variance(values, returns, mask)
    assert result.dtype == dtype
    assert result.item() == pytest.approx(naive_explained_variance(values, returns, mask), rel=1e-5, abs=1e-6)
    # every return equal (binary rewards, all 0): undefined, NaN, however good or bad the values
    for level in (0.0, 1.0, -3.5):
        equal = torch.full_like(returns, level)
        assert math.isnan(explained_variance(values, equal, mask).item())
        assert math.isnan(explained_variance(equal, equal, mask).item())
    # equal up to rounding: with gamma = lam = 1 and zero rewards, GAE's returns are V + (0 - V) telescoped, which
    # leaves rounding noise of the size of eps |V|, not a variance (it used to give about -1e13)
    rewards = torch.zeros_like(values)
    advantages = torch.zeros_like(values)
    last = torch.zeros(4, dtype=dtype)
    for t in reversed(range(7)):
        next_value = values[:, t + 1] if t + 1 < 7 else torch.zeros(4, dtype=dtype)
        last = rewards[:, t] + next_value - values[:, t] + last
        advantages[:, t] = last
    noisy = advantages + values
    full = torch.ones_like(mask)
    assert 0 < noisy.var().item()  # not exactly equal: the tolerance is what makes it NaN
    assert math.isnan(explained_variance(values, noisy, full).item())
    # a small but real spread of the returns (std 1e-2 of their scale) is well defined
    spread = 1.0 + 1e-2 * torch.randn(4, 7, generator=generator, dtype=dtype)
    assert explained_variance(values, spread, mask).item() == pytest.approx(
        naive_explained_variance(values, spread, mask), rel=1e-4
    )
    # no valid position: NaN
    assert math.isnan(explained_variance(values, returns, torch.zeros_like(mask)).item())


# ---------------------------------------------------------------------------------------------------------------------
# Collapse monitor
# ---------------------------------------------------------------------------------------------------------------------
def collapse_warning_steps(monitor, shares, kls):
    """Which steps warned about what: {"off": [...], "length": [...], "kl": [...]}."""
    found = {"off": [], "length": [], "kl": []}
    for step, (share, kl) in enumerate(zip(shares, kls, strict=True), start=1):
        for message in monitor.check(step, share, kl, response_length=24):
            kind = "off" if "monitor is off" in message else "length" if "stop token" in message else "kl"
            assert message.startswith(f"Step {step}: ")
            found[kind].append(step)
    return found


def test_collapse_monitor_warns_once_per_excursion():
    shares = [0.2, 0.95, 1.0, 1.0, 0.5, 0.92, 0.3]
    kls = [0.0, 1.5, 2.0, 0.5, 0.9, 1.2, 1.01]
    # naive twin: a warning wherever the signal is on and was off (or absent) one step before
    length_on = [share >= 0.9 for share in shares]
    kl_on = [kl > 1.0 for kl in kls]
    rising = lambda on: [i + 1 for i, v in enumerate(on) if v and (i == 0 or not on[i - 1])]  # noqa: E731
    found = collapse_warning_steps(CollapseMonitor(0.9, 1.0), shares, kls)
    assert found == {"off": [], "length": rising(length_on), "kl": rising(kl_on)}
    assert found["length"] == [2, 6] and found["kl"] == [2, 6]


def test_collapse_monitor_length_signal_is_judged_against_the_first_update():
    # responses already hit the cap before training: one notice, no length warnings, the KL monitor stays on
    found = collapse_warning_steps(CollapseMonitor(0.9, 1.0), [0.95, 0.5, 1.0, 1.0], [0.0, 0.0, 3.0, 3.0])
    assert found == {"off": [1], "length": [], "kl": [3]}
    # most responses already capped (a model that rarely stops within the cap): 80% -> 100% is noise, not collapse
    found = collapse_warning_steps(CollapseMonitor(0.9, 1.0), [0.8, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    assert found == {"off": [1], "length": [], "kl": []}
    # no stop token: every response runs to the cap by construction, so the length signal is never judged
    found = collapse_warning_steps(CollapseMonitor(0.9, 1.0, watch_length=False), [1.0, 1.0], [0.0, 0.0])
    assert found == {"off": [], "length": [], "kl": []}


def test_collapse_monitor_state_survives_a_checkpoint():
    first = CollapseMonitor(0.9, 1.0)
    first.check(1, 1.0, 0.0, response_length=24)  # the off notice
    resumed = CollapseMonitor(0.9, 1.0)
    resumed.load_state_dict(first.state_dict())
    assert collapse_warning_steps(resumed, [1.0, 1.0], [0.0, 0.0]) == {"off": [], "length": [], "kl": []}
    # a checkpoint without the state (written before the monitor kept any) takes the next update as its baseline
    legacy = CollapseMonitor(0.9, 1.0)
    legacy.load_state_dict({})
    assert collapse_warning_steps(legacy, [0.1, 1.0], [0.0, 0.0])["length"] == [2]


# ----------------------------------------------------------------------------------------------------------------------
# Reward-model readout position (issue 11, defect 5)
# ----------------------------------------------------------------------------------------------------------------------
def naive_readout_indices(input_ids, attention_mask, pad_token_id):
    """Per-row loop: the rightmost attended token that is not the pad id, else the rightmost attended position."""
    found = []
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        attended = [t for t, m in enumerate(mask) if m]
        readable = [t for t in attended if pad_token_id is None or ids[t] != pad_token_id]
        found.append(readable[-1] if readable else (attended[-1] if attended else -1))
    return torch.tensor(found)


def test_reward_readout_indices_hand_example():
    from ppomax_trl.ppo_utils import reward_readout_indices

    pad = eos = 1  # TRL's RewardTrainer sets pad = EOS when the tokenizer has no pad token
    input_ids = torch.tensor([
        [pad, 5, 6, 7, eos],  # left-padded, ends with EOS: read the token before it
        [5, 6, 7, 8, 9],  # no EOS: the last token
        [5, 6, eos, eos, pad],  # trailing EOS run, then right padding (masked)
        [pad, pad, eos, eos, eos],  # nothing but EOS attended: the last attended position
    ])  # fmt: skip
    attention_mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    assert reward_readout_indices(input_ids, attention_mask, pad).tolist() == [3, 4, 1, 4]
    # pad != EOS (or no pad id): the last attended position, the EOS itself
    assert reward_readout_indices(input_ids, attention_mask, None).tolist() == [4, 4, 3, 4]
    assert reward_readout_indices(input_ids, attention_mask, 0).tolist() == [4, 4, 3, 4]


@pytest.mark.parametrize("pad_token_id", [0, 1, None])
def test_reward_readout_indices_match_loop(pad_token_id):
    from ppomax_trl.ppo_utils import reward_readout_indices

    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, 4, (64, 9), generator=generator)  # ids 0..3: pad-valued tokens are frequent
    lengths = torch.randint(1, 10, (64,), generator=generator)
    starts = torch.randint(0, 9, (64,), generator=generator)
    positions = torch.arange(9)
    # left padding, right padding and both, from random windows [start, start + length) clipped to the row
    attention_mask = ((positions >= starts[:, None]) & (positions < starts[:, None] + lengths[:, None])).long()
    attention_mask[0] = 0  # a row with nothing attended: -1
    found = reward_readout_indices(input_ids, attention_mask, pad_token_id)
    assert found.tolist() == naive_readout_indices(input_ids, attention_mask, pad_token_id).tolist()
    # transformers' rule on each row alone (unpadded): `(arange * (ids != pad)).argmax(-1)`
    for ids, mask, index in zip(input_ids, attention_mask, found, strict=True):
        row = ids[mask.bool()]
        if pad_token_id is not None and (row != pad_token_id).any():
            start = int(mask.nonzero()[0])
            expected = int((torch.arange(len(row)) * (row != pad_token_id)).argmax(-1)) + start
            assert int(index) == expected
