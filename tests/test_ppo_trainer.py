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
"""Behaviour tests of PPOTrainer / PPOMaxTrainer on tiny offline models (single process)."""

import copy
import inspect
import json
import math
import os
from collections import defaultdict

import pytest
import torch
from conftest import PROMPTS, common_args
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Trainer, TrainerCallback

from ppomax_trl import PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.losses import LOSS_AGG_MODES
from ppomax_trl.tiny import tiny_causal_lm


def params_of(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


def length_reward(prompts, completions, **kwargs):
    """Toy reward: longer completions score higher."""
    return [float(len(c)) for c in completions]


TRL112_METRICS = [
    "objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward", "objective/scores",
    "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg",
    "policy/entropy_avg", "val/ratio", "val/ratio_var", "val/num_eos_tokens", "lr", "episode", "eps",
]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Drop-in API (TRL 1.12 code with only the import changed)
# ----------------------------------------------------------------------------------------------------------------------
def test_trl112_style_code_runs_unchanged(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, value_model = models
    ref_policy = copy.deepcopy(policy)
    training_args = PPOConfig(**common_args(tmp_path, num_ppo_epochs=2))
    trainer = PPOTrainer(
        args=training_args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=prompt_dataset,
        eval_dataset=prompt_dataset,
    )
    policy_before, value_before = params_of(trainer.model.policy), params_of(trainer.model.value_model)
    ref_before = params_of(ref_policy)
    trainer.train()

    logged = {k for entry in trainer.state.log_history for k in entry}
    assert set(TRL112_METRICS) <= logged, set(TRL112_METRICS) - logged
    assert changed(policy_before, trainer.model.policy) == set(policy_before)  # every policy parameter moved
    assert changed(value_before, trainer.model.value_model) == set(value_before)
    assert not changed(ref_before, ref_policy)  # reference frozen
    assert trainer.args.batch_size == 4 and trainer.args.num_total_batches == 2
    trainer.save_model(training_args.output_dir)
    table = trainer.generate_completions()
    assert len(table) == len(PROMPTS) and all(math.isfinite(row["score"]) for row in table)


def test_positional_constructor_order_matches_trl112():
    names = list(inspect.signature(PPOTrainer.__init__).parameters)[1:13]
    assert names == [
        "args", "processing_class", "model", "ref_model", "reward_model", "train_dataset", "value_model",
        "data_collator", "eval_dataset", "optimizers", "callbacks", "peft_config",
    ]  # fmt: skip


def test_config_keeps_trl112_defaults():
    args = PPOConfig(output_dir="x", report_to="none")
    expected = dict(
        learning_rate=3e-6, num_mini_batches=1, total_episodes=None, local_rollout_forward_batch_size=64,
        num_sample_generations=10, response_length=53, stop_token=None, stop_token_id=None, temperature=0.7,
        missing_eos_penalty=None, num_ppo_epochs=4, whiten_rewards=False, kl_coef=0.05, kl_estimator="k1",
        cliprange=0.2, vf_coef=0.1, cliprange_value=0.2, gamma=1.0, lam=0.95, ds3_gather_for_generation=True,
        logging_steps=10, gradient_checkpointing=True,
    )  # fmt: skip
    assert {k: getattr(args, k) for k in expected} == expected
    assert args.bf16 is False  # no CUDA here: resolved to False instead of failing


def test_ppomax_config_turns_the_recipe_on():
    args = PPOMaxConfig(output_dir="x", report_to="none")
    assert args.reward_normalization == "normalize" and args.use_reward_clip and args.critic_warmup_steps > 0
    assert not args.whiten_advantages and args.stop_token == "eos" and args.max_grad_norm == 1.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(stop_token="eos", stop_token_id=3), "only one of"),
        (dict(kl_estimator="k4"), "kl_estimator"),
        (dict(reward_normalization="zscore"), "reward_normalization"),
        (dict(use_reward_clip=True, reward_clip=0.0), "reward_clip"),
        (dict(kl_controller="pid"), "kl_controller"),
        (dict(temperature=0.0), "temperature"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(output_dir="x", report_to="none", **overrides)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: clear errors before any compute
# ----------------------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_early(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, value_model = models
    args = PPOConfig(**common_args(tmp_path))
    with pytest.raises(ValueError, match="same object"):
        PPOTrainer(args, tokenizer, policy, policy, reward_model, prompt_dataset, value_model)
    with pytest.raises(ValueError, match="`input_ids` column"):
        PPOTrainer(args, tokenizer, policy, None, reward_model, Dataset.from_dict({"text": ["a"]}), value_model)
    with pytest.raises(ValueError, match="score"):
        PPOTrainer(args, tokenizer, policy, None, tiny_causal_lm(tokenizer), prompt_dataset, value_model)
    with pytest.raises(ValueError, match="multiple of `num_mini_batches`"):
        PPOTrainer(PPOConfig(**common_args(tmp_path, num_mini_batches=3)), tokenizer, policy, None, reward_model,
                   prompt_dataset, value_model)  # fmt: skip
    with pytest.raises(ValueError, match="reward_model`, `reward_funcs"):
        PPOTrainer(args, tokenizer, policy, None, None, prompt_dataset, value_model)


def test_nan_scores_raise_with_the_step(tmp_path, tokenizer, models, prompt_dataset):
    policy, _, value_model = models

    def nan_reward(prompts, completions, **kwargs):
        return [float("nan")] * len(completions)

    trainer = PPOTrainer(PPOConfig(**common_args(tmp_path)), tokenizer, policy, None, None, prompt_dataset,
                         value_model, reward_funcs=nan_reward)  # fmt: skip
    before = params_of(trainer.model.policy)
    with pytest.raises(ValueError, match="Non-finite reward scores at step 1 "):
        trainer.train()
    assert not changed(before, trainer.model.policy)


# ----------------------------------------------------------------------------------------------------------------------
# PPO-max pieces
# ----------------------------------------------------------------------------------------------------------------------
class _Snapshot(TrainerCallback):
    def __init__(self, trainer, at_step):
        self.trainer, self.at_step, self.policy, self.value = trainer, at_step, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            self.policy = params_of(self.trainer.model.policy)
            self.value = params_of(self.trainer.model.value_model)


def test_critic_warmup_freezes_policy_and_moves_critic(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, _ = models
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=2, weight_decay=0.1, value_learning_rate=1e-3))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None)
    # PPO-max critic init: a trainable copy of the reward model
    for (name, p_rm), (_, p_vm) in zip(
        reward_model.named_parameters(), trainer.model.value_model.named_parameters(), strict=True
    ):
        assert torch.equal(p_rm, p_vm), name
    assert trainer.model.value_model is not trainer.reward_model
    initial_policy, initial_value = params_of(trainer.model.policy), params_of(trainer.model.value_model)
    snapshot = _Snapshot(trainer, at_step=2)
    trainer.add_callback(snapshot)
    trainer.train()

    assert not changed(initial_policy, _as_module(snapshot.policy))  # bit-identical through the warm-up
    assert changed(initial_value, _as_module(snapshot.value))  # the critic learned
    assert changed(initial_policy, trainer.model.policy)  # then PPO proper moves the policy
    warmup_flags = [e["ppomax/critic_warmup"] for e in trainer.state.log_history if "ppomax/critic_warmup" in e]
    assert warmup_flags == [1.0, 1.0, 0.0, 0.0]
    assert trainer.state.global_step == 4 and trainer.critic_warmup_done == 2
    assert not changed(params_of(reward_model), trainer.reward_model)  # the reward model itself is frozen


