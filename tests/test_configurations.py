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
"""Configuration tests: every online trainer, a few updates per configuration, checked by invariants.

Axes: precision (fp32, bf16 autocast on CPU), tokenizer (pad != EOS, pad == EOS) and LR schedule (linear without
warm-up, linear with `warmup_steps=2`, `constant_with_warmup` with a warm-up ratio). PPO-max runs the full cross
product; PPO and online UNA (`una_reference="rollout"`) run four combinations that cover every value of every axis.
The same probes run on 2 processes (DDP, DeepSpeed ZeRO-2) in `tests/distributed/test_distributed.py`.

Each configuration trains once (cached per pytest process) with the probes of `tests/distributed/config_probes.py`
recording what reaches the losses, and the tests read the record:

- the first minibatch of every update is on-policy: new and rollout log-probs are bit-identical over the response
  tokens (ratio exactly 1) and the value clip fraction is exactly 0; for online UNA with `una_reference="rollout"`
  the summed log-ratio r is exactly 0;
- the rollout score is the reward model's own forward on the same (unpadded) prompt + response;
- the critic warm-up leaves the policy and its AdamW state bit-identical and moves the critic, under every schedule;
- no token after a stop token reaches a loss, and `missing_eos_penalty` hits exactly the responses without one.

The policy's EOS row is pointed along its mean final hidden state, so that about half of the sampled responses stop
within 5 tokens: the masks and the penalty then have stopped, cut and unstopped rows to act on.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from conftest import PROMPTS, common_args
from datasets import Dataset

from ppomax_trl import OnlineUNATrainer, PPOMaxConfig, PPOMaxTrainer
from ppomax_trl.tiny import tiny_reward_model


sys.path.insert(0, str(Path(__file__).resolve().parent / "distributed"))  # shared with the 2-process script
from config_probes import (
    CRITIC_WARMUP_STEPS,
    ON_POLICY_KEYS,
    PRECISIONS,
    SCHEDULES,
    TOKENIZERS,
    LossProbe,
    WarmupProbe,
    after_stop_problems,
    build_trainer,
    config_kwargs,
    first_minibatch_report,
    later_minibatch_moved,
    make_tokenizer,
    score_mismatches,
    stopping_policy,
    warmup_problems,
)


@dataclasses.dataclass(frozen=True)
class Case:
    trainer: str  # "ppo", "ppomax" or "una"
    precision: str
    tokenizer: str
    schedule: str

    @property
    def id(self) -> str:
        return f"{self.trainer}-{self.precision}-{self.tokenizer}-{self.schedule}"


# four combinations that cover every value of every axis, for the trainers that do not run the full product
_COVERING = [
    ("fp32", "pad_ne_eos", "linear"),
    ("bf16", "pad_eq_eos", "linear_warmup"),
    ("fp32", "pad_eq_eos", "constant_warmup_ratio"),
    ("bf16", "pad_ne_eos", "constant_warmup_ratio"),
]
CASES = (
    [Case("ppomax", p, t, s) for p in PRECISIONS for t in TOKENIZERS for s in SCHEDULES]
    + [Case("ppo", *combo) for combo in _COVERING]
    + [Case("una", *combo) for combo in _COVERING]
)
ALL_CASES = [pytest.param(case, id=case.id) for case in CASES]
PPOMAX_CASES = [pytest.param(case, id=case.id) for case in CASES if case.trainer == "ppomax"]


def build_case_trainer(case: Case, output_root: Path, tokenizer, **overrides):
    kwargs = config_kwargs(case.trainer, case.precision, case.schedule)
    kwargs.update({"total_episodes": 8, **overrides})  # 2 updates of 4 rollouts (after PPO-max's 2 warm-up steps)
    return build_trainer(case.trainer, common_args(output_root, **kwargs), tokenizer, PROMPTS)


@dataclasses.dataclass
class Run:
    trainer: object
    tokenizer: object
    probe: LossProbe
    warmup: WarmupProbe | None


_RUNS: dict[Case, Run] = {}


def run_case(case: Case, tmp_path_factory) -> Run:
    """Train `case` once per pytest process, recording what reaches the losses."""
    if case not in _RUNS:
        tokenizer = make_tokenizer(case.tokenizer)
        trainer = build_case_trainer(case, tmp_path_factory.mktemp(case.id), tokenizer)
        warmup = None
        if case.trainer == "ppomax":
            warmup = WarmupProbe(trainer, CRITIC_WARMUP_STEPS)
            trainer.add_callback(warmup)
        with pytest.MonkeyPatch.context() as monkeypatch:
            probe = LossProbe(monkeypatch, trainer)
            try:
                trainer.train()
            finally:
                probe.remove_hooks()
        _RUNS[case] = Run(trainer, tokenizer, probe, warmup)
    return _RUNS[case]


# ----------------------------------------------------------------------------------------------------------------------
# Precision
# ----------------------------------------------------------------------------------------------------------------------
def test_bf16_config_autocasts_on_cpu(tmp_path):
    """`bf16=True, use_cpu=True` is real bf16 autocast on CPU, so the bf16 cases test a second precision."""
    tokenizer = make_tokenizer("pad_ne_eos")
    args = PPOMaxConfig(**common_args(tmp_path, bf16=True, use_cpu=True))
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in PROMPTS]})
    trainer = PPOMaxTrainer(args, tokenizer, stopping_policy(tokenizer, PROMPTS), None, tiny_reward_model(tokenizer),
                            dataset, None)  # fmt: skip
    assert trainer.accelerator.mixed_precision == "bf16"
    inputs = tokenizer(PROMPTS[:1], return_tensors="pt").to(trainer.accelerator.device)
    policy = trainer.model.policy.to(trainer.accelerator.device)
    with torch.no_grad():
        fp32_logits = policy(**inputs).logits
        with trainer.accelerator.autocast():
            bf16_logits = policy(**inputs).logits
    assert fp32_logits.dtype == torch.float32 and bf16_logits.dtype == torch.bfloat16
    assert (fp32_logits - bf16_logits.float()).abs().max() > 1e-4


@pytest.mark.parametrize("case", ALL_CASES)
def test_update_forward_runs_in_the_configured_precision(case, tmp_path_factory):
    """The policy's LM head computes in bf16 in every update forward of a bf16 case (accelerate hands the logits back
    as fp32, so the head's own output is what shows the autocast), in fp32 otherwise."""
    probe = run_case(case, tmp_path_factory).probe
    expected = torch.bfloat16 if case.precision == "bf16" else torch.float32
    assert probe.policy_output_dtypes["update"] == {expected}, dict(probe.policy_output_dtypes)


