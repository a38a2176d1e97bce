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
"""Offline UNA: the pure losses against their naive twins and sanity values, and `UNATrainer` on tiny models."""

import copy
import dataclasses
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from ppomax_trl import DataCollatorForUNA, UNAConfig, UNATrainer
from ppomax_trl.losses import una_implicit_reward, una_loss
from ppomax_trl.tiny import tiny_causal_lm


LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------
def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def row(prompt, chosen=None, rejected=None, completion=None, label=None, score=None):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "completion": completion, "label": label,
            "score": score}  # fmt: skip


MIXED_ROWS = [
    row("the movie was", chosen=" great and fun", rejected=" bad"),
    row("i loved", completion=" every minute", label=True),
    row("what a", completion=" waste of time", score=0.2),
    row("the food", completion=" was cold", label=False),
    row("a good cast", chosen=" a fine plot", rejected=" awful"),
    row("the film", completion=" was boring", score=0.9),
]


def mixed_dataset(conversational=False):
    rows = copy.deepcopy(MIXED_ROWS)
    if conversational:
        for r in rows:
            r["prompt"] = user(r["prompt"])
            for key in ("chosen", "rejected", "completion"):
                r[key] = None if r[key] is None else assistant(r[key])
    return Dataset.from_list(rows)


def single_format_dataset(kind, conversational=False):
    prompts = ["the movie was", "i loved", "what a", "the food"]
    p = user if conversational else (lambda t: t)
    c = assistant if conversational else (lambda t: t)
    if kind == "preference":
        return Dataset.from_dict({"prompt": [p(x) for x in prompts], "chosen": [c(" great")] * 4,
                                  "rejected": [c(" bad"), c(" awful"), c(" sad"), c(" cold")]})  # fmt: skip
    if kind == "unpaired":
        return Dataset.from_dict({"prompt": [p(x) for x in prompts], "completion": [c(" great"), c(" bad")] * 2,
                                  "label": [True, False, True, False]})  # fmt: skip
    return Dataset.from_dict({"prompt": [p(x) for x in prompts], "completion": [c(" great"), c(" bad")] * 2,
                              "score": [7.0, 2.0, 9.0, 1.0]})  # fmt: skip


def una_args(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path / "out"), bf16=False, gradient_checkpointing=False, report_to="none",
                  save_strategy="no", disable_tqdm=True, per_device_train_batch_size=4, logging_steps=1, max_steps=2,
                  learning_rate=1e-2, seed=0)  # fmt: skip
    kwargs.update(overrides)
    return UNAConfig(**kwargs)


def params_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def collate(trainer, indices, dataset=None):
    dataset = trainer.train_dataset if dataset is None else dataset
    return trainer.data_collator([dataset[i] for i in indices])


# ----------------------------------------------------------------------------------------------------------------------
# Pure losses: sanity values, naive twins, numerics
# ----------------------------------------------------------------------------------------------------------------------
def naive_una_loss(policy, ref, targets, beta, feedback, loss):
    """Per-example Python re-derivation of una_ranklist_spec.md §A.4 (signs as in the released code)."""
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    values = []
    for b in range(policy.shape[0]):
        if feedback == "pairwise":
            margin = beta * (policy[b, 0] - ref[b, 0]).item() - beta * (policy[b, 1] - ref[b, 1]).item()
            values.append(-math.log(sig(margin)))
            continue
        r, s = beta * (policy[b] - ref[b]).item(), targets[b].item()
        if loss == "mse":
            values.append((sig(r) - s) ** 2)
        else:
            values.append(-(s * math.log(sig(r)) + (1 - s) * math.log(sig(-r))))
    return sum(values) / len(values)


@pytest.mark.parametrize(
    "feedback, loss, targets, expected",
    [
        ("pairwise", None, None, LN2),
        ("binary", "mse", [1.0, 0.0, 1.0, 0.0], 0.25),
        ("binary", "mse", [1.0, 1.0, 1.0, 1.0], 0.25),
        ("binary", "bce", [1.0, 0.0, 0.0, 0.0], LN2),
        ("score", "mse", [0.1, 0.5, 0.9, 0.3], ((0.4**2) + 0 + (0.4**2) + (0.2**2)) / 4),
        ("score", "bce", [0.1, 0.5, 0.9, 0.3], LN2),
    ],
)
def test_values_at_initialisation(feedback, loss, targets, expected):
    shape = (4, 2) if feedback == "pairwise" else (4,)
    logps = torch.randn(shape) * 10 - 30  # pi_theta = pi_ref: r = 0 whatever the log-probs
    targets = None if targets is None else torch.tensor(targets)
    value, stats = una_loss(logps, logps.clone(), targets, beta=0.1, feedback=feedback, loss=loss)
    assert value.item() == pytest.approx(expected, abs=1e-6)
    assert stats["logratio"].item() == 0.0


