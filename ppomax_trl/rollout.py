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
"""The online trainer loop shared by `PPOTrainer`, `PPOMaxTrainer` and `OnlineUNATrainer`.

`OnlineRolloutTrainer` is a `transformers.Trainer` whose `self.model` wraps the policy and (optionally) a critic, so one
optimizer, one `accelerator.prepare`, the global `max_grad_norm` clip, callbacks, logging and checkpoints all come from
`Trainer`. One step reads as the loop it is: next prompts (`prompts`) -> generate (`generation.Generator`) -> the
no-grad rollout forwards (pi_old, pi_ref, V_old; `modules`) -> score (`scoring.RewardScorer`) -> shape and update
(`_update`, implemented by subclasses) -> log / evaluate (`evaluation`) / save. This module owns that loop, the
construction of the parts, the batch sizes, the optimizer's parameter groups, the minibatch passes, the monitors,
saving and exact resume (the algorithm state is `rollout_state.RolloutState`). It must not sample or score itself:
it calls the generator and the scorer, and never knows how a response was sampled or a score was made.

Underscore-prefixed `Trainer` methods used or overridden here, because no public hook exists (each is pinned by
`tests/test_ppo_trainer.py::test_private_trainer_hooks_keep_their_signature`): `_inner_training_loop` (the online loop
replaces the supervised one), `_prepare_for_training` (optimizer, scheduler, DeepSpeed and `accelerator.prepare`),
`_maybe_log_save_evaluate`, `_finalize_training`, `_load_callback_state`; and, in the trainer's own base
`saving.SavingMixin`, `_save` (policy at the root, critic in `value_model/`), `_load_from_checkpoint`,
`_load_best_model` (both models of the best checkpoint). Checkpoints are staged and renamed when complete by
`checkpoints.AtomicCheckpointMixin`; `_save_extra_checkpoint_files` adds the running moments and algorithm state.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import ClassVar

import torch
from datasets import Dataset
from torch import nn
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)
from transformers.utils import is_peft_available, logging

from . import ppo_utils as pu
from .evaluation import EvaluationMixin
from .generation import Generator, HFGenerator, resolve_stop_token_ids
from .model_utils import copy_model, disable_dropout, freeze, resolve_model_inputs, tokenizer_with_padding
from .modules import (
    PolicyAndValueWrapper,
    _gather_response_logprobs,
    _max_positions,
    _model_label,
    causal_lm_logits,
    per_position_scores,
    sequence_inputs,
)
from .monitors import MonitorsMixin
from .optimization import MinibatchMixin
from .ppo_config import OnlineRolloutConfig
from .prompts import _IndexStream, collate_prompts, prepare_prompt_dataset
from .rewards import RewardFunc, _reward_columns
from .rollout_state import PPOMAX_STATE_NAME, RolloutState
from .sampler_correction import mismatch_stats, sampler_importance_weights
from .saving import SavingMixin
from .scoring import RewardScorer
from .vllm_generation import require_vllm


if is_peft_available():
    from peft import PeftConfig, PeftModel, get_peft_model


logger = logging.get_logger(__name__)


def _scorer_field(name: str) -> property:
    return property(lambda self: getattr(self.scorer, name), doc=f"`self.scorer.{name}` (read-only).")


def _state_field(name: str) -> property:
    return property(
        lambda self: getattr(self.rollout_state, name),
        lambda self, value: setattr(self.rollout_state, name, value),
        doc=f"`self.rollout_state.{name}`, saved in `{PPOMAX_STATE_NAME}`.",
    )


# ----------------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------------


class OnlineRolloutTrainer(SavingMixin, EvaluationMixin, MonitorsMixin, MinibatchMixin, Trainer):
    """Shared engine of the online trainers: prompts -> sampled responses -> scores, on a `transformers.Trainer`.

    Subclasses implement `_update` (one training step on a fresh rollout) and may build a critic through
    `_build_value_model`. `PPOTrainer`/`PPOMaxTrainer` and `OnlineUNATrainer` are built on it. See [`PPOTrainer`] for
    the meaning of every argument. The parts: `self.generator` samples, `self.scorer` scores, `self.rollout_state`
    holds what a checkpoint carries.
    """

    _tag_names: ClassVar[list[str]] = ["ppomax-trl"]
    _name = "online"
    _paper: ClassVar[dict[str, str]] = {"title": "", "id": ""}
    _config_class: ClassVar[type[OnlineRolloutConfig]] = OnlineRolloutConfig  # built when `args` is None

    # the reward side lives in `self.scorer`; these names stay for code that reads them on the trainer
    reward_model = _scorer_field("reward_model")
    reward_funcs = _scorer_field("reward_funcs")
    reward_func_names = _scorer_field("reward_func_names")
    reward_weights = _scorer_field("reward_weights")
    reward_processing_class = _scorer_field("reward_processing_class")
    reward_processing_classes = _scorer_field("reward_processing_classes")
    # the algorithm state lives in `self.rollout_state`
    reward_moments = _state_field("reward_moments")
    episode = _state_field("episode")
    critic_warmup_done = _state_field("critic_warmup_done")
    critic_warmup_finished = _state_field("critic_warmup_finished")
    collapse_monitor = _state_field("collapse_monitor")

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
        if args is not None and getattr(args, "use_vllm", False):
            require_vllm(trainer_name)  # before any model loads
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
        self.scorer = RewardScorer(
            reward_model,
            reward_funcs,
            processing_class,
            reward_processing_class=reward_processing_class,
            reward_processing_classes=reward_processing_classes,
            reward_weights=args.reward_weights,
            reward_context_overflow=args.reward_context_overflow,
            trainer_name=trainer_name,
        )
        reward_model = self.scorer.reward_model  # loaded when given as a path
        self.stop_token_ids = resolve_stop_token_ids(args, processing_class, model)
        HFGenerator.warn_about_sampling(args, model)

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
        value_model = self._build_value_model(model, reward_model)
        for module in (model, ref_model, reward_model, value_model):
            if module is not None:
                disable_dropout(module)
        self.is_peft_model = is_peft
        self.ref_model = freeze(ref_model) if ref_model is not None else None
        if reward_model is not None:
            freeze(reward_model)
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
        self.scorer.place(self.accelerator, deepspeed=self.is_deepspeed_enabled)
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed

            self.ref_model = prepare_deepspeed(self.ref_model, self.accelerator) if self.ref_model else None
        else:
            self.ref_model = self.ref_model.to(self.accelerator.device) if self.ref_model is not None else None
        self.generator = self._build_generator(args, processing_class.pad_token_id, train_dataset, eval_dataset)

        # ---- state that checkpoints carry
        self.rollout_state = RolloutState(
            pu.CollapseMonitor(
                args.collapse_max_length_share, args.collapse_kl_threshold, watch_length=bool(self.stop_token_ids)
            ),
            critic_warmup_finished=self._warmup_steps() == 0,
        )
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
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
    def _build_generator(self, args, pad_token_id: int, *datasets: Dataset | None) -> Generator:
        """`HFGenerator`, or `VLLMGenerator` with `use_vllm` (its engine sized for the longest prompt)."""
        if not args.use_vllm:
            return HFGenerator(self.accelerator, args, pad_token_id, self.stop_token_ids)
        from .vllm_generation import VLLMGenerator

        longest = max(max(map(len, d["input_ids"]), default=1) for d in datasets if d is not None)
        return VLLMGenerator(
            self.accelerator, args, self.policy_model, pad_token_id=pad_token_id, stop_token_ids=self.stop_token_ids,
            max_prompt_tokens=longest,
        )  # fmt: skip

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
        resolved = resolve_model_inputs(
            args,
            model,
            ref_model,
            processing_class,
            config_class=self._config_class,
            trainer_name=type(self).__name__,
            run_suffix=self._name.replace(" ", ""),
            warn_ignored_init_kwargs=not getattr(self, "_model_inputs_resolved", False),
        )
        self._model_inputs_resolved = True  # a second call sees the loaded policy: nothing was ignored, warn once
        return resolved

    _resolve_stop_token_ids = staticmethod(resolve_stop_token_ids)

    def _prepare_prompt_dataset(self, dataset: Dataset, tokenizer, args: OnlineRolloutConfig, split: str) -> Dataset:
        """`prompts.prepare_prompt_dataset`, then checked against the context of every model that reads it."""
        dataset = prepare_prompt_dataset(dataset, tokenizer, args, split)
        self._check_context_length([len(ids) for ids in dataset["input_ids"]], args.response_length, split)

        def prompts() -> list:
            if "prompt" in dataset.column_names:
                return list(dataset["prompt"])
            return tokenizer.batch_decode(list(dataset["input_ids"]), skip_special_tokens=True)

        self.scorer.check_prompt_context(prompts, split)
        return dataset

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
        self.generator.sync_weights(model)  # a resumed run samples with the checkpoint's policy
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
            self.generator.sync_weights(model)  # the sampler follows the policy (a no-op for `transformers.generate`)
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
        """Left-padded `(B, P)` prompt ids and mask, on the device."""
        return collate_prompts(rows, self.processing_class.pad_token_id, self.accelerator.device, self.prompt_collator)

    # ---- rollout -----------------------------------------------------------------------------------------------------

    def generate_responses(
        self, model: nn.Module, queries: torch.Tensor, query_mask: torch.Tensor, *, temperature: float, top_p: float
    ) -> dict[str, torch.Tensor]:
        """One response per prompt from `self.generator`, as the rollout batch: `queries`, `query_mask` `(B, P)`,
        `responses`, `response_mask` `(B, T)` (cut after the stop token, which is kept) and `stopped` `(B,)`."""
        out = self.generator.generate(model, queries, query_mask, temperature=temperature, top_p=top_p)
        batch = {"queries": queries, "query_mask": query_mask, "responses": out.ids,
                 "response_mask": out.mask, "stopped": out.stopped}  # fmt: skip
        if out.logprobs is not None:  # the sampler's own log-probs (not `transformers.generate`'s case)
            batch["sampler_logprobs"] = out.logprobs
        return batch

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
        if "sampler_logprobs" in batch:
            self._measure_sampler_mismatch(batch)
        return batch

    def _measure_sampler_mismatch(self, batch: dict[str, torch.Tensor]) -> None:
        """Log how far the sampler's log-probs are from pi_old's (`sampling/...`, TRL GRPO's names) and, with
        `vllm_importance_sampling_correction`, put the truncated importance weights in `batch["sampler_weights"]`
        (`(B, T)` or `(B, 1)`), which the policy losses multiply in."""
        args, mask = self.args, batch["response_mask"]
        old, sampler = batch["logprobs"], batch["sampler_logprobs"]
        stats = mismatch_stats(old, sampler, mask)
        gathered = {k: self.accelerator.gather(v.reshape(1)) for k, v in stats.items()}
        metrics = self._metrics["train"]
        metrics["sampling/sampling_logp_difference/mean"].append(gathered["mean"].mean().item())
        metrics["sampling/sampling_logp_difference/max"].append(gathered["max"].max().item())
        metrics["sampling/kl"].append(gathered["kl"].mean().item())
        if not args.vllm_importance_sampling_correction:
            return
        weights = sampler_importance_weights(
            old, sampler, mask, mode=args.vllm_importance_sampling_mode,
            clip_min=args.vllm_importance_sampling_clip_min, clip_max=args.vllm_importance_sampling_clip_max,
        )  # fmt: skip
        batch["sampler_weights"] = weights
        flat = weights.flatten() if weights.size(1) == 1 else weights[mask]
        nan = torch.tensor(float("nan"), device=weights.device)
        local = torch.stack([flat.min(), flat.mean(), flat.max()]) if flat.numel() else torch.stack([nan] * 3)
        pooled = self.accelerator.gather(local.reshape(1, 3)).reshape(-1, 3)
        metrics["sampling/importance_sampling_ratio/min"].append(pooled[:, 0].nan_to_num(float("inf")).min().item())
        metrics["sampling/importance_sampling_ratio/mean"].append(pooled[:, 1].nanmean().item())
        metrics["sampling/importance_sampling_ratio/max"].append(pooled[:, 2].nan_to_num(-float("inf")).max().item())

    def _sequence_inputs(self, batch: dict, index) -> dict[str, torch.Tensor]:
        return sequence_inputs(batch, index, self.processing_class.pad_token_id)

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
            for key, value in self.scorer.reward_func_stats(gathered).items():
                self._metrics[mode][key].append(value)
        scores, failure = None, None
        try:
            scores = self.scorer.combine_rewards(rewards_per_func, self.state)
        except ValueError as error:  # an overflowing weighted sum: every rank stops with it
            failure = ", ".join(self.reward_func_names), error
        self.scorer.raise_on_every_rank(failure, self.state)
        if mode == "train" and self.args.log_completions:
            self._keep_completions(rows, batch, rewards_per_func, scores)
        return scores

    @torch.no_grad()
    def rewards_per_func(
        self, rows: list[dict], batch: dict[str, torch.Tensor], mode: str | None = None
    ) -> torch.Tensor:
        """`(B, F)` raw reward of every reward function, NaN where a function returned `None` ("does not apply"):
        `RewardScorer.rewards_per_func` on this batch's decoded prompts, completions and columns. What the functions
        passed to `log_metric` is logged into `mode` ("train" or "eval"; `None`: not logged)."""
        prompts, completions = self.scorer.decode(rows, batch)
        rewards = self.scorer.rewards_per_func(prompts, completions, batch, _reward_columns(rows), self.state)
        for name, value in self.scorer.pop_metrics(pool=mode is not None).items():
            self._metrics[mode][name].append(value)
        return rewards


__all__ = ["OnlineRolloutTrainer", "PolicyAndValueWrapper", "per_position_scores"]