# ----------------------------------------------------------------------------------------------------------------------
# Invariants
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ALL_CASES)
def test_first_minibatch_of_every_update_is_on_policy(case, tmp_path_factory):
    """Ratio exactly 1 and value clip fraction exactly 0 (PPO, PPO-max); UNA: log-ratio r exactly 0 (rollout ref)."""
    run = run_case(case, tmp_path_factory)
    report = first_minibatch_report(run.probe)
    num_updates = run.trainer.args.num_total_batches + (CRITIC_WARMUP_STEPS if case.trainer == "ppomax" else 0)
    assert sorted(report) == list(range(num_updates))
    failures = {step: r for step, r in report.items() if any(r.get(key, 0) != 0 for key in ON_POLICY_KEYS)}
    assert not failures, f"{case.id}: first minibatch off-policy at updates {failures} (all updates: {report})"
    if case.schedule == "linear" and case.trainer != "ppomax":  # lr > 0 from the first step: the record is live
        assert later_minibatch_moved(run.probe)


@pytest.mark.parametrize("case", ALL_CASES)
def test_rollout_score_is_the_reward_models_own_forward(case, tmp_path_factory):
    """`reward_model(input_ids=<unpadded prompt + response>[None]).logits`, in fp32 or under the run's autocast."""
    run = run_case(case, tmp_path_factory)
    autocast = run.trainer.accelerator.autocast if case.precision == "bf16" else None
    mismatches = score_mismatches(run.probe, run.trainer.reward_model, autocast)
    assert not mismatches, f"{case.id}:\n" + "\n".join(mismatches)