class _WarmupTrace(TrainerCallback):
    """Per step: whether the critic moved, the policy's optimizer state, and the KL coefficient."""

    def __init__(self, trainer):
        self.trainer, self.steps = trainer, []
        self.value = params_of(trainer.model.value_model)

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        inner = trainer.optimizer.optimizer  # accelerate's wrapper around AdamW
        policy_state = [inner.state.get(p, {}) for p in trainer.model.policy.parameters()]
        self.steps.append({
            "critic_moved": changed(self.value, trainer.model.value_model) == set(self.value),
            "policy_adam_steps": {float(s["step"]) if "step" in s else 0.0 for s in policy_state},
            "kl_coef": trainer.kl_ctl.value,
        })  # fmt: skip
        self.value = params_of(trainer.model.value_model)


@pytest.mark.parametrize(
    "schedule",
    [
        {"lr_scheduler_type": "linear", "warmup_steps": 2},
        {"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 0.5},
        {"lr_scheduler_type": "constant"},
    ],
)
def test_critic_warmup_trains_the_critic_and_leaves_no_trace_on_the_policy(
    tmp_path, tokenizer, models, prompt_dataset, schedule
):
    """Under every LR schedule the critic learns at each warm-up step, and the policy's AdamW state and the adaptive
    KL coefficient are exactly those of a run without a warm-up (bias correction starts at the first PPO step)."""
    policy, reward_model, _ = models
    args = PPOMaxConfig(
        **common_args(tmp_path, critic_warmup_steps=2, value_learning_rate=1e-3, adam_beta2=0.95, **schedule),
        kl_controller="adaptive", kl_target=1.0, kl_horizon=4,
    )  # fmt: skip
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None)
    trace = _WarmupTrace(trainer)
    trainer.add_callback(trace)
    trainer.train()

    warmup, updates = trace.steps[:2], trace.steps[2:]
    assert all(step["critic_moved"] for step in warmup)
    assert [step["policy_adam_steps"] for step in warmup] == [{0.0}, {0.0}]  # no optimizer state at all
    assert [step["policy_adam_steps"] for step in updates] == [{1.0}, {2.0}]
    assert [step["kl_coef"] for step in warmup] == [0.05, 0.05]
    assert updates[0]["kl_coef"] != 0.05  # the controller starts with the first PPO update


