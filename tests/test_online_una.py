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
"""OnlineUNATrainer: critic-free online UNA on tiny offline models."""

import os

import pytest
import torch
from conftest import common_args
from transformers import AutoModelForCausalLM

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer
from ppomax_trl.demo import letter_o_reward
from ppomax_trl.tiny import tiny_causal_lm


def una_args(tmp_path, **overrides):
    kwargs = common_args(tmp_path, **overrides)
    kwargs.setdefault("beta", 0.5)
    return OnlineUNAConfig(**kwargs)


def test_builds_no_value_model(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, _ = models
    num_policy_params = sum(p.numel() for p in policy.parameters())
    trainer = OnlineUNATrainer(una_args(tmp_path), tokenizer, policy, None, reward_model, prompt_dataset)
    assert trainer.model.value_model is None and trainer.value_model is None
    assert sum(p.numel() for p in trainer.model.parameters()) == num_policy_params  # the policy and nothing else
    assert not any("ForSequenceClassification" in type(m).__name__ for m in trainer.model.modules())
    before = {n: p.detach().clone() for n, p in trainer.model.policy.named_parameters()}
    trainer.train()
    assert all(not torch.equal(before[n], p) for n, p in trainer.model.policy.named_parameters())
    out = str(tmp_path / "saved")
    trainer.save_model(out)
    assert not os.path.exists(os.path.join(out, "value_model"))
    AutoModelForCausalLM.from_pretrained(out)
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"una/loss", "una/target_mean", "una/implied_logratio_target", "objective/kl", "objective/scores",
            "ppomax/response_length", "ppomax/kl_per_token", "ppomax/ppl_policy"} <= logged  # fmt: skip


def test_first_minibatch_loss_is_exact_at_the_rollout_reference(tmp_path, tokenizer, prompt_dataset):
    """With una_reference='rollout', r = 0 at the first minibatch, so MSE = mean (0.5 - s)^2 with s = sigma(score)."""
    seen = []

    def reward(prompts, completions, **kwargs):
        scores = [float(len(c)) / 10 - 1 for c in completions]
        seen.append(scores)
        return scores

    args = una_args(tmp_path, una_reference="rollout", total_episodes=4, per_device_train_batch_size=4)
    trainer = OnlineUNATrainer(args, tokenizer, tiny_causal_lm(tokenizer), None, None, prompt_dataset,
                               reward_funcs=reward)  # fmt: skip
    trainer.train()
    targets = torch.sigmoid(torch.tensor(seen[0]))
    expected = ((0.5 - targets) ** 2).mean().item()
    assert trainer.state.log_history[0]["una/loss"] == pytest.approx(expected, rel=1e-5)
    assert trainer.state.log_history[0]["una/target_mean"] == pytest.approx(targets.mean().item(), rel=1e-5)


def test_ref_variant_uses_the_frozen_reference(tmp_path, tokenizer, prompt_dataset):
    args = una_args(tmp_path, una_reference="ref", total_episodes=12, per_device_train_batch_size=4)
    trainer = OnlineUNATrainer(args, tokenizer, tiny_causal_lm(tokenizer), None, None, prompt_dataset,
                               reward_funcs=letter_o_reward)  # fmt: skip
    ref_before = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
    trainer.train()
    # after the first update the policy differs from pi_ref, so the logged log-ratio moves away from 0
    assert trainer.state.log_history[0]["una/logratio"] == pytest.approx(0.0, abs=1e-5)
    assert abs(trainer.state.log_history[2]["una/logratio"]) > 1e-4
    assert all(torch.equal(ref_before[n], p) for n, p in trainer.ref_model.named_parameters())


def test_running_normaliser_and_missing_eos_penalty(tmp_path, tokenizer, prompt_dataset):
    args = una_args(tmp_path, score_normalizer="running", missing_eos_penalty=1.0)
    trainer = OnlineUNATrainer(args, tokenizer, tiny_causal_lm(tokenizer), None, None, prompt_dataset,
                               reward_funcs=letter_o_reward)  # fmt: skip
    raw = torch.tensor([0.0, 1.0, 2.0, 3.0])
    stopped = torch.tensor([True, True, False, True])
    targets = trainer.score_targets(raw, stopped)
    z = (raw - 1.5) / raw.std()  # moments merged first: this batch is the whole history
    z[2] = (2.0 - 1.0 - 1.5) / raw.std()  # the penalty applies before the normaliser, outside the moments
    torch.testing.assert_close(targets, torch.sigmoid(z))


def test_online_una_improves_a_toy_reward(tmp_path, tokenizer, prompt_dataset):
    args = una_args(tmp_path, total_episodes=8 * 40, per_device_train_batch_size=8, learning_rate=1e-2, beta=0.1,
                    score_normalizer="running", response_length=8, logging_steps=10)  # fmt: skip
    trainer = OnlineUNATrainer(args, tokenizer, tiny_causal_lm(tokenizer), None, None, prompt_dataset,
                               reward_funcs=letter_o_reward)  # fmt: skip
    trainer.train()
    scores = [e["objective/scores"] for e in trainer.state.log_history if "objective/scores" in e]
    assert scores[-1] > scores[0] + 0.15, scores  # share of the letter 'o': about 0.04 -> 0.3


@pytest.mark.parametrize(
    "overrides, message",
    [(dict(beta=0.0), "beta"), (dict(una_reference="sft"), "una_reference"), (dict(loss="hinge"), "loss"),
     (dict(score_normalizer="minmax"), "score_normalizer")],
)  # fmt: skip
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        OnlineUNAConfig(output_dir="x", report_to="none", **overrides)


def test_model_card_names_the_variant_and_no_critic(tmp_path, tokenizer, prompt_dataset):
    args = una_args(tmp_path, una_reference="rollout")
    trainer = OnlineUNATrainer(args, tokenizer, tiny_causal_lm(tokenizer), None, None, prompt_dataset,
                               reward_funcs=letter_o_reward)  # fmt: skip
    os.makedirs(args.output_dir, exist_ok=True)
    trainer.create_model_card(model_name="una-card")
    with open(os.path.join(args.output_dir, "README.md")) as f:
        card = f.read()
    assert "value_model" not in card and "critic is saved" not in card  # online UNA trains and saves no critic
    assert "# una-card" in card and "2408.15339" in card and "- una" in card
    assert "una_reference='rollout'" in card and "loss `mse`" in card
