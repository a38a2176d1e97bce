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
"""Scoring as its own part: rollouts in, one raw reward per reward function out, without a trainer.

`RewardScorer` owns the GRPO reward contract of TRL 1.16: the reward functions (the `reward_model` argument first, then
`reward_funcs`), their names, weights and tokenizers; calling each with GRPO's keyword arguments (async ones together);
`None` as "does not apply"; the `log_extra` / `log_metric` buffers; reward models read as `RewardTrainer` trained them
(the `reward_model` argument) or as GRPO reads them (models in `reward_funcs`), fitted to their context; the nan-aware
weighted sum; and raising a failure on every process at once. It needs an `accelerate.Accelerator` (device, process
count, collectives) and the `TrainerState` of the call (`trainer_state` and step numbers in messages), both passed
in. It must not sample, shape scores (moments, clipping, KL) or write a trainer's metrics: it returns them.
"""

from __future__ import annotations

import builtins
import math
import os
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, TrainerState
from transformers.utils import logging

from . import ppo_utils as pu
from .modules import _max_positions, _text_config, per_position_scores, sequence_inputs
from .rewards import (
    _check_reward_model,
    _checked_reward_values,
    _is_async_callable,
    _load_reward_funcs,
    _nanstd,
    _reward_func_name,
    _reward_model_from_path,
    _run_concurrently,
    _unique_names,
)


logger = logging.get_logger(__name__)


