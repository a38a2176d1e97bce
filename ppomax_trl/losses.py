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
"""Loss functions. Each takes tensors plus keyword-only hyperparameters and returns `(loss, diagnostics)`.

PPO losses reduce as a token sum divided by `num_tokens`, the response-token count of the *whole* minibatch, so a
minibatch split into gradient-accumulation micro-batches gives exactly the minibatch's token mean
(https://huggingface.co/papers/2307.04964 §2.10 of our spec; TRL 1.12 averaged per micro-batch instead). The policy
loss can also be reduced per sequence (`aggregate_loss`, verl's `loss_agg_mode` names plus Dr. GRPO's), again over
the whole minibatch's sequence count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .ppo_utils import masked_sum


# log-ratios beyond this are degenerate; clamping before exp keeps the ratio finite where gradients still flow
MAX_LOG_RATIO = 20.0


LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm", "dr-grpo")


def aggregate_loss(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    mode: str = "token-mean",
    num_tokens: float | torch.Tensor | None = None,
    num_sequences: float | torch.Tensor | None = None,
    norm_length: float | None = None,
    num_processes: int = 1,
) -> torch.Tensor:
    """Reduce a per-token loss `(B, T)` to a scalar; the first four modes are verl's `loss_agg_mode`
    (`agg_loss` in verl/trainer/ppo/core_algos.py), the last is TRL GRPO's `loss_type="dr_grpo"`.

        token-mean               (1/N) sum_b sum_t m_bt l_bt
        seq-mean-token-mean      (1/S) sum_b (1/L_b) sum_t m_bt l_bt
        seq-mean-token-sum       (1/S) sum_b sum_t m_bt l_bt
        seq-mean-token-sum-norm  (P/C) sum_b sum_t m_bt l_bt       (verl: no sequence count)
        dr-grpo                  (1/(S C)) sum_b sum_t m_bt l_bt   (Dr. GRPO, https://huggingface.co/papers/2503.20783)

    with L_b = sum_t m_bt, so `seq-mean-token-sum-norm` = S x `dr-grpo` over the same minibatch. A trainer that splits
    a minibatch over micro-batches and P processes passes the minibatch's N (tokens) and S (sequences) divided by P
    and P itself: DDP averages gradients over processes, so the accumulated micro-batch losses, averaged over
    processes, are the minibatch's loss whatever the split. 1/L_b and C are per row or constant; the count-free
    `seq-mean-token-sum-norm` multiplies by P. (verl applies it per micro-batch, so there its effective normaliser
    depends on the split: see `PPOConfig.loss_agg_mode`.)

    Args:
        per_token_loss (`torch.Tensor` of shape `(B, T)`): l.
        mask (`torch.Tensor` of shape `(B, T)`): valid tokens m.
        mode (`str`): one of `LOSS_AGG_MODES`.
        num_tokens: N; default `mask.sum()`.
        num_sequences: S; default the number of rows with at least one valid token (an empty row adds 0 to the sum
            and is not counted).
        norm_length (`float`, *optional*): C; default `T`, the padded width. A trainer passes a constant (the maximum
            response length), so that the normaliser does not move with the batch's longest response.
        num_processes (`int`): P, used by `seq-mean-token-sum-norm` only; 1 for a loss computed in one process.
    """
    mask = mask.to(per_token_loss.dtype)
    if mode == "token-mean":
        count = mask.sum() if num_tokens is None else num_tokens
        return masked_sum(per_token_loss, mask) / count
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"Unknown loss aggregation mode {mode!r}; use one of {LOSS_AGG_MODES}.")
    lengths = mask.sum(dim=-1)  # (B,)
    sequences = (lengths > 0).sum() if num_sequences is None else num_sequences
    per_sequence = masked_sum(per_token_loss, mask, dim=-1)  # (B,) token sums
    if mode == "seq-mean-token-mean":
        return (per_sequence / lengths.clamp(min=1)).sum() / sequences
    if mode == "seq-mean-token-sum":
        return per_sequence.sum() / sequences
    constant = mask.size(-1) if norm_length is None else norm_length
    if mode == "seq-mean-token-sum-norm":
        return per_sequence.sum() * num_processes / constant
    return per_sequence.sum() / (sequences * constant)


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange: float,
    cliprange_low: float | None = None,
    cliprange_high: float | None = None,
    dual_clip: float | None = None,
    loss_agg_mode: str = "token-mean",
    num_tokens: float | torch.Tensor | None = None,
    num_sequences: float | torch.Tensor | None = None,
    norm_length: float | None = None,
    num_processes: int = 1,
    importance_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate objective (https://huggingface.co/papers/1707.06347), with optional asymmetric and dual clips.

        rho_t = exp(log pi_theta(a_t) - log pi_old(a_t))
        l_t   = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps_low, 1 + eps_high))
        l_t   = min(l_t, -c A_t)   where A_t < 0, with dual clip c > 1
        L_pg  = aggregate_loss(l, m)   (token-mean: (1/N) sum_t m_t l_t)

    `eps_low = eps_high = cliprange` unless set: DAPO's "clip-higher" (https://huggingface.co/papers/2503.14476)
    raises `eps_high` alone (0.28 vs 0.2) so that low-probability tokens with positive advantage can grow. The dual
    clip (Ye et al., https://huggingface.co/papers/1912.09729) bounds the loss of a negative-advantage token whose
    ratio has run far above 1, which the standard clip leaves unbounded; its gradient is 0 there.

    Args:
        logprobs (`(B, T)`): log pi_theta of the sampled tokens (with gradient).
        old_logprobs, advantages (`(B, T)`): rollout-time values, no gradient.
        mask (`(B, T)` bool): valid response tokens.
        cliprange (`float`): eps, both sides unless overridden.
        cliprange_low, cliprange_high (`float`, *optional*): eps_low, eps_high.
        dual_clip (`float`, *optional*): c > 1; `None` disables it.
        loss_agg_mode, num_tokens, num_sequences, norm_length, num_processes: see `aggregate_loss` (N defaults to
            `mask.sum()`).
        importance_weights (`(B, T)` or `(B, 1)`, *optional*): the sampler correction w (see
            `sampler_correction.sampler_importance_weights`): l_t <- w_t l_t before aggregation. `None`: w = 1.

    Returns:
        `loss` and detached diagnostics: `clipfrac` (share of tokens where the clipped branch wins), `approxkl`
        (`0.5 mean (log rho)^2`, TRL's k2 form), `approxkl_k3` (`mean (rho - 1) - log rho`), `ratio_mean`, `ratio_var`,
        and with a dual clip `dual_clipfrac` (share of tokens held at `-c A`).
    """
    eps_low = cliprange if cliprange_low is None else cliprange_low
    eps_high = cliprange if cliprange_high is None else cliprange_high
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"`dual_clip` must be > 1 (a bound above the clipped loss), got {dual_clip}.")
    mask = mask.to(logprobs.dtype)
    log_ratio = (logprobs - old_logprobs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token_loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        dual_bound = -dual_clip * advantages  # > 0 where A < 0
        dual_active = (advantages < 0) & (per_token_loss > dual_bound)
        per_token_loss = torch.where(dual_active, dual_bound, per_token_loss)
    if importance_weights is not None:
        per_token_loss = per_token_loss * importance_weights.to(per_token_loss.dtype)
    loss = aggregate_loss(
        per_token_loss, mask, mode=loss_agg_mode, num_tokens=num_tokens, num_sequences=num_sequences,
        norm_length=norm_length, num_processes=num_processes,
    )  # fmt: skip
    with torch.no_grad():
        valid = mask.sum().clamp(min=1)
        ratio_mean = masked_sum(ratio, mask) / valid
        stats = {
            "clipfrac": masked_sum((clipped > unclipped).to(mask.dtype), mask) / valid,
            "approxkl": masked_sum(0.5 * log_ratio.square(), mask) / valid,
            "approxkl_k3": masked_sum(torch.expm1(log_ratio) - log_ratio, mask) / valid,
            "ratio_mean": ratio_mean,
            "ratio_var": masked_sum((ratio - ratio_mean).square(), mask) / valid,
        }
        # this batch's loss under its own counts (a micro-batch's loss for logging, whatever N and S it was given)
        stats["batch_loss"] = aggregate_loss(
            per_token_loss.detach(), mask, mode=loss_agg_mode, norm_length=norm_length
        )
        if dual_clip is not None:
            stats["dual_clipfrac"] = masked_sum(dual_active.to(mask.dtype), mask) / valid
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange_value: float | None,
    num_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss around the rollout-time values (absolute units).

        V_clip = V_old + clip(V - V_old, -c, c)
        L_vf   = 0.5 (1/N) sum_t m_t max((V_t - R_t)^2, (V_clip,t - R_t)^2)

    `cliprange_value=None` drops the clipped branch: `0.5 (1/N) sum m (V - R)^2`.

    Returns:
        `loss` and detached `clipfrac` (share of tokens where the clipped branch is larger).
    """
    mask = mask.to(values.dtype)
    count = mask.sum() if num_tokens is None else num_tokens
    unclipped = (values - returns).square()
    if cliprange_value is None:
        loss = 0.5 * masked_sum(unclipped, mask) / count
        return loss, {"clipfrac": torch.zeros((), device=values.device)}
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    clipped = (clipped_values - returns).square()
    loss = 0.5 * masked_sum(torch.maximum(unclipped, clipped), mask) / count
    with torch.no_grad():
        clipfrac = masked_sum((clipped > unclipped).to(mask.dtype), mask) / mask.sum().clamp(min=1)
    return loss, {"clipfrac": clipfrac}


def entropy_bonus_loss(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_tokens: float | torch.Tensor | None = None,
    loss_agg_mode: str = "token-mean",
    num_sequences: float | torch.Tensor | None = None,
    norm_length: float | None = None,
    num_processes: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative mean token entropy `-aggregate_loss(H, m)` (token-mean: `-(1/N) sum_t m_t H(pi(.|s_t))`) and the
    per-token entropy `(B, T)` (detached).

    `H = logsumexp(z) - sum softmax(z) z` for logits `z` `(B, T, V)`. The aggregation arguments are those of
    `aggregate_loss`, so that the bonus is reduced like the policy loss it is added to.
    """
    mask = mask.to(logits.dtype)
    per_token_entropy = torch.logsumexp(logits, dim=-1) - (F.softmax(logits, dim=-1) * logits).sum(dim=-1)
    loss = -aggregate_loss(
        per_token_entropy, mask, mode=loss_agg_mode, num_tokens=num_tokens, num_sequences=num_sequences,
        norm_length=norm_length, num_processes=num_processes,
    )  # fmt: skip
    return loss, per_token_entropy.detach()


def language_modeling_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100, num_tokens: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-ptx term ([P] Eq. 17): `-(1/N_ptx) sum_k log pi(u_k | u_<k)` over target tokens.

    Args:
        logits (`(B, S, V)`): policy logits for the ptx batch.
        labels (`(B, S)`): token ids, `ignore_index` where no loss is wanted; shifted here (position s predicts s+1).
        num_tokens (`torch.Tensor`, *optional*): `N_ptx`, the normaliser. Default: this batch's target tokens. A
            trainer passes the target count of the whole minibatch (all micro-batches and processes), so that the
            loss does not depend on how the minibatch is split.

    Returns:
        `loss` and detached `accuracy` (greedy next-token accuracy over this batch's target tokens).
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    target_mask = shift_labels != ignore_index
    if not target_mask.any():
        raise ValueError("The ptx batch has no target tokens; every label is `ignore_index`.")
    safe_labels = shift_labels.masked_fill(~target_mask, 0)
    token_logprobs = torch.gather(shift_logits.log_softmax(-1), -1, safe_labels.unsqueeze(-1)).squeeze(-1)
    loss = -masked_sum(token_logprobs, target_mask) / (target_mask.sum() if num_tokens is None else num_tokens)
    with torch.no_grad():
        accuracy = ((shift_logits.argmax(-1) == shift_labels) & target_mask).sum() / target_mask.sum()
    return loss, {"accuracy": accuracy}


# ----------------------------------------------------------------------------------------------------------------------
# Rank-list (K-wise) reward-model losses (una_ranklist_spec.md Part B)
# ----------------------------------------------------------------------------------------------------------------------
RANK_LIST_LOSS_TYPES = ("instructgpt", "listmle", "listnet", "sigmoid_no_log")


def _padding_value(dtype: torch.dtype) -> float:
    # A large *finite* negative stands in for -inf in padded slots: exp() of it is exactly 0, yet logcumsumexp and
    # softmax backward stay NaN-free (spec §B.4).
    return torch.finfo(dtype).min / 4


def rank_list_pair_mask(
    mask: torch.Tensor, scores: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gold comparisons of a best-first ranked batch.

    Args:
        mask (`(B, K)` bool): real completions (padding `False`).
        scores (`(B, K)`, *optional*): gold scores, non-increasing over the real slots of each row. Equal scores are a
            tie. `None`: the list order is strict.

    Returns:
        `pairs` `(B, K, K)` bool: `pairs[b, i, j]` when completion i is strictly better than j (so i < j);
        `valid_pairs` `(B, K, K)` bool: every real i < j, tied or not; `tied` `(B, K, K)` bool: real i < j with equal
        scores.

    Raises:
        ValueError: when `scores` are not sorted best first.
    """
    K = mask.shape[-1]
    upper = torch.ones(K, K, dtype=torch.bool, device=mask.device).triu(1)  # (K, K) i < j
    valid_pairs = upper & mask[:, :, None] & mask[:, None, :]  # (B, K, K)
    if scores is None:
        return valid_pairs, valid_pairs, torch.zeros_like(valid_pairs)
    if scores.shape != mask.shape:
        raise ValueError(f"`scores` has shape {tuple(scores.shape)}; expected the mask's shape {tuple(mask.shape)}.")
    gap = scores[:, :, None] - scores[:, None, :]  # (B, K, K) s_i - s_j
    if (valid_pairs & (gap < 0)).any():
        raise ValueError("`scores` must be non-increasing along each list: order the rewards best first.")
    pairs = valid_pairs & (gap > 0)
    return pairs, valid_pairs, valid_pairs & (gap == 0)


def rank_list_loss(
    rewards: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss_type: str = "instructgpt",
    margins: torch.Tensor | None = None,
    *,
    scores: torch.Tensor | None = None,
    listnet_temperature: float = 1.0,
    center_rewards_coefficient: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """K-wise reward-model loss over lists ordered best first.

    A batch element is one prompt with its K_b ranked completions, padded to K = max_b K_b. Pairs (i, j) range over
    the gold comparisons of a list: real slots i < j, minus tied pairs when `scores` are given. Let P_b be their count
    and Delta_ij = r_i - r_j - m_ij.

    - `"instructgpt"` (default; https://huggingface.co/papers/2203.02155 Eq. 1): the mean over pairs, then over lists,

          L = mean_b (1/P_b) sum_(i,j) -log sigma(Delta_ij)

      At K = 2 this is TRL's `RewardTrainer` loss, `-log sigma(r_chosen - r_rejected - margin)`.
    - `"listmle"` (Plackett-Luce negative log-likelihood, https://huggingface.co/papers/2301.11270), summed over
      positions, then averaged over lists:

          L_b = sum_k [ log sum_(j in D_k) exp(r_j) - r_k ],    D_k = {k} + {j : completion j strictly worse than k}

      Without ties D_k = {k, ..., K_b} and this is exact Plackett-Luce, computed with a reverse `logcumsumexp`. At
      K = 2 it equals Bradley-Terry, `-log sigma(r_1 - r_2)`. Tied completions are left out of each other's D_k, so a
      tied pair contributes no comparison, as in the pair losses. The loss grows with K: compare it only at equal K.
    - `"listnet"` (https://huggingface.co/papers/2402.05369 for its use as a preference loss): the cross-entropy
      between the target distribution softmax(t / tau) and softmax(r),

          L_b = - sum_k softmax(t / tau)_k log softmax(r)_k

      with t = `scores` (graded targets, ties natural), or t_k = -k (list positions) when `scores` is `None`. Its
      minimum is the target entropy, not 0; the diagnostic `listnet_kl` subtracts it.
    - `"sigmoid_no_log"` (opt-in; the bounded rank-list tutorial loss of HarderThenHarder/transformers_tasks, with
      our per-prompt normalisation): `L = mean_b (1/P_b) sum_(i,j) -sigma(Delta_ij)`, bounded in (-1, 0). It is **not a
      likelihood**: its gradient vanishes on confidently misordered pairs and its rewards are not calibrated log-odds.
      Use it for noise-robustness ablations only.

    Lists without a gold comparison (a single real completion, or only ties) cannot be ranked: they are left out of
    the mean and counted in `skipped_lists`. A batch in which no list can be ranked raises instead of returning a
    silent zero loss. With `center_rewards_coefficient` c, `c mean_b (2 rbar_b)^2` is added (rbar_b: the mean reward
    of list b), which at K = 2 is TRL's `c mean((r_chosen + r_rejected)^2)` (https://huggingface.co/papers/2312.09244
    Eq. 2).

    Args:
        rewards (`(B, K)`): rewards of the completions, best first; padded slots may hold anything.
        mask (`(B, K)` bool, *optional*): real completions. `None`: every slot is real.
        loss_type (`str`): one of `"instructgpt"`, `"listmle"`, `"listnet"`, `"sigmoid_no_log"`.
        margins (`(B, K, K)`, *optional*): m_ij, read where i is better than j (`"instructgpt"` and
            `"sigmoid_no_log"` only), e.g. `margin_scale * (s_i - s_j)` or TRL's `margin` column at `[:, 0, 1]`.
        scores (`(B, K)`, *optional*): gold scores, non-increasing along each list; equal scores mark ties. The
            targets t of `"listnet"`.
        listnet_temperature (`float`): tau of `"listnet"`.
        center_rewards_coefficient (`float`, *optional*): c above.

    Returns:
        `loss` (scalar) and detached diagnostics: `num_lists` (lists in the mean), `skipped_lists`, `num_pairs` (gold
        comparisons), `tied_pairs`, and `listnet_kl` for `"listnet"`.

    Raises:
        ValueError: for an unknown `loss_type`, `margins` with a list loss, unsorted `scores`, or a batch with no
            rankable list.
    """
    if loss_type not in RANK_LIST_LOSS_TYPES:
        raise ValueError(f"Unknown rank-list loss_type {loss_type!r}; expected one of {RANK_LIST_LOSS_TYPES}.")
    if rewards.dim() != 2:
        raise ValueError(f"`rewards` must be (B, K); got shape {tuple(rewards.shape)}.")
    if margins is not None and loss_type in ("listmle", "listnet"):
        raise ValueError(f"`margins` apply to pair losses only; loss_type={loss_type!r} has no pairs to shift.")
    mask = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    B, K = rewards.shape
    # Zero the padded slots so that whatever they held cannot reach the loss or its gradient through a masked branch.
    rewards = rewards.masked_fill(~mask, 0.0)
    pairs, _, tied = rank_list_pair_mask(mask, scores)  # (B, K, K)
    b_num_pairs = pairs.sum((1, 2))  # (B,) P_b
    if loss_type == "listnet":
        keep = mask.sum(-1) >= 2  # graded targets rank any list of two or more, ties included
    else:
        keep = b_num_pairs > 0  # (B,)
    if not keep.any():
        raise ValueError(
            "No list in the batch has a gold comparison (each has fewer than 2 completions or only tied scores); "
            "filter such lists out of the dataset."
        )
    stats: dict[str, torch.Tensor] = {}

    if loss_type in ("instructgpt", "sigmoid_no_log"):
        delta = rewards[:, :, None] - rewards[:, None, :]  # (B, K, K) r_i - r_j
        if margins is not None:
            delta = delta - margins.to(delta.dtype)
        per_pair = -F.logsigmoid(delta) if loss_type == "instructgpt" else -torch.sigmoid(delta)  # (B, K, K)
        per_pair = torch.where(pairs, per_pair, torch.zeros_like(per_pair))
        per_list = per_pair.sum((1, 2)) / b_num_pairs.clamp(min=1)  # (B,)
    elif loss_type == "listmle":
        neg = _padding_value(rewards.dtype)
        filled = rewards.masked_fill(~mask, neg)  # (B, K)
        # suffix[k] = log sum_{j >= k} exp(r_j); one extra slot (an empty tail) for the last position.
        suffix = torch.logcumsumexp(filled.flip(-1), dim=-1).flip(-1)  # (B, K)
        suffix = torch.cat([suffix, suffix.new_full((B, 1), neg)], dim=-1)  # (B, K + 1)
        positions = torch.arange(K, device=rewards.device)
        if scores is None:
            first_worse = (positions + 1).expand(B, K)  # (B, K) strict order: D_k = {k, ..., K}
        else:
            # Sorted best first, so the completions strictly worse than k are the real slots after k's tie group.
            at_least = mask[:, None, :] & (scores[:, None, :] >= scores[:, :, None])  # (B, K, K) j ranked >= k
            first_worse = (at_least * (positions + 1)).amax(-1).clamp(min=positions + 1)  # (B, K)
        tail = torch.gather(suffix, 1, first_worse)  # (B, K) log sum over strictly worse completions
        log_denominator = torch.logaddexp(filled, tail)  # (B, K) log sum_{j in D_k} exp(r_j)
        per_list = torch.where(mask, log_denominator - filled, torch.zeros_like(filled)).sum(-1)  # (B,)
    else:  # listnet
        neg = _padding_value(rewards.dtype)
        if scores is None:
            targets = -torch.arange(K, device=rewards.device, dtype=rewards.dtype).expand(B, K)  # (B, K) t_k = -k
        else:
            targets = scores.to(rewards.dtype)
        target_logp = (targets / listnet_temperature).masked_fill(~mask, neg).log_softmax(-1)  # (B, K)
        target_p = target_logp.exp() * mask
        logq = rewards.masked_fill(~mask, neg).log_softmax(-1)  # (B, K)
        per_list = -(target_p * torch.where(mask, logq, torch.zeros_like(logq))).sum(-1)  # (B,)
        with torch.no_grad():
            entropy = -(target_p * torch.where(mask, target_logp, torch.zeros_like(target_logp))).sum(-1)  # (B,)
            stats["listnet_kl"] = ((per_list - entropy)[keep]).mean().detach()

    num_lists = keep.sum()
    loss = per_list[keep].sum() / num_lists
    if center_rewards_coefficient is not None:
        b_mean_reward = (rewards * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,) rbar_b
        loss = loss + center_rewards_coefficient * (2 * b_mean_reward[keep]).square().mean()
    stats.update(
        num_lists=num_lists.detach(),
        skipped_lists=(B - num_lists).detach(),
        num_pairs=b_num_pairs[keep].sum().detach(),
        tied_pairs=tied[keep].sum().detach(),
    )
    return loss, stats


# ----------------------------------------------------------------------------------------------------------------------
# UNA losses (una_ranklist_spec.md Part A; https://huggingface.co/papers/2408.15339 v2)
# ----------------------------------------------------------------------------------------------------------------------
UNA_FEEDBACK_TYPES = ("pairwise", "binary", "score")
UNA_LOSS_TYPES = ("mse", "bce")
# Targets of exactly 0 or 1 have an infinite logit; `una/implied_logratio_target` clamps them to [eps, 1 - eps].
UNA_IMPLIED_TARGET_EPS = 1e-3


def una_implicit_reward(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor | None = None, *, beta: float
) -> torch.Tensor:
    """UNA's generalised implicit reward (https://huggingface.co/papers/2408.15339 v2 Eq. 6 with f = c = 0).

        r_theta(x, y) = beta * sum_t m_t (log pi_theta(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t))

    A **sum** over completion tokens: no length normalisation, no per-token reward.

    Args:
        policy_logps, ref_logps: per-token log-probs `(B, T)` with `mask` `(B, T)` (completion tokens), or already
            summed completion log-probs of any shape (`(B,)`, `(B, 2)`) with `mask=None`.
        mask (`(B, T)` bool, *optional*): completion tokens; prompt and padding `False`.
        beta (`float`): beta > 0.

    Returns:
        `(B,)` (per-token input) or the input shape (summed input): r_theta.
    """
    logratio = policy_logps - ref_logps
    if mask is not None:
        # `where`, not a product: a padded position holding -inf must not turn the sum into NaN.
        logratio = torch.where(mask.bool(), logratio, torch.zeros_like(logratio)).sum(-1)  # (B,)
    return beta * logratio


def una_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    beta: float,
    feedback: str,
    loss: str | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """UNA loss for one feedback type, averaged over the examples (https://huggingface.co/papers/2408.15339 v2 §2.3,
    signs corrected as in the released code: the paper's MSE Eqs. 11 and 13 carry a spurious leading minus).

    With the implicit reward r = beta (log pi_theta(y|x) - log pi_ref(y|x)) (summed completion log-probs):

    - `feedback="pairwise"` (Eq. 10 read as the text says, "equivalent to DPO"): exactly DPO's sigmoid loss,

          L = mean_b -log sigma(r_b(x, y_w) - r_b(x, y_l))

      `targets` must be `None`; `loss` must be `None` or `"bce"` (it *is* a BCE on the reward margin with target 1).
    - `feedback="binary"` (Eqs. 11-12), targets s in {0, 1} (1 = desirable):
        - `loss="mse"` (default): `L = mean_b (sigma(r_b) - s_b)^2`; 0.25 per example at pi_theta = pi_ref;
        - `loss="bce"`: `L = mean_b -[s_b log sigma(r_b) + (1 - s_b) log sigma(-r_b)]`; ln 2 at pi_theta = pi_ref.
    - `feedback="score"` (Eq. 13), targets s in [0, 1] (normalised scores): the same two formulas. The paper uses MSE
      only; soft-label BCE (`loss="bce"`) is **not in the paper**, offered as an opt-in.

    BCE uses `logsigmoid(+-r)`, never `log(sigmoid(r))`, so it stays finite for any |r|.

    Args:
        policy_logps, ref_logps: summed completion log-probs, `(B, 2)` for pairwise (column 0 chosen y_w, column 1
            rejected y_l), `(B,)` for binary and score. `policy_logps` carries the gradient.
        targets (`(B,)`, *optional*): s_b for binary ({0, 1}) and score ([0, 1]); `None` for pairwise.
        beta (`float`): beta > 0.
        feedback (`str`): `"pairwise"`, `"binary"` or `"score"`.
        loss (`str`, *optional*): `"mse"` or `"bce"`; `None` is DPO's sigmoid for pairwise and `"mse"` otherwise.
        weights (`(B,)`, *optional*): per-example weights w_b (the sampler correction of online UNA):
            `L = mean_b w_b l_b`. `None`: w = 1.

    Returns:
        `loss` (scalar mean over the B examples) and detached diagnostics: `logratio` (mean summed log-ratio over
        all completions), pairwise `reward_chosen`, `reward_rejected`, `reward_margin`, `reward_accuracy`;
        pointwise `reward` (mean r), `score` (mean sigma(r)), `target` (mean s) and `implied_logratio_target` (mean
        logit(clamp(s, eps, 1 - eps)) / beta: the log-ratio the loss drives r / beta toward, spec §A.3).

    Raises:
        ValueError: for an unknown `feedback` or `loss`, a pairwise MSE, wrong shapes, or targets outside the
            feedback's domain.
    """
    if feedback not in UNA_FEEDBACK_TYPES:
        raise ValueError(f"Unknown UNA feedback {feedback!r}; expected one of {UNA_FEEDBACK_TYPES}.")
    if loss is not None and loss not in UNA_LOSS_TYPES:
        raise ValueError(f"Unknown UNA loss {loss!r}; expected one of {UNA_LOSS_TYPES} (or None).")
    if beta <= 0:
        raise ValueError(f"`beta` must be > 0, got {beta}.")
    if policy_logps.shape != ref_logps.shape:
        raise ValueError(
            f"`policy_logps` {tuple(policy_logps.shape)} and `ref_logps` {tuple(ref_logps.shape)} must match."
        )
    logratio = policy_logps - ref_logps
    rewards = beta * logratio  # (B,) or (B, 2): r_theta
    stats: dict[str, torch.Tensor] = {}

    if feedback == "pairwise":
        if loss == "mse":
            raise ValueError(
                "Pairwise UNA is DPO's sigmoid loss (a BCE on the reward margin); there is no pairwise MSE. "
                "Pass loss=None or 'bce'."
            )
        if targets is not None:
            raise ValueError("Pairwise UNA takes no targets (the chosen completion is preferred); pass targets=None.")
        if rewards.dim() != 2 or rewards.shape[-1] != 2:
            raise ValueError(f"Pairwise log-probs must be (B, 2) = (chosen, rejected); got {tuple(rewards.shape)}.")
        margin = rewards[:, 0] - rewards[:, 1]  # (B,) r(x, y_w) - r(x, y_l)
        per_example = -F.logsigmoid(margin)
        with torch.no_grad():
            stats.update(
                reward_chosen=rewards[:, 0].mean(),
                reward_rejected=rewards[:, 1].mean(),
                reward_margin=margin.mean(),
                reward_accuracy=(margin > 0).to(rewards.dtype).mean(),
            )
    else:
        if rewards.dim() != 1:
            raise ValueError(f"{feedback.capitalize()} log-probs must be (B,); got {tuple(rewards.shape)}.")
        if targets is None or targets.shape != rewards.shape:
            got = None if targets is None else tuple(targets.shape)
            raise ValueError(
                f"{feedback.capitalize()} UNA needs `targets` of shape {tuple(rewards.shape)}; got {got}."
            )
        targets = targets.to(rewards.dtype)
        if feedback == "binary" and not ((targets == 0) | (targets == 1)).all():
            raise ValueError(
                "Binary UNA targets must be 0 or 1 (1 = desirable); use feedback='score' for soft targets."
            )
        if not ((targets >= 0) & (targets <= 1)).all():
            raise ValueError("Score UNA targets must lie in [0, 1]; normalise the raw scores first.")
        if loss in (None, "mse"):
            per_example = (torch.sigmoid(rewards) - targets).square()
        else:
            per_example = -(targets * F.logsigmoid(rewards) + (1 - targets) * F.logsigmoid(-rewards))
        with torch.no_grad():
            clamped = targets.clamp(UNA_IMPLIED_TARGET_EPS, 1 - UNA_IMPLIED_TARGET_EPS)
            stats.update(
                reward=rewards.mean(),
                score=torch.sigmoid(rewards).mean(),
                target=targets.mean(),
                implied_logratio_target=(torch.logit(clamped) / beta).mean(),
            )
    stats["logratio"] = logratio.detach().mean()
    if weights is not None:
        per_example = per_example * weights.to(per_example.dtype)
    return per_example.mean(), stats
