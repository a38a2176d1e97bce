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
"""The advantage, loss and critic options of current PPO stacks, inside the trainers: each one reaches the update
(exact advantages and value targets against the naive GAE loop; different trained weights for the loss options), the
defaults are TRL 1.12's update bit for bit, and the critic starts from a saved one."""

import math

import pytest
import torch
from conftest import common_args
from test_ppo_utils import naive_gae
from test_rollout_semantics import eos_biased
from torch.testing import assert_close
from transformers import AutoModelForSequenceClassification

from ppomax_trl import PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.modules import _score_head
from ppomax_trl.tiny import tiny_causal_lm, tiny_reward_model


def build(tmp_path, tokenizer, prompt_dataset, *, trainer_cls=PPOTrainer, config_cls=PPOConfig, value_model=None,
          **options):  # fmt: skip
    """One update of 4 rollouts, 4 PPO epochs (ratios leave 1, so clips act), EOS-biased policy (lengths differ)."""
    config = common_args(
        tmp_path, stop_token="eos", total_episodes=4, num_ppo_epochs=4, num_mini_batches=2, temperature=1.0,
        top_p=1.0, response_length=6, learning_rate=3e-3, **options,
    )  # fmt: skip
    policy = eos_biased(tiny_causal_lm(tokenizer, seed=0), tokenizer.eos_token_id)
    if value_model is None:
        value_model = tiny_reward_model(tokenizer, seed=2)
    return trainer_cls(
        config_cls(**config), tokenizer, policy, None, tiny_reward_model(tokenizer, seed=1), prompt_dataset,
        value_model,
    )  # fmt: skip


def record_advantages(trainer) -> list[dict]:
    """Every call of `trainer.advantages`: its rollout batch, token rewards, warm-up flag and outputs."""
    calls, original = [], trainer.advantages

    def recording(batch, rewards, is_warmup=False):
        advantages, returns = original(batch, rewards, is_warmup)
        calls.append({"batch": batch, "rewards": rewards, "is_warmup": is_warmup, "out": (advantages, returns)})
        return advantages, returns

    trainer.advantages = recording
    return calls


def trained_weights(trainer) -> dict[str, torch.Tensor]:
    policy = {f"policy.{k}": v.detach().clone() for k, v in trainer.model.policy.named_parameters()}
    critic = {f"critic.{k}": v.detach().clone() for k, v in trainer.model.value_model.named_parameters()}
    return policy | critic


def differs(a: dict, b: dict, prefix: str) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tokenizer, prompt_dataset):
    trainer = build(tmp_path_factory.mktemp("baseline"), tokenizer, prompt_dataset)
    calls = record_advantages(trainer)
    trainer.train()
    return {"weights": trained_weights(trainer), "calls": calls}


def naive_outputs(call, *, gamma, policy_lam, value_lam):
    batch = call["batch"]
    mask = batch["response_mask"]
    advantages, _ = naive_gae(call["rewards"], batch["values"], mask, gamma, policy_lam)
    _, returns = naive_gae(call["rewards"], batch["values"], mask, gamma, value_lam)
    return advantages.to(call["out"][0].dtype), returns.to(call["out"][1].dtype)


def test_defaults_are_the_explicit_trl_112_settings(baseline, tmp_path, tokenizer, prompt_dataset):
    """Every option spelled out at its off value trains bit-identically to the defaults."""
    trainer = build(
        tmp_path, tokenizer, prompt_dataset, value_lam=None, use_length_adaptive_lam=False, cliprange_low=0.2,
        cliprange_high=0.2, dual_clip=None, loss_agg_mode="token-mean", whiten_advantages_globally=False,
    )  # fmt: skip
    trainer.train()
    weights = trained_weights(trainer)
    assert all(torch.equal(weights[k], baseline["weights"][k]) for k in weights)


