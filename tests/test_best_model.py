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
"""`load_best_model_at_end=True` on the online trainers: after `train()` the policy and the critic (full weights or
PEFT adapters) are bit-identical to the best checkpoint's files, and the best checkpoint is not the last one."""

import os

import pytest
import torch
from conftest import common_args
from safetensors.torch import load_file

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer, PPOMaxConfig, PPOMaxTrainer
from ppomax_trl.demo import letter_o_reward
from ppomax_trl.tiny import tiny_causal_lm


BEST_STEP = 2


def step_reward(prompts, completions, trainer_state, **kwargs):
    """A dense reward plus a bonus while `global_step == BEST_STEP`: the evaluation after step 2 scores best whatever
    the training does (the rollout of step 3, scored at the same `global_step`, only gets a constant shift)."""
    bonus = 10.0 if trainer_state.global_step == BEST_STEP else 0.0
    return [score + bonus for score in letter_o_reward(prompts, completions)]


def best_model_args(tmp_path, **overrides):
    """Eval and a checkpoint after every step, the best one loaded at the end."""
    kwargs = dict(
        total_episodes=16,  # 4 steps of 4 episodes
        save_strategy="steps",
        save_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="objective/scores",
    )
    kwargs.update(overrides)
    return common_args(tmp_path, **kwargs)


def assert_equals_saved(model, folder):
    """Every tensor of the saved files equals the model's (bit for bit), and the files cover the trained tensors."""
    from peft import PeftModel, get_peft_model_state_dict

    if isinstance(model, PeftModel):
        saved, live = load_file(os.path.join(folder, "adapter_model.safetensors")), get_peft_model_state_dict(model)
    else:
        saved, live = load_file(os.path.join(folder, "model.safetensors")), model.state_dict()
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert saved and len(saved) >= len(trained) - 1  # a tied `lm_head` is not saved
    for name, value in saved.items():
        torch.testing.assert_close(live[name].cpu(), value, rtol=0, atol=0, msg=name)


def assert_best_loaded(trainer, out, has_critic):
    best = os.path.join(out, f"checkpoint-{BEST_STEP}")
    assert trainer.state.best_model_checkpoint == best
    assert trainer.state.best_global_step == BEST_STEP < trainer.state.global_step
    scores = {e["step"]: e["eval_objective/scores"] for e in trainer.state.log_history if "eval_objective/scores" in e}
    assert max(scores, key=scores.get) == BEST_STEP and len(scores) == trainer.state.global_step
    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    assert_equals_saved(wrapper.policy, best)
    if has_critic:
        assert_equals_saved(wrapper.value_model, os.path.join(best, "value_model"))
    else:
        assert wrapper.value_model is None


def assert_last_differs(trainer, out):
    """The final weights (kept by the last checkpoint) moved away from the best: loading them back changed something."""
    with pytest.raises(AssertionError):
        assert_equals_saved(trainer.accelerator.unwrap_model(trainer.model).policy, out / "checkpoint-4")


@pytest.mark.parametrize("metric", ["objective/scores", "eval_objective/scores"])
def test_ppo_max_loads_the_best_policy_and_critic(metric, tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, _ = models
    args = PPOMaxConfig(
        **best_model_args(tmp_path, metric_for_best_model=metric, critic_warmup_steps=1, total_episodes=12)
    )
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None,
                            eval_dataset=prompt_dataset, reward_funcs=step_reward)  # fmt: skip
    trainer.train()
    out = tmp_path / "out"
    assert trainer.state.global_step == 4
    assert_best_loaded(trainer, str(out), has_critic=True)
    assert_last_differs(trainer, out)


def test_online_una_loads_the_best_policy(tmp_path, tokenizer, prompt_dataset):
    args = OnlineUNAConfig(**best_model_args(tmp_path, beta=0.5))
    trainer = OnlineUNATrainer(args, tokenizer, tiny_causal_lm(tokenizer, seed=0), None, None, prompt_dataset,
                               eval_dataset=prompt_dataset, reward_funcs=step_reward)  # fmt: skip
    trainer.train()
    out = tmp_path / "out"
    assert_best_loaded(trainer, str(out), has_critic=False)
    assert_last_differs(trainer, out)


@pytest.mark.parametrize("critic", ["value_peft_config", "default"])
def test_lora_policy_and_critic_load_the_best_adapters(critic, tmp_path, tokenizer, models, prompt_dataset):
    """The critic: a given model with `value_peft_config`, or (default) a LoRA of the policy's shape on a copy of the
    reward model."""
    from peft import LoraConfig, PeftModel

    policy, reward_model, value_model = models
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    critic_lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS")
    critic_kwargs = {"value_peft_config": critic_lora} if critic == "value_peft_config" else {}
    # save_total_limit=1: the best checkpoint survives rotation, and is the only one left at the end
    args = PPOMaxConfig(**best_model_args(tmp_path, critic_warmup_steps=0, save_total_limit=1))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset,
                            value_model if critic_kwargs else None, eval_dataset=prompt_dataset,
                            reward_funcs=step_reward, peft_config=lora, **critic_kwargs)  # fmt: skip
    final = {}

    def keep_final_adapters(self, *args, **kwargs):
        wrapper = self.accelerator.unwrap_model(self.model)
        final.update({n: p.detach().clone() for n, p in wrapper.named_parameters() if p.requires_grad})
        return original(self, *args, **kwargs)

    original = type(trainer)._finalize_training
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(trainer), "_finalize_training", keep_final_adapters)
        trainer.train()
    out = tmp_path / "out"
    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    assert isinstance(wrapper.policy, PeftModel) and isinstance(wrapper.value_model, PeftModel)
    assert_best_loaded(trainer, str(out), has_critic=True)
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint-")) == [f"checkpoint-{BEST_STEP}"]
    now = {n: p for n, p in wrapper.named_parameters() if p.requires_grad}
    moved = [n for n, p in now.items() if not torch.equal(p, final[n])]
    assert any(n.startswith("policy.") for n in moved) and any(n.startswith("value_model.") for n in moved)


def test_the_best_model_is_the_best_held_out_reward_by_default(tmp_path):
    """`Trainer` would default `metric_for_best_model` to `loss`, which online evaluation does not report (a `KeyError`
    at the first evaluation): the online configs default to the held-out reward, higher being better."""
    kwargs = best_model_args(tmp_path)
    del kwargs["metric_for_best_model"]
    for config in (PPOMaxConfig(**kwargs), OnlineUNAConfig(**kwargs)):
        assert (config.metric_for_best_model, config.greater_is_better) == ("objective/scores", True)
    kwargs.update(metric_for_best_model="ppomax/response_length", greater_is_better=False)
    assert PPOMaxConfig(**kwargs).metric_for_best_model == "ppomax/response_length"  # a user's choice stands
