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
"""Tiny multi-process `RankListRewardTrainer` run for `tests/test_rank_list.py::test_ddp_two_processes`.

    accelerate launch --config_file recipes/accelerate_configs/ci/ddp.yaml --num_processes 2 \
        tests/distributed/rank_list_script.py --output_dir /tmp/out

Trains on variable-K ranked lists, evaluates on an eval set whose size (7 lists) does not divide over the processes,
saves the model, and writes `rank{i}.json` (every process: its final weights' checksum) and `report.json` (main
process: log history, eval metrics, and the same metrics recomputed in one process by a plain forward of the trained
model over the whole eval set).
"""

import argparse
import json
import os
import random

import torch
from datasets import Dataset

from ppomax_trl import RankListRewardConfig, RankListRewardTrainer
from ppomax_trl.rank_list import rank_list_statistics, summarize_rank_list_statistics
from ppomax_trl.recipe_utils import end_process_group
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_reward_model


ADJECTIVES = ["great", "good", "bad", "awful"]  # best first
NOUNS = ["movie", "film", "food", "cast", "plot", "story", "show", "song"]


def toy_lists(num_lists: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    rows = {"prompt": [], "completions": []}
    for index in range(num_lists):
        size = 2 + index % 3  # K = 2, 3, 4: variable list sizes in every batch
        adjectives = sorted(rng.sample(range(len(ADJECTIVES)), size))
        rows["prompt"].append(f"the {rng.choice(NOUNS)} was")
        rows["completions"].append([f" {ADJECTIVES[a]} {rng.choice(NOUNS)}" for a in adjectives])
    return Dataset.from_dict(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    cli = parser.parse_args()

    tokenizer = build_tiny_tokenizer([" ".join(["the", "was", *ADJECTIVES, *NOUNS])] * 4)
    model = tiny_reward_model(tokenizer, seed=1)
    args = RankListRewardConfig(
        output_dir=cli.output_dir,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=4,
        per_device_eval_batch_size=2,
        max_steps=6,
        learning_rate=3e-3,
        logging_steps=2,
        disable_tqdm=True,
        seed=0,
    )
    eval_dataset = toy_lists(7, seed=1)
    trainer = RankListRewardTrainer(
        model, args, train_dataset=toy_lists(48, seed=0), eval_dataset=eval_dataset, processing_class=tokenizer
    )
    trainer.train()
    eval_metrics = trainer.evaluate()
    trainer.save_model()

    acc = trainer.accelerator
    trained = acc.unwrap_model(trainer.model)
    checksum = float(sum(p.detach().double().abs().sum() for p in trained.parameters()))
    with open(os.path.join(cli.output_dir, f"rank{acc.process_index}.json"), "w") as f:
        json.dump({"process_index": acc.process_index, "checksum": checksum}, f)

    if acc.is_main_process:
        # Reference: the same metrics from one process over the whole (unsharded, unduplicated) eval set.
        prepared = trainer.eval_dataset
        batch = trainer.data_collator([prepared[i] for i in range(len(prepared))])
        trained.eval()
        with torch.no_grad():
            flat = trained(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        sizes, scores = batch["list_sizes"], batch["scores"]
        mask = torch.arange(scores.shape[1])[None] < sizes[:, None]
        rewards = flat.new_zeros(scores.shape).masked_scatter(mask, flat)
        stats = rank_list_statistics(rewards, mask, scores)
        stats["pair_accuracy"] = stats["num_correct"] / stats["num_pairs"].clamp(min=1)
        stats["num_lists"] = torch.ones_like(stats["num_pairs"])
        reference = summarize_rank_list_statistics({k: float(v.sum()) for k, v in stats.items()})
        report = {
            "num_processes": acc.num_processes,
            "distributed_type": str(acc.distributed_type),
            "global_step": trainer.state.global_step,
            "log_history": trainer.state.log_history,
            "eval_metrics": eval_metrics,
            "reference_eval_metrics": reference,
            "eval_lists": len(prepared),
        }
        with open(os.path.join(cli.output_dir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
    end_process_group()  # a gloo group left to interpreter shutdown can abort a finished rank