@pytest.mark.parametrize(
    "feedback, loss",
    [
        ("pairwise", None),
        ("pairwise", "bce"),
        ("binary", "mse"),
        ("binary", "bce"),
        ("score", "mse"),
        ("score", "bce"),
    ],
)
def test_una_loss_matches_naive_twin(feedback, loss):
    torch.manual_seed(0)
    shape = (7, 2) if feedback == "pairwise" else (7,)
    policy, ref = torch.randn(shape, dtype=torch.float64) * 5, torch.randn(shape, dtype=torch.float64) * 5
    targets = {"pairwise": None, "binary": torch.randint(0, 2, (7,)).double(), "score": torch.rand(7).double()}
    beta = 0.3
    value, stats = una_loss(policy, ref, targets[feedback], beta=beta, feedback=feedback, loss=loss)
    expected = naive_una_loss(policy, ref, targets[feedback], beta, feedback, loss)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    r = beta * (policy - ref)
    if feedback == "pairwise":
        assert stats["reward_margin"].item() == pytest.approx((r[:, 0] - r[:, 1]).mean().item())
        assert stats["reward_accuracy"].item() == pytest.approx((r[:, 0] > r[:, 1]).double().mean().item())
    else:
        s = targets[feedback].clamp(1e-3, 1 - 1e-3)
        assert stats["implied_logratio_target"].item() == pytest.approx((torch.log(s / (1 - s)) / beta).mean().item())
        assert stats["score"].item() == pytest.approx(torch.sigmoid(r).mean().item())


def test_pairwise_equals_trl_documented_dpo_sigmoid_formula():
    # TRL 1.16 has no public tensor-level DPO loss (it lives in the private `DPOTrainer._compute_loss`), so this checks
    # the formula its docs and code use; `test_pairwise_rows_give_trl_dpo_trainer_loss` checks the public trainer.
    torch.manual_seed(1)
    pc, pr, rc, rr = (torch.randn(9) * 20 for _ in range(4))
    beta = 0.03
    trl_losses = -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
    value, _ = una_loss(torch.stack([pc, pr], -1), torch.stack([rc, rr], -1), beta=beta, feedback="pairwise")
    torch.testing.assert_close(value, trl_losses.mean())


def test_binary_mse_is_score_mse_with_01_targets():
    policy, ref, targets = torch.randn(6), torch.randn(6), torch.tensor([1.0, 0, 0, 1, 1, 0])
    binary, _ = una_loss(policy, ref, targets, beta=0.5, feedback="binary", loss="mse")
    score, _ = una_loss(policy, ref, targets, beta=0.5, feedback="score", loss="mse")
    torch.testing.assert_close(binary, score)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "feedback, loss", [("pairwise", None), ("binary", "mse"), ("binary", "bce"), ("score", "bce")]
)
def test_losses_and_gradients_stay_finite_at_large_rewards(dtype, feedback, loss):
    beta = 0.01
    logratio = torch.tensor([100.0, -100.0, 50.0, -50.0]) / beta  # |r| = 100 and 50
    shape = (2, 2) if feedback == "pairwise" else (4,)
    policy = logratio.reshape(shape).to(dtype).requires_grad_(True)
    targets = None if feedback == "pairwise" else torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=dtype)  # wrong side
    value, _ = una_loss(policy, torch.zeros(shape, dtype=dtype), targets, beta=beta, feedback=feedback, loss=loss)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(policy.grad).all()


