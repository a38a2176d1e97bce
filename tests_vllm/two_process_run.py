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
"""Launched on 2 DDP processes by `test_two_processes_hold_the_policy_in_each_engine`: PPO-max with colocated vLLM
(one engine per process, `external_launcher`), 3 updates; each rank writes its weight digest and whether its engine's
greedy output equals its HF policy's on held-out prompts."""

import hashlib
import sys
from pathlib import Path

from conftest import HELD_OUT, PROMPTS, common_args, hf_greedy, lively_policy, reward_model, vllm_greedy
from datasets import Dataset

from ppomax_trl import PPOMaxConfig, PPOMaxTrainer
from ppomax_trl.tiny import build_tiny_tokenizer


def main(out_dir: str) -> None:
    tokenizer = build_tiny_tokenizer()
    data = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in PROMPTS]})
    args = PPOMaxConfig(**common_args(Path(out_dir), use_cpu=True, use_vllm=True, response_length=8,
                                      per_device_train_batch_size=2, total_episodes=12, learning_rate=5e-3,
                                      critic_warmup_steps=0))  # fmt: skip
    trainer = PPOMaxTrainer(args, tokenizer, lively_policy(tokenizer), None, reward_model(tokenizer), data)
    trainer.train()
    policy = trainer.accelerator.unwrap_model(trainer.model_wrapped).policy
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in policy.parameters())).hexdigest()
    greedy = vllm_greedy(trainer.generator, trainer.model_wrapped, tokenizer, HELD_OUT)
    same = greedy == hf_greedy(policy, tokenizer, HELD_OUT, 8, trainer.stop_token_ids)
    rank = trainer.accelerator.process_index
    Path(out_dir, f"rank{rank}.txt").write_text(f"{digest}\nvllm == hf: {same}\n{greedy}\n")
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
