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
(https://huggingface.co/papers/2307.04964 §2.10 of our spec; TRL 1.12 averaged per micro-batch instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .ppo_utils import masked_sum


# log-ratios beyond this are degenerate; clamping before exp keeps the ratio finite where gradients still flow
MAX_LOG_RATIO = 20.0


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange: float,
    num_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate objective (https://huggingface.co/papers/1707.06347).

        rho_t = exp(log pi_theta(a_t) - log pi_old(a_t))
        L_pg  = (1/N) sum_t m_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))

    Args:
        logprobs (`(B, T)`): log pi_theta of the sampled tokens (with gradient).
        old_logprobs, advantages (`(B, T)`): rollout-time values, no gradient.
        mask (`(B, T)` bool): valid response tokens.
        cliprange (`float`): eps.
        num_tokens: N; defaults to `mask.sum()` (the token mean of this batch).

    Returns:
        `loss` and detached diagnostics: `clipfrac` (share of tokens where the clipped branch wins), `approxkl`
        (`0.5 mean (log rho)^2`, TRL's k2 form), `approxkl_k3` (`mean (rho - 1) - log rho`), `ratio_mean`, `ratio_var`.
    """
    mask = mask.to(logprobs.dtype)
    count = mask.sum() if num_tokens is None else num_tokens
    log_ratio = (logprobs - old_logprobs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_sum(torch.maximum(unclipped, clipped), mask) / count
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
    logits: torch.Tensor, mask: torch.Tensor, *, num_tokens: float | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative mean token entropy `-(1/N) sum_t m_t H(pi(.|s_t))` and the per-token entropy `(B, T)` (detached).

    `H = logsumexp(z) - sum softmax(z) z` for logits `z` `(B, T, V)`.
    """
    mask = mask.to(logits.dtype)
    count = mask.sum() if num_tokens is None else num_tokens
    per_token_entropy = torch.logsumexp(logits, dim=-1) - (F.softmax(logits, dim=-1) * logits).sum(dim=-1)
    return -masked_sum(per_token_entropy, mask) / count, per_token_entropy.detach()


def language_modeling_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-ptx term ([P] Eq. 17): `-(1/N_ptx) sum_k log pi(u_k | u_<k)` over target tokens.

    Args:
        logits (`(B, S, V)`): policy logits for the ptx batch.
        labels (`(B, S)`): token ids, `ignore_index` where no loss is wanted; shifted here (position s predicts s+1).

    Returns:
        `loss` and detached `accuracy` (greedy next-token accuracy over target tokens).
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    target_mask = shift_labels != ignore_index
    if not target_mask.any():
        raise ValueError("The ptx batch has no target tokens; every label is `ignore_index`.")
    safe_labels = shift_labels.masked_fill(~target_mask, 0)
    token_logprobs = torch.gather(shift_logits.log_softmax(-1), -1, safe_labels.unsqueeze(-1)).squeeze(-1)
    loss = -masked_sum(token_logprobs, target_mask) / target_mask.sum()
    with torch.no_grad():
        accuracy = ((shift_logits.argmax(-1) == shift_labels) & target_mask).sum() / target_mask.sum()
    return loss, {"accuracy": accuracy}
