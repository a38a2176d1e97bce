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
"""Self-contained PPO-max run on tiny models, offline, in seconds: `ppomax-trl demo`.

The policy is a randomly initialised tiny Qwen2 with a byte-level tokenizer built on the spot; the reward is a Python
function (the share of response characters that are the letter "o"). Nothing is downloaded. It prints the held-out reward
and sample completions before and after training, so you can see what improved.
"""

from __future__ import annotations

import os
import tempfile
import time


def letter_o_reward(prompts, completions, **kwargs) -> list[float]:
    """Share of the characters of each completion that are the letter "o": a dense toy reward a random model can chase."""
    return [completion.count("o") / max(len(completion), 1) for completion in completions]


def run_demo(output_dir: str | None = None, num_updates: int = 40, seed: int = 0) -> dict[str, float]:
    """Train PPO-max for `num_updates` updates on the toy task; returns the held-out reward before and after."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset

    from .ppo_config import PPOMaxConfig
    from .ppo_trainer import PPOMaxTrainer
    from .tiny import DEFAULT_TEXTS, build_tiny_tokenizer, tiny_causal_lm

    tokenizer = build_tiny_tokenizer(DEFAULT_TEXTS + ["good good good", "a good good day"])
    openers = ["the movie was", "i thought it", "the food", "this book", "our trip", "the show", "my day", "a film"]
    train = Dataset.from_dict({"prompt": openers})
    held_out = Dataset.from_dict({"prompt": ["the play was", "that song", "the hotel", "his story"] * 4})
    args = PPOMaxConfig(
        output_dir=output_dir or tempfile.mkdtemp(prefix="ppomax-demo-"),
        use_cpu=True,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        max_steps=num_updates,
        num_ppo_epochs=2,
        response_length=8,
        stop_token=None,  # the toy policy never learned to stop: fixed-length responses
        learning_rate=3e-3,  # a random tiny model needs far larger steps than the paper's 5e-7 on a 7B SFT model
        value_learning_rate=3e-3,
        critic_warmup_steps=2,
        num_sample_generations=0,
        seed=seed,
    )
    trainer = PPOMaxTrainer(
        args, tokenizer, tiny_causal_lm(tokenizer, seed=seed), None, None, train, None,
        eval_dataset=held_out, reward_funcs=letter_o_reward,
    )  # fmt: skip
    start = time.perf_counter()
    before = trainer.evaluate()["eval_objective/scores"]
    samples_before = trainer.generate_completions()
    trainer.train()
    after = trainer.evaluate()["eval_objective/scores"]
    samples_after = trainer.generate_completions()
    elapsed = time.perf_counter() - start
    print("\nSample completions (near-greedy) before -> after:")
    for old, new in list(zip(samples_before, samples_after, strict=True))[:4]:
        print(f"  {old['query']!r}: {old['model response']!r} ({old['score']:.2f}) -> "
              f"{new['model response']!r} ({new['score']:.2f})")  # fmt: skip
    print(f"\nHeld-out reward (share of the letter 'o'): {before:.3f} -> {after:.3f} after {num_updates} PPO-max updates "
          f"in {elapsed:.0f} s. Last train KL per token: {trainer.state.log_history[-2].get('ppomax/kl_per_token', 0):.3f}")  # fmt: skip
    return {"before": before, "after": after, "seconds": elapsed}
