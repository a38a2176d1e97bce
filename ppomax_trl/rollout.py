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
"""The online rollout engine shared by `PPOTrainer`, `PPOMaxTrainer` and `OnlineUNATrainer`.

`OnlineRolloutTrainer` is a `transformers.Trainer` whose `self.model` wraps the policy and (optionally) a critic, so one
optimizer, one `accelerator.prepare`, the global `max_grad_norm` clip, callbacks, logging and checkpoints all come from
`Trainer`. It owns prompts (tokenized or `prompt` datasets), sampling with stop tokens, the no-grad forward for the
rollout log-probs, scoring (reward model, reward functions, cross-tokenizer reward models), running moments of the
scores, held-out evaluation, sample tables, saving and exact resume. Subclasses implement `_update`.

Underscore-prefixed `Trainer` methods used or overridden here, because no public hook exists (each is pinned by
`tests/test_ppo_trainer.py::test_private_trainer_hooks_keep_their_signature`): `_inner_training_loop` (the online loop
replaces the supervised one), `_prepare_for_training` (optimizer, scheduler, DeepSpeed and `accelerator.prepare`),
`_maybe_log_save_evaluate`, `_finalize_training`, `_load_callback_state`, `_save` (policy at the root, critic in
`value_model/`), `_load_from_checkpoint`, `_load_best_model` (both models of the best checkpoint). Checkpoints are
staged and renamed when complete by `checkpoints.AtomicCheckpointMixin`; `_save_extra_checkpoint_files` adds the
running moments and algorithm state.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import inspect
import json
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from datasets import Dataset
from torch import nn
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)
from transformers.utils import is_peft_available, logging

from . import ppo_utils as pu
from .checkpoints import AtomicCheckpointMixin, load_json, load_safetensors
from .model_utils import (
    causal_lm_from_path,
    copy_model,
    disable_dropout,
    freeze,
    tokenizer_of,
    tokenizer_with_padding,
)
from .ppo_config import OnlineRolloutConfig


if is_peft_available():
    from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict


logger = logging.get_logger(__name__)

VALUE_MODEL_DIR = "value_model"
PPOMAX_STATE_NAME = "ppomax_state.json"
RewardFunc = Callable[..., list[float | None]] | PreTrainedModel | str


# ----------------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------------
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


class _IndexStream:
    """Deterministic infinite stream of dataset indices: epoch e is `randperm(n)` seeded with `seed + e`.

    Item k of the stream depends only on `(n, seed, k)`, so a resumed run draws exactly the prompts it would have.
    """

    def __init__(self, num_rows: int, seed: int) -> None:
        self.num_rows, self.seed, self._cache = num_rows, seed, {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            self._cache = {
                epoch: torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + epoch))
            }
        return self._cache[epoch]

    def take(self, start: int, count: int) -> list[int]:
        return [int(self._permutation(k // self.num_rows)[k % self.num_rows]) for k in range(start, start + count)]


# ----------------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------------


class OnlineRolloutTrainer(AtomicCheckpointMixin, Trainer):
    """Shared engine of the online trainers: prompts -> sampled responses -> scores, on a `transformers.Trainer`.

    Subclasses implement `_update` (one training step on a fresh rollout) and may build a critic through
    `_build_value_model`. `PPOTrainer`/`PPOMaxTrainer` and `OnlineUNATrainer` are built on it. See [`PPOTrainer`] for
    the meaning of every argument.
    """

    _tag_names: ClassVar[list[str]] = ["ppomax-trl"]
    _name = "online"
    _paper: ClassVar[dict[str, str]] = {"title": "", "id": ""}
    # `log_completions`: the last update's rows, gathered on the main process, until the next `log` prints them
    _completions_to_log: list[dict[str, Any]] | None = None
    _config_class: ClassVar[type[OnlineRolloutConfig]] = OnlineRolloutConfig  # built when `args` is None

    def __init__(
        self,
        args: OnlineRolloutConfig | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        model: str | PreTrainedModel | None = None,
        ref_model: str | PreTrainedModel | None = None,
        reward_model: str | PreTrainedModel | None = None,
        train_dataset: Dataset | None = None,
        data_collator: Callable | None = None,
        eval_dataset: Dataset | None = None,
        optimizers: tuple = (None, None),
        callbacks: list[TrainerCallback] | None = None,
        peft_config: PeftConfig | None = None,
        *,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        reward_processing_class: PreTrainedTokenizerBase | None = None,
        reward_processing_classes: PreTrainedTokenizerBase | list[PreTrainedTokenizerBase | None] | None = None,
    ) -> None:
        trainer_name = type(self).__name__
        args, model, ref_model, processing_class = self._resolve_model_inputs(args, model, ref_model, processing_class)
        if train_dataset is None:
            raise ValueError(
                f"{trainer_name}: `train_dataset` is required: a dataset of prompts (`input_ids` or `prompt` column)."
            )
        if ref_model is not None and ref_model is model:
            raise ValueError(
                "`model` and `ref_model` cannot be the same object. Pass `ref_model=None` for a frozen copy (or the "
                "disabled adapter under PEFT), or pass `copy.deepcopy(model)`."
            )
        # no pad token: pad with EOS on a copy (pad == EOS is handled everywhere: masks come from the stop token)
        processing_class = tokenizer_with_padding(processing_class, trainer_name)
        if isinstance(reward_model, str | os.PathLike):
            reward_model = _reward_model_from_path(reward_model)
        if callable(reward_funcs) or isinstance(reward_funcs, str | os.PathLike):
            reward_funcs = [reward_funcs]
        reward_funcs = list(reward_funcs or [])
        if reward_model is None and not reward_funcs:
            raise ValueError(
                f"{trainer_name} needs a reward: pass `reward_model`, `reward_funcs`, or both (GRPO's reward "
                "functions, reward models or their paths)."
            )
        # GRPO's weights, one per reward function; the `reward_model` argument is function 0
        num_reward_sources = (reward_model is not None) + len(reward_funcs)
        if args.reward_weights is not None and len(args.reward_weights) != num_reward_sources:
            sources = (["the `reward_model` argument"] if reward_model is not None else []) + [
                f"{len(reward_funcs)} entr{'y' if len(reward_funcs) == 1 else 'ies'} of `reward_funcs`"
            ] * bool(reward_funcs)
            raise ValueError(
                f"`reward_weights` has {len(args.reward_weights)} weight(s) but there are {num_reward_sources} reward "
                f"functions ({' and '.join(sources)}): give one weight per reward function, in that order."
            )
        if reward_model is not None:
            _check_reward_model(reward_model, "The reward model")
        self.reward_funcs, self.reward_processing_classes = _load_reward_funcs(
            reward_funcs, reward_processing_classes, type(self).__name__
        )
        self.reward_func_names = _unique_names(
            [
                _reward_func_name(func)
                for func in ([reward_model] if reward_model is not None else []) + self.reward_funcs
            ]
        )
        weights = args.reward_weights if args.reward_weights is not None else [1.0] * num_reward_sources
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)  # (F,)
        self.stop_token_ids = self._resolve_stop_token_ids(args, processing_class, model)
        self._warn_about_sampling(args, model)

        # ---- models: policy (+PEFT), reference, reward model, critic (subclass hook)
        is_peft = peft_config is not None or (is_peft_available() and isinstance(model, PeftModel))
        if peft_config is not None:
            if not is_peft_available():
                raise ImportError("`peft_config` needs PEFT: pip install 'ppomax-trl[peft]' (or pip install peft).")
            if isinstance(model, PeftModel):
                raise ValueError(
                    "You passed a `PeftModel` and a `peft_config`. Merge and unload the existing adapter first, or "
                    "pass the `PeftModel` without `peft_config`."
                )
        if ref_model is None and not is_peft:
            ref_model = freeze(copy_model(model))
        if peft_config is not None:
            model = get_peft_model(model, peft_config)
        self.reward_processing_class = reward_processing_class  # read by `_build_value_model`
        value_model = self._build_value_model(model, reward_model)
        for module in (model, ref_model, reward_model, value_model):
            if module is not None:
                disable_dropout(module)
        self.is_peft_model = is_peft
        self.ref_model = freeze(ref_model) if ref_model is not None else None
        self.reward_model = freeze(reward_model) if reward_model is not None else None
        self.policy_model, self.value_model = model, value_model

        # ---- data
        train_dataset = self._prepare_prompt_dataset(train_dataset, processing_class, args, "train")
        if eval_dataset is not None:
            eval_dataset = self._prepare_prompt_dataset(eval_dataset, processing_class, args, "eval")
        self.prompt_collator = data_collator

        wrapper = PolicyAndValueWrapper(model, value_model)
        if args.world_size is None:
            # the TRL 1.12 `world_size` field hides `TrainingArguments.world_size`, which `Trainer.__init__` reads to
            # fill DeepSpeed's batch sizes: resolve it now (`args.device` sets up the distributed state)
            _ = args.device
            args.world_size = TrainingArguments.world_size.fget(args)
        super().__init__(
            model=wrapper,
            args=args,
            data_collator=data_collator or (lambda rows: rows),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self._compute_batch_sizes()

        # frozen models: sharded with the policy under ZeRO-3, otherwise just placed on the device
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed

            self.reward_model = prepare_deepspeed(self.reward_model, self.accelerator) if self.reward_model else None
            self.ref_model = prepare_deepspeed(self.ref_model, self.accelerator) if self.ref_model else None
            self.reward_funcs = [
                prepare_deepspeed(f, self.accelerator) if isinstance(f, nn.Module) else f for f in self.reward_funcs
            ]
        else:
            device = self.accelerator.device
            self.reward_model = self.reward_model.to(device) if self.reward_model is not None else None
            self.ref_model = self.ref_model.to(device) if self.ref_model is not None else None
            self.reward_funcs = [f.to(device) if isinstance(f, nn.Module) else f for f in self.reward_funcs]
        self.reward_weights = self.reward_weights.to(self.accelerator.device)

        # ---- state that checkpoints carry
        self.reward_moments = pu.RunningMoments()
        self.episode = 0
        self.critic_warmup_done = 0
        self.critic_warmup_finished = self._warmup_steps() == 0
        self.collapse_monitor = pu.CollapseMonitor(
            args.collapse_max_length_share, args.collapse_kl_threshold, watch_length=bool(self.stop_token_ids)
        )
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        # what reward functions hand to `log_metric` / `log_extra` during one scoring call
        self._pending_reward_metrics: dict[str, list[float]] = defaultdict(list)
        self._pending_extra_columns: dict[str, list] = defaultdict(list)
        self._last_extra_columns: dict[str, list] = {}
        self._prompt_stream = _IndexStream(len(train_dataset), args.seed)

    # ------------------------------------------------------------------------------------------------------------------
    # Hooks for subclasses
    # ------------------------------------------------------------------------------------------------------------------
    def _build_value_model(self, policy: nn.Module, reward_model: nn.Module | None) -> nn.Module | None:
        """The critic to train next to the policy; `None` (the default) trains the policy alone."""
        return None

    def _update(self, model: nn.Module, is_warmup: bool, start_time: float) -> tuple[torch.Tensor, float | None]:
        """One training step on a fresh rollout; returns the mean loss and the mean grad norm."""
        raise NotImplementedError

    def _warmup_steps(self) -> int:
        """Leading steps that do not advance the LR schedule (PPO's critic warm-up); none by default."""
        return 0

    def _warmup_converged(self) -> bool:
        """Whether the warm-up may end before `_warmup_steps()`."""
        return False

    # ------------------------------------------------------------------------------------------------------------------
    # Construction helpers
    # ------------------------------------------------------------------------------------------------------------------
    def _resolve_model_inputs(
        self,
        args: OnlineRolloutConfig | None,
        model: str | os.PathLike | nn.Module | None,
        ref_model: str | os.PathLike | nn.Module | None,
        processing_class: PreTrainedTokenizerBase | None,
    ) -> tuple[OnlineRolloutConfig, nn.Module, nn.Module | None, PreTrainedTokenizerBase]:
        """What TRL GRPO users leave out, filled in as GRPO fills it; the errors name the class that was called.

        - `args=None`: `self._config_class(output_dir="<model name>-<trainer name>")`, as GRPO's `"<model>-GRPO"`;
        - `model` / `ref_model` as a name or path: `AutoModelForCausalLM` with `args.model_init_kwargs`
          (`causal_lm_from_path`); `model_init_kwargs` next to a policy passed as a model is ignored, with a warning;
        - `processing_class=None`: the tokenizer saved with the policy (`tokenizer_of`).

        Its own output passes through unchanged: `PPOTrainer` calls it before `OnlineRolloutTrainer.__init__` (which
        calls it again), as it needs the loaded policy and tokenizer for a critic path and the ptx data.
        """
        trainer_name = type(self).__name__
        if isinstance(args, str | os.PathLike | nn.Module):
            raise TypeError(
                f"{trainer_name}: the first positional argument is `args` (TRL 1.12's order: args, processing_class, "
                f"model, ref_model, reward_model, train_dataset, ...), got a {type(args).__name__}. Pass GRPO-style "
                f"arguments by keyword: {trainer_name}(model=..., reward_funcs=..., args=..., train_dataset=...)."
            )
        if model is None:
            raise TypeError(
                f"{trainer_name} needs a `model`: the policy, as a causal LM or its name or path (loaded with "
                "`AutoModelForCausalLM.from_pretrained(model, **args.model_init_kwargs)`)."
            )
        is_path = isinstance(model, str | os.PathLike)
        if args is None:
            source = os.fspath(model) if is_path else getattr(_peft_base(model).config, "_name_or_path", "")
            model_name = os.path.basename(os.path.normpath(source)) if source else type(_peft_base(model)).__name__
            args = self._config_class(output_dir=f"{model_name}-{self._name.replace(' ', '')}")
        if not isinstance(args, OnlineRolloutConfig):
            raise TypeError(
                f"{trainer_name}: `args` must be a ppomax_trl config (e.g. `PPOConfig`), got {type(args).__name__}."
            )
        if is_path:
            model = causal_lm_from_path(model, args.model_init_kwargs, trainer_name)
        elif args.model_init_kwargs is not None and not getattr(self, "_model_inputs_resolved", False):
            logger.warning(
                f"{trainer_name}: `args.model_init_kwargs` is ignored for the policy, which was passed as a model; it "
                "applies when `model` (or `ref_model`) is a name or path."
            )
        self._model_inputs_resolved = True  # a second call sees the loaded policy: nothing was ignored, warn once
        if isinstance(ref_model, str | os.PathLike):
            ref_model = causal_lm_from_path(ref_model, args.model_init_kwargs, trainer_name)
        if processing_class is None:
            processing_class = tokenizer_of(_peft_base(model), trainer_name)
        return args, model, ref_model, processing_class

    @staticmethod
    def _resolve_stop_token_ids(
        args: OnlineRolloutConfig, tokenizer, model: nn.Module | None = None
    ) -> list[int] | None:
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

    def _prepare_prompt_dataset(self, dataset: Dataset, tokenizer, args: OnlineRolloutConfig, split: str) -> Dataset:
        columns = dataset.column_names
        if "input_ids" not in columns and "prompt" not in columns:
            raise ValueError(
                f"The {split} dataset needs an `input_ids` column (tokenized prompts, as in TRL 1.12) or a `prompt` "
                f"column (text or conversational); it has {columns}."
            )
        if len(dataset) == 0:
            raise ValueError(f"The {split} dataset is empty.")
        source = "input_ids" if "input_ids" in columns else "prompt"
        missing = [i for i, value in enumerate(dataset[source]) if value is None]
        if missing:
            raise ValueError(
                f"The {split} dataset has no `{source}` in row(s) {missing[:10]}{' ...' if len(missing) > 10 else ''} "
                f"({len(missing)} in all). Drop or fill those rows."
            )
        if "input_ids" not in columns:
            from trl.data_utils import is_conversational, maybe_apply_chat_template

            conversational = is_conversational(dataset[0])

            def tokenize(row):
                text = maybe_apply_chat_template({"prompt": row["prompt"]}, tokenizer)["prompt"]
                ids = tokenizer(text, add_special_tokens=not conversational)["input_ids"]
                return {"input_ids": ids}

            dataset = dataset.map(tokenize, num_proc=args.dataset_num_proc, desc=f"Tokenizing {split} prompts")
        lengths = [len(ids) for ids in dataset["input_ids"]]
        if min(lengths) == 0:
            raise ValueError(f"The {split} dataset has an empty prompt (row {lengths.index(0)}).")
        if args.max_prompt_length is not None and max(lengths) > args.max_prompt_length:
            raise ValueError(
                f"A {split} prompt has {max(lengths)} tokens > max_prompt_length={args.max_prompt_length} (row "
                f"{lengths.index(max(lengths))}). Filter or shorten the prompts, or raise `max_prompt_length`."
            )
        self._check_context_length(lengths, args.response_length, split)
        self._check_reward_context(dataset, tokenizer, args, split)
        return dataset

    def _check_reward_context(self, dataset: Dataset, tokenizer, args: OnlineRolloutConfig, split: str) -> None:
        """Early half of `_fit_reward_context`: with `reward_context_overflow='error'`, a prompt that alone is longer
        than the context of a reward model that re-reads the text in its own tokens fails now, not at its first
        rollout. (The completion's length in the model's tokens is known only once sampled: `_fit_reward_context`.)"""
        readers = [(f"reward function `{name}`", model, tok) for name, model, tok in zip(
            self.reward_func_names[self.reward_model is not None :], self.reward_funcs, self.reward_processing_classes,
            strict=True,
        ) if isinstance(model, nn.Module)]  # fmt: skip
        if self.reward_model is not None and self.reward_processing_class is not None:
            readers.append(("the reward model (`reward_model`)", self.reward_model, self.reward_processing_class))
        readers = [(what, _max_positions(model), tok) for what, model, tok in readers if _max_positions(model)]
        if args.reward_context_overflow != "error" or not readers:
            return
        if "prompt" in dataset.column_names:
            prompts = list(dataset["prompt"])
        else:
            prompts = tokenizer.batch_decode(list(dataset["input_ids"]), skip_special_tokens=True)
        for what, positions, rm_tok in readers:
            if isinstance(prompts[0], list):
                from trl.data_utils import apply_chat_template

                texts = [apply_chat_template({"prompt": p}, rm_tok)["prompt"] for p in prompts]
            else:
                texts = prompts
            lengths = [len(ids) for ids in rm_tok(texts, add_special_tokens=False)["input_ids"]]
            too_long = [i for i, n in enumerate(lengths) if n > positions]
            if too_long:
                raise ValueError(
                    f"{len(too_long)} {split} prompt(s) alone exceed the context of {what}: row {too_long[0]} is "
                    f"{lengths[too_long[0]]} tokens in its tokenizer > max_position_embeddings={positions}. Filter or "
                    "shorten the prompts, or set `reward_context_overflow='truncate_left'` to score the last positions."
                )

    def _check_context_length(self, prompt_lengths: list[int], response_length: int, split: str) -> None:
        """Prompt + response must fit the positions of every model that reads the policy's ids: a longer sequence
        trains silently on positions the model never learned (RoPE) or fails late (learned position embeddings)."""
        readers = [("policy", self.policy_model), ("critic", self.value_model)]
        if self.reward_processing_class is None:
            readers.append(("reward model", self.reward_model))
        limits = [
            (positions, _model_label(role, model)) for role, model in readers if (positions := _max_positions(model))
        ]
        if not limits:
            return
        positions, name = min(limits)
        if response_length >= positions:
            raise ValueError(
                f"response_length={response_length} alone does not fit the context of the {name}: "
                f"max_position_embeddings={positions}, and every prompt needs at least one position too. Lower "
                f"`response_length` below {positions} (and prompt length + response_length to <= {positions})."
            )
        longest = max(prompt_lengths)
        if longest + response_length > positions:
            too_long = [i for i, n in enumerate(prompt_lengths) if n + response_length > positions]
            raise ValueError(
                f"{len(too_long)} {split} prompt(s) do not fit the context of the {name}: row {too_long[0]} has "
                f"{prompt_lengths[too_long[0]]} tokens, and with response_length={response_length} a sequence needs "
                f"{prompt_lengths[too_long[0]] + response_length} positions > max_position_embeddings={positions}. "
                f"Filter or shorten the prompts to <= {positions - response_length} tokens (`max_prompt_length` checks "
                "this early), or lower `response_length`."
            )

    def _compute_batch_sizes(self) -> None:
        """TRL 1.12's derived sizes, written back onto `args` for code that reads them."""
        args = self.args
        world = self.accelerator.num_processes
        args.world_size = world
        if args.num_rollouts is not None:
            args.local_batch_size = args.num_rollouts
            args.local_mini_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
            args.num_mini_batches = pu.exact_div(
                args.num_rollouts, args.local_mini_batch_size,
                "`num_rollouts` must be a multiple of `per_device_train_batch_size * gradient_accumulation_steps`",
            )  # fmt: skip
        else:
            args.local_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
            args.local_mini_batch_size = pu.exact_div(
                args.local_batch_size, args.num_mini_batches,
                "`per_device_train_batch_size * gradient_accumulation_steps` must be a multiple of `num_mini_batches`",
            )  # fmt: skip
        self.micro_batch_size = min(args.per_device_train_batch_size, args.local_mini_batch_size)
        self.num_micro_batches = pu.exact_div(
            args.local_mini_batch_size, self.micro_batch_size,
            "the minibatch size must be a multiple of `per_device_train_batch_size`",
        )  # fmt: skip
        if self.is_deepspeed_enabled and self.num_micro_batches != args.gradient_accumulation_steps:
            raise ValueError(
                f"DeepSpeed steps every `gradient_accumulation_steps` ({args.gradient_accumulation_steps}) micro-batches "
                f"but each minibatch here has {self.num_micro_batches}. Use `num_mini_batches=1` or set `num_rollouts`."
            )
        if getattr(args, "whiten_advantages", False) and args.local_batch_size < 2:
            raise ValueError("`whiten_advantages` needs at least 2 rollouts per process; raise the batch size.")
        args.micro_batch_size = args.per_device_train_batch_size * world
        args.batch_size = args.local_batch_size * world
        args.mini_batch_size = args.local_mini_batch_size * world
        if args.total_episodes is None:
            args.total_episodes = int(args.num_train_epochs * len(self.train_dataset))
        args.num_total_batches = math.ceil(args.total_episodes / args.batch_size)
        if args.max_steps > 0:  # an explicit `max_steps` wins, as in `transformers.Trainer`
            args.num_total_batches = args.max_steps
        if args.num_total_batches < 1:
            raise ValueError(
                f"`total_episodes={args.total_episodes}` leaves no update to run (a rollout batch is {args.batch_size} "
                "prompts). `total_episodes` and `max_steps` count the policy's updates; a critic warm-up "
                "(`critic_warmup_steps`) runs on top of them."
            )
        self.sample_generations_freq = max(1, args.num_total_batches // max(args.num_sample_generations, 1))

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW over policy and critic in separate parameter groups, so the critic can have its own learning rate."""
        if self.optimizer is not None:
            return self.optimizer
        wrapper = self.model
        decay_names = set(self.get_decay_parameter_names(wrapper))
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, wrapper)
        groups = []
        for prefix, lr in (
            ("policy.", self.args.learning_rate),
            ("value_model.", getattr(self.args, "value_learning_rate", None)),
        ):
            named = [(n, p) for n, p in wrapper.named_parameters() if n.startswith(prefix) and p.requires_grad]
            for decay in (True, False):
                params = [p for n, p in named if (n in decay_names) == decay]
                if params:
                    group = {"params": params, "weight_decay": self.args.weight_decay if decay else 0.0}
                    # DeepSpeed ZeRO swaps `params` for flat partitions but keeps the other keys: the tag survives
                    group["ppomax_module"] = prefix.rstrip(".")
                    if lr is not None:
                        group["lr"] = lr
                    groups.append(group)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------------------------------------------------------
    # Training loop
    # ------------------------------------------------------------------------------------------------------------------

    def _inner_training_loop(
        self, batch_size=None, args=None, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None
    ):
        args = self.args
        self.accelerator.free_memory()
        num_updates = args.num_total_batches
        max_steps = num_updates + self._warmup_steps()

        self.state = TrainerState(
            stateful_callbacks=[
                cb for cb in self.callback_handler.callbacks + [self.control] if getattr(cb, "state", None) is not None
            ]
        )
        self.state.train_batch_size = args.local_batch_size
        self.state.compute_steps(args, max_steps)
        if resume_from_checkpoint is not None:
            self.state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, "trainer_state.json"))
            self._load_callback_state()
            self._load_ppomax_state(resume_from_checkpoint)
            if self.critic_warmup_finished:  # the warm-up may have ended early (loss threshold)
                max_steps = self.critic_warmup_done + num_updates
        num_train_epochs = max(1, math.ceil(args.total_episodes / len(self.train_dataset)))
        self.state.init_training_references(self, max_steps, num_train_epochs, trial)
        self.state.max_steps = max_steps

        model, _ = self._prepare_for_training(num_updates, None, resume_from_checkpoint)
        self._policy_param_ids = {id(p) for p in self.accelerator.unwrap_model(model).policy.parameters()}

        start_time = time.time()
        self._initial_global_step = self.state.global_step
        self._initial_num_input_tokens_seen = self.state.num_input_tokens_seen
        self._tr_loss = torch.tensor(0.0, device=args.device)
        self._total_loss_scalar = 0.0
        self._globalstep_last_logged = self.state.global_step
        self._start_episode = self.episode
        model.zero_grad()
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)

        while self.state.global_step < max_steps and not self.control.should_training_stop:
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            is_warmup = not self.critic_warmup_finished
            loss, grad_norm = self._update(model, is_warmup, start_time)
            learning_rate = self._get_learning_rate()
            self._tr_loss += loss
            self.state.global_step += 1
            self.state.epoch = self.episode / len(self.train_dataset)
            if is_warmup:
                self.critic_warmup_done += 1
                if self._warmup_converged() or self.critic_warmup_done >= self._warmup_steps():
                    self.critic_warmup_finished = True
                    max_steps = self.state.max_steps = self.state.global_step + (
                        num_updates - (self.state.global_step - self.critic_warmup_done)
                    )
                    self._resize_progress_bars(max_steps)  # an early end shortens the run
            else:
                self.lr_scheduler.step()  # one scheduler step per rollout batch, as TRL 1.12; frozen in warm-up
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            self._maybe_log_save_evaluate(
                self._tr_loss,
                grad_norm,
                model,
                trial,
                self.state.epoch,
                ignore_keys_for_eval,
                start_time,
                learning_rate=learning_rate,
            )
            ppo_updates = self.state.global_step - self.critic_warmup_done
            if (
                not is_warmup
                and args.num_sample_generations > 0
                and self.eval_dataset is not None
                and (ppo_updates - 1) % self.sample_generations_freq == 0
            ):
                self.generate_completions(sampling=True)

        num_train_samples = args.batch_size * max_steps
        return self._finalize_training(trial, num_train_samples, start_time)

    def _resize_progress_bars(self, total: int) -> None:
        """Keep the progress bar's total equal to `state.max_steps` (the critic warm-up can end early)."""
        for callback in self.callback_handler.callbacks:
            bar = getattr(callback, "training_bar", None)
            if bar is not None:
                bar.total = total
                bar.refresh()

    def _start_step(self) -> list[dict]:
        """Seed this step and return this process's prompts; counts the episodes."""
        # a per-step seed makes sampling a function of (seed, step, rank): resumed runs sample what they would have
        torch.manual_seed(self.args.seed + 1_000_003 * self.state.global_step + 7_919 * self.accelerator.process_index)
        self.episode += self.args.batch_size
        return self._next_prompt_rows()

    def _next_prompt_rows(self) -> list[dict]:
        """This process's slice of the global prompt batch for the current step (deterministic: resumable)."""
        args = self.args
        start = self.state.global_step * args.batch_size + self.accelerator.process_index * args.local_batch_size
        return [self.train_dataset[i] for i in self._prompt_stream.take(start, args.local_batch_size)]

    def _collate_prompts(self, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded `(B, P)` prompt ids and mask."""
        pad_id = self.processing_class.pad_token_id
        if self.prompt_collator is not None:
            batch = self.prompt_collator([{"input_ids": row["input_ids"]} for row in rows])
            input_ids = batch["input_ids"]
            mask = batch.get("attention_mask", (input_ids != pad_id).long())
            if (mask[:, -1] == 0).any():
                raise ValueError(
                    "The data collator pads prompts on the right; generation needs left padding. Set "
                    "`tokenizer.padding_side = 'left'` or drop the custom `data_collator`."
                )
            return input_ids.to(self.accelerator.device), mask.to(self.accelerator.device)
        width = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = torch.as_tensor(row["input_ids"], dtype=torch.long)
            input_ids[i, width - len(ids) :] = ids
            mask[i, width - len(ids) :] = 1
        return input_ids.to(self.accelerator.device), mask.to(self.accelerator.device)

    # ---- rollout -----------------------------------------------------------------------------------------------------

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

    def _warn_about_sampling(self, args: OnlineRolloutConfig, model: nn.Module) -> None:
        """Say once, at construction, where rollout sampling is not the model's default or not exactly pi_old."""
        if args.top_p < 1:
            logger.warning(
                f"Rollouts sample with top_p={args.top_p}: the nucleus cut truncates the sampling distribution, while "
                "the rollout and training log-probs use the full softmax(logits / temperature), so each update is "
                "slightly off-policy. Set `top_p=1.0` to sample exactly from the policy."
            )
        ignored = self._ignored_sampling_processors(getattr(_peft_base(model), "generation_config", None))
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
            "top_k": 0,
            "top_p": top_p,
            "eos_token_id": self.stop_token_ids,
            "pad_token_id": self.processing_class.pad_token_id,
        }

    @torch.no_grad()
    def generate_responses(
        self, model: nn.Module, queries: torch.Tensor, query_mask: torch.Tensor, *, temperature: float, top_p: float
    ) -> dict[str, torch.Tensor]:
        """Sample one response per prompt, stop at the stop token (kept as the last real token), pad the rest."""
        pad_id = self.processing_class.pad_token_id
        kwargs = self._generation_kwargs(temperature, top_p)
        chunks = []
        # autocast as in training (bf16 runs), so the sampler is the policy whose log-probs the rollout computes
        with self._policy_generation_context(model, kwargs) as policy, self.accelerator.autocast():
            generation_config = _peft_base(policy).generation_config
            for i in range(0, queries.size(0), self.args.local_rollout_forward_batch_size):
                ids, mask = (t[i : i + self.args.local_rollout_forward_batch_size] for t in (queries, query_mask))
                out = policy.generate(input_ids=ids, attention_mask=mask, generation_config=generation_config)
                chunks.append(out[:, queries.size(1) :])
        width = max(1, max(c.size(1) for c in chunks))
        responses = torch.cat([nn.functional.pad(c, (0, width - c.size(1)), value=pad_id) for c in chunks])
        responses, response_mask, stopped = pu.truncate_after_stop(
            responses, stop_token_ids=self.stop_token_ids, pad_token_id=pad_id
        )
        return {"queries": queries, "query_mask": query_mask, "responses": responses,
                "response_mask": response_mask, "stopped": stopped}  # fmt: skip

    @torch.no_grad()
    def rollout(self, rows: list[dict], model: nn.Module) -> dict[str, torch.Tensor]:
        """Generate, then one no-grad forward for pi_old, pi_ref log-probs and V_old (so rho = 1 at the first step).

        Values are computed only when the trainer has a critic.
        """
        queries, query_mask = self._collate_prompts(rows)
        batch = self.generate_responses(
            model, queries, query_mask, temperature=self.args.temperature, top_p=self.args.top_p
        )
        logprobs, ref_logprobs, values = [], [], []
        unwrapped = self.accelerator.unwrap_model(model)
        context = queries.size(1)
        # the training forward runs the prepared model under accelerate's autocast; the rollout calls the sub-models
        # directly, so it enters the same autocast, or a bf16 run starts with rho != 1 and V_old != V
        with self.accelerator.autocast():
            for i in range(0, queries.size(0), self.args.local_rollout_forward_batch_size):
                chunk = slice(i, i + self.args.local_rollout_forward_batch_size)
                inputs = self._sequence_inputs(batch, chunk)
                responses = batch["responses"][chunk]
                # output at position p scores the token at p + 1: response token t is read at context - 1 + t, i.e.
                # the last T + 1 positions without the final one
                num_kept = responses.size(1) + 1
                policy_logits = causal_lm_logits(unwrapped.policy, inputs, num_kept)[:, :-1]
                logprobs.append(_gather_response_logprobs(policy_logits, responses, self.args.temperature))
                del policy_logits
                with self._reference_context(unwrapped) as ref_model:
                    ref_logits = causal_lm_logits(ref_model, inputs, num_kept)[:, :-1]
                ref_logprobs.append(_gather_response_logprobs(ref_logits, responses, self.args.temperature))
                del ref_logits
                if unwrapped.value_model is not None:
                    critic = per_position_scores(unwrapped.value_model, inputs["input_ids"], inputs["attention_mask"])
                    values.append(critic[:, context - 1 : -1].float())
        mask = batch["response_mask"]
        # padding: identical policy/reference log-probs (KL 0) and zero values; every loss masks them anyway
        batch["logprobs"] = torch.cat(logprobs).masked_fill(~mask, pu.PADDING_LOGPROB)
        batch["ref_logprobs"] = torch.cat(ref_logprobs).masked_fill(~mask, pu.PADDING_LOGPROB)
        if values:
            batch["values"] = torch.cat(values).masked_fill(~mask, 0.0)
        return batch

    def _sequence_inputs(self, batch: dict, index) -> dict[str, torch.Tensor]:
        input_ids = torch.cat([batch["queries"][index], batch["responses"][index]], dim=1)
        attention_mask = torch.cat([batch["query_mask"][index], batch["response_mask"][index].long()], dim=1)
        return _sequence_forward_inputs(input_ids, attention_mask, self.processing_class.pad_token_id)

    @contextlib.contextmanager
    def _reference_context(self, unwrapped_wrapper: nn.Module):
        """The reference policy: the frozen model, or the policy with its adapter disabled (or switched) under PEFT."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        policy = unwrapped_wrapper.policy
        if self.args.ref_adapter_name:
            policy.set_adapter(self.args.ref_adapter_name)
            try:
                yield policy
            finally:
                policy.set_adapter(self.args.model_adapter_name or "default")
        else:
            with policy.disable_adapter():
                yield policy

    def minibatch_passes(
        self,
        model: nn.Module,
        num_epochs: int,
        micro_batch_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        start_minibatch: Callable[[torch.Tensor], None] | None = None,
    ) -> tuple[torch.Tensor, float | None]:
        """`num_epochs` shuffled passes over this process's rollout buffer, one optimizer step per minibatch.

        `micro_batch_loss(micro_indices, minibatch_indices)` returns the micro-batch's share of the minibatch loss
        (already normalised over the whole minibatch), so accumulation gives exactly the minibatch loss;
        `start_minibatch(minibatch_indices)`, called before the first micro-batch of each minibatch on every process,
        is where such normalisers are computed (collectives included). Gradients
        sync only on the last micro-batch; DeepSpeed steps (and clips) inside `accelerator.backward`. Returns the mean
        loss per optimizer step and the mean global grad norm before clipping.
        """
        args = self.args
        total_loss = torch.tensor(0.0, device=args.device)
        grad_norms, grad_norm = [], None
        generator = torch.Generator().manual_seed(args.seed + 31 * self.state.global_step)
        model.train()
        for _ in range(num_epochs):
            order = torch.randperm(args.local_batch_size, generator=generator)
            for mb_start in range(0, args.local_batch_size, args.local_mini_batch_size):
                mb_inds = order[mb_start : mb_start + args.local_mini_batch_size]
                if start_minibatch is not None:
                    start_minibatch(mb_inds)
                for micro_index, mc_start in enumerate(range(0, len(mb_inds), self.micro_batch_size)):
                    mc_inds = mb_inds[mc_start : mc_start + self.micro_batch_size].to(args.device)
                    is_last = micro_index == self.num_micro_batches - 1
                    self.accelerator.gradient_state._set_sync_gradients(is_last)
                    sync = (
                        contextlib.nullcontext()
                        if is_last or self.is_deepspeed_enabled
                        else self.accelerator.no_sync(model)
                    )
                    with sync:
                        loss = micro_batch_loss(mc_inds, mb_inds)
                        # before the backward: DeepSpeed steps inside it on the last micro-batch
                        self._stop_on_non_finite("loss", loss.detach(), collective=True)
                        kwargs = {"scale_wrt_gas": False} if self.is_deepspeed_enabled else {}
                        self.accelerator.backward(loss, **kwargs)
                    total_loss += loss.detach()
                if args.max_grad_norm is not None and args.max_grad_norm > 0:
                    grad_norm = self.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    if grad_norm is not None:
                        grad_norms.append(float(grad_norm))
                elif not self.is_deepspeed_enabled:
                    grads = [p.grad for p in model.parameters() if p.grad is not None]
                    grad_norm = torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads]))
                if grad_norm is not None:  # already reduced over processes: every rank takes the same decision
                    self._stop_on_non_finite("gradient norm", torch.as_tensor(grad_norm), collective=False)
                self.optimizer.step()
                self.optimizer.zero_grad()
        num_steps = num_epochs * args.num_mini_batches
        return total_loss / num_steps, (sum(grad_norms) / len(grad_norms) if grad_norms else None)

    def _stop_on_non_finite(self, quantity: str, value: torch.Tensor, *, collective: bool) -> None:
        """Raise before a non-finite loss or gradient reaches the weights, naming the step and the loss terms.

        `collective=True` pools the check over processes (one tiny all-reduce), so that every rank stops together
        instead of one rank raising while the others wait in a collective.
        """
        bad = (~torch.isfinite(value)).any().float().reshape(1).to(self.args.device)
        if collective and self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, "sum")
        if not bad.item():
            return
        terms = {name: float(term) for name, term in getattr(self, "_loss_terms", {}).items()}
        raise FloatingPointError(
            f"Non-finite {quantity} at step {self.state.global_step + 1} (this process: {quantity} = "
            f"{float(value.float().flatten()[0]):.4g}; loss terms of its last micro-batch: {terms}). The update was not applied and training stops. Look at the rewards of this "
            "step (raw scores far from O(1) overflow the value loss: normalise or scale them, e.g. "
            "`reward_normalization`), the learning rate and the reference/policy log-probs."
        )

    # ---- score -------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, rows: list[dict], batch: dict[str, torch.Tensor], mode: str | None = "train") -> torch.Tensor:
        """Raw score per rollout `(B,)`: the weighted sum of the reward functions that apply to it (TRL 1.16 GRPO).

        score_b = sum_f w_f r_bf over the functions f whose r_bf is not `None` (GRPO's `nansum(rewards * weights)`),
        with `w = reward_weights` (all 1 by default) and `r = rewards_per_func(...)`. `mode="train"` also logs
        `rewards/<name>/mean|std` (pooled over processes) and what the functions passed to `log_metric`; `"eval"` logs
        only the latter (`evaluate` pools the former over the whole eval set); `None` logs nothing.
        """
        rewards_per_func = self.rewards_per_func(rows, batch, mode)
        if mode == "train":
            gathered = (
                self.accelerator.gather(rewards_per_func) if self.accelerator.num_processes > 1 else rewards_per_func
            )
            for key, value in self._reward_func_stats(gathered).items():
                self._metrics[mode][key].append(value)
        scores, failure = None, None
        try:
            scores = self._combine_rewards(rewards_per_func)
        except ValueError as error:  # an overflowing weighted sum: every rank stops with it
            failure = ", ".join(self.reward_func_names), error
        self._raise_on_every_rank(failure)
        if mode == "train" and self.args.log_completions:
            self._keep_completions(rows, batch, rewards_per_func, scores)
        return scores

    def _keep_completions(
        self, rows: list[dict], batch: dict[str, torch.Tensor], rewards_per_func: torch.Tensor, scores: torch.Tensor
    ) -> None:
        """`log_completions`: this update's rollouts as table rows (prompt, completion, each function's reward, the
        weighted score, the `log_extra` columns), gathered from every process (all must call this) and kept on the
        main process, replacing the previous update's, until `log` prints them."""
        prompts, completions = self._decode_for_reward(rows, batch)
        extra = self._last_extra_columns
        table = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            entry = {
                "step": self.state.global_step + 1,
                "prompt": _as_text(prompt),
                "completion": _as_text(completion),
            }
            for name, value in zip(self.reward_func_names, rewards_per_func[i].tolist(), strict=True):
                entry[name] = None if math.isnan(value) else value  # None: the function does not apply
            entry["score"] = float(scores[i])
            for column, values in extra.items():
                entry.setdefault(column, values[i] if i < len(values) else None)
            table.append(entry)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            table = gather_object(table)
        self._completions_to_log = table if self.accelerator.is_main_process else None

    @torch.no_grad()
    def rewards_per_func(
        self, rows: list[dict], batch: dict[str, torch.Tensor], mode: str | None = None
    ) -> torch.Tensor:
        """`(B, F)` raw reward of every reward function, NaN where a function returned `None` ("does not apply").

        The functions are the `reward_model` argument (when given) and then `reward_funcs`, in order
        (`reward_func_names`). A reward model reads the rollout as `_reward_model_scores` says. A function is called as
        TRL 1.16's `GRPOTrainer` calls it, with keyword arguments only:

            f(prompts=..., completions=..., completion_ids=..., <every dataset column>=..., trainer_state=...,
              log_extra=..., log_metric=...) -> list[float | None]

        `prompts` are the dataset's prompts (decoded for tokenized datasets), `completions` the decoded responses
        (`[{"role": "assistant", "content": ...}]` for conversational prompts), `completion_ids` the sampled ids up to
        and including the stop token, each column a list with one value per rollout, `trainer_state` the live
        `TrainerState`. Coroutine functions run concurrently (`asyncio.gather`) on one event loop per process. Raises
        when a value is not a number or `None`, is not finite, or when no function applies to a rollout.
        """
        num = batch["responses"].size(0)
        prompts, completions = self._decode_for_reward(rows, batch)
        completion_ids = [r[m].tolist() for r, m in zip(batch["responses"], batch["response_mask"], strict=True)]
        columns = _reward_columns(rows)
        kwargs = {
            **columns,
            "trainer_state": self.state,
            "log_extra": self._log_completion_extra,
            "log_metric": self._log_metric,
        }
        calls = {"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **kwargs}
        self._pending_reward_metrics.clear()
        self._pending_extra_columns.clear()
        sources = ([self.reward_model] if self.reward_model is not None else []) + self.reward_funcs
        tokenizers = ([self.reward_processing_class] if self.reward_model is not None else []) + (
            self.reward_processing_classes
        )
        rewards = torch.full((num, len(sources)), math.nan, device=self.accelerator.device)  # (B, F)
        # a failure is kept, not raised, until every source has run: a reward model sharded by ZeRO-3 gathers its
        # weights in each forward, so every rank must reach every forward; then all ranks raise it together
        failure: tuple[str, Exception] | None = None
        async_funcs = {}
        for i, (func, tokenizer) in enumerate(zip(sources, tokenizers, strict=True)):
            name = self.reward_func_names[i]
            try:
                if isinstance(func, nn.Module) and func is self.reward_model and i == 0:
                    values = self._reward_model_scores(rows, batch, prompts).tolist()  # the RewardTrainer read-out
                elif isinstance(func, nn.Module):
                    values = self._grpo_reward_model_scores(func, tokenizer, prompts, completions, name).tolist()
                elif _is_async_callable(func):
                    async_funcs[i] = func  # run together below, as GRPO runs them
                    continue
                else:
                    values = func(**calls)
                rewards[:, i] = self._reward_values(i, values, num, prompts)
            except Exception as error:  # noqa: BLE001 (re-raised below, on every rank)
                failure = failure or (name, error)
        if async_funcs:
            try:
                outputs = _run_concurrently([func(**calls) for func in async_funcs.values()])
                for i, values in zip(async_funcs, outputs, strict=True):
                    rewards[:, i] = self._reward_values(i, values, num, prompts)
            except Exception as error:  # noqa: BLE001 (re-raised below, on every rank)
                failure = failure or (", ".join(self.reward_func_names[i] for i in async_funcs), error)
        unscored = rewards.isnan().all(dim=1).nonzero().flatten().tolist()
        if unscored and failure is None:
            i = unscored[0]
            row = {"prompt": prompts[i], "completion": completions[i], **{k: v[i] for k, v in columns.items()}}
            failure = (
                ", ".join(self.reward_func_names),
                ValueError(
                    f"Rollout {i} at step {self.state.global_step + 1} has no score: every reward function "
                    f"({', '.join(self.reward_func_names)}) returned None for it ({row}); rollouts without a score: "
                    f"{unscored}. `None` means a function does not apply to a completion, so at least one must return a "
                    "number for every completion."
                ),
            )
        self._raise_on_every_rank(failure)
        self._flush_reward_metrics(mode)
        self._last_extra_columns = dict(self._pending_extra_columns)
        return rewards

    def _raise_on_every_rank(self, failure: tuple[str, Exception] | None) -> None:
        """Raise a scoring failure on every process, not only where it happened (where the others would wait in
        their next collective until it times out): one all-reduce of a flag, and on failure a gather of the messages.

        One process: the error itself. Several: every rank raises the first failing rank's error type (a builtin
        one; `RuntimeError` otherwise) with a message that names that rank and the reward function(s), chained to the
        original on the rank where it happened.
        """
        if self.accelerator.num_processes == 1:
            if failure is not None:
                raise failure[1]
            return
        flag = torch.tensor([float(failure is not None)], device=self.accelerator.device)
        if not self.accelerator.reduce(flag, "sum").item():
            return
        from accelerate.utils import gather_object

        rank = self.accelerator.process_index
        mine = [(rank, failure[0], type(failure[1]).__name__, str(failure[1]))] if failure is not None else []
        reports = gather_object(mine)
        first_rank, names, kind, message = reports[0]
        error_type = getattr(builtins, kind, None)
        if not (isinstance(error_type, type) and issubclass(error_type, Exception)):
            error_type = RuntimeError
        also = f" (also failed: rank(s) {[r[0] for r in reports[1:]]})" if len(reports) > 1 else ""
        error = error_type(
            f"Scoring failed on rank {first_rank} of {self.accelerator.num_processes} at step "
            f"{self.state.global_step + 1}, reward function(s) {names}{also}: {kind}: {message}"
        )
        if failure is not None and first_rank == rank:
            raise error from failure[1]
        raise error

    def _reward_values(self, index: int, values: Any, num_completions: int, prompts: list) -> torch.Tensor:
        """One reward function's output as a `(B,)` float tensor (NaN for `None`); non-finite numbers raise."""
        name = self.reward_func_names[index]
        rewards = torch.tensor(_checked_reward_values(name, values, num_completions), dtype=torch.float32)
        given = torch.tensor([value is not None for value in values], dtype=torch.bool)
        bad = (given & ~torch.isfinite(rewards)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"Non-finite reward scores at step {self.state.global_step + 1} for rollouts {bad} from reward "
                f"function `{name}`: {rewards[bad].tolist()} (prompt of rollout {bad[0]}: {prompts[bad[0]]!r}). Check the reward model/functions (return None, not NaN, "
                "for a completion a function does not apply to); training on them would corrupt the running moments."
            )
        return rewards.to(self.accelerator.device)

    def _combine_rewards(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """GRPO's nan-aware weighted sum `(B, F) -> (B,)`: a function that returned `None` is left out of the sum."""
        scores = (rewards_per_func * self.reward_weights.unsqueeze(0)).nansum(dim=1)
        if not torch.isfinite(scores).all():
            bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
            raise ValueError(
                f"Non-finite reward scores at step {self.state.global_step + 1} for rollouts {bad}: "
                f"{scores[bad].tolist()} (the weighted sum overflowed). Check the reward model/functions and "
                "`reward_weights`; training on them would corrupt the running moments."
            )
        return scores

    def _reward_func_stats(self, rewards_per_func: torch.Tensor) -> dict[str, float]:
        """GRPO's `rewards/<name>/mean` and `/std` (Bessel) over the rollouts each function applies to. A statistic
        with no value (the function applied to no rollout, or to one for the std) is left out, not logged as NaN."""
        stats = {}
        for i, name in enumerate(self.reward_func_names):
            column = rewards_per_func[:, i].float()
            for key, value in ((f"rewards/{name}/mean", column.nanmean()), (f"rewards/{name}/std", _nanstd(column))):
                if torch.isfinite(value):
                    stats[key] = value.item()
        return stats

    def _log_completion_extra(self, column: str, values: list) -> None:
        """`log_extra`: a column for the completions table of `generate_completions`, one value per completion."""
        self._pending_extra_columns[column].extend(values)

    def _log_metric(self, name: str, value: float) -> None:
        """`log_metric`: a scalar averaged over the processes and over each logging window, logged as `name`."""
        self._pending_reward_metrics[name].append(float(value))

    def _flush_reward_metrics(self, mode: str | None) -> None:
        """Average each `log_metric` name over this call's values on all processes (GRPO's pooling) into `mode`."""
        pending = dict(self._pending_reward_metrics)
        self._pending_reward_metrics.clear()
        if mode is None:
            return
        if self.accelerator.num_processes == 1:
            for name, values in pending.items():
                self._metrics[mode][name].append(sum(values) / len(values))
            return
        from accelerate.utils import gather_object

        # the same names in the same order on every rank: each name is one collective
        for name in sorted(set(gather_object(list(pending)))):
            values = pending.get(name, [])
            local = torch.tensor([sum(values), len(values)], dtype=torch.float32, device=self.accelerator.device)
            total, count = self.accelerator.gather(local).view(-1, 2).sum(dim=0).tolist()
            self._metrics[mode][name].append(total / count)

    def _reward_model_scores(self, rows: list[dict], batch: dict[str, torch.Tensor], prompts: list) -> torch.Tensor:
        """The `reward_model` argument's scalar per rollout `(B,)`, read as TRL's `RewardTrainer` trained it.

        Without `reward_processing_class` the model reads the policy's ids; with one it re-reads the rollout in its own
        tokens (`_reward_model_sequences`). The score is read at the last attended token that is not the RM's
        `config.pad_token_id` (`pu.reward_readout_indices`): the stop token when pad != EOS, the token before the EOS
        when pad == EOS (how TRL's `RewardTrainer` leaves a tokenizer without a pad token), so the score comes from the
        position the head was trained on. Models in `reward_funcs` are scored as GRPO scores them instead
        (`_grpo_reward_model_scores`).
        """
        model, tokenizer = self.reward_model, self.reward_processing_class
        pad_id = getattr(_text_config(model), "pad_token_id", None)
        if pad_id is None:
            pad_id = (tokenizer or self.processing_class).pad_token_id
        if tokenizer is None:
            inputs = self._sequence_inputs(batch, slice(None))
            input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        else:
            sequences = self._reward_model_sequences(rows, batch, tokenizer)
            sequences = self._fit_reward_context(sequences, model, "the reward model (`reward_model`)", prompts)
            input_ids, attention_mask = self._right_padded(sequences, 0 if pad_id is None else pad_id)
        with self.accelerator.autocast():  # the precision of training (bf16 runs)
            per_position = per_position_scores(model, input_ids, attention_mask)  # (B, S)
        readout = pu.reward_readout_indices(input_ids, attention_mask, pad_id)  # (B,)
        return per_position[torch.arange(per_position.size(0), device=per_position.device), readout].float()

    def _reward_model_sequences(
        self, rows: list[dict], batch: dict[str, torch.Tensor], rm_tok: PreTrainedTokenizerBase
    ) -> list[list[int]]:
        """Prompt + response of every rollout in the tokens of a `reward_model` that has its own tokenizer.

        The RM sees what TRL's `RewardTrainer` trained it on. Conversational `prompt` rows: the RM's chat template over
        the prompt messages plus `{"role": "assistant", "content": completion}`; a response that did not stop leaves
        its turn open (`continue_final_message`). Text or tokenized prompts: the policy ids decoded with their special
        tokens (chat markers the RM may know) except padding and a leading BOS, the policy's stop token swapped for
        the RM's EOS text, tokenized with the RM's own special tokens (e.g. its BOS).
        """
        tok = self.processing_class
        conversational = isinstance(rows[0].get("prompt"), list) and rm_tok.chat_template is not None
        sequences = []
        for i, row in enumerate(rows):
            stopped = bool(batch["stopped"][i])
            response = batch["responses"][i][batch["response_mask"][i]]
            if stopped:
                response = response[:-1]  # the policy's stop token: the RM's own end marker replaces it
            if conversational:
                completion = tok.decode(response, skip_special_tokens=True)  # markers come from the RM's template
                messages = [*row["prompt"], {"role": "assistant", "content": completion}]
                ids = rm_tok.apply_chat_template(
                    messages, tokenize=True, return_dict=True, continue_final_message=not stopped
                )["input_ids"]
            else:
                prompt = batch["queries"][i][batch["query_mask"][i].bool()]
                if tok.bos_token_id is not None and prompt[0] == tok.bos_token_id:
                    prompt = prompt[1:]  # the RM's tokenizer adds its own BOS, if it has one
                text = tok.decode(torch.cat([prompt, response]), skip_special_tokens=False)
                if stopped and rm_tok.eos_token is not None:
                    text += rm_tok.eos_token
                ids = rm_tok(text)["input_ids"]
            sequences.append(list(ids))
        return sequences

    def _grpo_reward_model_scores(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list, completions: list, name: str
    ) -> torch.Tensor:
        """A reward model in `reward_funcs`, scored exactly as TRL 1.16's `GRPOTrainer._calculate_rewards` scores it:
        `(B,)`.

        Its input is the text the reward functions get: `prompt + completion` for text prompts, or TRL's
        `apply_chat_template({"messages": prompt + completion})` (a closed conversation) for conversational ones, with
        the completion decoded without special tokens (so no EOS, stopped or not); tokenized by the model's tokenizer
        with `add_special_tokens=False`, right-padded with its pad token, and read by the model's own forward at
        `logits[:, 0]` (the last token that is not the pad token, `config.pad_token_id` being set to the tokenizer's
        at construction). No autocast: GRPO calls the model in its own dtype.
        """
        from trl.data_utils import apply_chat_template, is_conversational

        if is_conversational({"prompt": prompts[0]}):
            texts = [
                apply_chat_template({"messages": p + c}, tokenizer)["text"]
                for p, c in zip(prompts, completions, strict=True)
            ]
        else:
            texts = [p + c for p, c in zip(prompts, completions, strict=True)]
        sequences = tokenizer(text=texts, add_special_tokens=False)["input_ids"]
        sequences = self._fit_reward_context(sequences, model, f"reward function `{name}`", prompts)
        input_ids, attention_mask = self._right_padded(sequences, tokenizer.pad_token_id)
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()

    def _fit_reward_context(
        self, sequences: list[list[int]], model: nn.Module, what: str, prompts: list
    ) -> list[list[int]]:
        """`sequences` checked against the reward model's `max_position_embeddings`: a longer one raises (naming the
        model, rollout, length and prompt) or, with `reward_context_overflow='truncate_left'`, keeps its last positions
        with one warning per run. RoPE models would extrapolate silently, learned-position models crash late."""
        positions = _max_positions(model)
        too_long = [i for i, ids in enumerate(sequences) if positions and len(ids) > positions]
        if not too_long:
            return sequences
        i = too_long[0]
        detail = (
            f"rollout {i} at step {self.state.global_step + 1} is {len(sequences[i])} tokens for {what}, whose "
            f"max_position_embeddings is {positions} (rollouts over it: {too_long}; prompt {str(prompts[i])[:200]!r})"
        )
        if self.args.reward_context_overflow == "error":
            raise ValueError(
                f"Prompt + completion does not fit a reward model's context: {detail}. Shorten the prompts "
                "(`max_prompt_length`), lower `response_length`, or set `reward_context_overflow='truncate_left'` to "
                "score the last positions."
            )
        if not getattr(self, "_warned_reward_truncation", False):
            logger.warning(f"Truncating reward-model inputs from the left (reward_context_overflow): {detail}.")
            self._warned_reward_truncation = True
        return [ids[-positions:] if len(ids) > positions else ids for ids in sequences]

    def _right_padded(self, sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, S)` ids right-padded with `pad_id` and their attention mask, on the device."""
        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for i, ids in enumerate(sequences):
            input_ids[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[i, : len(ids)] = 1
        return input_ids.to(self.accelerator.device), attention_mask.to(self.accelerator.device)

    def _decode_for_reward(self, rows: list[dict], batch: dict) -> tuple[list, list]:
        completions = [
            self.processing_class.decode(r[m], skip_special_tokens=True)
            for r, m in zip(batch["responses"], batch["response_mask"], strict=True)
        ]
        if rows and "prompt" in rows[0]:
            prompts = [row["prompt"] for row in rows]
            if isinstance(prompts[0], list):  # conversational: completions as assistant messages, as GRPO does
                completions = [[{"role": "assistant", "content": c}] for c in completions]
        else:
            prompts = self.processing_class.batch_decode([row["input_ids"] for row in rows], skip_special_tokens=True)
        return prompts, completions

    def _all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.to(self.accelerator.device), "sum").cpu()

    # ---- metrics -----------------------------------------------------------------------------------------------------

    def update_reward_moments(self, raw_scores: torch.Tensor) -> None:
        """Merge this step's raw scores, pooled over all processes, into the running moments (before any use)."""
        batch_mean, batch_var, batch_count = pu.batch_moments(raw_scores, self._all_reduce_sum)
        self.reward_moments = pu.merge_moments(self.reward_moments, batch_mean, batch_var, batch_count)
        self._last_batch_moments = (batch_mean, batch_var, batch_count)

    def _reduced_mean(self, tensor: torch.Tensor) -> float:
        return self.accelerator.reduce(tensor.float().mean().to(self.args.device), "mean").item()

    def _monitor_metrics(self, batch: dict[str, torch.Tensor], start_time: float) -> dict[str, float]:
        """The paper's collapse monitors ([P] §5.2) for any online trainer: length, KL to the reference, perplexity."""
        args, acc, mean = self.args, self.accelerator, self._reduced_mean
        mask = batch["response_mask"]
        lengths = mask.sum(1).float()
        log_ratio = (batch["logprobs"] - batch["ref_logprobs"]) * mask
        k3 = pu.kl_estimate(batch["logprobs"], batch["ref_logprobs"], "k3") * mask
        num_tokens = mask.sum().clamp(min=1)
        batch_mean, batch_var, batch_count = self._last_batch_moments
        return {
            "eps": (self.episode - self._start_episode) / max(time.time() - start_time, 1e-9),
            "objective/entropy": mean((-batch["logprobs"] * mask).sum(1)),
            "val/num_eos_tokens": acc.reduce(batch["stopped"].sum().to(args.device), "sum").item(),
            "ppomax/kl_per_token": mean(log_ratio.sum() / num_tokens),
            "ppomax/kl_per_token_k3": mean(k3.sum() / num_tokens),
            "ppomax/response_length": mean(lengths),
            "ppomax/response_length_max": acc.reduce(lengths.max().to(args.device), "max").item(),
            "ppomax/max_length_share": mean((~batch["stopped"] & (lengths >= args.response_length)).float()),
            "ppomax/eos_rate": mean(batch["stopped"].float()),
            "ppomax/ppl_policy": math.exp(mean(-(batch["logprobs"] * mask).sum() / num_tokens)),
            "ppomax/ppl_ref": math.exp(mean(-(batch["ref_logprobs"] * mask).sum() / num_tokens)),
            "ppomax/raw_score_mean": batch_mean,
            "ppomax/raw_score_std": math.sqrt(batch_var * batch_count / max(batch_count - 1, 1)),
            "ppomax/running_mean": self.reward_moments.mean,
            "ppomax/running_std": self.reward_moments.std,
            "episode": self.episode,
        }

    def _store_metrics(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._metrics["train"][key].append(float(value))
        self._warn_on_collapse(metrics)

    def _warn_on_collapse(self, metrics: dict[str, float]) -> None:
        if not self.accelerator.is_main_process:
            return  # metrics are already reduced over processes: one warning is enough
        step = self.state.global_step + 1  # the update being logged, 1-based like the logged `step`
        for message in self.collapse_monitor.check(
            step, metrics["ppomax/max_length_share"], metrics["ppomax/kl_per_token"], self.args.response_length
        ):
            logger.warning(message)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        averaged = {key: sum(v) / len(v) for key, v in self._metrics[mode].items() if v}
        if mode == "eval":
            averaged = {f"eval_{key}": value for key, value in averaged.items()}
        logs = {**logs, **averaged}
        if "learning_rate" in logs:
            logs["lr"] = logs["learning_rate"]
        super().log(logs, start_time)
        self._metrics[mode].clear()
        if mode == "train" and self._completions_to_log:  # `log_completions`: each update's rows are shown once
            table, self._completions_to_log = self._completions_to_log, None
            self._report_completions(table, self.args.num_completions_to_print, title=f"Step {table[0]['step']}")

    # ------------------------------------------------------------------------------------------------------------------
    # Evaluation and samples
    # ------------------------------------------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Held-out reward distribution ([P] §5.2): sample each eval prompt once, report raw-score statistics."""
        dataset = (
            self._prepare_prompt_dataset(eval_dataset, self.processing_class, self.args, "eval")
            if (eval_dataset is not None)
            else self.eval_dataset
        )
        if dataset is None:
            raise ValueError("`evaluate` needs an `eval_dataset` of prompts.")
        per_func, lengths = [], []
        indices, valid = self._eval_shard(len(dataset))
        size = self.args.per_device_eval_batch_size
        for start in range(0, len(indices), size):
            rows = [dataset[i] for i in indices[start : start + size]]
            queries, query_mask = self._collate_prompts(rows)
            batch = self.generate_responses(
                self.model_wrapped, queries, query_mask, temperature=self.args.temperature, top_p=self.args.top_p
            )
            per_func.append(self.rewards_per_func(rows, batch, mode="eval"))
            lengths.append(batch["response_mask"].sum(1).float())
        keep = self.accelerator.gather_for_metrics(torch.tensor(valid, device=self.accelerator.device)).cpu()
        all_per_func = self.accelerator.gather_for_metrics(torch.cat(per_func)).float().cpu()[keep]  # (N, F)
        all_scores = self._combine_rewards(all_per_func.to(self.accelerator.device)).cpu()
        all_lengths = self.accelerator.gather_for_metrics(torch.cat(lengths)).float().cpu()[keep]
        quantiles = torch.quantile(all_scores, torch.tensor([0.1, 0.5, 0.9]))
        metrics = {
            f"{metric_key_prefix}_objective/scores": all_scores.mean().item(),
            f"{metric_key_prefix}_ppomax/score_std": all_scores.std(unbiased=False).item(),
            f"{metric_key_prefix}_ppomax/score_p10": quantiles[0].item(),
            f"{metric_key_prefix}_ppomax/score_p50": quantiles[1].item(),
            f"{metric_key_prefix}_ppomax/score_p90": quantiles[2].item(),
            f"{metric_key_prefix}_ppomax/response_length": all_lengths.mean().item(),
        }
        # per reward function over the whole eval set, then what the functions passed to `log_metric`
        metrics.update({f"{metric_key_prefix}_{k}": v for k, v in self._reward_func_stats(all_per_func).items()})
        logged = {f"{metric_key_prefix}_{k}": sum(v) / len(v) for k, v in self._metrics["eval"].items() if v}
        self._metrics["eval"].clear()
        metrics.update(logged)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _eval_shard(self, num_rows: int) -> tuple[list[int], list[bool]]:
        """This process's eval rows (strided) and which are real: padded by repeating rows to the same count on every
        process, so all run the same generation batches (ZeRO-3 gathers inside them) and gather equal sizes."""
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        positions = range(rank, math.ceil(num_rows / world) * world, world)
        return [p % num_rows for p in positions], [p < num_rows for p in positions]

    def generate_completions(self, sampling: bool = False) -> list[dict[str, Any]] | None:
        """Near-greedy (temperature 0.01) completions of `eval_dataset` with their scores, printed and logged.

        `sampling=True` stops after the first eval batch (TRL 1.12 behaviour). Returns the table rows.
        """
        if self.eval_dataset is None:
            return None
        table = []
        size = self.args.per_device_eval_batch_size
        indices, valid = self._eval_shard(len(self.eval_dataset))
        for start in range(0, len(indices), size):
            rows = [self.eval_dataset[i] for i in indices[start : start + size]]
            queries, query_mask = self._collate_prompts(rows)
            batch = self.generate_responses(self.model_wrapped, queries, query_mask, temperature=0.01, top_p=1.0)
            scores = self.score(rows, batch, mode=None)
            extra = self._last_extra_columns  # what the reward functions passed to `log_extra`
            prompts = self.processing_class.batch_decode(queries, skip_special_tokens=True)
            for i, prompt in enumerate(prompts):
                if not valid[start + i]:
                    continue
                response = self.processing_class.decode(batch["responses"][i][batch["response_mask"][i]])
                entry = {"query": prompt, "model response": response, "score": float(scores[i])}
                for column, values in extra.items():
                    entry.setdefault(column, values[i] if i < len(values) else None)
                table.append(entry)
            if sampling:
                break
        from accelerate.utils import gather_object

        table = gather_object(table)
        self._report_completions(table, num_to_print=5)
        return table

    def _report_completions(
        self, table: list[dict[str, Any]], num_to_print: int | None, title: str | None = None
    ) -> None:
        """Print a gathered completions table (its first `num_to_print` rows; None: all) with rich and, when
        `report_to` has wandb and a run is active, log all of it as W&B's `completions` table at this step. Main
        process only; `generate_completions` and `log_completions` both report through here."""
        if not self.accelerator.is_main_process:
            return
        _print_table(table if num_to_print is None else table[:num_to_print], title=title)
        if "wandb" in (self.args.report_to or []):
            import wandb

            if wandb.run is not None:
                columns = list(dict.fromkeys(column for r in table for column in r))
                # the step explicitly: `WandbCallback` plots every key against `train/global_step`, and wandb would
                # otherwise fill in the last *logged* step (behind when `logging_steps > 1`)
                wandb.log(
                    {
                        "completions": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in table]),
                        "train/global_step": self.state.global_step,
                    }
                )

    # ------------------------------------------------------------------------------------------------------------------
    # Saving, checkpoints, resume
    # ------------------------------------------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Policy at `output_dir` (loads with `AutoModelForCausalLM.from_pretrained`), critic (if any) in `value_model/`.

        The wrapper's state dict is split by prefix and each sub-model saves its own part, which handles tied
        embeddings and the gathered state dict that ZeRO-3 passes in.
        """
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        wrapper = self.accelerator.unwrap_model(self.model)
        if state_dict is None:
            state_dict = wrapper.state_dict()
        parts = {"policy.": {}, "value_model.": {}}
        for key, value in state_dict.items():
            for prefix, part in parts.items():
                if key.startswith(prefix):
                    part[key[len(prefix) :]] = value
        wrapper.policy.save_pretrained(output_dir, state_dict=parts["policy."])
        if wrapper.value_model is not None:
            wrapper.value_model.save_pretrained(
                os.path.join(output_dir, VALUE_MODEL_DIR), state_dict=parts["value_model."]
            )
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        wrapper = self.accelerator.unwrap_model(model or self.model)
        _load_pretrained_weights(wrapper.policy, resume_from_checkpoint)
        if wrapper.value_model is not None:
            _load_pretrained_weights(wrapper.value_model, os.path.join(resume_from_checkpoint, VALUE_MODEL_DIR))

    def _load_best_model(self) -> None:
        """`load_best_model_at_end`: the policy and critic (full weights or PEFT adapters) of the best checkpoint.

        `Trainer._load_best_model` expects `self.model` to be a `PreTrainedModel` and would load the policy's
        `model.safetensors` into the wrapper, where no key matches. This loads the checkpoint as resuming does: from
        `save_pretrained` files through `_load_from_checkpoint`, or under DeepSpeed (ZeRO-3 parameters are partitioned)
        from the engine's own `global_step*/` files, which hold the whole wrapper.
        """
        checkpoint = self.state.best_model_checkpoint
        if not os.path.isdir(checkpoint):
            logger.warning(
                f"Could not find the best checkpoint {checkpoint}: the model stays as trained to the end. On several "
                "nodes without a shared filesystem, set `save_on_each_node=True`."
            )
            return
        logger.info(f"Loading best model from {checkpoint} (score: {self.state.best_metric}).")
        if self.is_deepspeed_enabled:
            from transformers.integrations.deepspeed import deepspeed_load_checkpoint

            deepspeed_load_checkpoint(self.model_wrapped, checkpoint, load_module_strict=True)  # as resuming does
        else:
            self._load_from_checkpoint(checkpoint)

    def _save_extra_checkpoint_files(self, checkpoint_dir: str) -> None:
        """`ppomax_state.json` in the (staged) checkpoint, and the model card; `AtomicCheckpointMixin` calls it."""
        if self.args.should_save:
            with open(os.path.join(checkpoint_dir, PPOMAX_STATE_NAME), "w") as f:
                json.dump(self._ppomax_state(), f, indent=2)
            self.create_model_card(model_name=os.path.basename(os.path.normpath(self.args.output_dir)))

    def _ppomax_state(self) -> dict[str, Any]:
        """Algorithm state a checkpoint carries beyond what `Trainer` saves (subclasses extend it)."""
        return {
            "reward_moments": self.reward_moments.state_dict(),
            "critic_warmup_done": self.critic_warmup_done,
            "critic_warmup_finished": self.critic_warmup_finished,
            "episode": self.episode,
            "collapse_monitor": self.collapse_monitor.state_dict(),
        }

    def _load_ppomax_state(self, checkpoint: str) -> dict[str, Any]:
        path = os.path.join(checkpoint, PPOMAX_STATE_NAME)
        if not os.path.isfile(path):
            raise ValueError(f"{checkpoint} has no {PPOMAX_STATE_NAME}: it was not written by a ppomax_trl trainer.")
        state = load_json(path, checkpoint)
        self.reward_moments = pu.RunningMoments.from_state_dict(state["reward_moments"])
        self.critic_warmup_done = state["critic_warmup_done"]
        self.critic_warmup_finished = state["critic_warmup_finished"]
        self.episode = state["episode"]
        self.collapse_monitor.load_state_dict(state.get("collapse_monitor", {}))  # absent in 0.1.0 checkpoints
        return state

    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """A short README.md with tags and the paper; written on the main process only."""
        if not self.is_world_process_zero():
            return
        tags = "\n".join(f"- {tag}" for tag in self._tag_names)
        text = (
            f"---\nlibrary_name: transformers\ntags:\n{tags}\n---\n\n# {model_name or 'policy'}\n\n"
            f"Trained with `ppomax_trl.{type(self).__name__}` ({self._name}), "
            f"https://huggingface.co/papers/{self._paper['id']} ({self._paper['title']}).\n"
        )
        if self.value_model is not None:
            text += f"The critic is saved in `{VALUE_MODEL_DIR}/`.\n"
        else:
            text += "No critic is trained or saved.\n"
        with open(os.path.join(self.args.output_dir, "README.md"), "w") as f:
            f.write(text)


# ----------------------------------------------------------------------------------------------------------------------
# Module-level helpers
# ----------------------------------------------------------------------------------------------------------------------
def _load_pretrained_weights(model: nn.Module, folder: str) -> None:
    """Load weights saved by `save_pretrained` (full or PEFT adapter) into an existing model, in place.

    A truncated or corrupted file raises `checkpoints.CheckpointFileError`, which names it.
    """
    if is_peft_available() and isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_safetensors(os.path.join(folder, "adapter_model.safetensors")))
        return
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"No safetensors weights in {folder}.")
    state = {}
    for name in files:
        state.update(load_safetensors(os.path.join(folder, name)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    tied |= {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise ValueError(f"Checkpoint {folder} does not match the model: missing {missing}, unexpected {unexpected}.")


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


def _reward_columns(rows: list[dict]) -> dict[str, list]:
    """The dataset columns a reward function gets, one list per column, from the batch's own rows (train or eval, as
    GRPO passes each batch's columns): every column but the prompt ids and GRPO's own argument names."""
    reserved = ("input_ids", "attention_mask", "prompt", "completion", "completion_ids")
    return {key: [row[key] for row in rows] for key in rows[0] if key not in reserved} if rows else {}


def _checked_reward_values(name: str, values: Any, num_completions: int) -> list[float]:
    """A reward function's output as floats, NaN for `None` ("does not apply", as in GRPO), or an error that names the
    function and the offending rollouts."""
    if isinstance(values, torch.Tensor) or hasattr(values, "tolist"):  # tensors, numpy arrays
        values = values.tolist()
    if not isinstance(values, list | tuple):
        raise TypeError(
            f"Reward function `{name}` returned {type(values).__name__}; it must return a list with one float (or None "
            f"where it does not apply) per completion ({num_completions} here)."
        )
    if len(values) != num_completions:
        raise ValueError(f"Reward function `{name}` returned {len(values)} scores for {num_completions} completions.")
    bad = [i for i, value in enumerate(values) if isinstance(value, str | bytes)]
    if bad:
        raise TypeError(
            f"Reward function `{name}` returned {values[bad[0]]!r} for rollout(s) {bad}: every completion needs a "
            "number, or None where the function does not apply."
        )
    try:
        return [math.nan if value is None else float(value) for value in values]
    except (TypeError, ValueError) as error:
        raise TypeError(f"Reward function `{name}` returned a value that is not a number: {error}") from error


def _check_reward_model(model: nn.Module, what: str) -> None:
    _score_head(model)
    num_labels = getattr(_peft_base(model).config, "num_labels", 1)
    if num_labels != 1:
        raise ValueError(f"{what} has num_labels={num_labels}; it must output one scalar (`num_labels=1`).")


def _reward_model_from_path(path: str | os.PathLike) -> nn.Module:
    """A reward model given by name or path: a sequence classifier with one label, loaded as GRPO loads one."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(os.fspath(path), num_labels=1)


def _load_reward_funcs(
    reward_funcs: list, reward_processing_classes, trainer_name: str
) -> tuple[list, list[PreTrainedTokenizerBase | None]]:
    """GRPO's `reward_funcs` and `reward_processing_classes`: a path becomes a frozen sequence classifier
    (`num_labels=1`); every model gets a tokenizer (given, else loaded from its `config._name_or_path`) with a pad token,
    and its config's `pad_token_id` becomes that tokenizer's (GRPO's readout position); plain functions get `None`."""
    if reward_processing_classes is None:
        reward_processing_classes = [None] * len(reward_funcs)
    elif not isinstance(reward_processing_classes, list | tuple):
        reward_processing_classes = [reward_processing_classes]
    if len(reward_processing_classes) != len(reward_funcs):
        raise ValueError(
            f"`reward_processing_classes` has {len(reward_processing_classes)} entries but `reward_funcs` has "
            f"{len(reward_funcs)}: give one per reward function (None for a plain function)."
        )
    funcs, tokenizers = [], []
    for i, (func, tokenizer) in enumerate(zip(reward_funcs, reward_processing_classes, strict=True)):
        if isinstance(func, str | os.PathLike):
            func = _reward_model_from_path(func)
        if not isinstance(func, nn.Module):
            if not callable(func):
                raise TypeError(
                    f"`reward_funcs[{i}]` is a {type(func).__name__}; it must be a function, a reward model or a path."
                )
            funcs.append(func)
            tokenizers.append(None)
            continue
        _check_reward_model(func, f"`reward_funcs[{i}]`")
        if tokenizer is None:
            source = getattr(_peft_base(func).config, "_name_or_path", "")
            hint = (
                f"`reward_funcs[{i}]` is a reward model; it reads the decoded text with its own tokenizer. Pass it in "
                "`reward_processing_classes` (one entry per reward function)"
            )
            if not source:
                raise ValueError(f"{hint}: the model has no `config._name_or_path` to load it from.")
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(source)
            except (OSError, ValueError) as error:
                raise ValueError(f"{hint}: loading it from {source!r} failed ({error}).") from error
        tokenizer = tokenizer_with_padding(tokenizer, trainer_name)
        # as GRPO does: the model reads its score at the last token that is not its tokenizer's pad token
        _peft_base(func).config.get_text_config().pad_token_id = tokenizer.pad_token_id
        funcs.append(freeze(func))
        disable_dropout(func)
        tokenizers.append(tokenizer)
    return funcs, tokenizers


def _reward_func_name(func: Any) -> str:
    """GRPO's name of a reward function in `rewards/<name>/...`: a model's `config._name_or_path` basename (its class
    name when that is empty), a function's `__name__` (through `functools.partial`), a callable's class name."""
    if isinstance(func, nn.Module):
        path = getattr(_peft_base(func).config, "_name_or_path", "") or ""
        return os.path.basename(os.path.normpath(path)) if path else type(_peft_base(func)).__name__
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def _unique_names(names: list[str]) -> list[str]:
    """`names`, with a repeated one suffixed `_2`, `_3`, ...: two functions never pool into one metric."""
    seen, unique = defaultdict(int), []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def _is_async_callable(func: Callable) -> bool:
    """Whether calling `func` returns a coroutine: an `async def` function, a partial of one, or an instance with an
    `async def __call__` (which `inspect.iscoroutinefunction` does not see on the instance itself)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


_EVENT_LOOP: tuple[int, asyncio.AbstractEventLoop] | None = None
_EVENT_LOOP_LOCK = threading.Lock()


def _run_concurrently(coroutines: list) -> list:
    """Await `coroutines` together (`asyncio.gather`) and return their results in order.

    They run on one event loop per process, kept in a daemon thread as GRPO keeps its own: async clients bound to a
    loop (an LLM judge's HTTP session) keep working from step to step, and the trainer may be called from code whose
    own event loop is running (a notebook). A forked child starts its own loop.
    """
    global _EVENT_LOOP
    with _EVENT_LOOP_LOCK:
        if _EVENT_LOOP is None or _EVENT_LOOP[0] != os.getpid() or _EVENT_LOOP[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="ppomax-trl-reward-loop", daemon=True).start()
            _EVENT_LOOP = (os.getpid(), loop)
        loop = _EVENT_LOOP[1]

    async def gather():
        return await asyncio.gather(*coroutines)

    return asyncio.run_coroutine_threadsafe(gather(), loop).result()


def _nanstd(values: torch.Tensor) -> torch.Tensor:
    """Bessel-corrected standard deviation of the non-NaN entries (TRL's `nanstd`); NaN with fewer than two."""
    kept = values[~values.isnan()]
    return kept.std(unbiased=True) if kept.numel() > 1 else values.new_tensor(math.nan)


def _print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    if not rows:
        return
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        for row in rows:
            print(row)  # noqa: T201
        return
    columns = list(dict.fromkeys(column for row in rows for column in row))
    table = Table(show_lines=True, title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        # `Text`: a completion's brackets are text, not rich markup
        table.add_row(*(Text(f"{v:.3f}" if isinstance(v, float) else str(v)) for v in map(row.get, columns)))
    Console().print(table)


def _as_text(value: Any) -> str:
    """A prompt or completion for a table: a conversation becomes its messages' contents, one per line."""
    if isinstance(value, list):
        return "\n".join(
            str(message.get("content", message)) if isinstance(message, dict) else str(message) for message in value
        )
    return str(value)


__all__ = ["OnlineRolloutTrainer", "PolicyAndValueWrapper", "per_position_scores"]
