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
"""Generation behind a seam: left-padded prompt ids in, sampled responses out.

A `Generator` turns a batch of left-padded prompt ids and their mask into `Responses`: right-padded response ids cut
after the stop token (kept as the last real token), the response mask, a `stopped` flag per response, and optionally
the sampler's own log-probs (`None` when the sampler reports none). `sync_weights(model)` pushes new policy weights
to the sampler after an update. `HFGenerator` is the `transformers.generate` implementation (a no-op weight sync);
another engine (vLLM) is another `Generator`, and the trainer never knows which one sampled.

This module owns the stop tokens, the sampling settings (softmax(logits / T), top-p, nothing from the model's own
generation config) and the DeepSpeed/PEFT generation contexts. It must not score, compute the rollout's training
log-probs or touch the optimizer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import GenerationConfig
from transformers.utils import logging

from . import ppo_utils as pu
from .modules import _peft_base
from .ppo_config import OnlineRolloutConfig


logger = logging.get_logger(__name__)


@dataclass
class Responses:
    """What a `Generator` returns for `B` prompts: responses right-padded to `T` tokens."""

    ids: torch.Tensor  # (B, T) response ids, pad after the stop token
    mask: torch.Tensor  # (B, T) bool, True up to and including the stop token
    stopped: torch.Tensor  # (B,) bool, whether the response ended with a stop token
    logprobs: torch.Tensor | None = None  # (B, T) the sampler's own log-probs; None when it reports none (HF)


class Generator:
    """The generation seam: `generate` samples one response per prompt, `sync_weights` follows the policy."""

    def generate(
        self,
        model: nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        *,
        temperature: float,
        top_p: float,
    ) -> Responses:
        """Sample one response per left-padded prompt `(B, P)` of the policy held by `model` (the trainer's wrapper)."""
        raise NotImplementedError

    def sync_weights(self, model: nn.Module) -> None:
        """Make the sampler use `model`'s current policy weights (called after every update)."""
        raise NotImplementedError


def resolve_stop_token_ids(args: OnlineRolloutConfig, tokenizer, model: nn.Module | None = None) -> list[int] | None:
    """Ids that end a response: `stop_token='eos'` -> the tokenizer's EOS; `stop_token_id`; else (TRL 1.12, where
    `generate` stopped at the model's EOS) the policy's `generation_config.eos_token_id` (int or list), falling
    back to the tokenizer's EOS. `None` only when neither exists."""
    if args.stop_token == "eos":
        if tokenizer.eos_token_id is None:
            raise ValueError("`stop_token='eos'` but the tokenizer has no EOS token; set `stop_token_id` instead.")
        return [tokenizer.eos_token_id]
    if args.stop_token_id is not None:
        return [args.stop_token_id]
    generation_config = getattr(_peft_base(model), "generation_config", None) if model is not None else None
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return None
    eos = torch.as_tensor(eos).flatten().tolist()  # int, list or tensor
    return list(dict.fromkeys(int(i) for i in eos)) or None


class HFGenerator(Generator):
    """`transformers.generate` on the policy itself, in chunks of `local_rollout_forward_batch_size` prompts.

    The policy is unwrapped for generation (ZeRO-3 parameters gathered when `ds3_gather_for_generation`), put in eval
    mode, and sampled under the training autocast with a generation config that holds only our settings. Weights are
    the policy's own, so `sync_weights` has nothing to do.
    """

    def __init__(self, accelerator, args: OnlineRolloutConfig, pad_token_id: int, stop_token_ids: list[int] | None):
        self.accelerator, self.args = accelerator, args
        self.pad_token_id, self.stop_token_ids = pad_token_id, stop_token_ids

    def sync_weights(self, model: nn.Module) -> None:
        """Nothing to push: `generate` runs on the policy being trained."""

    @contextlib.contextmanager
    def _policy_generation_context(self, model: nn.Module, generation_kwargs: dict):
        """The unwrapped policy in eval mode, its `generation_config` swapped for one holding only `generation_kwargs`
        (plus speed and memory settings) and restored on exit."""
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(
            model, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation
        ) as unwrapped:
            policy = unwrapped.policy
            base = _peft_base(policy)
            own_config = base.generation_config
            # `generate` fills every field we leave unset from the model's own config (repetition penalty, n-gram
            # bans, min length, ...): with only our settings there, sampling is exactly softmax(logits / T) (top-p
            # aside), the distribution that the rollout log-probs, ratios and KL describe
            base.generation_config = self._sampling_generation_config(own_config, generation_kwargs)
            was_training = policy.training
            policy.eval()
            try:
                yield policy
            finally:
                base.generation_config = own_config
                policy.train(was_training)

    # Fields of a model's own generation config that `generate` would apply while sampling, with their neutral values.
    _SAMPLING_PROCESSORS: ClassVar[dict[str, Any]] = {
        "top_k": 0, "typical_p": 1.0, "min_p": None, "top_h": None, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
        "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
        "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "sequence_bias": None, "suppress_tokens": None,
        "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None, "min_length": 0,
        "min_new_tokens": 0, "exponential_decay_length_penalty": None, "renormalize_logits": False,
        "guidance_scale": 1.0, "watermarking_config": None, "num_beams": 1, "penalty_alpha": None,
        "dola_layers": None, "stop_strings": None,
    }  # fmt: skip
    # Fields carried over from the model's own generation config: they change speed or memory, not the distribution.
    _CARRIED_GENERATION_FIELDS: ClassVar[tuple[str, ...]] = (
        "use_cache", "cache_implementation", "cache_config", "compile_config", "disable_compile", "prefill_chunk_size",
    )  # fmt: skip

    @classmethod
    def _sampling_generation_config(cls, own_config: GenerationConfig | None, kwargs: dict) -> GenerationConfig:
        """A fresh `GenerationConfig` with `kwargs` and the model's speed/memory settings, nothing else."""
        config = GenerationConfig(**kwargs)
        for key in cls._CARRIED_GENERATION_FIELDS:
            value = getattr(own_config, key, None)
            if value is not None:
                setattr(config, key, value)
        return config

    @classmethod
    def _ignored_sampling_processors(cls, own_config: GenerationConfig | None) -> dict[str, Any]:
        """The non-neutral `_SAMPLING_PROCESSORS` of a model's own generation config (all ignored by the sampler)."""
        found = {}
        for key, neutral in cls._SAMPLING_PROCESSORS.items():
            value = getattr(own_config, key, None)
            if value is None or value == neutral or (isinstance(value, (list, tuple, dict)) and not value):
                continue
            found[key] = value
        return found

    @classmethod
    def warn_about_sampling(cls, args: OnlineRolloutConfig, model: nn.Module) -> None:
        """Say once, at construction, where rollout sampling is not the model's default or not exactly pi_old."""
        if args.top_p < 1:
            logger.warning(
                f"Rollouts sample with top_p={args.top_p}: the nucleus cut truncates the sampling distribution, while "
                "the rollout and training log-probs use the full softmax(logits / temperature), so each update is "
                "slightly off-policy. Set `top_p=1.0` to sample exactly from the policy."
            )
        if args.top_k > 0:
            logger.warning(
                f"Rollouts sample with top_k={args.top_k}: the cut truncates the sampling distribution, while the "
                "rollout and training log-probs use the full softmax(logits / temperature). Set `top_k=0` to sample "
                "exactly from the policy."
            )
        ignored = cls._ignored_sampling_processors(getattr(_peft_base(model), "generation_config", None))
        if ignored:
            settings = ", ".join(f"{key}={value!r}" for key, value in ignored.items())
            logger.warning(
                f"The policy's own generation_config sets {settings}. Rollouts ignore these and sample from "
                "softmax(logits / temperature) (nucleus-cut by the config's `top_p`), the distribution that the PPO "
                "ratios and the KL penalty are computed for."
            )

    def _generation_kwargs(self, temperature: float, top_p: float) -> dict:
        return {
            "max_new_tokens": self.args.response_length,
            "do_sample": True,
            "temperature": temperature,
            "top_k": self.args.top_k,
            "top_p": top_p,
            "eos_token_id": self.stop_token_ids,
            "pad_token_id": self.pad_token_id,
        }

    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        *,
        temperature: float,
        top_p: float,
    ) -> Responses:
        """Sample one response per prompt, stop at the stop token (kept as the last real token), pad the rest."""
        pad_id = self.pad_token_id
        kwargs = self._generation_kwargs(temperature, top_p)
        chunks = []
        # autocast as in training (bf16 runs), so the sampler is the policy whose log-probs the rollout computes
        with self._policy_generation_context(model, kwargs) as policy, self.accelerator.autocast():
            generation_config = _peft_base(policy).generation_config
            for i in range(0, prompt_ids.size(0), self.args.local_rollout_forward_batch_size):
                ids, mask = (t[i : i + self.args.local_rollout_forward_batch_size] for t in (prompt_ids, prompt_mask))
                out = policy.generate(input_ids=ids, attention_mask=mask, generation_config=generation_config)
                chunks.append(out[:, prompt_ids.size(1) :])
        width = max(1, max(c.size(1) for c in chunks))
        responses = torch.cat([nn.functional.pad(c, (0, width - c.size(1)), value=pad_id) for c in chunks])
        responses, response_mask, stopped = pu.truncate_after_stop(
            responses, stop_token_ids=self.stop_token_ids, pad_token_id=pad_id
        )
        return Responses(ids=responses, mask=response_mask, stopped=stopped)


__all__ = ["Generator", "HFGenerator", "Responses", "resolve_stop_token_ids"]
