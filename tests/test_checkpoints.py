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
"""Checkpoints survive faults: a save that fails midway leaves no `checkpoint-N`, resuming with `True` takes the last
complete one and ends bit-identical to an uninterrupted run; a truncated file is named in the error."""

import inspect
import os
import re
import shutil

import pytest
import torch
from conftest import common_args
from datasets import Dataset
from transformers import Trainer, TrainerState
from transformers.trainer_utils import get_last_checkpoint

from ppomax_trl import (
    OnlineUNATrainer,
    PPOMaxConfig,
    PPOMaxTrainer,
    PPOTrainer,
    RankListRewardConfig,
    RankListRewardTrainer,
    UNAConfig,
    UNATrainer,
)
from ppomax_trl.checkpoints import AtomicCheckpointMixin, CheckpointFileError, publish_checkpoint
from ppomax_trl.tiny import tiny_causal_lm, tiny_reward_model


DISK_FULL = OSError(28, "No space left on device")


def make_ppo_max(tokenizer, prompt_dataset, root, **overrides):
    """4 steps: 1 critic warm-up step + 3 PPO updates of 4 episodes; a checkpoint after each step unless overridden."""
    kwargs = common_args(root, critic_warmup_steps=1, total_episodes=12, save_strategy="steps", save_steps=1)
    kwargs.update(overrides)
    return PPOMaxTrainer(PPOMaxConfig(**kwargs), tokenizer, tiny_causal_lm(tokenizer, seed=0), None,
                         tiny_reward_model(tokenizer, seed=1), prompt_dataset, None)  # fmt: skip


def weights(trainer):
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def fail_on_call(monkeypatch, owner, name, call):
    """Make `owner.name` raise "No space left on device" on its `call`-th call (1-based); other calls go through."""
    original = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise DISK_FULL
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tokenizer, prompt_dataset):
    """Final weights of a run that never fails, and one complete checkpoint to corrupt."""
    root = tmp_path_factory.mktemp("uninterrupted")
    trainer = make_ppo_max(tokenizer, prompt_dataset, root, save_steps=2)
    trainer.train()
    return {"weights": weights(trainer), "checkpoint": root / "out" / "checkpoint-2"}


# ----------------------------------------------------------------------------------------------------------------------
# A save that fails midway
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", ["critic", "optimizer", "trainer_state", "ppomax_state"])
def test_failed_save_leaves_no_checkpoint_and_resume_takes_the_last_complete_one(
    writer, tmp_path, tokenizer, prompt_dataset, uninterrupted, monkeypatch
):
    first = make_ppo_max(tokenizer, prompt_dataset, tmp_path)
    # each writer runs once per save; the 2nd save fails after the policy is written
    owner, name = {
        "critic": (first.model.value_model, "save_pretrained"),
        "optimizer": (first, "_save_optimizer_and_scheduler"),
        "trainer_state": (TrainerState, "save_to_json"),
        "ppomax_state": (first, "_ppomax_state"),
    }[writer]
    fail_on_call(monkeypatch, owner, name, call=2)
    with pytest.raises(OSError, match="No space left on device"):
        first.train()
    monkeypatch.undo()
    out = tmp_path / "out"
    assert os.path.isfile(out / "checkpoint-1" / "model.safetensors")
    assert not os.path.exists(out / "checkpoint-2")  # the failed save is invisible to `get_last_checkpoint`
    assert sorted(os.listdir(out / "tmp-checkpoint-2")) == ["checkpoint-2"]  # what a failed save leaves behind

    resumed = make_ppo_max(tokenizer, prompt_dataset, tmp_path)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4
    assert sorted(p for p in os.listdir(out) if "checkpoint" in p) == [f"checkpoint-{i}" for i in (1, 2, 3, 4)]
    final = weights(resumed)
    for key, value in uninterrupted["weights"].items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=0, msg=key)


