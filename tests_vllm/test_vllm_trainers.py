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
"""The online trainers with `use_vllm=True`: vLLM follows the policy through updates, LoRA, a resume and two
processes; the sampler correction reaches the losses; the missing-EOS penalty reads vLLM's stops."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HELD_OUT, PROMPTS, common_args, hf_greedy, lively_policy, reward_model, vllm_greedy
from datasets import Dataset

import ppomax_trl.online_una as online_una_module
import ppomax_trl.ppo_trainer as ppo_trainer_module
from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer, PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.sampler_correction import sampler_importance_weights


REPO = Path(__file__).resolve().parents[1]


def dataset(tokenizer):
    return Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in PROMPTS]})


def policy_of(trainer):
    return trainer.accelerator.unwrap_model(trainer.model_wrapped).policy


def assert_vllm_follows(trainer, tokenizer, initial_greedy=None):
    policy = policy_of(trainer)
    expected = hf_greedy(policy, tokenizer, HELD_OUT, trainer.args.response_length, trainer.stop_token_ids)
    assert vllm_greedy(trainer.generator, trainer.model_wrapped, tokenizer, HELD_OUT) == expected
    if initial_greedy is not None:
        assert expected != initial_greedy  # the updates moved the policy, so the sync had something to do


def spy(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)


def test_ppo_with_vllm_follows_the_policy_and_weights_its_loss(tmp_path, tokenizer, monkeypatch):
    policy = lively_policy(tokenizer)
    initial = hf_greedy(policy, tokenizer, HELD_OUT, 8, [tokenizer.eos_token_id])
    args = PPOConfig(**common_args(tmp_path, use_vllm=True, response_length=8, learning_rate=3e-3,
                                   vllm_importance_sampling_mode="token_truncate", num_ppo_epochs=1))  # fmt: skip
    trainer = PPOTrainer(
        args,
        tokenizer,
        policy,
        None,
        reward_model(tokenizer),
        dataset(tokenizer),
        value_model=reward_model(tokenizer, seed=2),
    )
    rollouts, loss_calls = [], []
    real_measure = trainer._measure_sampler_mismatch
    monkeypatch.setattr(
        trainer, "_measure_sampler_mismatch", lambda batch: (real_measure(batch), rollouts.append(batch))
    )
    spy(monkeypatch, ppo_trainer_module, "ppo_policy_loss", loss_calls)
    trainer.train()
    assert_vllm_follows(trainer, tokenizer, initial)
    # the token-level weights are pi_old / q of the batch, truncated at 3, and they are what the loss multiplied in
    first = rollouts[0]
    expected = sampler_importance_weights(first["logprobs"], first["sampler_logprobs"], first["response_mask"],
                                          mode="token_truncate", clip_max=3.0)  # fmt: skip
    assert (
        torch.equal(first["sampler_weights"], expected) and first["sampler_weights"].shape == first["logprobs"].shape
    )
    assert loss_calls and all(call["importance_weights"] is not None for call in loss_calls)
    logs = [h for h in trainer.state.log_history if "sampling/sampling_logp_difference/mean" in h]
    assert len(logs) == 2 and all(0 <= h["sampling/sampling_logp_difference/mean"] < 1e-3 for h in logs)
    assert all(h["sampling/importance_sampling_ratio/max"] <= 3.0 for h in logs)


def test_missing_eos_penalty_reads_the_stops_vllm_sampled(tmp_path, tokenizer):
    def zero(completions, **kwargs):
        return [0.0] * len(completions)

    policy = lively_policy(tokenizer)
    args = PPOConfig(**common_args(tmp_path, use_vllm=True, response_length=3, missing_eos_penalty=1.5,
                                   stop_token_id=int(tokenizer("the")["input_ids"][0]), total_episodes=4,
                                   vllm_importance_sampling_correction=False))  # fmt: skip
    trainer = PPOTrainer(
        args,
        tokenizer,
        policy,
        None,
        None,
        dataset(tokenizer),
        value_model=reward_model(tokenizer, seed=2),
        reward_funcs=zero,
    )
    batches = []
    real_shape = trainer.shape_scores
    trainer.shape_scores = lambda raw, stopped: (batches.append(stopped.clone()), real_shape(raw, stopped))[1]
    trainer.train()
    stopped = batches[0]
    log = next(h for h in trainer.state.log_history if "objective/scores" in h)
    assert log["objective/scores"] == pytest.approx(-1.5 * (~stopped).float().mean().item())
    assert "sampling/importance_sampling_ratio/mean" not in log and "sampling/kl" in log  # measured, not corrected


def test_ppo_max_lora_with_vllm_resumes_with_the_checkpoints_weights(tmp_path, tokenizer):
    from peft import LoraConfig

    def make(output_dir, **overrides):
        args = PPOMaxConfig(**common_args(tmp_path, output_dir=str(output_dir), use_vllm=True, response_length=8,
                                          learning_rate=5e-2, value_learning_rate=1e-3, critic_warmup_steps=0,
                                          total_episodes=8, save_strategy="steps", save_steps=1, top_p=1.0,
                                          temperature=1.0, **overrides))  # fmt: skip
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"])
        return PPOMaxTrainer(
            args,
            tokenizer,
            lively_policy(tokenizer),
            None,
            reward_model(tokenizer),
            dataset(tokenizer),
            peft_config=lora,
        )

    initial = hf_greedy(lively_policy(tokenizer), tokenizer, HELD_OUT, 8, [tokenizer.eos_token_id])
    trainer = make(tmp_path / "run")
    trainer.train()
    assert_vllm_follows(trainer, tokenizer, initial)  # merged adapter weights
    trained = hf_greedy(policy_of(trainer), tokenizer, HELD_OUT, 8, [tokenizer.eos_token_id])
    del trainer

    resumed = make(tmp_path / "run")  # a fresh engine starts from the untrained policy
    assert vllm_greedy(resumed.generator, resumed.model_wrapped, tokenizer, HELD_OUT) == initial
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))  # the last step: nothing to train
    assert vllm_greedy(resumed.generator, resumed.model_wrapped, tokenizer, HELD_OUT) == trained


def test_online_una_with_vllm_follows_the_policy_and_weights_each_sequence(tmp_path, tokenizer, monkeypatch):
    policy = lively_policy(tokenizer)
    initial = hf_greedy(policy, tokenizer, HELD_OUT, 8, [tokenizer.eos_token_id])
    args = OnlineUNAConfig(**common_args(tmp_path, use_vllm=True, response_length=8, learning_rate=3e-3,
                                         vllm_importance_sampling_mode="sequence_truncate"))  # fmt: skip
    trainer = OnlineUNATrainer(args, tokenizer, policy, None, reward_model(tokenizer), dataset(tokenizer))
    calls = []
    spy(monkeypatch, online_una_module, "una_loss", calls)
    trainer.train()
    assert_vllm_follows(trainer, tokenizer, initial)
    assert calls and all(call["weights"] is not None and call["weights"].dim() == 1 for call in calls)


@pytest.mark.distributed
def test_two_processes_hold_the_policy_in_each_engine(tmp_path):
    script = Path(__file__).parent / "two_process_run.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes/accelerate_configs/ci/ddp.yaml"), "--num_processes", "2", str(script), str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    reports = sorted(Path(tmp_path).glob("rank*.txt"))
    assert len(reports) == 2
    lines = [r.read_text().splitlines() for r in reports]
    assert lines[0] == lines[1]  # the same weights and the same greedy output on both ranks
    assert lines[0][1] == "vllm == hf: True"