def test_implicit_reward_sums_masked_tokens_without_length_normalisation():
    policy = torch.tensor([[-1.0, -2.0, -3.0, float("-inf")], [-1.0, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[-2.0, -2.0, -1.0, 0.0], [-3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [False, True, True, False]])
    reward = una_implicit_reward(policy, ref, mask, beta=0.5)
    torch.testing.assert_close(reward, torch.tensor([0.5 * (1 + 0 - 2), 0.5 * (-1 + 0)]))
    summed = una_implicit_reward(torch.tensor([-3.0, -4.0]), torch.tensor([-1.0, -5.0]), beta=2.0)
    torch.testing.assert_close(summed, torch.tensor([-4.0, 2.0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(feedback="ranking"), "Unknown UNA feedback"),
        (dict(feedback="binary", loss="hinge"), "Unknown UNA loss"),
        (dict(feedback="pairwise", loss="mse"), "no pairwise MSE"),
        (dict(feedback="pairwise", targets=torch.ones(3)), "takes no targets"),
        (dict(feedback="binary", targets=torch.tensor([1.0, 0.5, 0.0])), "must be 0 or 1"),
        (dict(feedback="score", targets=torch.tensor([1.0, 1.5, 0.0])), r"lie in \[0, 1\]"),
        (dict(feedback="score", targets=torch.tensor([1.0, float("nan"), 0.0])), r"lie in \[0, 1\]"),
        (dict(feedback="score", targets=None), "needs `targets`"),
        (dict(feedback="binary", targets=torch.ones(3), beta=0.0), "beta"),
    ],
)
def test_una_loss_rejects_bad_arguments(kwargs, message):
    kwargs = {"beta": 0.1, **kwargs}
    shape = (3, 2) if kwargs["feedback"] == "pairwise" else (3,)
    with pytest.raises(ValueError, match=message):
        una_loss(torch.zeros(shape), torch.zeros(shape), kwargs.pop("targets", None), **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------------
def test_every_config_field_has_help_and_is_documented():
    parent = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = [f for f in dataclasses.fields(UNAConfig) if f.name not in parent or f.default != getattr(
        TrainingArguments, f.name, f.default)]  # fmt: skip
    assert {"beta", "binary_loss", "score_loss", "score_normalizer", "precompute_ref_log_probs"} <= {
        f.name for f in own
    }
    for f in own:
        assert f.metadata.get("help"), f.name
        assert f"`{f.name}" in UNAConfig.__doc__ or f.name in UNAConfig.__doc__, f.name


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(beta=0.0), "beta"),
        (dict(binary_loss="hinge"), "binary_loss"),
        (dict(score_loss="l1"), "score_loss"),
        (dict(score_normalizer="zscore"), "score_normalizer"),
        (dict(score_low=0.0), "minmax"),
        (dict(score_normalizer="minmax", score_low=5.0, score_high=1.0), "score_high"),
        (dict(truncation_mode="middle"), "truncation_mode"),
        (dict(max_length=1), "max_length"),
        (dict(remove_unused_columns=True), "remove_unused_columns=False"),
        (dict(precompute_ref_batch_size=0), "precompute_ref_batch_size"),
    ],
)
def test_config_rejects_bad_values(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        una_args(tmp_path, **overrides)


def test_config_parses_from_the_command_line(tmp_path):
    from trl import TrlParser

    argv = ["--output_dir", str(tmp_path), "--report_to", "none", "--score_normalizer", "minmax", "--score_low", "1",
            "--score_high", "10", "--binary_loss", "bce", "--model_init_kwargs", '{"dtype": "float32"}']  # fmt: skip
    (args,) = TrlParser((UNAConfig,)).parse_args_and_config(argv)
    assert (args.score_low, args.score_high, args.binary_loss) == (1.0, 10.0, "bce")
    assert args.model_init_kwargs == {"dtype": "float32"} and args.bf16 == torch.cuda.is_available()


def test_config_beta_defaults_follow_the_paper(tmp_path):
    args = una_args(tmp_path)
    assert (args.beta_for("pairwise"), args.beta_for("binary"), args.beta_for("score")) == (0.03, 0.01, 0.03)
    assert una_args(tmp_path, beta=0.2).beta_for("binary") == 0.2


# ----------------------------------------------------------------------------------------------------------------------
# Trainer: equivalence with TRL's DPO, batch invariance, formats
# ----------------------------------------------------------------------------------------------------------------------
def test_pairwise_rows_give_trl_dpo_trainer_loss(tmp_path, tokenizer):
    from trl import DPOConfig, DPOTrainer

    dataset = single_format_dataset("preference")
    policy, ref = tiny_causal_lm(tokenizer, seed=0), tiny_causal_lm(tokenizer, seed=5)  # distinct: loss != ln 2
    dpo_args = DPOConfig(output_dir=str(tmp_path / "dpo"), beta=0.5, bf16=False, gradient_checkpointing=False,
                         report_to="none")  # fmt: skip
    # DPOTrainer patches the forward of the models it gets, so each trainer gets its own copies.
    dpo = DPOTrainer(copy.deepcopy(policy), ref_model=copy.deepcopy(ref), args=dpo_args, train_dataset=dataset,
                     processing_class=tokenizer)  # fmt: skip
    una = UNATrainer(policy, ref_model=ref, args=una_args(tmp_path, beta=0.5), train_dataset=dataset,
                     processing_class=tokenizer)  # fmt: skip
    dpo_loss = dpo.compute_loss(dpo.model, collate(dpo, range(4)))  # public API, loss_type="sigmoid"
    una_value = una.compute_loss(una.model, collate(una, range(4)))
    assert abs(dpo_loss.item() - LN2) > 1e-3
    torch.testing.assert_close(una_value, dpo_loss, rtol=1e-5, atol=1e-6)
    dpo_metrics, una_metrics = dpo._metrics["train"], una._metrics["train"]
    for dpo_key, una_key in [("rewards/chosen", "una/reward/pairwise_chosen"),
                             ("rewards/rejected", "una/reward/pairwise_rejected")]:  # fmt: skip
        assert una_metrics[una_key][0] == pytest.approx(dpo_metrics[dpo_key][0], rel=1e-4, abs=1e-6)


def test_batch_loss_is_the_mean_of_single_row_losses_and_forwards_only_real_completions(tmp_path, tokenizer):
    dataset = mixed_dataset()
    policy, ref = tiny_causal_lm(tokenizer, seed=0), tiny_causal_lm(tokenizer, seed=7)
    trainer = UNATrainer(policy, ref_model=ref, args=una_args(tmp_path, beta=1.0), train_dataset=dataset,
                         processing_class=tokenizer)  # fmt: skip
    forwarded = []  # rows of every policy forward
    hook = policy.model.register_forward_pre_hook(
        lambda module, args, kwargs: forwarded.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    with torch.no_grad():
        batch = collate(trainer, range(6))
        full = trainer.compute_loss(trainer.model, batch)
        singles = [trainer.compute_loss(trainer.model, collate(trainer, [i])) for i in range(6)]
    hook.remove()
    # 2 preference rows (2 completions each) + 4 single rows: 8 sequences, no placeholder.
    assert batch["input_ids"].shape[0] == 8 and forwarded[0] == 8
    assert forwarded[1:] == [2, 1, 1, 1, 2, 1]
    torch.testing.assert_close(full, torch.stack(singles).mean(), rtol=1e-5, atol=1e-6)
    four = trainer.compute_loss(trainer.model, collate(trainer, range(4)))
    torch.testing.assert_close(four, torch.stack(singles[:4]).mean(), rtol=1e-5, atol=1e-6)


def test_batch_size_times_accumulation_gives_the_same_update(tmp_path, tokenizer):
    dataset = mixed_dataset().select(range(4))
    results = []
    for batch_size, accumulation in [(4, 1), (1, 4)]:
        policy = tiny_causal_lm(tokenizer, seed=0)
        args = una_args(tmp_path / f"{batch_size}", per_device_train_batch_size=batch_size, max_steps=1,
                        gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=1.0, beta=1.0,
                        max_grad_norm=0.0)  # fmt: skip
        trainer = UNATrainer(policy, ref_model=tiny_causal_lm(tokenizer, seed=7), args=args, train_dataset=dataset,
                             processing_class=tokenizer)  # fmt: skip
        trainer.train()
        results.append((params_of(policy), trainer.state.log_history[0]["loss"]))
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
    for name, value in results[0][0].items():
        torch.testing.assert_close(value, results[1][0][name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["preference", "unpaired", "scored", "mixed"])
@pytest.mark.parametrize("conversational", [False, True])
def test_each_format_prepares_and_trains(tmp_path, tokenizer, kind, conversational):
    if kind == "mixed":
        dataset, expected = (
            mixed_dataset(conversational),
            ["pairwise", "binary", "score", "binary", "pairwise", "score"],
        )
    else:
        dataset = single_format_dataset(kind, conversational)
        expected = [{"preference": "pairwise", "unpaired": "binary", "scored": "score"}[kind]] * 4
    args = una_args(tmp_path, max_steps=1, score_normalizer="minmax" if kind == "scored" else "identity")
    trainer = UNATrainer(tiny_causal_lm(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer)
    prepared = trainer.train_dataset
    assert prepared["feedback"] == expected
    first = prepared[0]
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert (im_start in first["prompt_ids"]) == conversational
    for completion_ids in first["completions_ids"]:
        # Text completions end with EOS (as DPOTrainer); chat completions end with the template's turn end.
        end = tokenizer.convert_tokens_to_ids("<|im_end|>") if conversational else tokenizer.eos_token_id
        assert end in completion_ids
    if kind == "scored":  # minmax over the dataset's scores 1..9
        assert prepared["target"] == pytest.approx([6 / 8, 1 / 8, 1.0, 0.0])
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss"])


def test_mixed_run_trains_every_parameter_keeps_the_reference_and_logs_per_type(tmp_path, tokenizer):
    policy = tiny_causal_lm(tokenizer)
    trainer = UNATrainer(policy, args=una_args(tmp_path, max_steps=3, per_device_train_batch_size=6),
                         train_dataset=mixed_dataset(), processing_class=tokenizer)  # fmt: skip
    assert trainer._reference_source == "frozen_copy" and trainer.ref_model is not policy
    before, ref_before = params_of(policy), params_of(trainer.ref_model)
    trainer.train()
    after, ref_after = params_of(policy), params_of(trainer.ref_model)
    assert all(not torch.equal(before[n], after[n]) for n in before), "every policy parameter should move"
    assert all(torch.equal(ref_before[n], ref_after[n]) for n in ref_before), "the reference must stay frozen"
    first = trainer.state.log_history[0]
    # pi_theta = pi_ref at step 1: pairwise ln 2, binary MSE 0.25, score MSE (0.5 - s)^2 averaged over s = 0.2, 0.9.
    assert first["una/loss/pairwise"] == pytest.approx(LN2, abs=1e-6)
    assert first["una/loss/binary"] == pytest.approx(0.25, abs=1e-6)
    assert first["una/loss/score"] == pytest.approx((0.3**2 + 0.4**2) / 2, abs=1e-6)
    assert first["loss"] == pytest.approx((2 * LN2 + 2 * 0.25 + 0.09 + 0.16) / 6, abs=1e-5)
    assert first["una/kl"] == pytest.approx(0.0, abs=1e-6) and first["una/logratio"] == pytest.approx(0.0, abs=1e-6)
    assert first["una/target_mean"] == pytest.approx((1 + 0 + 0.2 + 0.9) / 4)
    betas = {"binary": 0.01, "score": 0.03}
    implied = [math.log(0.999 / 0.001) / betas["binary"], -math.log(0.999 / 0.001) / betas["binary"],
               math.log(0.2 / 0.8) / betas["score"], math.log(0.9 / 0.1) / betas["score"]]  # fmt: skip
    assert first["una/implied_logratio_target"] == pytest.approx(sum(implied) / 4, rel=1e-4)
    last = trainer.state.log_history[2]
    assert last["una/kl"] > 0 and last["una/reward/pairwise_margin"] != 0


def test_evaluate_reports_una_metrics_and_prepares_a_raw_dataset(tmp_path, tokenizer):
    trainer = UNATrainer(tiny_causal_lm(tokenizer), args=una_args(tmp_path, per_device_eval_batch_size=4),
                         train_dataset=mixed_dataset(), eval_dataset=mixed_dataset(), processing_class=tokenizer)  # fmt: skip
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx((2 * LN2 + 2 * 0.25 + 0.09 + 0.16) / 6, abs=1e-5)
    assert metrics["eval_una/loss/binary"] == pytest.approx(0.25, abs=1e-6)
    raw = trainer.evaluate(eval_dataset=single_format_dataset("unpaired"), metric_key_prefix="test")
    assert raw["test_loss"] == pytest.approx(0.25, abs=1e-6)


SCORED_ROWS = {"prompt": ["the movie was", "i loved", "what a", "the food", "a good cast"],
               "completion": [" great fun", " it", " waste of time", " was cold", " and a plot"],
               "score": [0.9, 0.7, 0.1, 0.3, 0.6]}  # fmt: skip
SPEED_KEYS = ("_runtime", "_samples_per_second", "_steps_per_second", "_model_preparation_time")


def eval_at_batch_sizes(tmp_path, tokenizer, dataset, batch_sizes):
    """`evaluate()` of the same policy and (distinct) reference at each eval batch size; speed metrics left out."""
    results = {}
    for batch_size in batch_sizes:
        trainer = UNATrainer(tiny_causal_lm(tokenizer, seed=0), ref_model=tiny_causal_lm(tokenizer, seed=7),
                             args=una_args(tmp_path / str(batch_size), per_device_eval_batch_size=batch_size),
                             train_dataset=dataset, eval_dataset=dataset, processing_class=tokenizer)  # fmt: skip
        metrics = trainer.evaluate()
        results[batch_size] = {k: v for k, v in metrics.items() if not k.endswith(SPEED_KEYS) and k != "epoch"}
    return results


@pytest.mark.parametrize("kind", ["scored", "mixed"])
def test_eval_metrics_pool_rows_over_the_eval_set(tmp_path, tokenizer, kind):
    """Eval metrics are sums over all eval rows divided by counts: the eval batch size cannot change them (abs 1e-5:
    the log-ratios are differences of summed log-probs near -17, in fp32)."""
    dataset = Dataset.from_dict(SCORED_ROWS) if kind == "scored" else mixed_dataset().select(range(5))
    results = eval_at_batch_sizes(tmp_path, tokenizer, dataset, (1, 4, 5))
    keys = {"eval_loss", "eval_una/logratio", "eval_una/kl"}
    keys |= {"eval_una/loss/score", "eval_una/target_mean", "eval_una/predicted_score", "eval_una/reward/score"}
    if kind == "mixed":
        keys |= {"eval_una/loss/pairwise", "eval_una/reward/pairwise_margin", "eval_una/loss/binary"}
    assert keys <= results[5].keys()
    assert results[1].keys() == results[4].keys() == results[5].keys()
    for key, value in results[5].items():
        for batch_size in (1, 4):
            assert results[batch_size][key] == pytest.approx(value, rel=1e-5, abs=1e-5), (key, batch_size)


# ----------------------------------------------------------------------------------------------------------------------
# Score normalisers and bad input
# ----------------------------------------------------------------------------------------------------------------------
def scored(scores, **extra):
    return Dataset.from_dict({"prompt": ["p"] * len(scores), "completion": [" c"] * len(scores), "score": scores,
                              **extra})  # fmt: skip


@pytest.mark.parametrize(
    "normalizer, config, scores, expected",
    [
        ("identity", {}, [0.0, 0.25, 1.0], [0.0, 0.25, 1.0]),
        ("minmax", {}, [1.0, 4.0, 10.0], [0.0, 1 / 3, 1.0]),
        ("minmax", dict(score_low=0.0, score_high=20.0), [1.0, 4.0, 10.0], [0.05, 0.2, 0.5]),
        ("sigmoid", {}, [0.0, 2.0, -800.0], [0.5, 1 / (1 + math.exp(-2.0)), 0.0]),
    ],
)
def test_score_normalizers(tmp_path, tokenizer, normalizer, config, scores, expected):
    args = una_args(tmp_path, score_normalizer=normalizer, **config)
    trainer = UNATrainer(
        tiny_causal_lm(tokenizer), args=args, train_dataset=scored(scores), processing_class=tokenizer
    )
    assert trainer.train_dataset["target"] == pytest.approx(expected)


def test_callable_normalizer_reads_attribute_columns_and_eval_reuses_the_train_range(tmp_path, tokenizer):
    attrs = Dataset.from_dict({"prompt": ["p", "q"], "completion": [" a", " b"], "helpfulness": [4, 1],
                               "correctness": [2, 0]})  # fmt: skip

    def mix(example):
        return (example["helpfulness"] + example["correctness"]) / 8

    trainer = UNATrainer(tiny_causal_lm(tokenizer), args=una_args(tmp_path), train_dataset=attrs,
                         processing_class=tokenizer, score_normalizer=mix)  # fmt: skip
    assert trainer.train_dataset["feedback"] == ["score", "score"]
    assert trainer.train_dataset["target"] == pytest.approx([0.75, 0.125])

    args = una_args(tmp_path, score_normalizer="minmax")
    trainer = UNATrainer(tiny_causal_lm(tokenizer), args=args, train_dataset=scored([2.0, 6.0]),
                         eval_dataset=scored([4.0]), processing_class=tokenizer)  # fmt: skip
    assert trainer.eval_dataset["target"] == pytest.approx([0.5])  # train range [2, 6], not eval's own
    with pytest.raises(ValueError, match=r"Row 0: score 9.0 maps to 1.75 under score_normalizer='minmax'"):
        trainer.evaluate(eval_dataset=scored([9.0]))


BAD_INPUTS = [
    (scored([0.5, 1.5]), {}, r"Row 1: score 1.5 maps to 1.5 under score_normalizer='identity', outside \[0, 1\]"),
    (scored([0.5, -0.1]), {}, r"Row 1: score -0.1 maps to -0.1 under score_normalizer='identity'"),
    (scored([0.5, float("nan")]), {}, "Row 1: `score` must be a finite number"),
    (scored([3.0, 3.0]), dict(score_normalizer="minmax"), "set `score_low` < `score_high`"),
    (Dataset.from_dict({"prompt": ["p", "q"], "completion": [" a", " b"], "label": [2, 0]}), {},
     r"Row 0: `label` must be True/False or 1/0 .* got 2 \(int\)"),  # 0/1 integers are binary labels, 2 is not
    (Dataset.from_dict({"prompt": ["p"], "completion": [" a"], "label": ["yes"]}), {}, "must be True/False or 1/0"),
    (Dataset.from_list([row("p", chosen=" a", rejected=" b", completion=" c")]), {},
     "Row 0 has both pair columns"),
    (Dataset.from_list([row("p", chosen=" a")]), {}, "only one of `chosen`/`rejected`"),
    (Dataset.from_list([row("p", completion=" a", label=True, score=0.5)]), {}, "both a `label` and a `score`"),
    (Dataset.from_list([row("p", chosen=" a", rejected=" b", label=True)]), {}, "pairs carry no target"),
    (Dataset.from_list([row("p", completion=" a")]), {}, "neither a `label` nor a `score`"),
    (Dataset.from_dict({"prompt": ["p", "q"], "completion": [" a", ""], "label": [True, False]}), {},
     "Row 1 has an empty completion"),
    (Dataset.from_dict({"prompt": ["p"], "chosen": [" a"], "rejected": ["   "]}), {}, "Row 0 has an empty completion"),
    (Dataset.from_dict({"prompt": [user("p")], "completion": [assistant("")], "label": [True]}), {},
     "Row 0 has an empty completion"),
    (Dataset.from_dict({"prompt": [user("p")], "completion": [" text"], "label": [True]}), {},
     "mixes a text and a conversational"),
    (Dataset.from_dict({"prompt": ["p"], "response": [" a"]}), {}, "none of the UNA formats"),
]  # fmt: skip


@pytest.mark.parametrize("dataset, config, message", BAD_INPUTS)
def test_bad_input_raises_a_clear_error(tmp_path, tokenizer, dataset, config, message):
    with pytest.raises(ValueError, match=message):
        UNATrainer(tiny_causal_lm(tokenizer), args=una_args(tmp_path, **config), train_dataset=dataset,
                   processing_class=tokenizer)  # fmt: skip


def test_bad_callable_normalizer_and_iterable_dataset_raise(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"Row 0: .* maps to 2.0 under score_normalizer=<lambda>"):
        UNATrainer(tiny_causal_lm(tokenizer), args=una_args(tmp_path), train_dataset=scored([1.0]),
                   processing_class=tokenizer, score_normalizer=lambda example: 2.0)  # fmt: skip
    with pytest.raises(TypeError, match="map-style"):
        UNATrainer(tiny_causal_lm(tokenizer), args=una_args(tmp_path), processing_class=tokenizer,
                   train_dataset=scored([0.5]).to_iterable_dataset())  # fmt: skip
    policy = tiny_causal_lm(tokenizer)
    with pytest.raises(ValueError, match="different objects"):
        UNATrainer(policy, ref_model=policy, args=una_args(tmp_path), train_dataset=scored([0.5]),
                   processing_class=tokenizer)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Reference variants
# ----------------------------------------------------------------------------------------------------------------------
def test_peft_reference_is_the_base_with_the_adapter_disabled(tmp_path, tokenizer):
    from peft import LoraConfig

    policy = tiny_causal_lm(tokenizer)
    base = copy.deepcopy(policy)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = UNATrainer(policy, args=una_args(tmp_path, max_steps=2), train_dataset=single_format_dataset("unpaired"),
                         processing_class=tokenizer, peft_config=lora)  # fmt: skip
    assert trainer.ref_model is None and trainer._reference_source == "peft_base"
    before = params_of(trainer.model)
    trainer.train()
    moved = [n for n, p in params_of(trainer.model).items() if not torch.equal(p, before[n])]
    assert moved and all("lora_" in n for n in moved)
    assert trainer.state.log_history[0]["una/loss/binary"] == pytest.approx(0.25, abs=1e-6)  # B = 0: pi = pi_ref
    batch = collate(trainer, range(4))
    with torch.no_grad(), trainer._reference(trainer.model) as reference:
        ref_logps = trainer._completion_logps(reference, batch)[0]
        base_logps = trainer._completion_logps(base, batch)[0]
    with torch.no_grad():
        policy_logps = trainer._completion_logps(trainer.model, batch)[0]  # adapter enabled again
    torch.testing.assert_close(ref_logps, base_logps)
    assert (policy_logps - base_logps).abs().max() > 0  # the trained adapter is not the reference


def test_precompute_ref_log_probs_matches_the_live_reference(tmp_path, tokenizer):
    dataset = mixed_dataset()
    runs = {}
    for precompute in (False, True):
        policy = tiny_causal_lm(tokenizer)
        initial = copy.deepcopy(policy)
        args = una_args(tmp_path / str(precompute), precompute_ref_log_probs=precompute, max_steps=2,
                        precompute_ref_batch_size=4)  # fmt: skip
        trainer = UNATrainer(policy, args=args, train_dataset=dataset, processing_class=tokenizer)
        if precompute:
            assert trainer.ref_model is None and trainer._reference_source == "policy_at_init"
            prepared = trainer.train_dataset
            assert [len(v) for v in prepared["ref_logps"]] == [2, 1, 1, 1, 2, 1]
            batch = collate(trainer, range(6))
            with torch.no_grad():
                live = trainer._completion_logps(initial, batch)[0]
            torch.testing.assert_close(batch["ref_logps"], live)
        trainer.train()
        runs[precompute] = trainer
    for step_live, step_pre in zip(runs[False].state.log_history[:2], runs[True].state.log_history[:2], strict=True):
        assert step_pre["loss"] == pytest.approx(step_live["loss"], rel=1e-5)
        assert "una/kl" in step_live and "una/kl" not in step_pre
    # The policy has trained and no reference was kept: a new dataset cannot get reference log-probs any more.
    with pytest.raises(ValueError, match="kept no reference model"):
        runs[True].evaluate(eval_dataset=single_format_dataset("unpaired"))


def test_precomputed_reference_runs_under_the_training_autocast(tmp_path, tokenizer):
    """bf16 autocast on CPU: pi_ref precomputed from the untouched policy equals, bit for bit, its first training
    forward, so the first step's log-ratio is exactly 0; the fp32 forward differs (autocast is on)."""
    policy = tiny_causal_lm(tokenizer)
    fp32_policy = copy.deepcopy(policy)
    args = una_args(tmp_path, bf16=True, use_cpu=True, precompute_ref_log_probs=True, max_steps=1)
    trainer = UNATrainer(policy, args=args, train_dataset=single_format_dataset("unpaired"),
                         processing_class=tokenizer)  # fmt: skip
    seen = []
    compute_loss = trainer.compute_loss

    def recording_compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = compute_loss(model, inputs, return_outputs=True)
        seen.append((inputs["ref_logps"].clone(), outputs["logps"].clone()))  # row-aligned, whatever the shuffle
        return loss

    trainer.compute_loss = recording_compute_loss
    trainer.train()
    ref_logps, train_logps = seen[0]
    assert torch.equal(ref_logps, train_logps), (ref_logps - train_logps).abs().max()
    assert trainer.state.log_history[0]["una/logratio"] == 0.0
    batch = collate(trainer, range(4))
    with torch.no_grad():
        fp32_logps = trainer._completion_logps(fp32_policy, batch)[0]
    assert not torch.equal(batch["ref_logps"], fp32_logps)


def test_precompute_with_an_explicit_reference_model(tmp_path, tokenizer):
    ref = tiny_causal_lm(tokenizer, seed=9)
    trainer = UNATrainer(tiny_causal_lm(tokenizer), ref_model=ref, processing_class=tokenizer,
                         args=una_args(tmp_path, precompute_ref_log_probs=True),
                         train_dataset=single_format_dataset("preference"))  # fmt: skip
    batch = collate(trainer, range(4))
    with torch.no_grad():
        torch.testing.assert_close(batch["ref_logps"], trainer._completion_logps(ref, batch)[0])


# ----------------------------------------------------------------------------------------------------------------------
# Collator, hooks, model card
# ----------------------------------------------------------------------------------------------------------------------
def test_collator_docstring_example_and_truncation():
    rows = [
        {"prompt_ids": [5, 6], "completions_ids": [[7, 8], [9]], "feedback": "pairwise", "target": 0.0},
        {"prompt_ids": [5], "completions_ids": [[4, 3]], "feedback": "binary", "target": 1.0},
    ]
    batch = DataCollatorForUNA(pad_token_id=0)(rows)
    assert list(batch) == ["feedback", "targets", "sequence_index", "input_ids", "attention_mask", "completion_mask"]
    assert batch["feedback"].tolist() == [0, 1] and batch["targets"].tolist() == [0.0, 1.0]
    assert batch["sequence_index"].tolist() == [[0, 1], [2, -1]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [5, 6, 9, 0], [5, 4, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1], [0, 0, 1, 0], [0, 1, 1, 0]]
    start = DataCollatorForUNA(pad_token_id=0, max_length=3)(rows)
    assert start["input_ids"].tolist() == [[5, 6, 7], [5, 6, 9], [5, 4, 3]]
    end = DataCollatorForUNA(pad_token_id=0, max_length=2, truncation_mode="keep_end", pad_to_multiple_of=4)(rows)
    assert end["input_ids"].tolist() == [[7, 8, 0, 0], [6, 9, 0, 0], [4, 3, 0, 0]]
    assert end["completion_mask"].tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]]


@pytest.mark.parametrize(
    "method, params",
    [
        ("compute_loss", ["model", "inputs", "return_outputs", "num_items_in_batch"]),
        ("prediction_step", ["model", "inputs", "prediction_loss_only", "ignore_keys"]),
        ("evaluate", ["eval_dataset", "ignore_keys", "metric_key_prefix"]),
        ("log", ["logs", "start_time"]),
        ("save_model", ["output_dir", "_internal_call"]),
    ],
)
def test_overridden_trainer_hooks_keep_their_signature(method, params):
    assert list(inspect.signature(getattr(Trainer, method)).parameters)[1:] == params
    assert list(inspect.signature(getattr(UNATrainer, method)).parameters)[1:] == params


def test_no_private_trainer_method_is_overridden():
    shadowed = [n for n in vars(UNATrainer) if n.startswith("_") and not n.startswith("__") and hasattr(Trainer, n)]
    assert shadowed == []
    assert "loss_is_scaled_for_ga" in vars(Trainer)  # public since transformers 5.19; set to False here


def test_save_model_writes_weights_and_a_model_card(tmp_path, tokenizer):
    trainer = UNATrainer(tiny_causal_lm(tokenizer), args=una_args(tmp_path, score_loss="bce"),
                         train_dataset=mixed_dataset(), processing_class=tokenizer)  # fmt: skip
    trainer.save_model(str(tmp_path / "saved"))
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "- una" in card and "2408.15339" in card and "frozen_copy" in card and "not in the paper" in card
    assert (tmp_path / "saved" / "model.safetensors").exists()
