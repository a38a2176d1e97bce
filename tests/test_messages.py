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
"""What a user reads (issue 22, item 8): no deprecation warnings from the package's own calls, context errors that name
the model and the fix, `eps` as a rate."""

import warnings

import pytest
from conftest import common_args

from ppomax_trl import PPOMaxConfig, PPOMaxTrainer


@pytest.mark.parametrize("checkpointing", [True, False])
def test_training_raises_no_checkpointing_future_warning(tmp_path, tokenizer, models, prompt_dataset, checkpointing):
    """TRL's generation context reads `is_gradient_checkpointing` and toggles checkpointing around `generate`: the
    wrapper answers with transformers' current `activation_checkpointing` API, not the deprecated names."""
    policy, reward_model, _ = models
    kwargs = common_args(tmp_path, critic_warmup_steps=1)
    del kwargs["gradient_checkpointing"]  # the deprecated field itself warns; its replacement:
    args = PPOMaxConfig(**kwargs, activation_checkpointing=checkpointing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None)
        trainer.train()
    deprecated = [
        str(w.message) for w in caught if "checkpointing" in str(w.message) and "deprecated" in str(w.message)
    ]
    assert deprecated == []
    assert trainer.model.is_activation_checkpointing is checkpointing


def test_eps_is_logged_as_a_rate(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, _ = models
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=0, total_episodes=4))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None)
    trainer.train()
    eps = next(e["eps"] for e in trainer.state.log_history if "eps" in e)
    assert isinstance(eps, float) and eps > 0 and eps != int(eps)


def test_a_response_length_past_the_context_names_the_model_and_says_to_lower_it(
    tmp_path, tokenizer, models, prompt_dataset
):
    policy, reward_model, _ = models
    policy.config.max_position_embeddings = 16
    args = PPOMaxConfig(**common_args(tmp_path, response_length=20))
    with pytest.raises(ValueError, match=r"response_length=20 alone does not fit the context of the policy "
                       r"\(Qwen2ForCausalLM\): max_position_embeddings=16.*Lower `response_length` below 16"):  # fmt: skip
        PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None)
    args = PPOMaxConfig(**common_args(tmp_path, response_length=14))
    assert max(len(ids) for ids in prompt_dataset["input_ids"]) > 2
    with pytest.raises(ValueError, match=r"do not fit the context of the policy \(Qwen2ForCausalLM\).*shorten the "
                       r"prompts to <= 2 tokens"):  # fmt: skip
        PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None)
