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
"""Pure PPO(-max) building blocks: masks, masked statistics, running moments, KL estimators and controllers, GAE.

Nothing in this module holds trainer state or talks to an accelerator. The KL controllers and `RunningMoments` are
tiny value objects with an explicit `state_dict` so that a checkpoint can carry them. Equations follow
"Secrets of RLHF in Large Language Models Part I: PPO" (https://huggingface.co/papers/2307.04964), cited as [P].

Shape names: `B` rollout samples, `T` generated positions (response tokens, padding included).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch


# A log-prob that padding positions get; policy and reference share it there, so their log-ratio is exactly 0.
PADDING_LOGPROB = 1.0
# Floor for the running standard deviation: avoids dividing by zero when every score so far is identical.
MIN_RUNNING_STD = 1e-8


def exact_div(numerator: int, denominator: int, what: str) -> int:
    """`numerator // denominator`, raising a `ValueError` that names `what` when the division is not exact."""
    if denominator <= 0 or numerator % denominator != 0:
        raise ValueError(f"{what}: {numerator} is not divisible by {denominator}.")
    return numerator // denominator


# ----------------------------------------------------------------------------------------------------------------------
# Response masks
# ----------------------------------------------------------------------------------------------------------------------
def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first `True` in each row of `bools` `(B, T)`; `T` for rows without one. Returns `(B,)` long."""
    row_len = bools.size(-1)
    positions = torch.arange(row_len, device=bools.device).expand_as(bools)
    return torch.where(bools, positions, torch.full_like(positions, row_len)).min(dim=-1).values


