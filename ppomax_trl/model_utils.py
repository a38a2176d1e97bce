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
"""Small model utilities shared by the trainers: loading a policy and its tokenizer by name, freezing, dropout, copies
that survive DeepSpeed ZeRO-3, and a padded copy of a tokenizer without a pad token."""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

from .modules import _peft_base
from .ppo_config import OnlineRolloutConfig


logger = logging.get_logger(__name__)


_DTYPE_NAMES = ("bfloat16", "float16", "float32")


def causal_lm_from_path(
    model_id: str | os.PathLike, model_init_kwargs: dict[str, Any] | None, trainer_name: str
) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained(model_id, **model_init_kwargs)`, with `dtype` as TRL's
    `create_model_from_path` reads it (GRPO, DPO): float32 when not given (transformers 5 would keep the checkpoint's
    dtype), else a `torch.dtype`, `"auto"` (the checkpoint's), `None` or one of "bfloat16", "float16", "float32"."""
    kwargs = dict(model_init_kwargs or {})
    dtype = kwargs.get("dtype", "float32")
    if isinstance(dtype, str) and dtype != "auto":
        if dtype not in _DTYPE_NAMES:
            raise ValueError(
                f"{trainer_name}: `model_init_kwargs['dtype']` must be a torch.dtype, 'auto' or one of {_DTYPE_NAMES}, "
                f"got {dtype!r}."
            )
        dtype = getattr(torch, dtype)
    kwargs["dtype"] = dtype
    return AutoModelForCausalLM.from_pretrained(os.fspath(model_id), **kwargs)


def tokenizer_of(model: nn.Module, trainer_name: str):
    """The tokenizer saved with `model`: `AutoTokenizer.from_pretrained(model.config._name_or_path)`, the folder or Hub
    id it was loaded from (as GRPO loads its processing class). A `ValueError` naming `trainer_name` says to pass
    `processing_class` when the model has no such name (built from a config) or nothing loads from it."""
    source = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    hint = f"{trainer_name}: `processing_class` was not given, so the tokenizer is loaded from the model's name"
    if not source:
        raise ValueError(
            f"{hint}, but the model has none (`config._name_or_path` is empty: built from a config?). Pass "
            "`processing_class=tokenizer`."
        )
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{hint}, {source!r}, and that failed ({error}). Pass `processing_class=tokenizer`."
        ) from error


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def is_zero3_partitioned(model: nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 has partitioned the parameters (`zero.Init` at load, e.g. with `zero3_init_flag`)."""
    return any(hasattr(param, "ds_id") for param in model.parameters())


def copy_zero3_parameters(target: nn.Module, sources: dict[str, nn.Parameter]) -> None:
    """Copy `sources` into the same-named parameters of `target`, both ZeRO-3 partitioned, one gathered pair at a time."""
    import deepspeed

    is_main = torch.distributed.get_rank() == 0
    for name, param in target.named_parameters():
        if name in sources:
            with deepspeed.zero.GatheredParameters([sources[name], param], modifier_rank=0):
                if is_main:
                    param.data.copy_(sources[name].data)


def copy_model(model: nn.Module) -> nn.Module:
    """`copy.deepcopy`, except for a ZeRO-3 partitioned model, whose deep copy would hold empty shards: build a fresh
    partitioned model from the config and copy the weights gathered."""
    if not is_zero3_partitioned(model):
        return copy.deepcopy(model)
    clone = type(model)._from_config(copy.deepcopy(model.config), dtype=next(model.parameters()).dtype)
    if getattr(model, "generation_config", None) is not None:
        clone.generation_config = copy.deepcopy(model.generation_config)
    sources = dict(model.named_parameters())
    copy_zero3_parameters(clone, sources)
    buffers = dict(model.named_buffers())
    for name, buffer in clone.named_buffers():
        if name in buffers:
            buffer.data.copy_(buffers[name])
    for name, param in clone.named_parameters():
        param.requires_grad_(sources[name].requires_grad)
    return clone.train(model.training)


def tokenizer_with_padding(tokenizer, trainer_name: str):
    """The tokenizer a trainer pads with, never the caller's tokenizer changed in place.

    A tokenizer with a pad token is returned as is. One without a pad token is deep-copied and the copy pads with EOS;
    one warning says so (and that the caller's tokenizer is unchanged). The trainer keeps the copy as its
    `processing_class`, so it is the one saved with the model. Raises a `ValueError` naming `trainer_name` when the
    tokenizer has neither a pad token nor an EOS.
    """
    if tokenizer.pad_token is not None:
        return tokenizer
    if tokenizer.eos_token is None:
        raise ValueError(
            f"{trainer_name}: the tokenizer has neither a pad token nor an EOS token. Add a pad token that is not a "
            "real content token, e.g. `tokenizer.add_special_tokens({'pad_token': '<pad>'})` and "
            "`model.resize_token_embeddings(len(tokenizer))`, then pass that tokenizer."
        )
    padded = copy.deepcopy(tokenizer)
    padded.pad_token = padded.eos_token
    logger.warning(
        f"{trainer_name}: the tokenizer has no pad token, so the trainer pads with a copy whose pad token is EOS "
        f"({padded.eos_token!r}, id {padded.pad_token_id}); the tokenizer you passed is unchanged. The copy is "
        f"`trainer.processing_class` and is saved with the model. Set `tokenizer.pad_token` yourself to choose another."
    )
    return padded


def resolve_model_inputs(
    args,
    model: str | os.PathLike | nn.Module | None,
    ref_model: str | os.PathLike | nn.Module | None,
    processing_class,
    *,
    config_class: type,
    trainer_name: str,
    run_suffix: str,
    warn_ignored_init_kwargs: bool = True,
):
    """An online trainer's `(args, model, ref_model, processing_class)` with what TRL GRPO users leave out filled in
    as GRPO fills it (see `OnlineRolloutTrainer._resolve_model_inputs`); the errors name `trainer_name`."""
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
        args = config_class(output_dir=f"{model_name}-{run_suffix}")
    if not isinstance(args, OnlineRolloutConfig):
        raise TypeError(
            f"{trainer_name}: `args` must be a ppomax_trl config (e.g. `PPOConfig`), got {type(args).__name__}."
        )
    if is_path:
        model = causal_lm_from_path(model, args.model_init_kwargs, trainer_name)
    elif args.model_init_kwargs is not None and warn_ignored_init_kwargs:
        logger.warning(
            f"{trainer_name}: `args.model_init_kwargs` is ignored for the policy, which was passed as a model; it "
            "applies when `model` (or `ref_model`) is a name or path."
        )
    if isinstance(ref_model, str | os.PathLike):
        ref_model = causal_lm_from_path(ref_model, args.model_init_kwargs, trainer_name)
    if processing_class is None:
        processing_class = tokenizer_of(_peft_base(model), trainer_name)
    return args, model, ref_model, processing_class