class _as_module(torch.nn.Module):
    """Adapter so `changed` can compare two snapshots."""

    def __init__(self, snapshot):
        super().__init__()
        self._snapshot = snapshot

    def named_parameters(self, *args, **kwargs):
        return iter(self._snapshot.items())


def test_tokenizer_without_pad_is_copied_with_eos_padding(tmp_path, tokenizer, models, prompt_dataset, caplog):
    """One rule for every trainer: the caller's tokenizer is never changed; the trainer pads with EOS on a copy."""
    policy, reward_model, value_model = models
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    with caplog.at_level("WARNING"):
        trainer = PPOTrainer(PPOConfig(**common_args(tmp_path)), no_pad, policy, None, reward_model, prompt_dataset,
                             value_model)  # fmt: skip
    assert no_pad.pad_token is None  # unchanged
    assert trainer.processing_class is not no_pad
    assert trainer.processing_class.pad_token_id == trainer.processing_class.eos_token_id
    assert "no pad token" in caplog.text and "unchanged" in caplog.text
    trainer.train()


def test_running_moments_are_exact_over_the_history(tmp_path, tokenizer, models, prompt_dataset):
    policy, _, value_model = models
    seen = []

    def recording_reward(prompts, completions, **kwargs):
        scores = [float(len(c)) + 0.1 * i for i, c in enumerate(completions)]
        seen.extend(scores)
        return scores

    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=0, total_episodes=16, use_reward_clip=False))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, None, prompt_dataset, value_model,
                            reward_funcs=recording_reward)  # fmt: skip
    trainer.train()
    history = torch.tensor(seen, dtype=torch.float32).double()  # scores travel as float32 tensors
    assert trainer.reward_moments.count == len(seen) == 16
    assert trainer.reward_moments.mean == pytest.approx(history.mean().item(), rel=1e-12)
    assert trainer.reward_moments.std == pytest.approx(history.std(unbiased=True).item(), rel=1e-9)


def test_reward_clip_bounds_the_normalised_score(tmp_path, tokenizer, models, prompt_dataset):
    policy, _, value_model = models
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=0, reward_clip=0.5))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, None, prompt_dataset, value_model,
                            reward_funcs=length_reward)  # fmt: skip
    raw = torch.tensor([0.0, 10.0, 20.0, 1000.0])
    shaped = trainer.shape_scores(raw, stopped=torch.ones(4, dtype=torch.bool))
    # moments are updated with this batch first: mean 257.5, unbiased std over the batch
    expected = ((raw - raw.double().mean()) / raw.double().std()).clamp(-0.5, 0.5).float()
    torch.testing.assert_close(shaped, expected)
    assert shaped.abs().max() <= 0.5
    penalised = PPOMaxTrainer(
        PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=0, missing_eos_penalty=2.0)), tokenizer,
        tiny_causal_lm(tokenizer), None, None, prompt_dataset, copy.deepcopy(value_model), reward_funcs=length_reward,
    ).shape_scores(raw, stopped=torch.tensor([True, False, True, True]))  # fmt: skip
    assert penalised[1].item() == pytest.approx(min(max(((10 - 257.5) / raw.double().std()).item(), -0.8), 0.8) - 2)


def test_ptx_changes_the_policy_update_and_is_logged(tmp_path, tokenizer, prompt_dataset):
    def run(ptx_coef, folder):
        policy = tiny_causal_lm(tokenizer, seed=0)
        from ppomax_trl.tiny import tiny_reward_model

        args = PPOMaxConfig(**common_args(tmp_path / folder, critic_warmup_steps=0, ptx_coef=ptx_coef,
                                          total_episodes=4))  # fmt: skip
        ptx = Dataset.from_dict({"text": ["a good cast, a fine plot", "the food was cold and awful"] * 2})
        trainer = PPOMaxTrainer(args, tokenizer, policy, None, tiny_reward_model(tokenizer, seed=1), prompt_dataset,
                                None, ptx_dataset=ptx)  # fmt: skip
        trainer.train()
        return trainer

    without, with_ptx = run(0.0, "a"), run(1.0, "b")
    assert "loss/ptx_avg" in with_ptx.state.log_history[0] and "loss/ptx_avg" not in without.state.log_history[0]
    assert with_ptx.state.log_history[0]["loss/ptx_avg"] > 0
    assert changed(params_of(without.model.policy), with_ptx.model.policy)  # different gradient, different weights
    # the rollout itself is identical (same seeds), so the difference comes from the ptx term
    assert without.state.log_history[0]["objective/scores"] == with_ptx.state.log_history[0]["objective/scores"]


