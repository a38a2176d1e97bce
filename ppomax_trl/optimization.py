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
"""Batch sizes, the optimizer and the minibatch passes of the online trainers (a mixin of `OnlineRolloutTrainer`).

It owns TRL 1.12's derived batch sizes (written back onto `args`), AdamW over policy and critic in separate parameter
groups, and `minibatch_passes`: shuffled epochs over one rollout buffer, gradient accumulation over micro-batches,
the global grad-norm clip, one optimizer step per minibatch, and the stop on a non-finite loss or gradient. It must
not sample, score or define a loss: subclasses pass the micro-batch loss in.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import nn
from transformers import Trainer

from . import ppo_utils as pu


class MinibatchMixin:
    """Batch sizes, optimizer and minibatch passes, on a `transformers.Trainer`."""

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


__all__ = ["MinibatchMixin"]
