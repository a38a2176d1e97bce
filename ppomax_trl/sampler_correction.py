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
"""The sampler mismatch: vLLM samples with its own kernels, the losses use the training forward's log-probs.

Rollouts are sampled from q (vLLM) but the PPO ratio and the UNA implicit reward are computed for pi_old (the
training engine's recomputed log-probs, as with `transformers.generate`). The truncated importance weight
w = pi_old / q, clipped or masked, re-weights each rollout's loss so that its expectation is under pi_old again
(TRL 1.16 GRPO's `vllm_importance_sampling_*`, the same four modes). Pure functions; the trainer logs `mismatch_stats`.
"""

from __future__ import annotations

import math

import torch


def sampler_importance_weights(
    old_logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    mode: str,
    clip_min: float | None = None,
    clip_max: float | None = None,
) -> torch.Tensor:
    """Importance weights pi_old / q of the sampled tokens, truncated or masked.

        d_t = (log pi_old(a_t) - log q(a_t)) m_t                  (NaN sampler log-probs: d_t = 0)
        token modes:    w_t = exp(d_t)                            -> (B, T)
        sequence modes: w   = exp(sum_t d_t)                      -> (B, 1)
        *_truncate:     w <- clamp(w, C_min, C_max)
        *_mask:         w <- w if C_min <= w <= C_max else 0

    Args:
        old_logprobs, sampler_logprobs (`(B, T)`): the training forward's and the sampler's log-probs of the same
            sampled tokens. mask (`(B, T)` bool): response tokens.
        mode (`str`): `token_truncate`, `token_mask`, `sequence_truncate` or `sequence_mask`.
        clip_min, clip_max (`float`, *optional*): C_min, C_max; `None`: no bound on that side.

    Returns:
        `(B, T)` weights for token modes, `(B, 1)` for sequence modes; no gradient. Padding positions of a token mode
        hold exp(0) = 1 (they are masked out of every loss).
    """
    diff = ((old_logprobs - sampler_logprobs) * mask).detach().float()
    diff = torch.nan_to_num(diff, nan=0.0)
    level, _, rule = mode.partition("_")
    if level == "sequence":
        diff = diff.sum(dim=-1, keepdim=True)
    elif level != "token":
        raise ValueError(f"Unknown importance sampling mode {mode!r}.")
    weights = torch.exp(diff)
    if rule == "truncate":
        return weights if clip_min is None and clip_max is None else torch.clamp(weights, min=clip_min, max=clip_max)
    if rule == "mask":
        low = -math.inf if clip_min is None else clip_min
        high = math.inf if clip_max is None else clip_max
        return weights.masked_fill((weights < low) | (weights > high), 0.0)
    raise ValueError(f"Unknown importance sampling mode {mode!r}.")


def mismatch_stats(
    old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """`|log pi_old - log q|` over the response tokens whose sampler log-prob is known: `mean` and `max` (0 when no
    token qualifies), and the k3 estimate of KL(q || pi_old) per token, `kl` (samples come from q)."""
    delta = old_logprobs - sampler_logprobs
    valid = mask.bool() & ~torch.isnan(delta)
    values = delta[valid].float()
    if values.numel() == 0:
        zero = torch.zeros((), device=old_logprobs.device)
        return {"mean": zero, "max": zero, "kl": zero}
    # k3 with log r = log pi_old - log q, r sampled under q: E_q[r - 1 - log r] = KL(q || pi_old) >= 0 per sample
    return {"mean": values.abs().mean(), "max": values.abs().max(), "kl": (torch.expm1(values) - values).mean()}


__all__ = ["mismatch_stats", "sampler_importance_weights"]