def test_eos_truncation_masks_post_stop_tokens_out_of_every_loss(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, value_model = models
    # pick as stop id the token the near-greedy policy emits second, so every rollout stops early
    probe = tokenizer(["the movie was"], return_tensors="pt")
    greedy = policy.generate(**probe, max_new_tokens=3, do_sample=False)[0, probe["input_ids"].size(1) :]
    args = PPOConfig(**common_args(tmp_path, stop_token_id=int(greedy[1]), temperature=1e-3, response_length=6))
    trainer = PPOTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model)
    rows = [prompt_dataset[0]] * 4
    trainer.model.to(trainer.args.device)
    batch = trainer.rollout(rows, trainer.model)
    assert batch["stopped"].all()
    length = int((greedy == greedy[1]).nonzero()[0]) + 1  # first occurrence of the stop id, inclusive
    assert (batch["response_mask"].sum(1) == length).all()  # stop token kept as the last real token
    assert (batch["responses"][:, length - 1] == greedy[1]).all()
    assert (batch["responses"][:, length:] == tokenizer.pad_token_id).all()
    # losses ignore whatever sits after the stop: perturb those positions, the loss is bit-identical
    advantages = torch.randn_like(batch["values"])
    batch.update(advantages=advantages, returns=torch.randn_like(batch["values"]))
    perturbed = {k: v.clone() for k, v in batch.items()}
    post = ~batch["response_mask"]
    for key in ("advantages", "returns", "values", "logprobs"):
        perturbed[key][post] = 1e3
    inds, tokens, sequences = torch.arange(4), batch["response_mask"].sum().float(), torch.tensor(4.0)
    for mode in LOSS_AGG_MODES:
        trainer.args.loss_agg_mode = mode
        loss = trainer._micro_batch_loss(trainer.model, batch, inds, tokens, sequences, False, defaultdict(list))
        loss_perturbed = trainer._micro_batch_loss(
            trainer.model, perturbed, inds, tokens, sequences, False, defaultdict(list)
        )
        assert torch.equal(loss, loss_perturbed), mode


def test_adaptive_kl_controller_moves_the_coefficient(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, value_model = models
    args = PPOConfig(
        **common_args(tmp_path, kl_controller="adaptive", kl_target=1e-6, kl_horizon=4, kl_estimator="k3")
    )
    trainer = PPOTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model)
    trainer.train()
    coefs = [e["objective/kl_coef"] for e in trainer.state.log_history if "objective/kl_coef" in e]
    # update 1: policy == reference, KL = 0, error clips at -0.2; update 2: KL above the tiny target, error +0.2;
    # each update multiplies by (1 + error * n_steps / horizon) with n_steps = batch = horizon = 4
    assert coefs[0] == pytest.approx(0.05 * 0.8) and coefs[1] == pytest.approx(0.05 * 0.8 * 1.2)


def test_global_grad_norm_clip_is_honoured(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, value_model = models
    lr, max_norm = 0.5, 1e-3
    args = PPOConfig(**common_args(tmp_path, optim="sgd", learning_rate=lr, lr_scheduler_type="constant",
                                   max_grad_norm=max_norm, num_ppo_epochs=1, total_episodes=4))  # fmt: skip
    trainer = PPOTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model)
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.train()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    # one SGD step on the policy + critic jointly: ||delta|| = lr * min(||g||, max_norm)
    assert torch.linalg.vector_norm(after - before).item() == pytest.approx(lr * max_norm, rel=1e-3)
    assert trainer.state.log_history[0]["grad_norm"] > max_norm


