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
"""`PPOTrainer` (drop-in for TRL 1.12's experimental PPO) and `PPOMaxTrainer` (the PPO-max recipe).

One training step ("update") reads in paper order (https://huggingface.co/papers/2307.04964, Fig. 5):

    rollout -> score -> shape rewards (running moments, clip, token KL) -> advantages (GAE) -> PPO epochs

The rollout engine, saving and resume live in `ppomax_trl.rollout.OnlineRolloutTrainer` and its parts (generation,
scoring, monitors, saving; its docstring lists the private `Trainer` hooks it relies on); this module adds the
critic, reward shaping, GAE and the clipped PPO losses.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from datasets import Dataset
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import is_peft_available

from . import ppo_utils as pu
from .losses import entropy_bonus_loss, language_modeling_loss, ppo_policy_loss, ppo_value_loss
from .model_utils import copy_model, copy_zero3_parameters, is_zero3_partitioned
from .modules import (
    PolicyAndValueWrapper,
    _gather_response_logprobs,
    _max_positions,
    _model_label,
    _peft_base,
    _score_head,
    _sequence_forward_inputs,
)
from .ppo_config import PPOConfig, PPOMaxConfig
from .prompts import _IndexStream
from .rewards import RewardFunc
from .rollout import OnlineRolloutTrainer


if is_peft_available():
    from peft import PeftConfig, PeftModel, get_peft_model


class PPOTrainer(OnlineRolloutTrainer):
    """Proximal Policy Optimization for language models, API-compatible with TRL 1.12's `trl.experimental.ppo`.

    Example (TRL 1.12's positional order, or TRL GRPO's keywords):

    ```python
    from ppomax_trl import PPOConfig, PPOTrainer

    trainer = PPOTrainer(
        PPOConfig(output_dir="out", bf16=False), tokenizer, policy, None, reward_model, train_dataset, value_model
    )
    trainer = PPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", reward_funcs=my_reward, train_dataset=prompts)
    trainer.train()
    ```

    Args:
        args ([`PPOConfig`], *optional*): training configuration. `None`: the trainer's config class (`PPOConfig`,
            `PPOMaxConfig` for [`PPOMaxTrainer`]) with `output_dir="<model name>-<PPO|PPO-max>"`, as GRPO does.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*): policy tokenizer; one without a
            pad token is padded with EOS on a copy. Prompts are always left-padded for generation, whatever
            `padding_side` says. `None`: `AutoTokenizer.from_pretrained` of the policy's name or path (its
            `config._name_or_path`; an error when that is empty).
        model (`str` or [`~transformers.PreTrainedModel`]): the policy (a causal LM, ideally SFT-initialised), or its
            name or path, loaded with `AutoModelForCausalLM.from_pretrained(model, **args.model_init_kwargs)` (float32
            unless `model_init_kwargs["dtype"]` says otherwise, as in TRL). Required.
        ref_model (`str`, [`~transformers.PreTrainedModel`] or `None`, *optional*): frozen reference; a name or path
            is loaded like `model`. `None`: a frozen copy of the policy, or the policy with its adapter disabled under
            PEFT. Must not be `model` itself.
        reward_model (`str`, [`~transformers.PreTrainedModel`] or `None`, *optional*): sequence classifier with a
            one-label `score` head, read at the last real token over the policy's tokens; a name or path is loaded
            with `AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)`. `None` requires
            `reward_funcs`.
        train_dataset ([`~datasets.Dataset`]): prompts, as tokenized `input_ids` (TRL 1.12) or a `prompt` column
            (text or conversational; the chat template is applied). Required.
        value_model ([`~transformers.PreTrainedModel`], `str` or `None`): the critic. A folder: a saved critic (a
            1-label sequence classifier over the policy's tokenizer, or a PEFT adapter of one, whose base is loaded
            from its `base_model_name_or_path`) or an earlier run's `output_dir` (its `value_model/`), loaded in the
            policy's dtype. `None`: a trainable copy of the reward model (PPO-max), or the policy backbone with a fresh
            scalar head when only `reward_funcs` are given; with a PEFT policy, it gets an adapter (see
            `value_peft_config`).
        data_collator (`Callable`, *optional*): collator for tokenized prompts; must pad on the left.
        eval_dataset ([`~datasets.Dataset`], *optional*): held-out prompts for `evaluate` and `generate_completions`.
        optimizers (`tuple`, *optional*): `(optimizer, lr_scheduler)`; default AdamW over policy and critic, in
            separate groups (`learning_rate`, `value_learning_rate`). A given optimizer must hold the critic's
            trainable parameters (else `ValueError` at construction): the critic is built inside the trainer unless
            you pass `value_model`, so build it yourself, e.g. `value_model = copy.deepcopy(reward_model)`, and pass
            it too. One group over both models (`AdamW([*policy.parameters(), *value_model.parameters()])`) works
            and is not split: the critic warm-up steps it at its base lr with the policy's gradients dropped
            (refused under DeepSpeed, which flattens the group; give the critic its own group there).
        callbacks (`list[TrainerCallback]`, *optional*): extra callbacks.
        peft_config ([`~peft.PeftConfig`], *optional*): LoRA (or other PEFT) config for the policy.
        reward_funcs (`Callable`, model, path or a list of them, *optional*): TRL 1.16 `GRPOTrainer`'s reward
            functions, called exactly as it calls them (`RewardScorer.rewards_per_func`): `f(prompts,
            completions, completion_ids, **columns, trainer_state, log_extra, log_metric) -> list[float | None]`, sync
            or async; a sequence classifier (or its path) re-reads the text with its own tokenizer. The score is the
            nan-aware sum weighted by `args.reward_weights`; the `reward_model` argument, when given, is function 0.
        reward_processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*): the `reward_model`'s own
            tokenizer; rollouts are decoded and re-tokenized for it.
        reward_processing_classes (tokenizer or list, *optional*): one entry per `reward_funcs` entry, the tokenizer of
            a reward model there (`None`: loaded from its `config._name_or_path`, as GRPO does).
        value_peft_config ([`~peft.PeftConfig`] or `False`, *optional*): PEFT config for the critic; its `score` head
            is kept trainable. Default (`None`): with a PEFT policy (`peft_config` or a `PeftModel`) and no
            `value_model`, the critic gets an adapter of the policy's shape (a copy of its config: same `r`,
            `lora_alpha`, `target_modules`, dropout; `task_type="SEQ_CLS"`, `modules_to_save=["score"]`), so that
            `save_model()` and checkpoints hold adapters only; otherwise a full critic. `False`, or a full
            `value_model`, trains a full critic.
        ptx_dataset ([`~datasets.Dataset`], *optional*): PPO-ptx data, a `text` or `input_ids` column; used when
            `args.ptx_coef > 0`.
    """

    _tag_names: ClassVar[list[str]] = ["ppomax-trl", "ppo"]
    _name = "PPO"
    _paper: ClassVar[dict[str, str]] = {
        "title": "Fine-Tuning Language Models from Human Preferences",
        "id": "1909.08593",
    }
    _config_class: ClassVar[type[PPOConfig]] = PPOConfig  # built when `args` is None

    def __init__(
        self,
        args: PPOConfig | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        model: str | PreTrainedModel | None = None,
        ref_model: str | PreTrainedModel | None = None,
        reward_model: str | PreTrainedModel | None = None,
        train_dataset: Dataset | None = None,
        value_model: PreTrainedModel | str | None = None,
        data_collator: Callable | None = None,
        eval_dataset: Dataset | None = None,
        optimizers: tuple = (None, None),
        callbacks: list[TrainerCallback] | None = None,
        peft_config: PeftConfig | None = None,
        *,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        reward_processing_class: PreTrainedTokenizerBase | None = None,
        reward_processing_classes: PreTrainedTokenizerBase | list[PreTrainedTokenizerBase | None] | None = None,
        value_peft_config: PeftConfig | bool | None = None,
        ptx_dataset: Dataset | None = None,
    ) -> None:
        if isinstance(args, TrainingArguments) and not isinstance(args, PPOConfig):
            raise TypeError(
                f"{type(self).__name__}: `args` must be a `PPOConfig` (or `PPOMaxConfig`), got {type(args).__name__}."
            )
        # the critic path and the ptx data need the loaded policy and tokenizer (GRPO style: both may be omitted)
        args, model, ref_model, processing_class = self._resolve_model_inputs(args, model, ref_model, processing_class)
        if isinstance(value_model, str | os.PathLike):
            value_model = _load_critic(value_model, model)
        if value_model is not None:
            _score_head(value_model)
        if args.ptx_coef > 0 and ptx_dataset is None:
            raise ValueError("`ptx_coef > 0` needs a `ptx_dataset` (`text`, `prompt` + `completion`, or `input_ids`).")
        self._given_value_model, self._value_peft_config = value_model, value_peft_config
        self.ptx_dataset = self._prepare_ptx_dataset(ptx_dataset, processing_class, args) if ptx_dataset else None
        super().__init__(
            args, processing_class, model, ref_model, reward_model, train_dataset, data_collator, eval_dataset,
            optimizers, callbacks, peft_config, reward_funcs=reward_funcs,
            reward_processing_class=reward_processing_class, reward_processing_classes=reward_processing_classes,
        )  # fmt: skip
        del self._given_value_model
        if optimizers[0] is not None:
            self._check_user_optimizer(optimizers[0])
        if args.kl_controller == "adaptive":
            self.kl_ctl = pu.AdaptiveKLController(args.kl_coef, target=args.kl_target, horizon=args.kl_horizon)
        else:
            self.kl_ctl = pu.FixedKLController(args.kl_coef)
        self._ptx_stream = _IndexStream(len(self.ptx_dataset), args.seed + 7919) if self.ptx_dataset else None
        self._ptx_position = 0
        if self.ptx_dataset is not None:
            self._check_ptx_context(self.ptx_dataset, args.ptx_max_length)

    def _check_ptx_context(self, dataset: Dataset, max_length: int) -> None:
        """ptx rows are cut to `ptx_max_length`; what is left must fit every model that reads them (the policy, and
        the critic, which runs in the same forward), or RoPE models train on positions they never learned and models
        with learned positions crash at the first ptx step."""
        readers = (("policy", self.policy_model), ("critic", self.value_model))
        limits = [(n, _model_label(role, model)) for role, model in readers if (n := _max_positions(model))]
        if not limits:
            return
        positions, name = min(limits)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        longest = max(lengths)
        if longest > positions and max_length > positions:
            raise ValueError(
                f"ptx row {lengths.index(longest)} has {longest} tokens, and `ptx_max_length={max_length}` keeps more "
                f"than the {name}'s max_position_embeddings={positions}. Set `ptx_max_length` <= {positions} to cut ptx "
                "rows to the context."
            )

    # ------------------------------------------------------------------------------------------------------------------
    # Critic
    # ------------------------------------------------------------------------------------------------------------------
    def _build_value_model(self, policy: nn.Module, reward_model: nn.Module | None) -> nn.Module:
        """The given critic; else a trainable copy of the reward model (PPO-max), else the policy backbone + head.

        A reward model with its own tokenizer (`reward_processing_class`) cannot read the policy's token ids, which
        the critic is fed, so its copy is not a critic: the policy backbone + head is used instead.

        `value_peft_config` wraps the critic with PEFT (its `score` head trainable). With a PEFT policy and no
        `value_peft_config`, a critic built here gets an adapter of the policy's shape (`_default_value_peft_config`),
        so that it trains and saves adapters only, like the policy; `value_peft_config=False` or a given `value_model`
        keeps a full critic.
        """
        value_model, peft_config = self._given_value_model, self._value_peft_config
        if peft_config is True:
            raise ValueError(
                "`value_peft_config=True` is not a config: pass a `PeftConfig`, None (a PEFT policy's critic then gets "
                "an adapter of the policy's shape) or False (a full critic)."
            )
        if value_model is None:
            if reward_model is not None and getattr(self, "reward_processing_class", None) is not None:
                warnings.warn(
                    "The reward model has its own tokenizer (`reward_processing_class`), so it cannot read the "
                    "policy's token ids that the critic is fed: the critic starts from the policy backbone with a new "
                    "scalar head, not from a copy of the reward model. To start it elsewhere, pass `value_model` (a "
                    "sequence classifier with one label over the policy's vocabulary).",
                    UserWarning,
                    stacklevel=2,
                )
                reward_model = None
            value_model = self._initial_critic(reward_model, policy)
            if peft_config is None and is_peft_available() and isinstance(policy, PeftModel):
                peft_config = _default_value_peft_config(policy)
        if peft_config is not None and peft_config is not False:
            config = copy.deepcopy(peft_config)
            config.modules_to_save = sorted(set(config.modules_to_save or []) | {"score"})
            value_model = get_peft_model(value_model, config)
        return value_model

    @staticmethod
    def _initial_critic(reward_model: nn.Module | None, policy: nn.Module) -> nn.Module:
        """PPO-max critic init: a trainable copy of the reward model; else the policy backbone with a new head."""
        if reward_model is not None:
            critic = copy_model(reward_model)
            for param in critic.parameters():
                param.requires_grad_(True)
            return critic.train()
        base = _peft_base(policy)
        config = copy.deepcopy(base.config)
        config.num_labels = 1
        backbone = getattr(base, base.base_model_prefix)
        if is_zero3_partitioned(backbone):  # its state dict would hold empty shards: copy gathered parameters
            critic = AutoModelForSequenceClassification.from_config(config, dtype=next(base.parameters()).dtype)
            sources = {_base_weight_name(n): p for n, p in backbone.named_parameters() if _is_base_weight(n)}
            copy_zero3_parameters(getattr(critic, critic.base_model_prefix), sources)
            return critic
        critic = AutoModelForSequenceClassification.from_config(config)
        backbone_state = getattr(base, base.base_model_prefix).state_dict()
        getattr(critic, critic.base_model_prefix).load_state_dict(
            {_base_weight_name(k): v for k, v in backbone_state.items() if _is_base_weight(k)}, strict=False
        )
        return critic.to(next(base.parameters()).dtype)

    @staticmethod
    def _prepare_ptx_dataset(dataset: Dataset, tokenizer, args: PPOConfig) -> Dataset:
        """Tokenize the ptx data into `input_ids` plus `ptx_target_mask` (1 where the LM loss applies).

        Formats: `text` (pretraining text: every token is a target), `prompt` + `completion` (SFT data, text or
        conversational: only the completion tokens, closing EOS included, are targets), or tokenized `input_ids`
        (with an optional `completion_mask`; otherwise every token is a target).
        """
        columns = dataset.column_names
        if len(dataset) == 0:
            raise ValueError("`ptx_dataset` is empty.")
        if "input_ids" in columns:
            if "completion_mask" in columns:
                dataset = dataset.map(lambda row: {"ptx_target_mask": list(row["completion_mask"])})
            else:
                dataset = dataset.map(lambda row: {"ptx_target_mask": [1] * len(row["input_ids"])})
        elif "prompt" in columns and "completion" in columns:
            from trl.data_utils import is_conversational, maybe_apply_chat_template

            conversational = is_conversational(dataset[0])

            def tokenize_pair(row):
                texts = maybe_apply_chat_template(
                    {"prompt": row["prompt"], "completion": row["completion"]}, tokenizer
                )
                prompt_ids = tokenizer(texts["prompt"], add_special_tokens=not conversational)["input_ids"]
                completion_ids = tokenizer(texts["completion"], add_special_tokens=False)["input_ids"]
                if not conversational and tokenizer.eos_token_id is not None:
                    completion_ids = completion_ids + [tokenizer.eos_token_id]  # the SFT target ends with EOS
                return {
                    "input_ids": prompt_ids + completion_ids,
                    "ptx_target_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
                }

            dataset = dataset.map(tokenize_pair, desc="Tokenizing ptx")
        elif "text" in columns:

            def tokenize_text(row):
                ids = tokenizer(row["text"])["input_ids"]
                return {"input_ids": ids, "ptx_target_mask": [1] * len(ids)}

            dataset = dataset.map(tokenize_text, desc="Tokenizing ptx")
        else:
            raise ValueError(
                f"`ptx_dataset` needs a `text` column, `prompt` + `completion` columns, or `input_ids`; it has {columns}."
            )
        for i, (ids, targets) in enumerate(zip(dataset["input_ids"], dataset["ptx_target_mask"], strict=True)):
            if len(ids) != len(targets):
                raise ValueError(f"ptx row {i}: `completion_mask` has {len(targets)} entries for {len(ids)} tokens.")
            if len(ids) < 2 or not any(targets[1:]):
                raise ValueError(
                    f"ptx row {i} has no prediction target (needs 2+ tokens and a target after the first)."
                )
        return dataset

    def _warmup_steps(self) -> int:
        return self.args.critic_warmup_steps

    def _warmup_converged(self) -> bool:
        """[P] §5.3.3: pre-train the critic until the value loss approaches zero."""
        threshold = self.args.critic_warmup_loss_threshold
        if threshold is None:
            return False
        # one decision for all processes: a rank that left the warm-up alone would train a different policy and hang
        return self._reduced_mean(torch.tensor(self._update_stats["loss/value_avg"])) < threshold

    # ------------------------------------------------------------------------------------------------------------------
    # PPO update, in paper order
    # ------------------------------------------------------------------------------------------------------------------

    def _update(self, model: nn.Module, is_warmup: bool, start_time: float) -> tuple[torch.Tensor, float | None]:
        """One update in paper order: rollout -> score -> shape rewards -> advantages -> PPO epochs."""
        args = self.args
        rows = self._start_step()

        rollout = self.rollout(rows, model)
        raw_scores = self.score(rows, rollout)
        shaped_scores = self.shape_scores(raw_scores, rollout["stopped"])
        rewards, non_score_rewards, per_token_kl = self.token_rewards(rollout, shaped_scores)
        advantages, returns = self.advantages(rollout, rewards, is_warmup)
        rollout.update(advantages=advantages, returns=returns)
        loss, grad_norm = self.ppo_epochs(model, rollout, is_warmup)

        if not is_warmup:  # the policy does not move in the warm-up: its ~0 KL would only shrink an adaptive coef
            kl_per_seq = (per_token_kl * rollout["response_mask"]).sum(1)
            self.kl_ctl.update(self.accelerator.reduce(kl_per_seq.mean(), "mean").item(), args.batch_size)
        self._record_rollout_metrics(
            rollout, raw_scores, shaped_scores, non_score_rewards, per_token_kl, is_warmup, start_time
        )
        return loss, grad_norm

    # ---- 3-5. reward reparameterisation ------------------------------------------------------------------------------

    def shape_scores(self, raw_scores: torch.Tensor, stopped: torch.Tensor) -> torch.Tensor:
        """Merge the pooled batch into the running moments first, then normalise/scale, clip, missing-EOS penalty."""
        args = self.args
        self.update_reward_moments(raw_scores)
        scores = pu.reparameterize_scores(
            raw_scores,
            mean=self.reward_moments.mean,
            std=self.reward_moments.std,
            mode=args.reward_normalization,
            clip=args.reward_clip if args.use_reward_clip else None,
        )
        if args.missing_eos_penalty is not None:
            # applied in shaped units and kept out of the running moments (ppo_max_spec §2.1)
            scores = scores - args.missing_eos_penalty * (~stopped).to(scores.dtype)
        return scores

    # ---- 6-7. token rewards ------------------------------------------------------------------------------------------

    def token_rewards(self, batch: dict, shaped_scores: torch.Tensor):
        per_token_kl = pu.kl_estimate(batch["logprobs"], batch["ref_logprobs"], self.args.kl_estimator)
        per_token_kl = per_token_kl * batch["response_mask"]
        rewards, non_score_rewards = pu.token_rewards(
            per_token_kl, shaped_scores, batch["response_mask"], kl_coef=self.kl_ctl.value
        )
        if self.args.whiten_rewards:
            rewards = pu.masked_whiten(rewards, batch["response_mask"], shift_mean=False)
        return rewards, non_score_rewards, per_token_kl

    # ---- 8. advantages -----------------------------------------------------------------------------------------------

    def advantages(
        self, batch: dict, rewards: torch.Tensor, is_warmup: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages for the policy and value targets for the critic, each with its own lambda (see
        `gae_lambdas`); returns are computed before any whitening of the advantages."""
        args, mask = self.args, batch["response_mask"]
        policy_lam, value_lam = self.gae_lambdas(mask, is_warmup)
        advantages, returns = pu.compute_decoupled_gae(
            rewards, batch["values"], mask, gamma=args.gamma, lam=policy_lam, value_lam=value_lam
        )
        if args.whiten_advantages and args.whiten_advantages_globally:
            advantages = pu.masked_whiten_global(advantages, mask, all_reduce_sum=self._all_reduce_sum)
        elif args.whiten_advantages:
            advantages = pu.masked_whiten(advantages, mask)
        return advantages, returns

    def gae_lambdas(
        self, response_mask: torch.Tensor, is_warmup: bool
    ) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """`(policy lambda, critic lambda)`, each a float or one per sequence `(B,)`.

        Policy: `lam`, or VAPO's length-adaptive `1 - 1/(alpha * length)`. Critic: `critic_warmup_lam` during the
        warm-up when set (1.0: Monte-Carlo returns, VC-PPO's value pretraining), else `value_lam` when set, else the
        policy's lambda (TRL 1.12: one lambda for both).
        """
        args = self.args
        policy_lam = args.lam
        if args.use_length_adaptive_lam:
            policy_lam = pu.length_adaptive_lam(response_mask, alpha=args.length_adaptive_alpha)
        value_lam = policy_lam if args.value_lam is None else args.value_lam
        if is_warmup and args.critic_warmup_lam is not None:
            value_lam = args.critic_warmup_lam
        return policy_lam, value_lam

    # ---- 9-12. PPO epochs over the small buffer ----------------------------------------------------------------------

    def ppo_epochs(self, model: nn.Module, batch: dict, is_warmup: bool) -> tuple[torch.Tensor, float | None]:
        """`num_ppo_epochs` shuffled passes over the buffer; the critic alone learns during the warm-up."""
        stats = defaultdict(list)
        use_ptx = self.args.ptx_coef > 0 and not is_warmup
        minibatch = {}

        def start_minibatch(mb_inds: torch.Tensor) -> None:
            # the ptx rows of every micro-batch are drawn up front, so that their target tokens can be counted
            minibatch["ptx"] = [self._next_ptx_batch() for _ in range(self.num_micro_batches)] if use_ptx else []
            minibatch["num_tokens"], minibatch["num_sequences"], minibatch["ptx_num_tokens"] = self._loss_normalizers(
                batch["response_mask"][mb_inds], [ptx["target_mask"] for ptx in minibatch["ptx"]]
            )

        def micro_batch_loss(mc_inds: torch.Tensor, mb_inds: torch.Tensor) -> torch.Tensor:
            return self._micro_batch_loss(
                model, batch, mc_inds, minibatch["num_tokens"], minibatch["num_sequences"], is_warmup, stats,
                ptx_inputs=minibatch["ptx"].pop(0) if use_ptx else None, ptx_num_tokens=minibatch["ptx_num_tokens"],
            )  # fmt: skip

        with self._critic_only_steps() if is_warmup else contextlib.nullcontext():
            loss, grad_norm = self.minibatch_passes(
                model, self.args.num_ppo_epochs, micro_batch_loss, start_minibatch=start_minibatch
            )
        self._update_stats = stats
        return loss, grad_norm

    @contextlib.contextmanager
    def _critic_only_steps(self):
        """Critic warm-up ([P] §5.3.3): optimizer steps that train the critic alone and leave no trace on the policy.

        - the critic steps at its base learning rate: the schedule is held at step 0 during the warm-up, where a
          schedule with an LR warm-up has a multiplier of 0;
        - policy groups step at lr 0, which leaves their weights bit-identical under AdamW (weight decay included),
          and their optimizer state (moments, step counts) is restored afterwards, so that bias correction after the
          warm-up is exactly that of a run without one;
        - a group that holds both models (a user's `AdamW(policy + critic)`, see `_check_user_optimizer`) steps at its
          base lr too, and its policy parameters lose their (zero) gradients just before each step: torch optimizers
          skip a parameter without a gradient entirely (no update, no weight decay, no state), so the policy stays
          bit-identical there as well; their state is restored all the same.
        """
        groups = self.optimizer.param_groups
        saved_lrs = [group["lr"] for group in groups]
        inner = _innermost_optimizer(self.optimizer)
        mixed_policy_params = [
            p
            for group in groups
            if not self._is_policy_group(group)
            for p in group["params"]
            if id(p) in self._policy_param_ids
        ]
        saved_state = {}
        for index, group in enumerate(groups):
            if self._is_policy_group(group):
                keys = _state_keys_of_group(self.optimizer, index)
            else:  # a mixed group: its policy parameters only
                keys = [p for p in group["params"] if id(p) in self._policy_param_ids]
            for param in keys:
                state = inner.state.get(param)
                saved_state[param] = None if state is None else {k: _clone(v) for k, v in state.items()}
        for group in groups:
            group["lr"] = 0.0 if self._is_policy_group(group) else group.get("initial_lr", group["lr"])

        def drop_policy_grads(optimizer, args, kwargs) -> None:
            for param in mixed_policy_params:
                param.grad = None

        hook = inner.register_step_pre_hook(drop_policy_grads) if mixed_policy_params else None
        try:
            yield
        finally:
            if hook is not None:
                hook.remove()
            for group, lr in zip(groups, saved_lrs, strict=True):
                group["lr"] = lr
            for param, state in saved_state.items():
                if state is None:
                    inner.state.pop(param, None)
                else:
                    inner.state[param] = state

    def _is_policy_group(self, group: dict) -> bool:
        """A group of policy parameters only; a group that mixes policy and critic is not one (it trains the critic)."""
        # DeepSpeed swaps `params` for flat partitions but keeps the tag (`create_optimizer`, `_check_user_optimizer`)
        if "ppomax_module" in group:
            return group["ppomax_module"] == "policy"
        return bool(group["params"]) and all(id(p) in self._policy_param_ids for p in group["params"])

    def _check_user_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Check a user's `optimizers=(optimizer, ...)` against the critic before anything trains, and tag its groups.

        - No trainable critic parameter in it: `ValueError`. The critic would never learn (the warm-up would spend its
          steps doing nothing, and GAE would run on the initial values), and a user who built the optimizer before
          the trainer usually cannot hold the critic: it is built inside (PPO-max: a copy of the reward model). The
          fix is to pass `value_model` too, or to leave `optimizers` unset. Part of it only: a warning.
        - Each group is tagged `ppomax_module` ("policy", "value_model" or "mixed"), like `create_optimizer`'s groups,
          so that `_is_policy_group` survives DeepSpeed's flat partitions.
        - A mixed group (one group over both models, the common `AdamW(params)`) is kept, not split: the optimizer, and
          the scheduler built over its groups (`base_lrs`, `initial_lr`), belong to the user. `_critic_only_steps`
          drops its policy gradients in the warm-up instead. DeepSpeed flattens a group into one partition, where the
          policy's part cannot be told apart: refused there when a warm-up is to run.
        """
        policy_ids = {id(p) for p in self.policy_model.parameters()}
        critic_ids = {id(p) for p in self.value_model.parameters()}
        in_optimizer, mixed = set(), False
        for group in optimizer.param_groups:
            ids = {id(p) for p in group["params"]}
            in_optimizer |= ids
            has_policy, has_critic = bool(ids & policy_ids), bool(ids & critic_ids)
            if has_policy or has_critic:
                group["ppomax_module"] = (
                    "mixed" if has_policy and has_critic else "policy" if has_policy else "value_model"
                )
            mixed |= has_policy and has_critic
        trainable = [id(p) for p in self.value_model.parameters() if p.requires_grad]
        held = sum(i in in_optimizer for i in trainable)
        recipe = (
            "Either leave `optimizers` unset (the default AdamW has separate policy and critic groups: "
            "`learning_rate`, `value_learning_rate`, `optim`), or build the critic yourself and give it its own group: "
            "`value_model = copy.deepcopy(reward_model)`; `optimizer = torch.optim.AdamW([{'params': "
            "policy.parameters()}, {'params': value_model.parameters(), 'lr': 1e-5}])`; then pass "
            "`value_model=value_model, optimizers=(optimizer, None)`."
        )
        if trainable and held == 0:
            raise ValueError(
                "The optimizer passed in `optimizers` holds none of the critic's trainable parameters, so the critic "
                "would never learn (neither in the critic warm-up nor after it). The critic is "
                "`trainer.model.value_model`; unless you pass `value_model`, the trainer builds it (PPO-max: a "
                "trainable copy of the reward model, not the reward model itself; with `value_peft_config` or a PEFT "
                f"policy, its adapter), so an optimizer built before the trainer cannot hold it. {recipe}"
            )
        if held < len(trainable):
            warnings.warn(
                f"The optimizer passed in `optimizers` holds only {held} of the critic's {len(trainable)} trainable "
                "parameter tensors; the others never change. Freeze them (`requires_grad_(False)`) if that is meant. "
                f"{recipe}",
                UserWarning,
                stacklevel=3,
            )
        if mixed and self.is_deepspeed_enabled and self._warmup_steps() > 0:
            raise ValueError(
                "The optimizer passed in `optimizers` has a parameter group holding both the policy and the critic. "
                "DeepSpeed flattens each group into one partition, so the critic warm-up (`critic_warmup_steps`) cannot "
                "step the critic alone. Put them in separate parameter groups: `torch.optim.AdamW([{'params': "
                "policy.parameters()}, {'params': value_model.parameters()}])`, or leave `optimizers` unset, or set "
                "`critic_warmup_steps=0`."
            )

    def _loss_normalizers(
        self, response_mask: torch.Tensor, ptx_target_masks: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Counts that turn a minibatch's summed losses into means: `(N_rollout, S_rollout, N_ptx)`.

        `S_rollout` counts the sequences with at least one response token (the sequence means of `loss_agg_mode`).

        The counts are global (one all-reduce over processes) and divided by the number of processes, because DDP
        and DeepSpeed average gradients over processes: the averaged gradient is then that of the token mean over the
        whole minibatch, however its rows are spread over processes and micro-batches (a per-process mean would
        weigh a process's short responses like another's long ones). `N_ptx` counts ptx target tokens (labels are
        shifted, so position 0 is never a target); `None` without ptx.
        """
        counts = [response_mask.sum(), (response_mask.sum(dim=-1) > 0).sum()]
        if ptx_target_masks:
            counts.append(sum(mask[:, 1:].sum() for mask in ptx_target_masks))
        totals = self._all_reduce_sum(torch.stack(counts).to(torch.float64).cpu())
        per_process = (totals.clamp(min=1) / self.accelerator.num_processes).float().to(self.args.device)
        return per_process[0], per_process[1], (per_process[2] if ptx_target_masks else None)

    def _micro_batch_loss(
        self,
        model,
        batch,
        inds,
        mb_num_tokens,
        mb_num_sequences,
        is_warmup,
        stats,
        ptx_inputs=None,
        ptx_num_tokens=None,
    ) -> torch.Tensor:
        """This micro-batch's share of the minibatch loss: sums over the minibatch's token (or, for the policy loss's
        sequence modes, sequence) counts (see `_loss_normalizers`)."""
        args = self.args
        context = batch["queries"].size(1)
        inputs = self._sequence_inputs(batch, inds)
        responses, mask = batch["responses"][inds], batch["response_mask"][inds]
        num_rollout_rows, seq_len = inputs["input_ids"].shape
        if ptx_inputs is not None:
            # one forward over rollout + ptx rows keeps a single DDP/DeepSpeed forward-backward per micro-batch
            inputs, ptx_labels = _stack_with_ptx(inputs, ptx_inputs, self.processing_class.pad_token_id)
            logits, values = model(**inputs)
            rollout_logits = logits[:num_rollout_rows, context - 1 : seq_len - 1]
        else:
            # only the response positions need the LM head: the last T + 1, without the final one
            logits, values = model(**inputs, logits_to_keep=responses.size(1) + 1)
            rollout_logits = logits[:, :-1]
        new_logprobs = _gather_response_logprobs(rollout_logits, responses, args.temperature)
        new_values = values[:num_rollout_rows, context - 1 : seq_len - 1].float()

        # counts are per-process shares of the minibatch's; the count-free verl sum mode takes the process count
        aggregation = {
            "loss_agg_mode": args.loss_agg_mode, "num_tokens": mb_num_tokens, "num_sequences": mb_num_sequences,
            "norm_length": args.loss_agg_norm_length or args.response_length,
            "num_processes": self.accelerator.num_processes,
        }  # fmt: skip
        # vLLM rollouts with the sampler correction: each token's (or sequence's) loss weighted by pi_old / q
        sampler_weights = batch["sampler_weights"][inds] if "sampler_weights" in batch else None
        pg_loss, pg_stats = ppo_policy_loss(
            new_logprobs, batch["logprobs"][inds], batch["advantages"][inds], mask,
            cliprange=args.cliprange, cliprange_low=args.cliprange_low, cliprange_high=args.cliprange_high,
            dual_clip=args.dual_clip, importance_weights=sampler_weights, **aggregation,
        )  # fmt: skip
        vf_loss, vf_stats = ppo_value_loss(
            new_values, batch["values"][inds], batch["returns"][inds], mask,
            cliprange_value=args.cliprange_value, num_tokens=mb_num_tokens,
        )  # fmt: skip
        # the entropy is always logged; it needs a graph only when it is part of the loss
        with contextlib.nullcontext() if args.entropy_coef > 0 and not is_warmup else torch.no_grad():
            entropy_loss, per_token_entropy = entropy_bonus_loss(
                rollout_logits.float() / args.temperature, mask, **aggregation
            )
        self._loss_terms = {"policy": pg_loss.detach(), "value": vf_loss.detach()}
        if is_warmup:
            # value loss only; the zero-weighted logits term gives every policy parameter a (zero) gradient, which DDP
            # needs, and the policy's lr is 0, so the policy stays bit-identical
            loss = args.vf_coef * vf_loss + 0.0 * logits.float().mean()
        else:
            loss = pg_loss + args.vf_coef * vf_loss
            if args.entropy_coef > 0:
                loss = loss + args.entropy_coef * entropy_loss
            if ptx_inputs is not None:
                ptx_loss, ptx_stats = language_modeling_loss(
                    logits[num_rollout_rows:], ptx_labels, num_tokens=ptx_num_tokens
                )
                loss = loss + args.ptx_coef * ptx_loss
                self._loss_terms["ptx"] = ptx_loss.detach()
                # logged as this micro-batch's own token mean, like the policy and value losses
                ptx_tokens = (ptx_labels[:, 1:] != -100).sum().item()
                stats["loss/ptx_avg"].append(ptx_loss.item() * float(ptx_num_tokens) / max(ptx_tokens, 1))
                stats["ptx/accuracy"].append(ptx_stats["accuracy"].item())
        stats["loss/policy_avg"].append(pg_stats["batch_loss"].item())  # this micro-batch's own aggregate
        stats["loss/value_avg"].append(vf_loss.item() * mb_num_tokens.item() / max(mask.sum().item(), 1))
        stats["policy/approxkl_avg"].append(pg_stats["approxkl"].item())
        stats["policy/approxkl_k3_avg"].append(pg_stats["approxkl_k3"].item())
        stats["policy/clipfrac_avg"].append(pg_stats["clipfrac"].item())
        if args.dual_clip is not None:
            stats["policy/dual_clipfrac_avg"].append(pg_stats["dual_clipfrac"].item())
        stats["policy/entropy_avg"].append(pu.masked_mean(per_token_entropy, mask).item())
        stats["val/clipfrac_avg"].append(vf_stats["clipfrac"].item())
        stats["val/ratio"].append(pg_stats["ratio_mean"].item())
        stats["val/ratio_var"].append(pg_stats["ratio_var"].item())
        return loss

    def _next_ptx_batch(self) -> dict[str, torch.Tensor]:
        args = self.args
        size = args.ptx_batch_size or self.micro_batch_size
        start = (self._ptx_position * self.accelerator.num_processes + self.accelerator.process_index) * size
        self._ptx_position += 1
        rows = [self.ptx_dataset[i] for i in self._ptx_stream.take(start, size)]
        truncated = sum(len(row["input_ids"]) > args.ptx_max_length for row in rows)
        self._metrics["train"]["ptx/truncated_rows"].append(float(truncated))
        width = min(max(len(row["input_ids"]) for row in rows), args.ptx_max_length)
        pad_id = self.processing_class.pad_token_id
        input_ids = torch.full((size, width), pad_id, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        targets = torch.zeros((size, width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = row["input_ids"][: args.ptx_max_length]
            input_ids[i, : len(ids)] = torch.as_tensor(ids)
            mask[i, : len(ids)] = 1
            targets[i, : len(ids)] = torch.as_tensor(row["ptx_target_mask"][: args.ptx_max_length])
        return {
            "input_ids": input_ids.to(args.device),
            "attention_mask": mask.to(args.device),
            "target_mask": targets.to(args.device),
        }

    # ---- metrics and checkpoint state --------------------------------------------------------------------------------

    def _record_rollout_metrics(
        self, batch, raw_scores, shaped_scores, non_score_rewards, per_token_kl, is_warmup, start_time
    ) -> None:
        args, mean = self.args, self._reduced_mean
        metrics = self._monitor_metrics(batch, start_time)
        # NaN on a process whose returns do not vary: the mean is over the processes where it is defined, NaN if none
        explained = pu.explained_variance(batch["values"], batch["returns"], batch["response_mask"]).float()
        defined = ~explained.isnan()
        explained_sum, explained_count = self.accelerator.reduce(
            torch.stack([torch.where(defined, explained, 0.0), defined.float()]).to(args.device), "sum"
        ).tolist()
        metrics.update({
            "objective/kl": mean(per_token_kl.sum(1)),
            "objective/non_score_reward": mean(non_score_rewards.sum(1)),
            "objective/rlhf_reward": mean(non_score_rewards.sum(1) + shaped_scores),
            "objective/scores": mean(shaped_scores),
            "objective/kl_coef": self.kl_ctl.value,
            "val/explained_variance": explained_sum / explained_count if explained_count else math.nan,
            "ppomax/critic_warmup": float(is_warmup),
            "ppomax/critic_warmup_progress": min(self.critic_warmup_done + is_warmup, args.critic_warmup_steps)
            / max(args.critic_warmup_steps, 1),
        })  # fmt: skip
        for key, values in self._update_stats.items():
            metrics[key] = mean(torch.tensor(values))
        if is_warmup:  # the critic's fit alone, so that a user sees when the warm-up has converged
            metrics["ppomax/critic_warmup_value_loss"] = metrics["loss/value_avg"]
            metrics["ppomax/critic_warmup_explained_variance"] = metrics["val/explained_variance"]
        self._store_metrics(metrics)

    # undefined (NaN) at updates whose returns do not vary, which is no error: averaged over the defined values only
    _NAN_AWARE_METRICS = ("val/explained_variance", "ppomax/critic_warmup_explained_variance")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Average the window's metrics as `OnlineRolloutTrainer.log` does, except that the explained variance is the
        mean of the updates where it is defined, and NaN only when it is defined at none."""
        for metrics in self._metrics.values():
            for key in self._NAN_AWARE_METRICS:
                if metrics.get(key):
                    metrics[key] = [value for value in metrics[key] if not math.isnan(value)] or [math.nan]
        super().log(logs, start_time)

    def _ppomax_state(self) -> dict[str, Any]:
        return {
            **super()._ppomax_state(),
            "kl_controller": self.kl_ctl.state_dict(),
            "ptx_position": self._ptx_position,
        }

    def _load_ppomax_state(self, checkpoint: str) -> dict[str, Any]:
        state = super()._load_ppomax_state(checkpoint)
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self._ptx_position = state["ptx_position"]
        return state


class PPOMaxTrainer(PPOTrainer):
    """[`PPOTrainer`] with the PPO-max recipe on by default (pass a [`PPOMaxConfig`]).

    PPO-max (https://huggingface.co/papers/2307.04964): running-moment reward normalisation and clipping, token-level KL
    penalty, critic initialised from the reward model and warmed up, small buffer, ptx mixing, value clipping, global
    grad clipping and collapse monitors. Every piece is a flag of [`PPOMaxConfig`].

    Arguments are [`PPOTrainer`]'s, in TRL 1.12's positional order or as TRL GRPO's keywords:
    `PPOMaxTrainer(model="path-or-id", reward_funcs=f, args=PPOMaxConfig(...), train_dataset=prompts)` loads the
    policy (with `args.model_init_kwargs`) and its tokenizer; `args=None` builds a `PPOMaxConfig` with
    `output_dir="<model name>-PPO-max"`.
    """

    _tag_names: ClassVar[list[str]] = ["ppomax-trl", "ppo-max"]
    _name = "PPO-max"
    _paper: ClassVar[dict[str, str]] = {
        "title": "Secrets of RLHF in Large Language Models Part I: PPO",
        "id": "2307.04964",
    }
    _config_class: ClassVar[type[PPOConfig]] = PPOMaxConfig  # built when `args` is None

    def __init__(self, args: PPOConfig | None = None, *positional, **kwargs) -> None:
        if type(args) is PPOConfig:
            warnings.warn(
                "PPOMaxTrainer got a plain PPOConfig, whose PPO-max pieces are off. Use PPOMaxConfig for the recipe.",
                UserWarning,
            )
        super().__init__(args, *positional, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Module-level helpers
# ----------------------------------------------------------------------------------------------------------------------
def _is_base_weight(name: str) -> bool:
    """Whether a weight of a PEFT-wrapped backbone is a base weight, not an adapter's (LoRA, or a `modules_to_save`
    copy, which starts equal to the base and trains)."""
    return "lora_" not in name and ".modules_to_save." not in name


def _base_weight_name(name: str) -> str:
    """The unwrapped model's name of a base weight: PEFT adds `base_layer.` (tuner layers) or `original_module.`
    (`modules_to_save`) to the path."""
    return name.replace(".base_layer", "").replace(".original_module", "")


def _default_value_peft_config(policy: nn.Module) -> PeftConfig | None:
    """The critic's adapter config when the policy is a `PeftModel` and no `value_peft_config` is given.

    A copy of the policy's active adapter config (same PEFT type, `r`, `lora_alpha`, `target_modules`, dropout, ...)
    as a sequence-classification adapter (`task_type="SEQ_CLS"`) whose only fully trained module is the `score` head
    (the policy's own `modules_to_save` are not copied). Initialisations that read and rewrite the base weights (PiSSA,
    OLoRA, EVA, LoftQ) fall back to LoRA's default, zero `B`. `None` for prompt-learning adapters (prefix or prompt
    tuning), which the critic's backbone forward (`per_position_scores`) would not apply: that critic stays full.
    """
    config = copy.deepcopy(policy.peft_config[policy.active_adapter])
    if config.is_prompt_learning:
        return None
    config.task_type = "SEQ_CLS"
    config.modules_to_save = ["score"]
    config.base_model_name_or_path = None  # `get_peft_model` records the critic's base (the policy's or RM's path)
    config.revision = None
    config.inference_mode = False
    if getattr(config, "init_lora_weights", True) not in (True, False, "gaussian"):
        config.init_lora_weights = True
    return config


def _load_critic(path: str | os.PathLike, policy: nn.Module) -> nn.Module:
    """A critic from a folder: an earlier run's `output_dir` (its `value_model/`), any sequence classifier with one
    label, or a PEFT adapter of one (what a run with a PEFT critic saves), in the policy's dtype. Its tokenizer must
    be the policy's: the critic reads the policy's token ids.

    An adapter folder holds no base weights: the base is loaded from its `adapter_config.json`'s
    `base_model_name_or_path` (the folder the critic was built from: the policy's or the reward model's
    `_name_or_path`) as a sequence classifier with one label, and the adapter (with its `score` head) is put on top,
    trainable.
    """
    folder = os.fspath(path)
    nested = os.path.join(folder, "value_model")
    if any(os.path.isfile(os.path.join(nested, name)) for name in ("config.json", "adapter_config.json")):
        folder = nested
    if os.path.isfile(os.path.join(folder, "adapter_config.json")):
        return _load_critic_adapter(folder, dtype=next(_peft_base(policy).parameters()).dtype)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(
            f"`value_model={os.fspath(path)!r}` is not a model folder (no config.json or adapter_config.json there or "
            "in its value_model/): pass a saved critic, an earlier run's output_dir, or a sequence classifier with one "
            "label."
        )
    num_labels = AutoConfig.from_pretrained(folder).num_labels
    if num_labels != 1:
        raise ValueError(
            f"`value_model={folder!r}` has {num_labels} labels; a critic is a sequence classifier with one label."
        )
    dtype = next(_peft_base(policy).parameters()).dtype
    return AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype).train()


def _load_critic_adapter(folder: str, dtype: torch.dtype) -> nn.Module:
    """A trainable critic from a PEFT adapter folder: its base (`base_model_name_or_path`) + the adapter."""
    if not is_peft_available():
        raise ImportError(
            f"`value_model={folder!r}` is a PEFT adapter: pip install 'ppomax-trl[peft]' (or pip install peft)."
        )
    base = PeftConfig.from_pretrained(folder).base_model_name_or_path
    load_yourself = (
        "load the critic yourself and pass the model: `PeftModel.from_pretrained(AutoModelForSequenceClassification"
        f".from_pretrained(<base>, num_labels=1), {folder!r}, is_trainable=True)`."
    )
    if not base:
        raise ValueError(
            f"`value_model={folder!r}` is a PEFT adapter whose adapter_config.json names no base model "
            "(`base_model_name_or_path` is null: the critic's base was built in memory, not loaded from a folder). "
            f"Set `base_model_name_or_path` there to the folder of the model it was built from, or {load_yourself}"
        )
    try:
        base_model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=dtype)
    except OSError as error:
        raise ValueError(
            f"`value_model={folder!r}` is a PEFT adapter whose base model {base!r} (`base_model_name_or_path` in its "
            f"adapter_config.json) could not be loaded ({error}). Point `base_model_name_or_path` at where that "
            f"model now lives, or {load_yourself}"
        ) from error
    return PeftModel.from_pretrained(base_model, folder, is_trainable=True).train()


def _innermost_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that holds the state under accelerate's (and DeepSpeed's) wrappers."""
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def _state_keys_of_group(optimizer: torch.optim.Optimizer, group_index: int) -> list[torch.Tensor]:
    """The tensors that key the optimizer state of param group `group_index` in `_innermost_optimizer(optimizer)`.

    Usually the group's params. DeepSpeed ZeRO-3 empties every group's `params` between steps and keys the state by
    the group's flat fp32 partitions (one per sub-group), which it puts into the group only for the step itself.
    """
    keys = list(optimizer.param_groups[group_index]["params"])
    while optimizer is not None:
        partitions = getattr(optimizer, "fp32_partitioned_groups_flat", None)
        group_ids = getattr(optimizer, "sub_group_to_group_id", None)
        if partitions is not None and group_ids is not None:
            keys += [flat for sub_group, flat in enumerate(partitions) if group_ids[sub_group] == group_index]
        optimizer = getattr(optimizer, "optimizer", None)
    return keys


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def _stack_with_ptx(inputs: dict, ptx: dict, pad_token_id: int) -> tuple[dict, torch.Tensor]:
    """Right-pad rollout and ptx rows to one width and stack them; ptx labels are its target tokens, -100 elsewhere."""
    width = max(inputs["input_ids"].size(1), ptx["input_ids"].size(1))

    def widen(t: torch.Tensor, value: int) -> torch.Tensor:
        return nn.functional.pad(t, (0, width - t.size(1)), value=value)

    input_ids = torch.cat([widen(inputs["input_ids"], pad_token_id), widen(ptx["input_ids"], pad_token_id)])
    attention_mask = torch.cat([widen(inputs["attention_mask"], 0), widen(ptx["attention_mask"], 0)])
    labels = widen(ptx["input_ids"], pad_token_id).masked_fill(widen(ptx["target_mask"], 0) == 0, -100)
    return _sequence_forward_inputs(input_ids, attention_mask, pad_token_id), labels


__all__ = ["PPOConfig", "PPOMaxConfig", "PPOMaxTrainer", "PPOTrainer", "PolicyAndValueWrapper"]
