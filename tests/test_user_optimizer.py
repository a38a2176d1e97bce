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
"""A user-given optimizer, `optimizers=(optimizer, None)`, and the critic: the warm-up trains the critic alone
whatever the group layout, and an optimizer that leaves the critic out is refused before anything trains."""

import pytest
import torch
from conftest import common_args
from transformers import TrainerCallback

from ppomax_trl import PPOMaxConfig, PPOMaxTrainer


def params_of(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


class _StepTrace(TrainerCallback):
    """Per step: which parameters of each model moved, and the AdamW step counts of the policy's parameters."""

    def __init__(self, trainer):
        self.trainer, self.steps = trainer, []
        self.policy, self.value = params_of(trainer.model.policy), params_of(trainer.model.value_model)

    def on_step_end(self, args, state, control, **kwargs):
        model, inner = self.trainer.model, self.trainer.optimizer.optimizer  # accelerate's wrapper around AdamW
        policy_state = [inner.state.get(p, {}) for p in model.policy.parameters()]
        self.steps.append({
            "policy_moved": bool(changed(self.policy, model.policy)),
            "critic_moved": changed(self.value, model.value_model) == set(self.value),
            "policy_adam_steps": {float(s["step"]) if "step" in s else 0.0 for s in policy_state},
        })  # fmt: skip
        self.policy, self.value = params_of(model.policy), params_of(model.value_model)


@pytest.mark.parametrize("layout", ["one_group", "two_groups"])
def test_user_optimizer_warmup_trains_the_critic_alone(tmp_path, tokenizer, models, prompt_dataset, layout):
    """`AdamW(policy + critic)` in one group (common) or in two: the critic learns at every warm-up step, the policy
    stays bit-identical (weight decay included) with no optimizer state, and the user's groups are not split."""
    policy, reward_model, value_model = models
    if layout == "one_group":
        groups = [*policy.parameters(), *value_model.parameters()]
    else:
        groups = [{"params": list(policy.parameters())}, {"params": list(value_model.parameters())}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1)
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=2))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model,
                            optimizers=(optimizer, None))  # fmt: skip
    trace = _StepTrace(trainer)
    trainer.add_callback(trace)
    trainer.train()

    warmup, updates = trace.steps[:2], trace.steps[2:]
    assert [step["critic_moved"] for step in warmup] == [True, True]
    assert [step["policy_moved"] for step in warmup] == [False, False]
    assert [step["policy_adam_steps"] for step in warmup] == [{0.0}, {0.0}]
    assert [step["policy_moved"] for step in updates] == [True, True]  # then PPO proper trains both
    assert [step["policy_adam_steps"] for step in updates] == [{1.0}, {2.0}]
    assert trainer.optimizer.optimizer is optimizer
    assert len(optimizer.param_groups) == (1 if layout == "one_group" else 2)


@pytest.mark.parametrize("extra", ["none", "reward_model"])
def test_user_optimizer_without_the_critic_is_refused_before_training(
    tmp_path, tokenizer, models, prompt_dataset, extra
):
    """TRL 1.12 habit: `AdamW(policy.parameters())`, the PPO-max critic being built inside the trainer (a copy of the
    reward model, so the reward model's own parameters are not the critic's). The critic would never learn: refused
    at construction, with the fix in the message."""
    policy, reward_model, _ = models
    params = [*policy.parameters(), *(reward_model.parameters() if extra == "reward_model" else [])]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=1))
    with pytest.raises(ValueError, match=r"none of the critic's trainable parameters") as error:
        PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None, optimizers=(optimizer, None))
    assert "value_model=value_model" in str(error.value) and "leave `optimizers` unset" in str(error.value)
    assert optimizer.state == {}  # nothing trained


def test_user_optimizer_with_part_of_the_critic_warns(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, value_model = models
    optimizer = torch.optim.AdamW([*policy.parameters(), *value_model.score.parameters()], lr=1e-3)
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=1))
    with pytest.warns(UserWarning, match=r"holds only 1 of the critic's \d+ trainable parameter tensors"):
        PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model,
                      optimizers=(optimizer, None))  # fmt: skip


def test_user_optimizer_mixed_group_is_refused_under_deepspeed(tmp_path, tokenizer, models, prompt_dataset):
    """DeepSpeed flattens a group into one partition, so a group holding both models cannot step the critic alone."""
    policy, reward_model, value_model = models
    optimizer = torch.optim.AdamW([*policy.parameters(), *value_model.parameters()], lr=1e-3)
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=1))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model,
                            optimizers=(optimizer, None))  # fmt: skip
    assert [group["ppomax_module"] for group in optimizer.param_groups] == ["mixed"]
    trainer.is_deepspeed_enabled = True  # CPU CI has no DeepSpeed: the check itself
    with pytest.raises(ValueError, match=r"DeepSpeed.*separate parameter groups"):
        trainer._check_user_optimizer(optimizer)