# ----------------------------------------------------------------------------------------------------------------------
# Beyond 1.12: prompt datasets, reward functions, tokenizer checks
# ----------------------------------------------------------------------------------------------------------------------
def test_conversational_prompts_and_reward_funcs_with_columns(tmp_path, tokenizer, models):
    policy, _, value_model = models
    seen = {}

    def reward(prompts, completions, topic, **kwargs):
        seen.update(prompts=prompts, completions=completions, topic=topic)
        return [1.0 if "a" in c[0]["content"] else 0.0 for c in completions]

    dataset = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": p}] for p in PROMPTS],
        "topic": [f"t{i}" for i in range(len(PROMPTS))],
    })  # fmt: skip
    trainer = PPOMaxTrainer(PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=0)), tokenizer, policy, None,
                            None, dataset, value_model, reward_funcs=reward)  # fmt: skip
    trainer.train()
    assert isinstance(seen["prompts"][0], list) and seen["completions"][0][0]["role"] == "assistant"
    assert all(t.startswith("t") for t in seen["topic"])
    ids = trainer.train_dataset[0]["input_ids"]
    assert tokenizer.decode(ids).startswith("<|im_start|>user\n")  # chat template applied


# ----------------------------------------------------------------------------------------------------------------------
# Saving, resume, PEFT
# ----------------------------------------------------------------------------------------------------------------------
def test_save_and_reload(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, value_model = models
    trainer = PPOTrainer(PPOConfig(**common_args(tmp_path)), tokenizer, policy, None, reward_model, prompt_dataset,
                         value_model)  # fmt: skip
    trainer.train()
    out = str(tmp_path / "saved")
    trainer.save_model(out)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    for name, p in trainer.model.policy.named_parameters():
        assert torch.equal(p.cpu(), dict(reloaded.named_parameters())[name]), name
    critic = AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "value_model"))
    for name, p in trainer.model.value_model.named_parameters():
        assert torch.equal(p.cpu(), dict(critic.named_parameters())[name]), name


def test_resume_continues_exactly(tmp_path, tokenizer, prompt_dataset):
    from ppomax_trl.tiny import tiny_reward_model

    def make(folder, **overrides):
        args = PPOMaxConfig(**common_args(tmp_path / folder, critic_warmup_steps=1, total_episodes=12,
                                          num_ppo_epochs=2, **overrides))  # fmt: skip
        return PPOMaxTrainer(args, tokenizer, tiny_causal_lm(tokenizer, seed=0), None,
                             tiny_reward_model(tokenizer, seed=1), prompt_dataset, None)  # fmt: skip

    full = make("full")
    full.train()
    first = make("resumed", save_strategy="steps", save_steps=2)
    first.train()
    checkpoint = str(tmp_path / "resumed" / "out" / "checkpoint-2")
    assert os.path.isfile(os.path.join(checkpoint, "ppomax_state.json"))
    assert os.path.isdir(os.path.join(checkpoint, "value_model"))
    # the collapse monitor keeps judging length against the first update of the whole run, not of the resumed part:
    # the checkpoint carries that baseline, and a marker value written into it must be what the resumed run uses
    state_path = os.path.join(checkpoint, "ppomax_state.json")
    with open(state_path) as f:
        state = json.load(f)
    first_share = next(e["ppomax/max_length_share"] for e in full.state.log_history if e.get("step") == 1)
    assert state["collapse_monitor"]["initial_max_length_share"] == pytest.approx(first_share)
    state["collapse_monitor"]["initial_max_length_share"] = 0.125
    with open(state_path, "w") as f:
        json.dump(state, f)
    resumed = make("resumed2")
    resumed.train(resume_from_checkpoint=checkpoint)
    assert resumed.collapse_monitor.initial_max_length_share == 0.125

    keys = ["objective/scores", "objective/kl", "loss/policy_avg", "loss/value_avg", "ppomax/running_mean"]
    steps_full = {e["step"]: e for e in full.state.log_history if "objective/scores" in e}
    steps_resumed = {e["step"]: e for e in resumed.state.log_history if "objective/scores" in e}
    assert sorted(steps_resumed) == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's trainer state
    for step in (3, 4):
        for key in keys:
            assert steps_resumed[step][key] == pytest.approx(steps_full[step][key], rel=1e-5, abs=1e-7), (step, key)
    for name, p in full.model.policy.named_parameters():
        torch.testing.assert_close(p, dict(resumed.model.policy.named_parameters())[name], rtol=1e-5, atol=1e-6)


def test_collapse_warnings_reach_the_log_once_per_excursion(tmp_path, tokenizer, models, prompt_dataset, caplog):
    # threshold below any KL: the signal is on from the first update and stays on, so it warns once in 3 updates
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=0, total_episodes=12, collapse_kl_threshold=-1.0))
    policy, reward_model, _ = models
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None)
    with caplog.at_level("WARNING", logger="ppomax_trl.rollout"):
        trainer.train()
    assert trainer.state.global_step == 3
    kl_warnings = [r.getMessage() for r in caplog.records if "collapse_kl_threshold=-1.0" in r.getMessage()]
    assert len(kl_warnings) == 1 and kl_warnings[0].startswith("Step 1: ")
    share = trainer.collapse_monitor.initial_max_length_share
    assert share == next(e["ppomax/max_length_share"] for e in trainer.state.log_history if e.get("step") == 1)


