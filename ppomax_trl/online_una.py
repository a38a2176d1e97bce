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
"""Online UNA (https://huggingface.co/papers/2408.15339 v2 §2.3.4): critic-free RLHF by regression.

One step: sample y ~ pi_theta for each prompt, score it (reward model or `reward_funcs`), map the score to
s in [0, 1], and regress sigma(r_theta) onto s with r_theta = beta * sum_t (log pi_theta - log pi_ref'):

    rollout -> score -> normalise to [0, 1] -> regress (MSE or BCE)

No value model is built or run, and there is no GAE or ratio clipping. The rollout engine (sampling, scoring, running
moments, monitors, checkpoints) is `ppomax_trl.rollout.OnlineRolloutTrainer` and its parts, shared with `PPOTrainer`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from transformers import TrainingArguments

from . import ppo_utils as pu
from .losses import una_loss
from .modules import _gather_response_logprobs
from .ppo_config import OnlineRolloutConfig
from .rollout import OnlineRolloutTrainer


_UNA_REFERENCES = ("ref", "rollout")
_SCORE_NORMALIZERS = ("sigmoid", "running")
_UNA_LOSSES = ("mse", "bce")


@dataclass
class OnlineUNAConfig(OnlineRolloutConfig):
    r"""
    Configuration for [`OnlineUNATrainer`]. Rollout fields (response length, sampling, stop tokens, batch sizes) are
    those of [`OnlineRolloutConfig`], with the names TRL's PPO used.

    > [!NOTE]
    > Defaults from UNA v2 (online): `beta=0.03`, `learning_rate=5e-6`; `una_reference="ref"` is the paper's formula.
    """

    # UNA v2 §4.2 (online): "UNA beta 0.03", learning rate 5e-6 for both RLHF and UNA.
    learning_rate: float = field(default=5e-6, metadata={"help": "Policy learning rate (UNA v2 online: 5e-6)."})
    beta: float = field(
        default=0.03,
        metadata={"help": "beta of the implicit reward r = beta * log-ratio (`kl_coef` in the released code)."},
    )
    una_reference: str = field(
        default="ref",
        metadata={
            "help": "Reference in the implicit reward: 'ref' (frozen pi_ref, the paper's formula) or 'rollout' (the "
            "policy at sampling time, as the released code does: a trust-region regression)."
        },
    )
    loss: str = field(
        default="mse",
        metadata={"help": "'mse' (the paper: (sigma(r) - s)^2) or 'bce' (soft-label BCE; not in the paper)."},
    )
    score_normalizer: str = field(
        default="sigmoid",
        metadata={
            "help": "Score -> [0, 1]: 'sigmoid' (s = sigma(score), the paper) or 'running' (s = sigma((score - mean) "
            "/ std) with running moments of every score so far, all processes)."
        },
    )
    num_ppo_epochs: int = field(
        default=1,
        metadata={"help": "Passes over each rollout buffer (the name TRL's PPO config used, for sweep parity)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"`beta` must be > 0, got {self.beta}.")
        if self.una_reference not in _UNA_REFERENCES:
            raise ValueError(f"`una_reference` must be one of {_UNA_REFERENCES}, got {self.una_reference!r}.")
        if self.loss not in _UNA_LOSSES:
            raise ValueError(f"`loss` must be one of {_UNA_LOSSES}, got {self.loss!r}.")
        if self.score_normalizer not in _SCORE_NORMALIZERS:
            raise ValueError(f"`score_normalizer` must be one of {_SCORE_NORMALIZERS}, got {self.score_normalizer!r}.")
        if self.num_ppo_epochs < 1:
            raise ValueError(f"`num_ppo_epochs` must be >= 1, got {self.num_ppo_epochs}.")
        if (
            self.use_vllm
            and self.vllm_importance_sampling_correction
            and not self.vllm_importance_sampling_mode.startswith("sequence")
        ):
            raise ValueError(
                f"OnlineUNAConfig: vllm_importance_sampling_mode={self.vllm_importance_sampling_mode!r} weights tokens, "
                "but the UNA loss is one regression per sequence. Use 'sequence_mask' (the default) or "
                "'sequence_truncate', or set `vllm_importance_sampling_correction=False`."
            )


class OnlineUNATrainer(OnlineRolloutTrainer):
    """Online UNA: sample, score, regress the policy's implicit reward onto the normalised score. No critic.

    Same constructor as [`PPOTrainer`] minus the critic arguments (`value_model`, `value_peft_config`, `ptx_dataset`),
    in TRL 1.12's positional order or as TRL GRPO's keywords:

    ```python
    from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer

    trainer = OnlineUNATrainer(OnlineUNAConfig(output_dir="una"), tokenizer, policy, None, reward_model, dataset)
    trainer = OnlineUNATrainer(model="Qwen/Qwen2.5-0.5B-Instruct", reward_funcs=my_reward, train_dataset=dataset)
    trainer.train()
    ```

    Args (all optional but `model`, `train_dataset` and a reward source): `args` ([`OnlineUNAConfig`]; `None`: one
    with `output_dir="<model name>-OnlineUNA"`), `processing_class` (`None`: loaded from the policy's name or path),
    `model` (a causal LM or its name or path, loaded with `args.model_init_kwargs`), `ref_model` (`None`: a frozen
    copy, or the adapter-disabled base under PEFT; a name or path is loaded like `model`), `reward_model` (a 1-label
    sequence classifier or its path), `train_dataset`, `data_collator`, `eval_dataset`, `optimizers`, `callbacks`,
    `peft_config`, and keyword-only `reward_funcs`, `reward_processing_class`, `reward_processing_classes`: as in
    [`PPOTrainer`].

    `una_reference="ref"` (default) anchors the implicit reward to the frozen reference (paper v2 §2.3.4);
    `"rollout"` measures it against the policy that sampled the batch (released code), so nothing ties the policy to
    pi_ref except the monitors (`objective/kl`). Results are comparable only within one variant; the model card says
    which ran.
    """

    _tag_names: ClassVar[list[str]] = ["ppomax-trl", "una"]
    _name = "Online UNA"
    _paper: ClassVar[dict[str, str]] = {
        "title": "UNA: Unifying Alignments of RLHF/PPO, DPO and KTO by a Generalized Implicit Reward Function",
        "id": "2408.15339",
    }
    _config_class: ClassVar[type[OnlineUNAConfig]] = OnlineUNAConfig  # built when `args` is None

    def __init__(self, args: OnlineUNAConfig | None = None, *positional, **kwargs) -> None:
        if isinstance(args, TrainingArguments) and not isinstance(args, OnlineUNAConfig):
            raise TypeError(f"{type(self).__name__}: `args` must be an `OnlineUNAConfig`, got {type(args).__name__}.")
        super().__init__(args, *positional, **kwargs)

    def _update(self, model: nn.Module, is_warmup: bool, start_time: float) -> tuple[torch.Tensor, float | None]:
        """rollout -> score -> normalise to [0, 1] -> regress sigma(r_theta) onto the targets."""
        rows = self._start_step()
        rollout = self.rollout(rows, model)
        raw_scores = self.score(rows, rollout)
        targets = self.score_targets(raw_scores, rollout["stopped"])
        loss, grad_norm, stats = self.regress(model, rollout, targets)
        self._record_una_metrics(rollout, raw_scores, targets, stats, start_time)
        return loss, grad_norm

    def score_targets(self, raw_scores: torch.Tensor, stopped: torch.Tensor) -> torch.Tensor:
        """s = normaliser(score - missing_eos_penalty * [no stop]) in [0, 1] (spec §A.6 step 2)."""
        args = self.args
        self.update_reward_moments(raw_scores)  # monitored in both modes, used by 'running'
        scores = raw_scores
        if args.missing_eos_penalty is not None:
            scores = scores - args.missing_eos_penalty * (~stopped).to(scores.dtype)
        if args.score_normalizer == "running":
            scores = pu.reparameterize_scores(
                scores, mean=self.reward_moments.mean, std=self.reward_moments.std, mode="normalize", clip=None
            )
        return torch.sigmoid(scores)

    def regress(
        self, model: nn.Module, batch: dict[str, torch.Tensor], targets: torch.Tensor
    ) -> tuple[torch.Tensor, float | None, dict[str, list[float]]]:
        args = self.args
        stats = defaultdict(list)
        mask = batch["response_mask"]
        reference = batch["ref_logprobs"] if args.una_reference == "ref" else batch["logprobs"]
        ref_logps = (reference * mask).sum(1)  # (B,) summed completion log-probs, no length normalisation

        def micro_batch_loss(mc_inds: torch.Tensor, mb_inds: torch.Tensor) -> torch.Tensor:
            inputs = self._sequence_inputs(batch, mc_inds)
            responses = batch["responses"][mc_inds]
            logits, _ = model(**inputs, logits_to_keep=responses.size(1) + 1)  # response positions only
            new_logprobs = _gather_response_logprobs(logits[:, :-1], responses, args.temperature)
            policy_logps = (new_logprobs * mask[mc_inds]).sum(1)  # (b,)
            sampler_weights = batch.get("sampler_weights")  # (B, 1): sequence modes only (see OnlineUNAConfig)
            loss, diagnostics = una_loss(
                policy_logps,
                ref_logps[mc_inds],
                targets[mc_inds],
                beta=args.beta,
                feedback="score",
                loss=args.loss,
                weights=None if sampler_weights is None else sampler_weights[mc_inds, 0],
            )
            for key in ("logratio", "score", "target", "implied_logratio_target"):
                stats[f"una/{key}"].append(diagnostics[key].item())
            stats["una/loss"].append(loss.item())
            self._loss_terms = {"una": loss.detach()}
            return loss * len(mc_inds) / len(mb_inds)  # una_loss is a mean over the micro-batch

        loss, grad_norm = self.minibatch_passes(model, args.num_ppo_epochs, micro_batch_loss)
        return loss, grad_norm, stats

    def _record_una_metrics(self, batch, raw_scores, targets, stats, start_time) -> None:
        mean = self._reduced_mean
        mask = batch["response_mask"]
        metrics = self._monitor_metrics(batch, start_time)
        metrics.update({
            "objective/kl": mean(((batch["logprobs"] - batch["ref_logprobs"]) * mask).sum(1)),
            "objective/scores": mean(raw_scores),
            "una/target_mean": mean(targets),
        })  # fmt: skip
        for key, values in stats.items():
            metrics[key] = mean(torch.tensor(values))
        self._store_metrics(metrics)

    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        super().create_model_card(model_name=model_name, **kwargs)
        if self.is_world_process_zero():
            with open(os.path.join(self.args.output_dir, "README.md"), "a") as f:
                f.write(
                    f"UNA paper version: v2. Reference variant: `una_reference={self.args.una_reference!r}`; loss "
                    f"`{self.args.loss}`; score normaliser `{self.args.score_normalizer}`; beta {self.args.beta}.\n"
                )
