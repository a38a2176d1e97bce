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
"""The running moments of the scores and the monitors of the online trainers (a mixin of `OnlineRolloutTrainer`).

It owns merging each step's raw scores (pooled over processes) into the running moments, the collapse monitors of
PPO-max ([P] §5.2: response length, KL to the reference, perplexity, raw and running score statistics), the warnings
they raise, and `log`'s averaging of each logging window's metrics (TRL's `self._metrics[mode]` pattern). It must not
sample, score or update weights.
"""

from __future__ import annotations

import math
import time

import torch
from transformers.utils import logging

from . import ppo_utils as pu


logger = logging.get_logger(__name__)


class MonitorsMixin:
    """Running moments, monitors and windowed metric averages, on a `transformers.Trainer`."""

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


__all__ = ["MonitorsMixin"]