def test_lora_policy_uses_disabled_adapter_as_reference(tmp_path, tokenizer, models, prompt_dataset):
    from peft import LoraConfig

    policy, reward_model, value_model = models
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    critic_lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS")
    trainer = PPOTrainer(PPOConfig(**common_args(tmp_path)), tokenizer, policy, None, reward_model, prompt_dataset,
                         value_model, peft_config=lora, value_peft_config=critic_lora)  # fmt: skip
    assert trainer.ref_model is None  # no second copy of the policy
    before_policy, before_value = params_of(trainer.model.policy), params_of(trainer.model.value_model)
    trainer.train()
    moved = changed(before_policy, trainer.model.policy)
    assert moved and all("lora_" in name for name in moved)
    moved_value = changed(before_value, trainer.model.value_model)
    assert any("lora_" in n for n in moved_value) and any("score" in n for n in moved_value)
    assert all("lora_" in n or "score" in n for n in moved_value)
    assert trainer.state.log_history[0]["objective/kl"] == 0.0  # adapter starts at zero: policy == reference


POLICY_LORA = dict(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def lora_run(tmp_path, tokenizer, policy, reward_model, prompt_dataset, value_model=None, **kwargs):
    """A PPO-max run with a LoRA policy; the critic starts from the reward model, or from the policy backbone when
    there is none (a reward function then scores)."""
    from peft import LoraConfig

    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=1))
    reward_funcs = None if reward_model is not None else length_reward
    return PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model,
                         peft_config=LoraConfig(**POLICY_LORA), reward_funcs=reward_funcs, **kwargs)  # fmt: skip


@pytest.mark.parametrize("critic_init", ["reward_model", "policy_backbone"])
def test_lora_policy_gets_a_lora_critic_of_its_shape_that_saves_adapters_only(
    critic_init, tmp_path, tokenizer, models, prompt_dataset
):
    from peft import PeftModel

    policy, reward_model, _ = models
    trainer = lora_run(tmp_path, tokenizer, policy, reward_model if critic_init == "reward_model" else None,
                       prompt_dataset)  # fmt: skip
    critic = trainer.model.value_model
    assert isinstance(critic, PeftModel)
    config = critic.peft_config["default"]
    assert (config.peft_type, config.r, config.lora_alpha, config.lora_dropout) == ("LORA", 4, 8, 0.05)
    assert set(config.target_modules) == {"q_proj", "v_proj"} and "score" in config.modules_to_save
    trainable = [n for n, p in critic.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "score.modules_to_save" in n for n in trainable)
    full_critic_bytes = sum(p.numel() * p.element_size() for n, p in critic.named_parameters() if not p.requires_grad)
    before = params_of(critic)
    trainer.train()
    moved = changed(before, critic)
    assert any("lora_B" in n for n in moved) and any("score" in n for n in moved)

    out = tmp_path / "out"
    trainer.save_model()
    saved = sorted(os.listdir(out / "value_model"))
    assert saved == ["README.md", "adapter_config.json", "adapter_model.safetensors"]  # no full critic
    assert [name for name in os.listdir(out) if name.endswith(".safetensors")] == ["adapter_model.safetensors"]
    critic_bytes = sum(os.path.getsize(out / "value_model" / name) for name in saved if name != "README.md")
    assert critic_bytes < full_critic_bytes / 10


@pytest.mark.parametrize("opt_out", ["value_peft_config=False", "full value_model"])
def test_lora_policy_keeps_a_full_critic_on_request(opt_out, tmp_path, tokenizer, models, prompt_dataset):
    from peft import PeftModel

    policy, reward_model, value_model = models
    if opt_out == "full value_model":
        trainer = lora_run(tmp_path, tokenizer, policy, reward_model, prompt_dataset, value_model)
    else:
        trainer = lora_run(tmp_path, tokenizer, policy, reward_model, prompt_dataset, value_peft_config=False)
    critic = trainer.model.value_model
    assert isinstance(trainer.model.policy, PeftModel) and not isinstance(critic, PeftModel)
    assert all(p.requires_grad for p in critic.parameters())
    trainer.save_model()
    assert os.path.isfile(tmp_path / "out" / "value_model" / "model.safetensors")