class RewardScorer:
    """`(B, F)` raw rewards of `F` reward functions for `B` rollouts, and their GRPO-weighted sum `(B,)`.

    Example (no trainer: an accelerator and a `TrainerState` are all it needs):

    ```python
    scorer = RewardScorer(None, [length_reward, reward_model], tokenizer, trainer_name="demo")
    scorer.place(Accelerator(cpu=True))
    prompts, completions = scorer.decode(rows, batch)
    per_func = scorer.rewards_per_func(prompts, completions, batch, columns={}, state=TrainerState())
    scores = scorer.combine_rewards(per_func, TrainerState())
    ```

    Args:
        reward_model (model, path or `None`): the `reward_model` argument, function 0 when given; read at the last
            real token as TRL's `RewardTrainer` trained it (`_reward_model_scores`).
        reward_funcs (list): GRPO's `reward_funcs`: functions, sequence classifiers or their paths.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): the policy's tokenizer (decodes the rollouts).
        reward_processing_class (tokenizer, *optional*): the `reward_model`'s own tokenizer (`None`: it reads the
            policy's ids).
        reward_processing_classes (tokenizer or list, *optional*): one per `reward_funcs` entry, as in GRPO.
        reward_weights (`list[float]`, *optional*): one weight per function (all 1 by default).
        reward_context_overflow (`str`): `"error"` or `"truncate_left"` for a sequence longer than a reward model's
            context.
        trainer_name (`str`): the class named in errors.
    """

    def __init__(
        self,
        reward_model: str | os.PathLike | nn.Module | None,
        reward_funcs: list,
        tokenizer: PreTrainedTokenizerBase,
        *,
        reward_processing_class: PreTrainedTokenizerBase | None = None,
        reward_processing_classes: PreTrainedTokenizerBase | list[PreTrainedTokenizerBase | None] | None = None,
        reward_weights: list[float] | None = None,
        reward_context_overflow: str = "error",
        trainer_name: str = "RewardScorer",
    ) -> None:
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
        if reward_weights is not None and len(reward_weights) != num_reward_sources:
            sources = (["the `reward_model` argument"] if reward_model is not None else []) + [
                f"{len(reward_funcs)} entr{'y' if len(reward_funcs) == 1 else 'ies'} of `reward_funcs`"
            ] * bool(reward_funcs)
            raise ValueError(
                f"`reward_weights` has {len(reward_weights)} weight(s) but there are {num_reward_sources} reward "
                f"functions ({' and '.join(sources)}): give one weight per reward function, in that order."
            )
        if reward_model is not None:
            _check_reward_model(reward_model, "The reward model")
        self.reward_funcs, self.reward_processing_classes = _load_reward_funcs(
            reward_funcs, reward_processing_classes, trainer_name
        )
        self.reward_func_names = _unique_names(
            [
                _reward_func_name(func)
                for func in ([reward_model] if reward_model is not None else []) + self.reward_funcs
            ]
        )
        weights = reward_weights if reward_weights is not None else [1.0] * num_reward_sources
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)  # (F,)
        self.reward_model, self.reward_processing_class, self.tokenizer = (
            reward_model,
            reward_processing_class,
            tokenizer,
        )
        self.reward_context_overflow = reward_context_overflow
        self.accelerator = None  # set by `place`
        # what reward functions hand to `log_metric` / `log_extra` during one scoring call
        self._pending_reward_metrics: dict[str, list[float]] = defaultdict(list)
        self._pending_extra_columns: dict[str, list] = defaultdict(list)
        self.last_extra_columns: dict[str, list] = {}  # the `log_extra` columns of the last successful call
        self._warned_reward_truncation = False

    def place(self, accelerator, deepspeed: bool = False) -> None:
        """Put the reward models on `accelerator`'s device (sharded with the policy under ZeRO-3) and keep it."""
        self.accelerator = accelerator
        if deepspeed:
            from trl.models import prepare_deepspeed

            self.reward_model = prepare_deepspeed(self.reward_model, accelerator) if self.reward_model else None
            self.reward_funcs = [
                prepare_deepspeed(f, accelerator) if isinstance(f, nn.Module) else f for f in self.reward_funcs
            ]
        else:
            self.reward_model = self.reward_model.to(accelerator.device) if self.reward_model is not None else None
            self.reward_funcs = [
                f.to(accelerator.device) if isinstance(f, nn.Module) else f for f in self.reward_funcs
            ]
        self.reward_weights = self.reward_weights.to(accelerator.device)

    @property
    def readers(self) -> list[tuple[str, nn.Module, PreTrainedTokenizerBase]]:
        """The reward models that re-read the text in their own tokens: `(what, model, tokenizer)`."""
        readers = [(f"reward function `{name}`", model, tok) for name, model, tok in zip(
            self.reward_func_names[self.reward_model is not None :], self.reward_funcs, self.reward_processing_classes,
            strict=True,
        ) if isinstance(model, nn.Module)]  # fmt: skip
        if self.reward_model is not None and self.reward_processing_class is not None:
            readers.append(("the reward model (`reward_model`)", self.reward_model, self.reward_processing_class))
        return readers

    def check_prompt_context(self, prompts: list, split: str) -> None:
        """Early half of `_fit_reward_context`: with `reward_context_overflow='error'`, a prompt that alone is longer
        than the context of a reward model that re-reads the text in its own tokens fails now, not at its first
        rollout. (The completion's length in the model's tokens is known only once sampled: `_fit_reward_context`.)

        `prompts`: a split's prompts (text or conversations), or a function returning them (called only when a reader
        has a context to check)."""
        readers = [(what, _max_positions(model), tok) for what, model, tok in self.readers if _max_positions(model)]
        if self.reward_context_overflow != "error" or not readers:
            return
        prompts = prompts() if callable(prompts) else prompts
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

    def decode(self, rows: list[dict], batch: dict) -> tuple[list, list]:
        """GRPO's `prompts` and `completions` of a batch: the dataset's prompts (decoded for tokenized datasets), the
        decoded responses (assistant messages for conversational prompts)."""
        completions = [
            self.tokenizer.decode(r[m], skip_special_tokens=True)
            for r, m in zip(batch["responses"], batch["response_mask"], strict=True)
        ]
        if rows and "prompt" in rows[0]:
            prompts = [row["prompt"] for row in rows]
            if isinstance(prompts[0], list):  # conversational: completions as assistant messages, as GRPO does
                completions = [[{"role": "assistant", "content": c}] for c in completions]
        else:
            prompts = self.tokenizer.batch_decode([row["input_ids"] for row in rows], skip_special_tokens=True)
        return prompts, completions

    @torch.no_grad()
    def rewards_per_func(
        self, prompts: list, completions: list, batch: dict[str, torch.Tensor], columns: dict, state: TrainerState
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
        (on every process, see `raise_on_every_rank`) when a value is not a number or `None`, is not finite, or when
        no function applies to a rollout.

        `prompts` and `completions` come from `decode`, `columns` from `_reward_columns`; `batch` holds the policy's
        ids: `queries`/`query_mask` `(B, P)` left-padded, `responses`/`response_mask` `(B, T)` and `stopped` `(B,)`.
        What the functions passed to `log_metric` waits in `pop_metrics`, their `log_extra` in `last_extra_columns`.
        """
        num = batch["responses"].size(0)
        completion_ids = [r[m].tolist() for r, m in zip(batch["responses"], batch["response_mask"], strict=True)]
        kwargs = {
            **columns,
            "trainer_state": state,
            "log_extra": self._log_extra,
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
                    values = self._reward_model_scores(batch, prompts, state).tolist()  # the RewardTrainer read-out
                elif isinstance(func, nn.Module):
                    values = self._grpo_reward_model_scores(func, tokenizer, prompts, completions, name, state)
                    values = values.tolist()
                elif _is_async_callable(func):
                    async_funcs[i] = func  # run together below, as GRPO runs them
                    continue
                else:
                    values = func(**calls)
                rewards[:, i] = self._reward_values(i, values, num, prompts, state)
            except Exception as error:  # noqa: BLE001 (re-raised below, on every rank)
                failure = failure or (name, error)
        if async_funcs:
            try:
                outputs = _run_concurrently([func(**calls) for func in async_funcs.values()])
                for i, values in zip(async_funcs, outputs, strict=True):
                    rewards[:, i] = self._reward_values(i, values, num, prompts, state)
            except Exception as error:  # noqa: BLE001 (re-raised below, on every rank)
                failure = failure or (", ".join(self.reward_func_names[i] for i in async_funcs), error)
        unscored = rewards.isnan().all(dim=1).nonzero().flatten().tolist()
        if unscored and failure is None:
            i = unscored[0]
            row = {"prompt": prompts[i], "completion": completions[i], **{k: v[i] for k, v in columns.items()}}
            failure = (
                ", ".join(self.reward_func_names),
                ValueError(
                    f"Rollout {i} at step {state.global_step + 1} has no score: every reward function "
                    f"({', '.join(self.reward_func_names)}) returned None for it ({row}); rollouts without a score: "
                    f"{unscored}. `None` means a function does not apply to a completion, so at least one must return a "
                    "number for every completion."
                ),
            )
        self.raise_on_every_rank(failure, state)
        self.last_extra_columns = dict(self._pending_extra_columns)
        return rewards

    def raise_on_every_rank(self, failure: tuple[str, Exception] | None, state: TrainerState) -> None:
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
            f"{state.global_step + 1}, reward function(s) {names}{also}: {kind}: {message}"
        )
        if failure is not None and first_rank == rank:
            raise error from failure[1]
        raise error

    def _reward_values(
        self, index: int, values: Any, num_completions: int, prompts: list, state: TrainerState
    ) -> torch.Tensor:
        """One reward function's output as a `(B,)` float tensor (NaN for `None`); non-finite numbers raise."""
        name = self.reward_func_names[index]
        rewards = torch.tensor(_checked_reward_values(name, values, num_completions), dtype=torch.float32)
        given = torch.tensor([value is not None for value in values], dtype=torch.bool)
        bad = (given & ~torch.isfinite(rewards)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"Non-finite reward scores at step {state.global_step + 1} for rollouts {bad} from reward "
                f"function `{name}`: {rewards[bad].tolist()} (prompt of rollout {bad[0]}: {prompts[bad[0]]!r}). Check the reward model/functions (return None, not NaN, "
                "for a completion a function does not apply to); training on them would corrupt the running moments."
            )
        return rewards.to(self.accelerator.device)

    def combine_rewards(self, rewards_per_func: torch.Tensor, state: TrainerState) -> torch.Tensor:
        """GRPO's nan-aware weighted sum `(B, F) -> (B,)`: a function that returned `None` is left out of the sum."""
        scores = (rewards_per_func * self.reward_weights.unsqueeze(0)).nansum(dim=1)
        if not torch.isfinite(scores).all():
            bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
            raise ValueError(
                f"Non-finite reward scores at step {state.global_step + 1} for rollouts {bad}: "
                f"{scores[bad].tolist()} (the weighted sum overflowed). Check the reward model/functions and "
                "`reward_weights`; training on them would corrupt the running moments."
            )
        return scores

    def reward_func_stats(self, rewards_per_func: torch.Tensor) -> dict[str, float]:
        """GRPO's `rewards/<name>/mean` and `/std` (Bessel) over the rollouts each function applies to. A statistic
        with no value (the function applied to no rollout, or to one for the std) is left out, not logged as NaN."""
        stats = {}
        for i, name in enumerate(self.reward_func_names):
            column = rewards_per_func[:, i].float()
            for key, value in ((f"rewards/{name}/mean", column.nanmean()), (f"rewards/{name}/std", _nanstd(column))):
                if torch.isfinite(value):
                    stats[key] = value.item()
        return stats

    def _log_extra(self, column: str, values: list) -> None:
        """`log_extra`: a column for the completions table of `generate_completions`, one value per completion."""
        self._pending_extra_columns[column].extend(values)

    def _log_metric(self, name: str, value: float) -> None:
        """`log_metric`: a scalar averaged over the processes and over each logging window, logged as `name`."""
        self._pending_reward_metrics[name].append(float(value))

    def pop_metrics(self, pool: bool = True) -> dict[str, float]:
        """What the functions passed to `log_metric` in the last call, each name averaged over its values on all
        processes (GRPO's pooling; one collective per name, every rank must call this), and cleared. `pool=False`
        clears without a collective and returns nothing."""
        pending = dict(self._pending_reward_metrics)
        self._pending_reward_metrics.clear()
        if not pool:
            return {}
        if self.accelerator.num_processes == 1:
            return {name: sum(values) / len(values) for name, values in pending.items()}
        from accelerate.utils import gather_object

        # the same names in the same order on every rank: each name is one collective
        pooled = {}
        for name in sorted(set(gather_object(list(pending)))):
            values = pending.get(name, [])
            local = torch.tensor([sum(values), len(values)], dtype=torch.float32, device=self.accelerator.device)
            total, count = self.accelerator.gather(local).view(-1, 2).sum(dim=0).tolist()
            pooled[name] = total / count
        return pooled

    def _reward_model_scores(self, batch: dict[str, torch.Tensor], prompts: list, state: TrainerState) -> torch.Tensor:
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
            pad_id = (tokenizer or self.tokenizer).pad_token_id
        if tokenizer is None:
            inputs = sequence_inputs(batch, slice(None), self.tokenizer.pad_token_id)
            input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        else:
            sequences = self._reward_model_sequences(prompts, batch, tokenizer)
            sequences = self._fit_reward_context(sequences, model, "the reward model (`reward_model`)", prompts, state)
            input_ids, attention_mask = self._right_padded(sequences, 0 if pad_id is None else pad_id)
        with self.accelerator.autocast():  # the precision of training (bf16 runs)
            per_position = per_position_scores(model, input_ids, attention_mask)  # (B, S)
        readout = pu.reward_readout_indices(input_ids, attention_mask, pad_id)  # (B,)
        return per_position[torch.arange(per_position.size(0), device=per_position.device), readout].float()

    def _reward_model_sequences(
        self, prompts: list, batch: dict[str, torch.Tensor], rm_tok: PreTrainedTokenizerBase
    ) -> list[list[int]]:
        """Prompt + response of every rollout in the tokens of a `reward_model` that has its own tokenizer.

        The RM sees what TRL's `RewardTrainer` trained it on. Conversational `prompt` rows: the RM's chat template over
        the prompt messages plus `{"role": "assistant", "content": completion}`; a response that did not stop leaves
        its turn open (`continue_final_message`). Text or tokenized prompts: the policy ids decoded with their special
        tokens (chat markers the RM may know) except padding and a leading BOS, the policy's stop token swapped for
        the RM's EOS text, tokenized with the RM's own special tokens (e.g. its BOS).
        """
        tok = self.tokenizer
        conversational = isinstance(prompts[0], list) and rm_tok.chat_template is not None
        sequences = []
        for i in range(len(prompts)):
            stopped = bool(batch["stopped"][i])
            response = batch["responses"][i][batch["response_mask"][i]]
            if stopped:
                response = response[:-1]  # the policy's stop token: the RM's own end marker replaces it
            if conversational:
                completion = tok.decode(response, skip_special_tokens=True)  # markers come from the RM's template
                messages = [*prompts[i], {"role": "assistant", "content": completion}]
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
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list,
        completions: list,
        name: str,
        state: TrainerState,
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
        sequences = self._fit_reward_context(sequences, model, f"reward function `{name}`", prompts, state)
        input_ids, attention_mask = self._right_padded(sequences, tokenizer.pad_token_id)
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()

    def _fit_reward_context(
        self, sequences: list[list[int]], model: nn.Module, what: str, prompts: list, state: TrainerState
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
            f"rollout {i} at step {state.global_step + 1} is {len(sequences[i])} tokens for {what}, whose "
            f"max_position_embeddings is {positions} (rollouts over it: {too_long}; prompt {str(prompts[i])[:200]!r})"
        )
        if self.reward_context_overflow == "error":
            raise ValueError(
                f"Prompt + completion does not fit a reward model's context: {detail}. Shorten the prompts "
                "(`max_prompt_length`), lower `response_length`, or set `reward_context_overflow='truncate_left'` to "
                "score the last positions."
            )
        if not self._warned_reward_truncation:
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


__all__ = ["RewardScorer"]