# ----------------------------------------------------------------------------------------------------------------------
# Truncated files are named
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["model.safetensors", "value_model/model.safetensors", "ppomax_state.json", "trainer_state.json"]
)
def test_truncated_checkpoint_file_is_named(name, tmp_path, tokenizer, prompt_dataset, uninterrupted):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(uninterrupted["checkpoint"], checkpoint)
    path = checkpoint / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    trainer = make_ppo_max(tokenizer, prompt_dataset, tmp_path / "resumed")
    with pytest.raises(CheckpointFileError, match=re.escape(str(path))) as error:
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert "earlier checkpoint" in str(error.value)


def test_lora_run_resumes_exactly_from_adapter_only_checkpoints(tmp_path, tokenizer, prompt_dataset):
    """A LoRA policy's critic is, by default, a LoRA of the same shape: checkpoints hold its adapter only, and a run
    resumed from one ends bit-identical to the run that wrote it."""
    from peft import LoraConfig, PeftModel

    def make(root):
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        args = PPOMaxConfig(**common_args(root, critic_warmup_steps=1, total_episodes=12, save_strategy="steps",
                                          save_steps=2))  # fmt: skip
        return PPOMaxTrainer(args, tokenizer, tiny_causal_lm(tokenizer, seed=0), None,
                             tiny_reward_model(tokenizer, seed=1), prompt_dataset, None, peft_config=lora)  # fmt: skip

    full = make(tmp_path / "full")
    full.train()
    checkpoint = tmp_path / "full" / "out" / "checkpoint-2"
    assert sorted(os.listdir(checkpoint / "value_model")) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors"
    ]  # fmt: skip
    assert "model.safetensors" not in os.listdir(checkpoint)
    resumed = make(tmp_path / "resumed")
    assert isinstance(resumed.model.value_model, PeftModel)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == full.state.global_step == 4
    final = weights(resumed)
    for key, value in weights(full).items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=0, msg=key)


def test_truncated_adapter_is_named_when_loaded(tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model

    from ppomax_trl.checkpoints import _load_pretrained_weights

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(tiny_causal_lm(tokenizer, seed=0), lora)
    model.save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointFileError, match=re.escape(str(path))):
        _load_pretrained_weights(model, str(tmp_path))


# ----------------------------------------------------------------------------------------------------------------------
# Offline trainers built on `transformers.Trainer` / TRL get the same guarantee
# ----------------------------------------------------------------------------------------------------------------------
PREFERENCES = {"prompt": ["the movie was", "i loved", "what a", "the food"], "chosen": [" great"] * 4,
               "rejected": [" bad", " awful", " sad", " cold"]}  # fmt: skip
RANK_LISTS = {"prompt": ["the movie was", "i loved", "what a", "the food"],
              "completions": [[" great", " fine", " bad"], [" it", " them"], [" day", " mess", " waste"],
                              [" was hot", " was cold"]]}  # fmt: skip


def make_offline(name, tokenizer, output_dir):
    """UNA or rank-list reward trainer: 3 steps of 2 rows, a checkpoint after each, at most 2 kept."""
    common = dict(output_dir=str(output_dir), bf16=False, gradient_checkpointing=False, report_to="none",
                  disable_tqdm=True, per_device_train_batch_size=2, max_steps=3, save_strategy="steps", save_steps=1,
                  save_total_limit=2, learning_rate=1e-2, seed=0)  # fmt: skip
    if name == "una":
        return UNATrainer(tiny_causal_lm(tokenizer, seed=0), args=UNAConfig(**common),
                          train_dataset=Dataset.from_dict(PREFERENCES), processing_class=tokenizer)  # fmt: skip
    return RankListRewardTrainer(tiny_reward_model(tokenizer, seed=1), args=RankListRewardConfig(**common),
                                 train_dataset=Dataset.from_dict(RANK_LISTS), processing_class=tokenizer)  # fmt: skip