def test_value_peft_config_true_is_refused(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, _ = models
    with pytest.raises(ValueError, match=r"value_peft_config=True.*PeftConfig.*False"):
        lora_run(tmp_path, tokenizer, policy, reward_model, prompt_dataset, value_peft_config=True)


@pytest.mark.parametrize("critic_init", ["reward_model", "policy_backbone"])
def test_adapter_only_critic_loads_from_the_runs_output_dir(
    critic_init, tmp_path, tokenizer, tiny_model_dirs, prompt_dataset
):
    """`value_model="<output_dir>"` of a LoRA run: the base comes from the adapter's `base_model_name_or_path` (the
    folder of the reward model or of the policy the critic was built from), the adapter goes on top, trainable."""
    from peft import PeftConfig, PeftModel, get_peft_model_state_dict

    from ppomax_trl.rollout import per_position_scores

    def run(folder, value_model=None):
        policy = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["policy"])
        reward_model = None
        if critic_init == "reward_model":
            reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dirs["reward"])
        return lora_run(tmp_path / folder, tokenizer, policy, reward_model, prompt_dataset, value_model)

    first = run("first")
    first.train()
    first.save_model()
    out = tmp_path / "first" / "out"
    base = PeftConfig.from_pretrained(str(out / "value_model")).base_model_name_or_path
    assert base == str(tiny_model_dirs["reward" if critic_init == "reward_model" else "policy"])

    critic = run("second", value_model=str(out)).model.value_model
    trained = first.model.value_model
    assert isinstance(critic, PeftModel) and any(p.requires_grad for p in critic.parameters())
    loaded, saved = get_peft_model_state_dict(critic), get_peft_model_state_dict(trained)
    assert loaded.keys() == saved.keys()
    for name, value in saved.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)
    ids = torch.tensor([prompt_dataset[0]["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(per_position_scores(critic.eval(), ids, torch.ones_like(ids)),
                                   per_position_scores(trained.eval(), ids, torch.ones_like(ids)))  # fmt: skip


def test_critic_from_a_peft_policy_backbone_starts_from_every_base_weight(tokenizer):
    """PEFT renames the policy's wrapped weights (`base_layer`; `original_module` for `modules_to_save`): the critic
    still copies each base weight, none is left at a fresh initialisation."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["embed_tokens"], task_type="CAUSAL_LM")
    critic = PPOTrainer._initial_critic(None, get_peft_model(tiny_causal_lm(tokenizer, seed=0), lora))
    base = tiny_causal_lm(tokenizer, seed=0).model.state_dict()
    backbone = critic.model.state_dict()
    assert backbone.keys() == base.keys()
    for name, value in backbone.items():
        torch.testing.assert_close(value, base[name], rtol=0, atol=0, msg=name)


def test_adapter_only_critic_without_a_base_path_is_refused_clearly(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, _ = models  # built in memory: the adapter config names no base model
    trainer = lora_run(tmp_path / "first", tokenizer, policy, reward_model, prompt_dataset)
    trainer.save_model()
    with pytest.raises(ValueError, match=r"PEFT adapter whose adapter_config.json names no base model"):
        lora_run(tmp_path / "second", tokenizer, tiny_causal_lm(tokenizer, seed=0), None, prompt_dataset,
                 str(tmp_path / "first" / "out"))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Private Trainer hooks we rely on: fail loudly if transformers changes them
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, params",
    [
        ("_inner_training_loop", ["batch_size", "args", "resume_from_checkpoint", "trial", "ignore_keys_for_eval"]),
        ("_prepare_for_training", ["max_steps", "train_dataloader", "resume_from_checkpoint"]),
        ("_maybe_log_save_evaluate", ["tr_loss", "grad_norm", "model", "trial", "epoch", "ignore_keys_for_eval",
                                      "start_time", "learning_rate"]),
        ("_finalize_training", ["trial", "num_train_samples", "start_time"]),
        ("_load_callback_state", []),
        ("_save", ["output_dir", "state_dict"]),
        ("_save_checkpoint", ["model", "trial"]),
        ("_load_from_checkpoint", ["resume_from_checkpoint", "model"]),
        ("_load_best_model", []),
    ],
)  # fmt: skip
def test_private_trainer_hooks_keep_their_signature(method, params):
    assert list(inspect.signature(getattr(Trainer, method)).parameters)[1:] == params


def test_ptx_sft_data_targets_only_the_completion(tmp_path, tokenizer, models, prompt_dataset):
    from ppomax_trl.ppo_trainer import _stack_with_ptx

    policy, reward_model, value_model = models
    ptx = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": "rate the film"}]],
        "completion": [[{"role": "assistant", "content": "a fine plot"}]],
    })  # fmt: skip
    args = PPOMaxConfig(**common_args(tmp_path, ptx_coef=0.5, ptx_batch_size=1))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model, ptx_dataset=ptx)
    row = trainer.ptx_dataset[0]
    prompt_text = tokenizer.apply_chat_template(ptx[0]["prompt"], tokenize=False, add_generation_prompt=True)
    num_prompt = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    assert row["ptx_target_mask"] == [0] * num_prompt + [1] * (len(row["input_ids"]) - num_prompt)
    assert tokenizer.decode(row["input_ids"][num_prompt:]) == "a fine plot<|im_end|>\n"
    batch = trainer._next_ptx_batch()
    rollout_like = {
        "input_ids": torch.ones(2, 3, dtype=torch.long),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
    }
    inputs, labels = _stack_with_ptx(rollout_like, batch, tokenizer.pad_token_id)
    assert inputs["input_ids"].shape[0] == 3 and labels.shape == batch["input_ids"].shape
    assert (labels[0, :num_prompt] == -100).all()
    assert labels[0, num_prompt:].tolist() == row["input_ids"][num_prompt:]


def test_ptx_dataset_without_targets_is_rejected(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, value_model = models
    args = PPOMaxConfig(**common_args(tmp_path, ptx_coef=0.5))
    bad = Dataset.from_dict({"input_ids": [[5, 6, 7]], "completion_mask": [[1, 0, 0]]})
    with pytest.raises(ValueError, match="no prediction target"):
        PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model, ptx_dataset=bad)
    with pytest.raises(ValueError, match="needs a `text` column"):
        PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model,
                      ptx_dataset=Dataset.from_dict({"body": ["x"]}))  # fmt: skip


def test_evaluate_reports_the_held_out_reward_distribution(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, value_model = models
    args = PPOConfig(**common_args(tmp_path, eval_strategy="steps", eval_steps=1, per_device_eval_batch_size=3))
    trainer = PPOTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model,
                         eval_dataset=prompt_dataset)  # fmt: skip
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_objective/scores" in e]
    assert len(evals) == 2  # once per update
    for entry in evals:
        assert entry["eval_ppomax/score_p10"] <= entry["eval_ppomax/score_p50"] <= entry["eval_ppomax/score_p90"]
        assert entry["eval_ppomax/response_length"] == 5


def test_critic_warmup_stops_early_below_the_loss_threshold(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, _ = models
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=50, critic_warmup_loss_threshold=1e9))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None)
    trainer.train()
    warmup_flags = [e["ppomax/critic_warmup"] for e in trainer.state.log_history if "ppomax/critic_warmup" in e]
    assert warmup_flags == [1.0, 0.0, 0.0]  # the first warm-up loss is below the threshold: PPO starts right after
    assert trainer.critic_warmup_done == 1 and trainer.state.global_step == 3


def test_entropy_bonus_flag_adds_the_entropy_gradient(tmp_path, tokenizer, prompt_dataset):
    from ppomax_trl.tiny import tiny_reward_model

    def run(entropy_coef, folder):
        args = PPOConfig(**common_args(tmp_path / folder, entropy_coef=entropy_coef, total_episodes=4))
        trainer = PPOTrainer(args, tokenizer, tiny_causal_lm(tokenizer, seed=0), None,
                             tiny_reward_model(tokenizer, seed=1), prompt_dataset, tiny_reward_model(tokenizer, seed=2))  # fmt: skip
        trainer.train()
        return trainer

    without, with_bonus = run(0.0, "a"), run(1.0, "b")
    assert changed(params_of(without.model.policy), with_bonus.model.policy)  # the bonus changes the update
    # the critic's loss does not involve the entropy: same rollout, same critic gradient up to the joint clip factor,
    # which AdamW's scale invariance removes from the step
    for name, param in without.model.value_model.named_parameters():
        torch.testing.assert_close(param, dict(with_bonus.model.value_model.named_parameters())[name])


def test_resume_after_an_early_warmup_end_keeps_the_update_count(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, _ = models
    overrides = dict(critic_warmup_steps=50, critic_warmup_loss_threshold=1e9, total_episodes=12)
    first = PPOMaxTrainer(
        PPOMaxConfig(**common_args(tmp_path / "a", save_strategy="steps", save_steps=2, **overrides)),
        tokenizer, copy.deepcopy(policy), None, reward_model, prompt_dataset, None,
    )  # fmt: skip
    first.train()
    assert first.state.global_step == 4  # 1 warm-up step (threshold reached at once) + 3 updates
    resumed = PPOMaxTrainer(PPOMaxConfig(**common_args(tmp_path / "b", **overrides)), tokenizer,
                            copy.deepcopy(policy), None, reward_model, prompt_dataset, None)  # fmt: skip
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "out" / "checkpoint-2"))
    assert resumed.state.global_step == 4 and resumed.critic_warmup_done == 1