def test_baseline_advantages_are_plain_gae(baseline):
    (call,) = baseline["calls"]
    lengths = call["batch"]["response_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1  # responses of different lengths: the options below have work to do
    expected_advantages, expected_returns = naive_outputs(call, gamma=1.0, policy_lam=0.95, value_lam=0.95)
    mask = call["batch"]["response_mask"]
    assert_close(call["out"][1], expected_returns)
    # whitened advantages (PPOConfig default): the whitening of the naive GAE
    raw = expected_advantages[mask]
    whitened = (raw - raw.mean()) / torch.sqrt(raw.var() + 1e-8)
    assert_close(call["out"][0][mask], whitened)


def test_value_lam_gives_the_critic_monte_carlo_returns(baseline, tmp_path, tokenizer, prompt_dataset):
    trainer = build(tmp_path, tokenizer, prompt_dataset, value_lam=1.0)
    calls = record_advantages(trainer)
    trainer.train()
    (call,) = calls
    mask = call["batch"]["response_mask"]
    _, expected_returns = naive_outputs(call, gamma=1.0, policy_lam=0.95, value_lam=1.0)
    assert_close(call["out"][1], expected_returns)
    reward_to_go = (call["rewards"] * mask).flip(1).cumsum(1).flip(1) * mask
    assert_close(call["out"][1], reward_to_go)
    # the policy's advantages are untouched: the same rollout (same seed) gives the baseline's advantages
    assert torch.equal(call["out"][0], baseline["calls"][0]["out"][0])
    assert differs(trained_weights(trainer), baseline["weights"], "critic.")


def test_length_adaptive_lam_sets_one_lambda_per_response(baseline, tmp_path, tokenizer, prompt_dataset):
    alpha = 0.3  # lambda = 1 - 1/(0.3 l): 0 for l <= 3, 0.44 for l = 6
    trainer = build(tmp_path, tokenizer, prompt_dataset, use_length_adaptive_lam=True, length_adaptive_alpha=alpha,
                    whiten_advantages=False)  # fmt: skip
    calls = record_advantages(trainer)
    trainer.train()
    (call,) = calls
    lengths = call["batch"]["response_mask"].sum(1).double()
    lambdas = (1 - 1 / (alpha * lengths)).clamp(0, 1).tolist()
    assert len(set(lambdas)) > 1
    expected_advantages, expected_returns = naive_outputs(call, gamma=1.0, policy_lam=lambdas, value_lam=lambdas)
    assert_close(call["out"][0], expected_advantages)
    assert_close(call["out"][1], expected_returns)  # value_lam unset: the critic shares the policy's lambdas
    assert differs(trained_weights(trainer), baseline["weights"], "policy.")


@pytest.mark.parametrize(
    "options",
    [
        {"cliprange": 0.02, "cliprange_high": 0.5},
        {"cliprange": 0.5, "dual_clip": 1.02},
        {"loss_agg_mode": "seq-mean-token-mean"},
        {"loss_agg_mode": "seq-mean-token-sum"},
        {"loss_agg_mode": "seq-mean-token-sum-norm", "loss_agg_norm_length": 3},
        {"loss_agg_mode": "dr-grpo", "loss_agg_norm_length": 3},
    ],
    ids=[
        "clip_higher",
        "dual_clip",
        "seq_mean_token_mean",
        "seq_mean_token_sum",
        "seq_mean_token_sum_norm",
        "dr_grpo",
    ],
)
def test_loss_options_change_the_policy_update(options, tmp_path, tokenizer, prompt_dataset):
    """Against the same run with the option off (same rollout, same seed): the policy moves differently, the critic
    (whose loss no option touches) is trained by the same value loss, so only the policy and the shared clip differ."""
    off = {key: value for key, value in options.items() if key == "cliprange"}
    reference = build(tmp_path / "off", tokenizer, prompt_dataset, max_grad_norm=0.0, **off)
    reference.train()
    trainer = build(tmp_path / "on", tokenizer, prompt_dataset, max_grad_norm=0.0, **options)
    trainer.train()
    on_weights, off_weights = trained_weights(trainer), trained_weights(reference)
    assert differs(on_weights, off_weights, "policy.")
    # no global clip couples the two: the critic's update is the same whatever the policy loss
    for key in on_weights:
        if key.startswith("critic."):
            assert_close(on_weights[key], off_weights[key], rtol=0, atol=0)
    if "dual_clip" in options:
        logged = [entry["policy/dual_clipfrac_avg"] for entry in trainer.state.log_history if "loss" in entry]
        assert logged and max(logged) > 0


def test_critic_warmup_lam_fits_monte_carlo_returns_then_hands_over(tmp_path, tokenizer, prompt_dataset):
    trainer = build(
        tmp_path, tokenizer, prompt_dataset, trainer_cls=PPOMaxTrainer, config_cls=PPOMaxConfig, critic_warmup_steps=1,
        critic_warmup_lam=1.0, lam=0.9, gamma=1.0,
    )  # fmt: skip
    calls = record_advantages(trainer)
    trainer.train()
    assert [call["is_warmup"] for call in calls] == [True, False]
    warmup, update = calls
    _, warmup_returns = naive_outputs(warmup, gamma=1.0, policy_lam=0.9, value_lam=1.0)
    assert_close(warmup["out"][1], warmup_returns)  # Monte-Carlo targets in the warm-up
    _, update_returns = naive_outputs(update, gamma=1.0, policy_lam=0.9, value_lam=0.9)
    assert_close(update["out"][1], update_returns)  # `lam` afterwards (value_lam unset)
    # the warm-up reports its fit; the PPO updates do not
    logs = [entry for entry in trainer.state.log_history if "loss/value_avg" in entry]
    assert [("ppomax/critic_warmup_value_loss" in entry) for entry in logs] == [True, False]
    assert logs[0]["ppomax/critic_warmup_value_loss"] == logs[0]["loss/value_avg"]
    assert logs[0]["ppomax/critic_warmup_explained_variance"] == logs[0]["val/explained_variance"]


def test_explained_variance_is_nan_when_every_return_is_equal(tmp_path, tokenizer, prompt_dataset):
    """Binary rewards that are all 0, no KL penalty, gamma = lam = 1: every return is 0 in exact arithmetic (GAE's
    V + (0 - V) telescoped leaves rounding noise only), so the explained variance is undefined and logged as NaN."""
    trainer = build(tmp_path, tokenizer, prompt_dataset, gamma=1.0, lam=1.0, kl_coef=0.0)
    head = _score_head(trainer.reward_model)
    with torch.no_grad():
        for param in head.parameters():
            param.zero_()
    calls = record_advantages(trainer)
    trainer.train()
    (call,) = calls
    mask = call["batch"]["response_mask"]
    assert (call["rewards"][mask] == 0).all()
    logged = [entry["val/explained_variance"] for entry in trainer.state.log_history if "loss/value_avg" in entry]
    assert logged and all(math.isnan(value) for value in logged)


def test_explained_variance_window_mean_skips_undefined_updates(tmp_path, tokenizer, prompt_dataset):
    """A logging window averages the explained variance over the updates where it is defined; NaN only if none is.
    Other metrics keep the plain mean."""
    trainer = build(tmp_path, tokenizer, prompt_dataset)
    metrics = trainer._metrics["train"]
    metrics["val/explained_variance"] = [math.nan, 0.5, 0.25]
    metrics["ppomax/critic_warmup_explained_variance"] = [math.nan, -0.5]
    metrics["loss/value_avg"] = [1.0, 2.0]
    trainer.log({})
    last = trainer.state.log_history[-1]
    assert last["val/explained_variance"] == 0.375
    assert last["ppomax/critic_warmup_explained_variance"] == -0.5
    assert last["loss/value_avg"] == 1.5
    metrics["val/explained_variance"] = [math.nan, math.nan]
    trainer.log({})
    assert math.isnan(trainer.state.log_history[-1]["val/explained_variance"])


def test_critic_starts_from_a_saved_critic(tmp_path, tokenizer, prompt_dataset):
    first = build(tmp_path / "first", tokenizer, prompt_dataset)
    first.train()
    first.save_model(str(tmp_path / "first_run"))
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "first_run" / "value_model")
    # an earlier run's output_dir (its value_model/) and the critic folder itself
    for path in (tmp_path / "first_run", tmp_path / "first_run" / "value_model"):
        trainer = build(tmp_path / "second", tokenizer, prompt_dataset, value_model=str(path))
        loaded = dict(trainer.model.value_model.named_parameters())
        for key, param in saved.named_parameters():
            assert torch.equal(loaded[key], param), key
        assert all(param.requires_grad for param in loaded.values())
    # not a critic: named, with the fix
    two_labels = tiny_reward_model(tokenizer, seed=3)
    two_labels.config.num_labels = 2
    two_labels.save_pretrained(tmp_path / "two_labels")
    with pytest.raises(ValueError, match="2 labels"):
        build(tmp_path / "third", tokenizer, prompt_dataset, value_model=str(tmp_path / "two_labels"))
    with pytest.raises(ValueError, match="not a model folder"):
        build(tmp_path / "third", tokenizer, prompt_dataset, value_model=str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"value_lam": 1.5}, "GAE lambda"),
        ({"critic_warmup_lam": -0.1}, "GAE lambda"),
        ({"length_adaptive_alpha": 0.0}, "length_adaptive_alpha"),
        ({"cliprange_high": 0.0}, "cliprange_high"),
        ({"dual_clip": 1.0}, "dual_clip"),
        ({"loss_agg_mode": "sum"}, "loss_agg_mode"),
        ({"loss_agg_norm_length": 0}, "loss_agg_norm_length"),
        ({"whiten_advantages": False, "whiten_advantages_globally": True}, "whiten_advantages=True"),
    ],
)
def test_options_are_validated(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**common_args(tmp_path, **options))