def truncate_after_stop(
    responses: torch.Tensor, *, stop_token_ids: list[int] | None, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut every response after its first stop token, keeping the stop token itself as the last real token.

    Args:
        responses (`torch.Tensor` of shape `(B, T)`): sampled token ids.
        stop_token_ids (`list[int]` or `None`): ids that end a response (EOS and friends). `None` or `[]`: no stop.
        pad_token_id (`int`): id written at every position after the stop.

    Returns:
        `(truncated (B, T), response_mask (B, T) bool, stopped (B,) bool)`. `response_mask[b, t]` is `t <= L_b`, the
        index of the last real token (the stop token when `stopped[b]`, else `T - 1`). A response that is already
        padding from its first position (the generator stopped every sequence earlier) gets `L = -1`.
    """
    batch, length = responses.shape
    if stop_token_ids:
        is_stop = torch.isin(responses, torch.tensor(stop_token_ids, device=responses.device))
    else:
        is_stop = torch.zeros_like(responses, dtype=torch.bool)
    first_stop = first_true_indices(is_stop)  # (B,) T when no stop
    stopped = first_stop < length
    positions = torch.arange(length, device=responses.device).expand(batch, length)
    response_mask = positions <= first_stop.unsqueeze(1)  # stop token included
    # a row that is padding from its first position holds no generated token: L = -1 (empty mask), not T - 1
    empty = ~stopped & (responses == pad_token_id).all(dim=1)  # (B,)
    response_mask &= ~empty.unsqueeze(1)
    truncated = responses.masked_fill(~response_mask, pad_token_id)
    return truncated, response_mask, stopped


def reward_readout_indices(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int | None
) -> torch.Tensor:
    """Position at which a sequence classifier (reward model) reads its score: the last attended non-pad token.

    transformers' `*ForSequenceClassification.forward` pools at `argmax_t(t * [x_t != pad])`, the rightmost token that
    is not `config.pad_token_id`. A reward model trained by TRL's `RewardTrainer` on a tokenizer without a pad token
    has pad = EOS, so it reads the token *before* the EOS, and that is where its head was trained. Restricting the rule
    to attended positions keeps it independent of left or right padding:

        i_b = max{t : m_bt = 1 and x_bt != pad}, or max{t : m_bt = 1} when that set is empty or `pad` is `None`.

    Args:
        input_ids (`torch.Tensor` of shape `(B, S)`): token ids (any value at unattended positions).
        attention_mask (`torch.Tensor` of shape `(B, S)`): 1 for real tokens, 0 for padding.
        pad_token_id (`int` or `None`): the reward model's `config.pad_token_id`.

    Returns:
        `torch.Tensor` of shape `(B,)` (long): the readout index, `-1` for a row with no attended position.
    """
    positions = torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)  # (B, S)
    attended = attention_mask.bool()
    last_attended = torch.where(attended, positions, -1).max(dim=1).values  # (B,)
    if pad_token_id is None:
        return last_attended
    readable = attended & (input_ids != pad_token_id)
    last_readable = torch.where(readable, positions, -1).max(dim=1).values  # (B,)
    return torch.where(last_readable >= 0, last_readable, last_attended)


# ----------------------------------------------------------------------------------------------------------------------
# Masked statistics
# ----------------------------------------------------------------------------------------------------------------------
def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `values` where `mask` is true (any shape; `mask` broadcastable)."""
    masked = values * mask
    return masked.sum() if dim is None else masked.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` over positions where `mask` is true. An empty mask gives 0, not NaN."""
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    """Variance over masked positions: `sum m (x - mean)^2 / (n - 1)` (unbiased) or `/ n`.

    Raises `ValueError` when the unbiased variance is asked of fewer than two valid values.
    """
    count = mask.sum()
    if unbiased and count < 2:
        raise ValueError(
            f"The unbiased variance needs at least 2 valid values, got {int(count)}; use a larger minibatch."
        )
    mean = masked_mean(values, mask)
    sum_sq = masked_sum((values - mean) ** 2, mask)
    return sum_sq / (count - 1) if unbiased else sum_sq / count.clamp(min=1)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8, unbiased: bool = True
) -> torch.Tensor:
    """`(x - mean) / sqrt(var + eps)` with statistics over masked positions; masked-out positions are set to 0.

    `shift_mean=False` adds the mean back (used for rewards, whose level matters). `eps` (default 1e-8, TRL's value)
    keeps a constant input finite.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask, unbiased=unbiased)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def masked_whiten_global(
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    all_reduce_sum=None,
    shift_mean: bool = True,
    eps: float = 1e-8,
    unbiased: bool = True,
) -> torch.Tensor:
    """`masked_whiten` with the mean and variance pooled over every process's batch (REINFORCE++'s global advantage
    normalisation, https://huggingface.co/papers/2501.03262).

        n = sum_p sum m,   mu = (1/n) sum_p sum m x,   var = sum_p sum m (x - mu)^2 / (n - 1)   (or / n)
        x' = (x - mu) / sqrt(var + eps),   0 where m = 0

    Args:
        values (`torch.Tensor` of shape `(B, T)`): this process's values (advantages).
        mask (`torch.Tensor` of shape `(B, T)`): valid positions.
        all_reduce_sum (`Callable`, *optional*): returns the elementwise sum of a tensor over all processes (see
            `batch_moments`); `None` (one process) gives exactly the statistics of `masked_whiten`. Two reductions,
            `(sum, count)` then the sum of squared deviations, so the variance is the pooled one, not a sum of local
            ones. Every process must call this function (it is a collective).

    Returns:
        `torch.Tensor` of shape `(B, T)`, the dtype of `values`. The statistics are accumulated in float64.
    """
    reduce = all_reduce_sum or (lambda t: t)
    weights = mask.detach().to(torch.float64)
    values64 = values.detach().to(torch.float64)
    totals = reduce(torch.stack([(values64 * weights).sum(), weights.sum()]).cpu())
    count = totals[1].item()
    if count < (2 if unbiased else 1):
        raise ValueError(
            f"Global whitening needs at least {2 if unbiased else 1} valid values over all processes, got {int(count)}."
        )
    mean = totals[0].item() / count
    sum_sq = reduce((((values64 - mean) ** 2) * weights).sum().reshape(1).cpu()).item()
    var = sum_sq / (count - 1) if unbiased else sum_sq / count
    whitened = (values - mean) / math.sqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# ----------------------------------------------------------------------------------------------------------------------
# Running moments of the reward-model score ([P] §5.3.1, Eq. 18)
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class RunningMoments:
    """Exact mean and population variance of every score seen so far: `(mean, var, count)`, kept in float64.

    Start: `(0, 1, 0)`. `count = 0` is a weightless prior, so the first merge returns the batch's own moments.
    """

    mean: float = 0.0
    var: float = 1.0
    count: float = 0.0

    @property
    def std(self) -> float:
        """Unbiased (Bessel-corrected) standard deviation of the history, floored at `MIN_RUNNING_STD`.

        With at most one score seen the std is undefined; 1.0 is returned so that `scale` leaves that score as is
        instead of multiplying it by 1/MIN_RUNNING_STD.
        """
        if self.count <= 1:
            return 1.0
        return max(math.sqrt(self.var * self.count / (self.count - 1)), MIN_RUNNING_STD)

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, float]) -> RunningMoments:
        return cls(**{key: float(state[key]) for key in ("mean", "var", "count")})


@dataclass
class CollapseMonitor:
    """The paper's pattern-collapse signature ([P] §5.2) as warnings: length pinned at the cap, per-token KL spiking.

    `check` returns the warnings for one update. Each fires when its signal turns on and again only after it has
    cleared, so a run that stays collapsed prints one line, not one per update (the metrics keep the curve). The
    length signal is judged against the first update checked: it is watched only when most responses stopped there
    (at most half the threshold's share ran to the cap). Otherwise the cap, not the model, ends most responses
    (plain-text continuation that rarely emits the stop token within `response_length`), a rise to the threshold is
    within the sampling noise of a small batch and says nothing about collapse: the monitor says so once and watches
    the KL alone. Without a stop token (`watch_length=False`) every response runs to the cap and the length signal is
    off.
    """

    max_length_share: float
    kl_threshold: float
    watch_length: bool = True
    initial_max_length_share: float | None = None
    active: set[str] = field(default_factory=set)

    def check(self, step: int, max_length_share: float, kl_per_token: float, response_length: int) -> list[str]:
        warnings = []
        if self.initial_max_length_share is None:
            self.initial_max_length_share = max_length_share
            if self.watch_length and not self._length_baseline_ok():
                warnings.append(
                    f"Step {step}: {max_length_share:.0%} of responses already run to response_length="
                    f"{response_length} before training moves the policy, so the length collapse monitor is off for "
                    "this run (the KL monitor stays on). Raise `response_length` or use a stop token the model "
                    "emits to watch length too."
                )
        length_on = self.watch_length and self._length_baseline_ok() and max_length_share >= self.max_length_share
        if self._turned_on("length", length_on):
            warnings.append(
                f"Step {step}: {max_length_share:.0%} of responses ran to response_length={response_length} without "
                f"a stop token (collapse signature; first update: {self.initial_max_length_share:.0%}). Check "
                "samples; `ppomax/max_length_share` tracks it and this warning repeats only after it clears."
            )
        if self._turned_on("kl", kl_per_token > self.kl_threshold):
            warnings.append(
                f"Step {step}: per-token KL to the reference is {kl_per_token:.3f} nats > collapse_kl_threshold="
                f"{self.kl_threshold}. The policy is drifting; consider a stronger KL constraint (`kl_coef`, or "
                "`beta` for UNA) or an earlier checkpoint. `ppomax/kl_per_token` tracks it and this warning repeats "
                "only after it falls back."
            )
        return warnings

    def _length_baseline_ok(self) -> bool:
        """Whether the first update's responses mostly stopped, so that a pinned length would mean collapse."""
        return self.initial_max_length_share <= self.max_length_share / 2

    def _turned_on(self, signal: str, on: bool) -> bool:
        was_on = signal in self.active
        if on:
            self.active.add(signal)
        else:
            self.active.discard(signal)
        return on and not was_on

    def state_dict(self) -> dict[str, float | None]:
        """The first update's share: what a resumed run must keep judging against (warning state starts fresh)."""
        return {"initial_max_length_share": self.initial_max_length_share}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.initial_max_length_share = state.get("initial_max_length_share")


def batch_moments(scores: torch.Tensor, all_reduce_sum=None) -> tuple[float, float, int]:
    """Mean, population variance and count of `scores` `(B,)`, pooled over processes when `all_reduce_sum` is given.

    `all_reduce_sum(t)` must return the elementwise sum of `t` over all processes (identity for one process). Two
    reductions: `(sum, count)` first, then `sum (r - mean_b)^2`, so the variance is exact, not a sum of local ones.
    """
    reduce = all_reduce_sum or (lambda t: t)
    scores = scores.detach().to(torch.float64).flatten()
    totals = reduce(torch.stack([scores.sum(), torch.tensor(float(scores.numel()), dtype=torch.float64)]))
    count = int(totals[1].item())
    if count == 0:
        raise ValueError("Cannot compute the moments of an empty batch of scores.")
    mean = totals[0].item() / count
    sum_sq = reduce(((scores - mean) ** 2).sum().reshape(1))
    return mean, sum_sq.item() / count, count


def merge_moments(state: RunningMoments, batch_mean: float, batch_var: float, batch_count: int) -> RunningMoments:
    """Chan et al.'s exact parallel merge of a batch into the running state (not Welford per sample, not an EMA).

    d = mu_b - mu,  n' = n + m,  mu' = mu + d m / n',  M2 = var n + var_b m + d^2 n m / n',  var' = M2 / n'
    """
    new_count = state.count + batch_count
    delta = batch_mean - state.mean
    new_mean = state.mean + delta * batch_count / new_count
    m2 = state.var * state.count + batch_var * batch_count + delta**2 * state.count * batch_count / new_count
    return RunningMoments(mean=new_mean, var=m2 / new_count, count=new_count)


RewardNormalization = Literal["none", "scale", "normalize"]


def reparameterize_scores(
    scores: torch.Tensor, *, mean: float, std: float, mode: RewardNormalization, clip: float | None
) -> torch.Tensor:
    """[P] Eq. 18: `normalize`: (r - mu) / sigma; `scale`: r / sigma; `none`: r. Then clip to `[-clip, clip]`.

    Args:
        scores (`torch.Tensor` of shape `(B,)`): raw reward-model scores.
        mean, std (`float`): running moments *after* merging this batch.
        clip (`float` or `None`): `None` disables clipping.
    """
    if mode == "normalize":
        scores = (scores - mean) / std
    elif mode == "scale":
        scores = scores / std
    elif mode != "none":
        raise ValueError(f"Unknown reward normalization {mode!r}; use 'none', 'scale' or 'normalize'.")
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores


# ----------------------------------------------------------------------------------------------------------------------
# KL estimators and controllers
# ----------------------------------------------------------------------------------------------------------------------
KLEstimator = Literal["k1", "k2", "k3"]


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(pi_old || pi_ref) from sampled tokens (http://joschu.net/blog/kl-approx.html).

    With l = log pi_old(a) - log pi_ref(a), shapes `(B, T)`:
    `k1 = l` (unbiased, can be negative), `k2 = l^2 / 2`, `k3 = exp(-l) - 1 + l` (unbiased, >= 0).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        # exp(-l) overflows for very negative l; the clamp only touches ratios that are already degenerate
        return torch.expm1(-log_ratio.clamp(min=-20.0)) + log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}; use 'k1', 'k2' or 'k3'.")


@dataclass
class FixedKLController:
    """A constant KL coefficient (PPO-max: [P] Eq. 19 with a fixed eta)."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        """A fixed coefficient ignores the observed KL."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    """Ziegler et al. (https://huggingface.co/papers/1909.08593) proportional controller on the per-sequence KL.

    e = clip(KL / target - 1, -0.2, 0.2),   value <- value * (1 + e * n_steps / horizon)
    """

    value: float
    target: float
    horizon: float

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value, self.target, self.horizon = (float(state[k]) for k in ("value", "target", "horizon"))


# ----------------------------------------------------------------------------------------------------------------------
# Token rewards and GAE ([P] §3.1 and Eq. 19)
# ----------------------------------------------------------------------------------------------------------------------
def last_token_indices(response_mask: torch.Tensor) -> torch.Tensor:
    """Index L of the last real response token per row of `response_mask` `(B, T)`; `-1` for an empty response."""
    return response_mask.long().sum(dim=1) - 1


def token_rewards(
    per_token_kl: torch.Tensor, scores: torch.Tensor, response_mask: torch.Tensor, *, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """r_t = -eta k(l_t) for t <= L, plus the (shaped) score at t = L; 0 after L.

    Args:
        per_token_kl (`(B, T)`), scores (`(B,)`), response_mask (`(B, T)` bool).

    Returns:
        `(rewards (B, T), non_score_rewards (B, T))`, both zero at padding.
    """
    non_score_rewards = -kl_coef * per_token_kl * response_mask
    rewards = non_score_rewards.clone()
    last = last_token_indices(response_mask).clamp(min=0)
    has_tokens = response_mask.any(dim=1)
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype) * has_tokens
    return rewards, non_score_rewards


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    gamma: float,
    lam: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation per sequence over its valid positions 0..L.

        delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lam_b A_{t+1},   V_{L+1} = A_{L+1} = 0
        R_t = A_t + V_t   (value targets, never normalised)

    Args:
        rewards, values (`(B, T)`): `values[:, t]` is the critic at the token preceding action t (rollout time).
        response_mask (`(B, T)` bool): true on 0..L. Everything after L is ignored and returned as 0.
        gamma (`float`): discount.
        lam (`float` or `torch.Tensor` of shape `(B,)`): GAE lambda, one for the batch or one per sequence (VAPO's
            length-adaptive lambda, see `length_adaptive_lam`).

    Returns:
        `(advantages (B, T), returns (B, T))`.
    """
    mask = response_mask.to(values.dtype)
    values = values * mask  # V_{L+1} = 0: no bootstrap after the last token
    rewards = rewards * mask
    length = rewards.size(1)
    if isinstance(lam, torch.Tensor):
        lam = lam.to(device=values.device, dtype=values.dtype)  # (B,)
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(next_advantage)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        # masking resets the recursion at padding, so a padded row behaves like a shorter sequence
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
    returns = (advantages + values) * mask
    return advantages, returns


def length_adaptive_lam(response_mask: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """VAPO's length-adaptive policy lambda (https://huggingface.co/papers/2504.05118), one per sequence.

        lam_b = clip(1 - 1 / (alpha * l_b), 0, 1),   l_b = sum_t m_bt (the response length)

    A long response gets a lambda near 1 (low-bias advantages that reach its early tokens), a short one a smaller
    lambda (lower variance). The clip keeps lambda a valid GAE parameter for `l_b <= 1 / alpha`, where the formula goes
    negative (VAPO uses alpha = 0.05, so responses of up to 20 tokens get lambda = 0, i.e. one-step TD advantages).

    Args:
        response_mask (`torch.Tensor` of shape `(B, T)`): valid response positions.
        alpha (`float`): > 0.

    Returns:
        `torch.Tensor` of shape `(B,)`, float32 (float64 if the mask is float64).
    """
    if alpha <= 0:
        raise ValueError(f"`alpha` must be > 0, got {alpha}.")
    dtype = torch.float64 if response_mask.dtype == torch.float64 else torch.float32
    lengths = response_mask.to(dtype).sum(dim=-1).clamp(min=1.0)  # (B,); an empty response has no token to weigh
    return (1.0 - 1.0 / (alpha * lengths)).clamp(0.0, 1.0)


def compute_decoupled_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    gamma: float,
    lam: float | torch.Tensor,
    value_lam: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE with one lambda for the policy's advantages and another for the critic's targets (VC-PPO's decoupled GAE,
    https://huggingface.co/papers/2503.01491; VAPO keeps it).

        A = GAE(r, V; gamma, lam),   R = GAE(r, V; gamma, value_lam) + V

    `value_lam = 1` makes R the discounted Monte-Carlo return `sum_{k >= t} gamma^(k-t) r_k`, an unbiased target that
    does not lean on the critic being fitted; `value_lam = lam` is plain `compute_gae`.

    Args:
        rewards, values, response_mask (`(B, T)`): as in `compute_gae`.
        lam, value_lam (`float` or `torch.Tensor` of shape `(B,)`): the policy's and the critic's lambda.

    Returns:
        `(advantages (B, T), returns (B, T))`.
    """
    advantages, returns = compute_gae(rewards, values, response_mask, gamma=gamma, lam=lam)
    same_lambda = isinstance(lam, float) and isinstance(value_lam, float) and lam == value_lam
    if not same_lambda:
        _, returns = compute_gae(rewards, values, response_mask, gamma=gamma, lam=value_lam)
    return advantages, returns


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Explained variance of the values v as predictors of the returns y (TRL 1.12's `val/explained_variance`):

        EV = 1 - Var[y - v] / Var[y]    over the masked positions, population variances

    `predictions` v, `targets` y and `mask` are `(B, T)`; the result is a 0-d tensor of y's dtype. EV is undefined,
    NaN, when the returns do not vary: `Var[y] <= eps s^2`, with eps the dtype's machine epsilon and s the largest
    |y| or |v| over the masked positions (equivalently: the returns' std is at most sqrt(eps) s, 3.5e-4 s in
    float32). The scale includes v because returns are computed from the values (y = A + v): returns that are equal
    in exact arithmetic (e.g. all-zero binary rewards with gamma = lam = 1) keep rounding noise of size eps |v|, whose
    variance in the ratio would read as an EV of about -1e13. No valid position: NaN.
    """
    mask = mask.bool()
    var_targets = masked_var(targets, mask, unbiased=False)
    var_residual = masked_var(targets - predictions, mask, unbiased=False)
    scale = torch.where(mask, torch.maximum(targets.abs(), predictions.abs()), 0).amax() if mask.numel() else 0
    defined = var_targets > torch.finfo(targets.dtype).eps * scale**2
    return torch.where(defined, 1.0 - var_residual / var_targets, torch.nan).to(targets.dtype)
