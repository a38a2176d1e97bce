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
"""What a reward function is, as TRL 1.16's `GRPOTrainer` defines it: loading, names, output checks, async calls.

It owns `RewardFunc`, turning `reward_funcs` (functions, reward models, their paths) and `reward_processing_classes`
into callables and frozen sequence classifiers with their tokenizers (`_load_reward_funcs`), GRPO's metric names,
the check of a function's output (a number or `None` per completion), the dataset columns a function receives, and
the event loop that runs async functions together. It must not call a function on rollouts, read a trainer or
touch a collective: `scoring.RewardScorer` does that.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .model_utils import disable_dropout, freeze, tokenizer_with_padding
from .modules import _peft_base, _score_head


RewardFunc = Callable[..., list[float | None]] | PreTrainedModel | str


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