@pytest.mark.parametrize("name", ["una", "rank_list"])
def test_offline_trainers_publish_checkpoints_atomically(name, tmp_path, tokenizer, monkeypatch):
    out = tmp_path / "out"
    first = make_offline(name, tokenizer, out)
    fail_on_call(monkeypatch, Trainer, "_save_rng_state", call=2)  # after model, optimizer and scheduler
    with pytest.raises(OSError, match="No space left on device"):
        first.train()
    monkeypatch.undo()
    assert os.path.isfile(out / "tmp-checkpoint-2" / "checkpoint-2" / "model.safetensors")
    assert not os.path.exists(out / "checkpoint-2")

    resumed = make_offline(name, tokenizer, out)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 3
    # rotation (save_total_limit=2) ran in the output folder after each rename; the leftover was replaced
    assert sorted(p for p in os.listdir(out) if "checkpoint" in p) == ["checkpoint-2", "checkpoint-3"]
    assert os.path.isfile(out / "checkpoint-3" / "trainer_state.json")
    if name == "una":
        assert os.path.isfile(out / "checkpoint-3" / "README.md")  # UNA's model card is part of the checkpoint


def test_best_checkpoint_is_recorded_under_its_published_name(tmp_path, tokenizer):
    dataset = Dataset.from_dict({"prompt": ["the movie was", "i loved", "what a", "the food"],
                                 "chosen": [" great"] * 4, "rejected": [" bad", " awful", " sad", " cold"]})  # fmt: skip
    args = UNAConfig(output_dir=str(tmp_path / "out"), bf16=False, gradient_checkpointing=False, report_to="none",
                     disable_tqdm=True, per_device_train_batch_size=4, max_steps=2, save_strategy="steps",
                     save_steps=1, eval_strategy="steps", eval_steps=1, load_best_model_at_end=True,
                     metric_for_best_model="loss", learning_rate=1e-2, seed=0)  # fmt: skip
    trainer = UNATrainer(tiny_causal_lm(tokenizer, seed=0), args=args, train_dataset=dataset, eval_dataset=dataset,
                         processing_class=tokenizer)  # fmt: skip
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best == str(tmp_path / "out" / f"checkpoint-{trainer.state.best_global_step}")
    state_file = tmp_path / "out" / "checkpoint-2" / "trainer_state.json"
    assert TrainerState.load_from_json(str(state_file)).best_model_checkpoint == best
    assert "tmp-" not in state_file.read_text()


def test_publish_replaces_a_checkpoint_of_the_same_step(tmp_path):
    final, staging = tmp_path / "checkpoint-3", tmp_path / "tmp-checkpoint-3"
    (final / "old").mkdir(parents=True)
    (staging / "checkpoint-3" / "new").mkdir(parents=True)
    publish_checkpoint(str(staging / "checkpoint-3"), str(final))
    assert os.listdir(final) == ["new"] and sorted(os.listdir(tmp_path)) == ["checkpoint-3"]
    assert get_last_checkpoint(str(tmp_path)) == str(final)
    (tmp_path / "tmp-checkpoint-4").mkdir()  # a failed save: never resumed from
    assert get_last_checkpoint(str(tmp_path)) == str(final)


@pytest.mark.parametrize("trainer", [PPOTrainer, PPOMaxTrainer, OnlineUNATrainer, UNATrainer, RankListRewardTrainer])
def test_every_trainer_publishes_atomically(trainer):
    assert issubclass(trainer, AtomicCheckpointMixin)
    # an override of `_save_checkpoint` ahead of the mixin would write outside the staging folder
    ahead = trainer.__mro__[: trainer.__mro__.index(AtomicCheckpointMixin)]
    assert not [cls.__name__ for cls in ahead if "_save_checkpoint" in vars(cls)]


@pytest.mark.parametrize(
    "method, params", [("_get_output_dir", ["trial"]), ("_push_from_checkpoint", ["checkpoint_folder"])]
)
def test_trainer_hooks_the_mixin_overrides_keep_their_signature(method, params):
    assert list(inspect.signature(getattr(Trainer, method)).parameters)[1:] == params
    # `Trainer._save_checkpoint` must still take its run folder from `_get_output_dir` for the staging to work
    assert "self._get_output_dir(" in inspect.getsource(Trainer._save_checkpoint)
