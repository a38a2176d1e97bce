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
"""Saving, checkpoints and exact resume of the online trainers (a mixin of `OnlineRolloutTrainer`).

It owns the saved layout (the policy at the root, loadable with `AutoModelForCausalLM.from_pretrained`; the critic in
`value_model/`; full weights or PEFT adapters), loading a checkpoint back (resume and `load_best_model_at_end`),
`ppomax_state.json` (the trainer's `rollout_state` and what subclasses add) and the model card. It overrides
`Trainer`'s private `_save`, `_load_from_checkpoint` and `_load_best_model`, pinned by
`tests/test_ppo_trainer.py::test_private_trainer_hooks_keep_their_signature`, and fills
`AtomicCheckpointMixin._save_extra_checkpoint_files`. It must not train, sample or score.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from .checkpoints import AtomicCheckpointMixin, _load_pretrained_weights, load_json
from .rollout_state import PPOMAX_STATE_NAME


logger = logging.get_logger(__name__)

VALUE_MODEL_DIR = "value_model"


class SavingMixin(AtomicCheckpointMixin):
    """`_save`, `_load_from_checkpoint`, `_load_best_model`, `ppomax_state.json` and the model card, on checkpoints
    that `AtomicCheckpointMixin` stages and publishes when complete."""

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
        self.generator.sync_weights(self.model_wrapped)  # sampling after training uses the best policy too

    def _save_extra_checkpoint_files(self, checkpoint_dir: str) -> None:
        """`ppomax_state.json` in the (staged) checkpoint, and the model card; `AtomicCheckpointMixin` calls it."""
        if self.args.should_save:
            with open(os.path.join(checkpoint_dir, PPOMAX_STATE_NAME), "w") as f:
                json.dump(self._ppomax_state(), f, indent=2)
            self.create_model_card(model_name=os.path.basename(os.path.normpath(self.args.output_dir)))

    def _ppomax_state(self) -> dict[str, Any]:
        """Algorithm state a checkpoint carries beyond what `Trainer` saves (subclasses extend it)."""
        return self.rollout_state.state_dict()

    def _load_ppomax_state(self, checkpoint: str) -> dict[str, Any]:
        path = os.path.join(checkpoint, PPOMAX_STATE_NAME)
        if not os.path.isfile(path):
            raise ValueError(f"{checkpoint} has no {PPOMAX_STATE_NAME}: it was not written by a ppomax_trl trainer.")
        state = load_json(path, checkpoint)
        self.rollout_state.load_state_dict(state)
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


__all__ = ["VALUE_MODEL_DIR", "SavingMixin"]
