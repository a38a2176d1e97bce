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
"""Reward failures on one rank only, for `tests/distributed/test_reward_errors.py`.

    OMP_NUM_THREADS=1 accelerate launch --config_file recipes/accelerate_configs/ci/ddp.yaml --num_processes 2 \
        tests/distributed/reward_errors_script.py --output_dir /tmp/out

Three short `OnlineUNATrainer` runs in one launch, each with a reward function that fails on rank 1 only: it returns
`None` for every rollout, it raises `KeyError`, and it returns NaN. Each rank writes what `train()` raised to
`rank<r>.json`. The collective timeout is 20 s (`ddp_timeout`): a rank left waiting fails fast instead of hanging for
30 minutes. That the second and third runs start at all shows the process group survived the first failure.
"""

import argparse
import json
import os

import torch
from datasets import Dataset

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer
from ppomax_trl.recipe_utils import end_process_group
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm


PROMPTS = ["the movie was", "i loved", "what a", "the food", "a good cast", "the film", "the acting", "a bad"]


def fails_on_rank_1(mode: str):
    def reward(prompts, completions, completion_ids, **kwargs):
        if torch.distributed.get_rank() != 1:
            return [float(len(ids)) for ids in completion_ids]
        if mode == "none":
            return [None] * len(prompts)
        if mode == "nan":
            return [float("nan")] * len(prompts)
        raise KeyError("judge_score")

    reward.__name__ = f"reward_{mode}"
    return reward


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    output_dir = parser.parse_args().output_dir
    tokenizer = build_tiny_tokenizer()
    dataset = Dataset.from_dict({"prompt": PROMPTS})
    report = {}
    for mode in ("none", "raises", "nan"):
        args = OnlineUNAConfig(
            output_dir=os.path.join(output_dir, mode), use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
            per_device_train_batch_size=2, response_length=4, max_steps=2, num_sample_generations=0,
            save_strategy="no", disable_tqdm=True, ddp_timeout=20,
        )  # fmt: skip
        trainer = OnlineUNATrainer(
            args, tokenizer, tiny_causal_lm(tokenizer), None, None, dataset, reward_funcs=fails_on_rank_1(mode)
        )
        try:
            trainer.train()
            report[mode] = None
        except Exception as error:  # noqa: BLE001 (the test compares what every rank raised)
            report[mode] = {"type": type(error).__name__, "message": str(error)}
    with open(os.path.join(output_dir, f"rank{torch.distributed.get_rank()}.json"), "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
    end_process_group()