@pytest.mark.parametrize("case", ALL_CASES)
def test_nothing_after_a_stop_token_reaches_a_loss(case, tmp_path_factory):
    run = run_case(case, tmp_path_factory)
    problems, num_after_stop = after_stop_problems(run.probe, run.tokenizer.eos_token_id)
    assert num_after_stop > 0, f"{case.id}: no response stopped before the last position"
    assert not problems, f"{case.id}:\n" + "\n".join(problems)


@pytest.mark.parametrize("case", PPOMAX_CASES)
def test_critic_warmup_trains_the_critic_alone(case, tmp_path_factory):
    """Through the warm-up the policy weights and their AdamW state (moments, step) stay bit-identical to before it,
    and the critic moves; under LR warm-up schedules too."""
    run = run_case(case, tmp_path_factory)
    problems = warmup_problems(run.warmup, run.probe)
    assert not problems, f"{case.id}, critic warm-up:\n" + "\n".join(problems)


@pytest.mark.parametrize("tokenizer_kind", TOKENIZERS)
@pytest.mark.parametrize("trainer_kind", ["ppo", "ppomax", "una"])
def test_missing_eos_penalty_hits_exactly_the_responses_without_one(trainer_kind, tokenizer_kind, tmp_path):
    """Twin runs, with and without `missing_eos_penalty`, sample the same first rollout; what reaches the update
    (PPO: token rewards into GAE; UNA: regression targets) differs by the penalty exactly on the rows with no EOS."""
    penalty = 3.0
    case = Case(trainer_kind, "fp32", tokenizer_kind, "linear")
    tokenizer = make_tokenizer(tokenizer_kind)
    seen = {}
    for name, value in (("penalised", penalty), ("plain", None)):
        overrides = dict(total_episodes=4, missing_eos_penalty=value)
        if trainer_kind == "ppomax":
            overrides["critic_warmup_steps"] = 0
        trainer = build_case_trainer(case, tmp_path / name, tokenizer, **overrides)
        record = seen[name] = {}
        with pytest.MonkeyPatch.context() as monkeypatch:
            rollout = trainer.rollout

            def recording_rollout(rows, model, record=record, rollout=rollout):
                record["batch"] = rollout(rows, model)
                return record["batch"]

            monkeypatch.setattr(trainer, "rollout", recording_rollout)
            if isinstance(trainer, OnlineUNATrainer):
                score_targets = trainer.score_targets

                def recording_score_targets(raw_scores, stopped, record=record, score_targets=score_targets):
                    record["raw_scores"] = raw_scores.clone()
                    record["targets"] = score_targets(raw_scores, stopped).clone()
                    return record["targets"]

                monkeypatch.setattr(trainer, "score_targets", recording_score_targets)
            else:
                advantages = trainer.advantages

                def recording_advantages(batch, rewards, *rest, record=record, advantages=advantages):
                    record["rewards"] = rewards.clone()
                    return advantages(batch, rewards, *rest)

                monkeypatch.setattr(trainer, "advantages", recording_advantages)
            trainer.train()

    penalised, plain = seen["penalised"], seen["plain"]
    responses = penalised["batch"]["responses"]
    assert torch.equal(responses, plain["batch"]["responses"])  # same seeds, same first rollout
    has_eos = (responses == tokenizer.eos_token_id).any(1)  # (B,)
    assert has_eos.any() and not has_eos.all(), f"need rows with and without EOS, got {has_eos.tolist()}"
    if trainer_kind == "una":
        raw = penalised["raw_scores"]
        torch.testing.assert_close(penalised["targets"], torch.sigmoid(raw - penalty * (~has_eos).float()))
        torch.testing.assert_close(plain["targets"], torch.sigmoid(raw))
        return
    difference = penalised["rewards"] - plain["rewards"]  # (B, T)
    expected = torch.zeros_like(difference)
    expected[~has_eos, -1] = -penalty  # the score sits on the last token: position T - 1 for a row without EOS
    torch.testing.assert_close(difference, expected, rtol=0, atol=1e-5)
