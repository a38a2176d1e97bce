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
"""Configurations and invariant probes shared by `tests/test_configurations.py` (one process) and
`tests/distributed/config_script.py` (2 processes), so that both check exactly the same things.

- Configurations: precision, tokenizer (pad != EOS or pad == EOS), LR schedule, and the trainer built from them on tiny
  models whose policy stops about half of its responses within 5 tokens (`stopping_policy`).
- `LossProbe` wraps the loss functions where the trainers look them up (`ppomax_trl.ppo_trainer.ppo_policy_loss` /
  `ppo_value_loss`, `ppomax_trl.online_una.una_loss`), the log-prob gather before them, and the trainer's `rollout`,
  `score` and `advantages`, and records every call by update.
- `WarmupProbe` snapshots the policy, its AdamW state and the critic before the first update and after the critic
  warm-up.
- The `*_report` / `*_problems` functions turn a record into numbers and messages; the tests assert on them.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

import torch
from datasets import Dataset
from transformers import TrainerCallback

import ppomax_trl.online_una as online_una_module
import ppomax_trl.ppo_trainer as ppo_trainer_module
from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer, PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.losses import ppo_policy_loss, ppo_value_loss
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


RESPONSE_LENGTH = 5
CRITIC_WARMUP_STEPS = 2
EOS_SCALE = 2.5  # EOS logit = 2.5 x (hidden . mean direction): about half of the responses stop within 5 tokens

PRECISIONS = {"fp32": dict(bf16=False), "bf16": dict(bf16=True, use_cpu=True)}
TOKENIZERS = ("pad_ne_eos", "pad_eq_eos")
SCHEDULES = {
    "linear": dict(lr_scheduler_type="linear"),
    "linear_warmup": dict(lr_scheduler_type="linear", warmup_steps=2),
    # transformers 5 reads a `warmup_steps` in [0, 1) as a ratio of the training steps (`warmup_ratio` is gone)
    "constant_warmup_ratio": dict(lr_scheduler_type="constant_with_warmup", warmup_steps=0.5),
}
# first-minibatch quantities that must be exactly 0; `max |value - old|` is reported as context only: the rollout
# scores the whole buffer at once and the update micro-batches of it, and matmuls of different batch shapes may differ
# in the last bits (about 1e-8 in fp32)
ON_POLICY_KEYS = ("max |r / beta|", "max |logprob - old|", "value clipfrac")


# ----------------------------------------------------------------------------------------------------------------------
# Configurations on tiny models that stop
# ----------------------------------------------------------------------------------------------------------------------
def make_tokenizer(kind: str):
    """The tiny tokenizer, with pad != EOS (`"pad_ne_eos"`, as built) or pad == EOS (`"pad_eq_eos"`)."""
    tokenizer = build_tiny_tokenizer()
    if kind == "pad_eq_eos":
        tokenizer.pad_token = tokenizer.eos_token
    if (tokenizer.pad_token_id == tokenizer.eos_token_id) != (kind == "pad_eq_eos"):
        raise ValueError(f"tokenizer kind {kind!r}: pad {tokenizer.pad_token_id}, EOS {tokenizer.eos_token_id}")
    return tokenizer


def stopping_policy(tokenizer, prompts: list[str], seed: int = 0):
    """A tiny causal LM whose EOS row (tied: input embedding and LM head) lies along its mean final hidden state on
    `prompts`, so that the EOS logit is raised wherever the hidden state points the usual way."""
    policy = tiny_causal_lm(tokenizer, seed=seed)
    with torch.no_grad():
        hidden = torch.cat(
            [policy.model(**tokenizer(p, return_tensors="pt")).last_hidden_state[0] for p in prompts]
        )  # (sum of prompt lengths, H)
        direction = hidden.mean(0)
        policy.get_input_embeddings().weight[tokenizer.eos_token_id] = EOS_SCALE * direction / direction.norm()
    return policy


def config_kwargs(trainer: str, precision: str, schedule: str) -> dict:
    """Config fields of a configuration: batch 4 per process as 2 micro-batches of 2, 2 PPO epochs (2 minibatches per
    update), responses stopped at EOS; PPO-max with a 2-step critic warm-up, its critic at its own lr, weight decay."""
    kwargs = dict(
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        num_ppo_epochs=2,
        response_length=RESPONSE_LENGTH,
        stop_token="eos",
        **PRECISIONS[precision],
        **SCHEDULES[schedule],
    )
    if trainer == "ppomax":
        # weight decay: AdamW moves a policy whose lr is not exactly 0 in the warm-up; critic init: the reward model
        kwargs.update(critic_warmup_steps=CRITIC_WARMUP_STEPS, value_learning_rate=1e-3, weight_decay=0.1)
    elif trainer == "una":
        kwargs.update(una_reference="rollout", beta=0.5)
    return kwargs


def build_trainer(trainer: str, args_kwargs: dict, tokenizer, prompts: list[str]):
    """`PPOTrainer` (given critic), `PPOMaxTrainer` (critic copied from the reward model) or `OnlineUNATrainer`."""
    policy, reward_model = stopping_policy(tokenizer, prompts), tiny_reward_model(tokenizer, seed=1)
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in prompts]})
    if trainer == "ppo":
        value_model = tiny_reward_model(tokenizer, seed=2)
        return PPOTrainer(PPOConfig(**args_kwargs), tokenizer, policy, None, reward_model, dataset, value_model)
    if trainer == "ppomax":
        return PPOMaxTrainer(PPOMaxConfig(**args_kwargs), tokenizer, policy, None, reward_model, dataset, None)
    return OnlineUNATrainer(OnlineUNAConfig(**args_kwargs), tokenizer, policy, None, reward_model, dataset)


def stop_mask(responses: torch.Tensor, stop_token_id: int) -> torch.Tensor:
    """`(B, T)` bool: True up to and including the first stop token of each row (every position without one)."""
    is_stop = (responses == stop_token_id).long()
    return (is_stop.cumsum(1) - is_stop) == 0


def digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a state dict: equal digests are equal weights."""
    sha = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        tensor = tensor.detach().cpu().contiguous()
        sha.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        sha.update(tensor.view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def _copy(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def _innermost_optimizer(optimizer):
    while hasattr(optimizer, "optimizer"):  # accelerate's (and DeepSpeed's) wrappers
        optimizer = optimizer.optimizer
    return optimizer


# ----------------------------------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------------------------------
class LossProbe:
    """Records what reaches the losses, keyed by the update (`state.global_step` while it runs).

    The trainers compute one loss per micro-batch, in order, so the first `trainer.num_micro_batches` calls of an
    update are its first minibatch, before any optimizer step. `monkeypatch` is a `pytest.MonkeyPatch`; call
    `remove_hooks()` after training.
    """

    def __init__(self, monkeypatch, trainer) -> None:
        self.trainer = trainer
        self.calls: dict[int, list[dict]] = defaultdict(list)
        self.rollouts: dict[int, dict] = {}
        self.scores: dict[int, torch.Tensor] = {}
        self.gae_inputs: dict[int, tuple[dict, torch.Tensor]] = {}  # PPO: update -> (rollout batch, token rewards)
        self.policy_output_dtypes: dict[str, set] = defaultdict(set)  # phase -> dtypes of the policy's LM head output
        self.phase = "update"
        self._gathered: dict | None = None
        head = trainer.model.policy.get_output_embeddings()
        self._hook_handle = head.register_forward_hook(lambda module, args, output: self._record_dtype(output))

        module = online_una_module if isinstance(trainer, OnlineUNATrainer) else ppo_trainer_module
        gather = module._gather_response_logprobs

        def recording_gather(logits, tokens, temperature):
            out = gather(logits, tokens, temperature)
            self._gathered = {"responses": _copy(tokens), "new_logprobs": _copy(out)}
            return out

        monkeypatch.setattr(module, "_gather_response_logprobs", recording_gather)
        if module is ppo_trainer_module:
            policy_loss, value_loss = module.ppo_policy_loss, module.ppo_value_loss

            def recording_policy_loss(logprobs, old_logprobs, advantages, mask, **kwargs):
                out = policy_loss(logprobs, old_logprobs, advantages, mask, **kwargs)
                self._record(
                    logprobs=_copy(logprobs), old_logprobs=_copy(old_logprobs), advantages=_copy(advantages),
                    mask=_copy(mask), policy_kwargs={k: _copy(v) for k, v in kwargs.items()},
                    policy_clipfrac=out[1]["clipfrac"].item(),
                )  # fmt: skip
                return out

            def recording_value_loss(values, old_values, returns, mask, **kwargs):
                out = value_loss(values, old_values, returns, mask, **kwargs)
                record = self.calls[self.trainer.state.global_step][-1]
                if "values" in record:
                    raise AssertionError("ppo_value_loss called twice in one micro-batch")
                record.update(
                    values=_copy(values), old_values=_copy(old_values), returns=_copy(returns),
                    value_mask=_copy(mask), value_kwargs={k: _copy(v) for k, v in kwargs.items()},
                    value_clipfrac=out[1]["clipfrac"].item(), critic_lrs=self._critic_lrs(),
                )  # fmt: skip
                return out

            monkeypatch.setattr(module, "ppo_policy_loss", recording_policy_loss)
            monkeypatch.setattr(module, "ppo_value_loss", recording_value_loss)
        else:
            una_loss = module.una_loss

            def recording_una_loss(policy_logps, ref_logps, targets=None, **kwargs):
                out = una_loss(policy_logps, ref_logps, targets, **kwargs)
                self._record(policy_logps=_copy(policy_logps), ref_logps=_copy(ref_logps), targets=_copy(targets))
                return out

            monkeypatch.setattr(module, "una_loss", recording_una_loss)

        rollout, score = trainer.rollout, trainer.score

        def recording_rollout(rows, model):
            self.phase = "rollout"
            try:
                batch = rollout(rows, model)
            finally:
                self.phase = "update"
            self.rollouts[trainer.state.global_step] = {k: _copy(v) for k, v in batch.items()}
            return batch

        def recording_score(rows, batch, *rest, **kwargs):
            scores = score(rows, batch, *rest, **kwargs)
            self.scores[trainer.state.global_step] = _copy(scores)
            return scores

        monkeypatch.setattr(trainer, "rollout", recording_rollout)
        monkeypatch.setattr(trainer, "score", recording_score)
        if hasattr(trainer, "advantages"):
            advantages = trainer.advantages

            def recording_advantages(batch, rewards, *rest):
                self.gae_inputs[trainer.state.global_step] = ({k: _copy(v) for k, v in batch.items()}, _copy(rewards))
                return advantages(batch, rewards, *rest)

            monkeypatch.setattr(trainer, "advantages", recording_advantages)

    def remove_hooks(self) -> None:
        self._hook_handle.remove()

    def _record_dtype(self, output: torch.Tensor) -> None:
        self.policy_output_dtypes[self.phase].add(output.dtype)

    def _record(self, **fields) -> None:
        gathered, self._gathered = self._gathered, None
        if gathered is None:
            raise AssertionError("a loss was called without a log-prob gather before it")
        self.calls[self.trainer.state.global_step].append({**gathered, **fields})

    def _critic_lrs(self) -> list[float]:
        groups = self.trainer.optimizer.param_groups
        return [g["lr"] for g in groups if g.get("ppomax_module") == "value_model"]

    def first_minibatch(self, step: int) -> list[dict]:
        calls = self.calls[step][: self.trainer.num_micro_batches]
        if len(calls) != self.trainer.num_micro_batches:
            raise AssertionError(f"update {step}: {len(self.calls[step])} loss calls")
        return calls


def _adam_state(optimizer_state: dict | None, param: torch.Tensor) -> dict:
    """AdamW's per-parameter state; a parameter without one (never stepped) has zero moments and step 0."""
    state = {"exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param), "step": 0.0}
    for key, value in (optimizer_state or {}).items():
        state[key] = float(value) if key == "step" else value.detach().clone()
    return state


class WarmupProbe(TrainerCallback):
    """Snapshots the policy, its AdamW state and the critic before the first update and at the end of the warm-up.

    The AdamW state is read from the innermost optimizer's groups tagged `ppomax_module="policy"`: the parameters
    themselves, or DeepSpeed's flat fp32 partitions of them under ZeRO.
    """

    def __init__(self, trainer, warmup_steps: int) -> None:
        self.trainer, self.warmup_steps = trainer, warmup_steps
        self.before: dict | None = None
        self.after: dict | None = None

    def _snapshot(self) -> dict:
        trainer = self.trainer
        wrapper = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        names = {id(p): n for n, p in wrapper.policy.named_parameters()}
        inner = _innermost_optimizer(trainer.optimizer)
        adam = {}
        for g, group in enumerate(inner.param_groups):
            if group.get("ppomax_module") == "policy":
                for i, param in enumerate(group["params"]):
                    adam[names.get(id(param), f"group{g}.param{i}")] = _adam_state(inner.state.get(param), param)
        return {
            "policy": {n: p.detach().clone() for n, p in wrapper.policy.named_parameters()},
            "policy_adam": adam,
            "critic": {n: p.detach().clone() for n, p in wrapper.value_model.named_parameters()},
        }

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.before = self._snapshot()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup_steps:
            self.after = self._snapshot()


# ----------------------------------------------------------------------------------------------------------------------
# Invariants: numbers and messages from a record
# ----------------------------------------------------------------------------------------------------------------------
def _max_abs_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return (a.float() - b.float())[mask].abs().max().item() if mask.any() else 0.0


def first_minibatch_report(probe: LossProbe) -> dict[int, dict[str, float]]:
    """Per update, over its first minibatch: PPO `max |logprob - old|` (response tokens), `value clipfrac`, `max |value
    - old|`; UNA `max |r / beta|` (summed log-ratio to the rollout policy). All but the value difference must be 0."""
    report = {}
    for step in sorted(probe.calls):
        first = probe.first_minibatch(step)
        if "policy_logps" in first[0]:
            report[step] = {
                "max |r / beta|": max((c["policy_logps"] - c["ref_logps"]).abs().max().item() for c in first)
            }
        else:
            report[step] = {
                "max |logprob - old|": max(_max_abs_diff(c["logprobs"], c["old_logprobs"], c["mask"]) for c in first),
                "value clipfrac": max(c["value_clipfrac"] for c in first),
                "max |value - old|": max(_max_abs_diff(c["values"], c["old_values"], c["value_mask"]) for c in first),
            }
    return report


def later_minibatch_moved(probe: LossProbe, step: int = 0) -> bool:
    """Whether a minibatch after the first of `step` saw a policy different from the rollout's (the record is live)."""
    later = probe.calls[step][probe.trainer.num_micro_batches :]
    keys = ("policy_logps", "ref_logps") if later and "policy_logps" in later[0] else ("logprobs", "old_logprobs")
    return any((c[keys[0]] - c[keys[1]]).abs().max().item() > 0 for c in later)


def score_mismatches(probe: LossProbe, reward_model, autocast=None) -> list[str]:
    """Rollout scores that are not `reward_model(input_ids=<unpadded prompt + response>[None]).logits`, computed in
    fp32 or, with `autocast` (a context manager factory), under the run's autocast."""
    mismatches = []
    device = next(reward_model.parameters()).device
    for step, batch in sorted(probe.rollouts.items()):
        scores = probe.scores[step].float().cpu()
        for i in range(scores.numel()):
            prompt = batch["queries"][i][batch["query_mask"][i].bool()]
            response = batch["responses"][i][batch["response_mask"][i]]
            input_ids = torch.cat([prompt, response])[None].to(device)
            with torch.no_grad():
                own = [reward_model(input_ids=input_ids).logits[0, 0].float().item()]
                if autocast is not None:
                    with autocast():
                        own.append(reward_model(input_ids=input_ids).logits[0, 0].float().item())
            score = scores[i].item()
            # fp32: float noise of padding; autocast: the hidden states are rounded to bf16 in matmuls whose reduction
            # order depends on the batch shape (the rollout reads a padded batch, this one row alone), so the two
            # bf16 outputs may be two ulps apart (2^-6 relative; seen on an AVX2 CPU: 0.022217 vs 0.021973). A wrong
            # read-out position would be off by far more.
            close = [math.isclose(score, own[0], rel_tol=1e-4, abs_tol=1e-5)]
            close += [math.isclose(score, o, rel_tol=2**-6, abs_tol=1e-5) for o in own[1:]]
            if not any(close):
                mismatches.append(
                    f"update {step} row {i} (stopped={bool(batch['stopped'][i])}, response {response.tolist()}): "
                    f"rollout score {score:.6f}, reward model {[round(o, 6) for o in own]}"
                )
    return mismatches


def _perturb_after_stop(tensor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return tensor.masked_fill(~keep, 1e3)


def after_stop_problems(probe: LossProbe, stop_token_id: int) -> tuple[list[str], int]:
    """Places where something after the first stop token reaches a loss, and the number of positions after a stop
    (the check needs some).

    - the rollout's `response_mask` (read by every loss and by UNA's log-prob sums) ends at the first stop token;
    - PPO: rewards and values after the stop do not change the advantages or returns up to it (GAE); the masks the
      policy and value losses get end at the stop, and the losses do not change when every input after it does;
    - UNA: the summed policy log-probs are sums up to the stop token.
    """
    problems, num_after_stop = [], 0
    for step, batch in sorted(probe.rollouts.items()):
        keep = stop_mask(batch["responses"], stop_token_id)
        num_after_stop += int((~keep).sum())
        if not torch.equal(batch["response_mask"], keep):
            problems.append(f"update {step}: response_mask {batch['response_mask'].tolist()} != {keep.tolist()}")
    for step, (batch, rewards) in sorted(probe.gae_inputs.items()):
        keep = stop_mask(batch["responses"], stop_token_id)
        advantages, returns = probe.trainer.advantages(batch, rewards)
        perturbed_batch = {**batch, "values": _perturb_after_stop(batch["values"], keep)}
        perturbed = probe.trainer.advantages(perturbed_batch, _perturb_after_stop(rewards, keep))
        if not (torch.equal(advantages[keep], perturbed[0][keep]) and torch.equal(returns[keep], perturbed[1][keep])):
            problems.append(f"update {step}: rewards or values after the stop change the advantages/returns")
    for step in sorted(probe.calls):
        for n, call in enumerate(probe.calls[step]):
            keep = stop_mask(call["responses"], stop_token_id)
            where = f"update {step} micro-batch {n}"
            if "policy_logps" in call:
                expected = (call["new_logprobs"] * keep).sum(1)
                if not torch.allclose(call["policy_logps"], expected, rtol=1e-6, atol=1e-6):
                    problems.append(
                        f"{where}: UNA log-prob sums {call['policy_logps'].tolist()} != {expected.tolist()}"
                    )
                continue
            for mask_key in ("mask", "value_mask"):
                if not torch.equal(call[mask_key], keep):
                    problems.append(f"{where}: {mask_key} {call[mask_key].tolist()} != {keep.tolist()}")
            for loss_fn, keys, mask_key, kwargs_key in (
                (ppo_policy_loss, ("logprobs", "old_logprobs", "advantages"), "mask", "policy_kwargs"),
                (ppo_value_loss, ("values", "old_values", "returns"), "value_mask", "value_kwargs"),
            ):
                inputs = [call[key] for key in keys]
                loss, _ = loss_fn(*inputs, call[mask_key], **call[kwargs_key])
                perturbed, _ = loss_fn(
                    *(_perturb_after_stop(t, keep) for t in inputs), call[mask_key], **call[kwargs_key]
                )
                if not torch.equal(loss, perturbed):
                    problems.append(f"{where}: {loss_fn.__name__} changes with the inputs after the stop")
    return problems, num_after_stop


def warmup_problems(warmup: WarmupProbe, probe: LossProbe | None = None) -> list[str]:
    """What moved in the critic warm-up that must not (policy weights, policy AdamW moments and step), and whether the
    critic failed to move."""
    before, after = warmup.before, warmup.after
    if before is None or after is None:
        return [f"no snapshot (before: {before is not None}, after: {after is not None})"]
    problems = []
    moved = {n: (after["policy"][n] - p).abs().max().item() for n, p in before["policy"].items()}
    moved = {n: v for n, v in moved.items() if v != 0}
    if moved:
        problems.append(f"policy weights moved (max |change| per tensor): {moved}")
    if not before["policy_adam"] or before["policy_adam"].keys() != after["policy_adam"].keys():
        problems.append(f"policy optimizer groups: {sorted(before['policy_adam'])} -> {sorted(after['policy_adam'])}")
    state_moved = defaultdict(list)  # "exp_avg" / "exp_avg_sq" / "step" -> tensors whose entry changed
    for name, state in before["policy_adam"].items():
        later = after["policy_adam"].get(name)
        if later is None:
            continue
        if state["step"] != later["step"]:
            state_moved["step"].append(f"{name}: {state['step']} -> {later['step']}")
        for key in ("exp_avg", "exp_avg_sq"):
            if not torch.equal(state[key], later[key]):
                state_moved[key].append(f"{name}: max |change| {(later[key] - state[key]).abs().max().item()}")
    num_tensors = len(before["policy_adam"])
    for key, entries in state_moved.items():
        problems.append(f"policy AdamW {key} moved on {len(entries)}/{num_tensors} tensors, e.g. {entries[0]}")
    critic_change = max((after["critic"][n] - p).abs().max().item() for n, p in before["critic"].items())
    if not critic_change > 0:
        lrs = []
        if probe is not None:
            lrs = [c.get("critic_lrs") for step in range(warmup.warmup_steps) for c in probe.calls[step]]
        problems.append(f"the critic did not move (critic group lrs at each warm-up micro-batch: {lrs})")
    return problems
