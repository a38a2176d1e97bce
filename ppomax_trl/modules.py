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
"""The model modules every part of the rollout engine reads: the policy + critic wrapper and its forwards.

It owns `PolicyAndValueWrapper` (the trainer's `self.model`), the per-position scalar head of sequence classifiers
(`per_position_scores`), response-only causal-LM logits (`causal_lm_logits`), log-probs of sampled tokens, the
position ids of left-padded sequences, and what a model says about itself (its PEFT base, `score` head, text config,
context length and the label errors use). It must not sample, score rewards or know about a trainer: functions here
take modules and tensors and return tensors.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.utils import is_peft_available


if is_peft_available():
    from peft import PeftModel


def _peft_base(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (adapter layers stay injected), or the model itself."""
    return model.get_base_model() if is_peft_available() and isinstance(model, PeftModel) else model


def _score_head(model: nn.Module) -> nn.Module:
    head = getattr(_peft_base(model), "score", None)
    if head is None:
        raise ValueError(
            f"{type(_peft_base(model)).__name__} has no `score` head. Reward and value models must be sequence "
            "classifiers with one label, e.g. `AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)`."
        )
    return head


def per_position_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar head applied at every position of a sequence classifier: `(B, S)`.

    Position ids are `cumsum(mask) - 1`, so left padding does not shift positions (models without RoPE need this).
    """
    base = _peft_base(model)
    backbone = getattr(base, base.base_model_prefix)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
    return _score_head(model)(hidden).squeeze(-1)


def causal_lm_logits(model: nn.Module, inputs: dict[str, torch.Tensor], logits_to_keep: int = 0) -> torch.Tensor:
    """Logits of the last `logits_to_keep` positions (all when 0): `(B, k, V)`.

    Rollouts only read the response positions, so skipping the LM head on the prompt saves a large share of the
    forward on long prompts. Models whose `forward` lacks `logits_to_keep` get full logits, sliced here.
    """
    if logits_to_keep <= 0:
        return model(**inputs).logits
    try:
        return model(**inputs, logits_to_keep=logits_to_keep).logits
    except TypeError:
        return model(**inputs).logits[:, -logits_to_keep:]


class PolicyAndValueWrapper(nn.Module):
    """`self.model` of the trainer: the policy and the critic under one module, one optimizer, one grad-norm clip.

    `value_model=None` (critic-free trainers such as online UNA) makes `forward` return `(logits, None)`.
    """

    def __init__(self, policy: nn.Module, value_model: nn.Module | None) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.config = policy.config  # Trainer, model cards and `push_to_hub` read the policy's config

    # TRL's `unwrap_model_for_generation` reads `is_gradient_checkpointing` and calls `gradient_checkpointing_disable`
    # / `_enable` around each `generate`: those names stay for it, and forward to transformers' current
    # `activation_checkpointing` API (the old names warn `FutureWarning` since transformers 5).
    @property
    def is_activation_checkpointing(self) -> bool:
        policy = _peft_base(self.policy)
        if hasattr(type(policy), "is_activation_checkpointing"):
            return bool(policy.is_activation_checkpointing)
        return bool(getattr(policy, "is_gradient_checkpointing", False))

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.is_activation_checkpointing

    def _each_model(self):
        return tuple(_peft_base(m) for m in (self.policy, self.value_model) if m is not None)

    def activation_checkpointing_enable(self, **kwargs) -> None:
        for model in self._each_model():
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(**kwargs)
            else:
                model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs=kwargs.get("activation_checkpointing_kwargs")
                )
            if hasattr(model, "enable_input_require_grads") and not getattr(model, "_require_grads_hooks", None):
                model.enable_input_require_grads()  # PEFT: frozen embeddings would cut the checkpointed graph

    def activation_checkpointing_disable(self) -> None:
        for model in self._each_model():
            if hasattr(model, "activation_checkpointing_disable"):
                model.activation_checkpointing_disable()
            else:
                model.gradient_checkpointing_disable()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs) -> None:
        self.activation_checkpointing_enable(activation_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.activation_checkpointing_disable()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Policy logits `(B, S, V)` (the last `logits_to_keep` positions only, when > 0) and critic values `(B, S)`
        (or `None` without a critic) for the same sequences."""
        logits = causal_lm_logits(
            self.policy,
            {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids},
            logits_to_keep,
        )
        if self.value_model is None:
            return logits, None
        return logits, per_position_scores(self.value_model, input_ids, attention_mask)


def _gather_response_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) at `tokens`: `(B, T, V), (B, T) -> (B, T)`, via logsumexp (no full log-softmax copy)."""
    logits = logits.float() / temperature
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _sequence_forward_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int) -> dict:
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids.masked_fill(attention_mask == 0, pad_token_id),
        "attention_mask": attention_mask.long(),
        "position_ids": position_ids,
    }


def sequence_inputs(batch: dict[str, torch.Tensor], index, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Forward inputs of prompt + response for the rollouts `index` of `batch`: `queries`/`query_mask` `(B, P)` and
    `responses`/`response_mask` `(B, T)` -> ids, mask and position ids `(b, P + T)`."""
    input_ids = torch.cat([batch["queries"][index], batch["responses"][index]], dim=1)
    attention_mask = torch.cat([batch["query_mask"][index], batch["response_mask"][index].long()], dim=1)
    return _sequence_forward_inputs(input_ids, attention_mask, pad_token_id)


def _text_config(model: nn.Module):
    """The transformers text config of a model, also under PEFT or a DeepSpeed engine (whose `config` is its own)."""
    config = _peft_base(getattr(model, "module", model)).config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _model_label(role: str, model: nn.Module) -> str:
    """How an error names a model: its role, class and where it was loaded from (`policy (Qwen2ForCausalLM, path)`)."""
    base = _peft_base(getattr(model, "module", model))
    source = getattr(base.config, "_name_or_path", "") or ""
    return f"{role} ({type(base).__name__}{', ' + source if source else ''})"


def _max_positions(model: nn.Module | None) -> int | None:
    """A model's `max_position_embeddings` (the longest sequence it was built for), or `None` when unknown."""
    if model is None:
        return None
    return getattr(_text_config(model), "max_position_embeddings", None) or None


__all__ = ["PolicyAndValueWrapper", "causal_lm_logits", "per_position_scores"]
