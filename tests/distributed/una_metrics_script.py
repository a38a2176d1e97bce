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
"""Eval metrics of `UNATrainer` and `RankListRewardTrainer` at several eval batch sizes, for
`tests/distributed/test_una_metrics.py`.

    OMP_NUM_THREADS=1 accelerate launch --config_file recipes/accelerate_configs/ci/ddp.yaml --num_processes 2 \
        tests/distributed/una_metrics_script.py --output_dir /tmp/out

Both eval sets hold 5 rows (lists), which no batch size here splits evenly over 2 processes: the sampler repeats rows
to even out the last batch, and the metrics must not count them. The main process writes `report.json`: for each
trainer and batch size, the `evaluate()` metrics (speed metrics left out). The test imports `evaluate_all` and runs it
in one process as the reference.
"""

import argparse
import json
import os
import random

from accelerate import PartialState
from datasets import Dataset

from ppomax_trl import RankListRewardConfig, RankListRewardTrainer, UNAConfig, UNATrainer
from ppomax_trl.recipe_utils import end_process_group
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


BATCH_SIZES = (1, 2, 4)
SPEED_KEYS = ("_runtime", "_samples_per_second", "_steps_per_second", "_model_preparation_time")
ADJECTIVES = ["great", "good", "bad", "awful"]  # best first
NOUNS = ["movie", "film", "food", "cast", "plot", "story", "show", "song"]
UNA_ROWS = [  # every feedback type; the two pairs hold two completions each
    {"prompt": "the movie was", "chosen": " great and fun", "rejected": " bad", "completion": None, "label": None,
     "score": None},
    {"prompt": "i loved", "chosen": None, "rejected": None, "completion": " every minute", "label": True,
     "score": None},
    {"prompt": "what a", "chosen": None, "rejected": None, "completion": " waste of time", "label": None,
     "score": 0.2},
    {"prompt": "the food", "chosen": None, "rejected": None, "completion": " was cold", "label": False,
     "score": None},
    {"prompt": "a good cast", "chosen": " a fine plot", "rejected": " awful", "completion": None, "label": None,
     "score": None},
]  # fmt: skip


def toy_lists(num_lists: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    rows = {"prompt": [], "completions": []}
    for index in range(num_lists):
        size = 2 + index % 3  # K = 2, 3, 4
        adjectives = sorted(rng.sample(range(len(ADJECTIVES)), size))
        rows["prompt"].append(f"the {rng.choice(NOUNS)} was")
        rows["completions"].append([f" {ADJECTIVES[a]} {rng.choice(NOUNS)}" for a in adjectives])
    return Dataset.from_dict(rows)


def _common(output_dir: str, batch_size: int) -> dict:
    return dict(output_dir=output_dir, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                save_strategy="no", disable_tqdm=True, per_device_eval_batch_size=batch_size, seed=0)  # fmt: skip


def _clean(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if not key.endswith(SPEED_KEYS) and key != "epoch"}


def evaluate_all(output_dir: str, batch_sizes=BATCH_SIZES) -> dict[str, dict[str, float]]:
    """`{f"{trainer}_bs{batch size}": metrics}` for UNA (distinct reference) and rank-list (InstructGPT, ListNet)."""
    una_tokenizer = build_tiny_tokenizer()
    rank_tokenizer = build_tiny_tokenizer([" ".join(["the", "was", *ADJECTIVES, *NOUNS])] * 4)
    una_rows, lists = Dataset.from_list(UNA_ROWS), toy_lists(5, seed=1)
    results = {}
    for batch_size in batch_sizes:
        una = UNATrainer(tiny_causal_lm(una_tokenizer, seed=0), ref_model=tiny_causal_lm(una_tokenizer, seed=7),
                         args=UNAConfig(**_common(output_dir, batch_size)), train_dataset=una_rows,
                         eval_dataset=una_rows, processing_class=una_tokenizer)  # fmt: skip
        results[f"una_bs{batch_size}"] = _clean(una.evaluate())
        for loss_type in ("instructgpt", "listnet"):
            args = RankListRewardConfig(**_common(output_dir, batch_size), loss_type=loss_type)
            trainer = RankListRewardTrainer(tiny_reward_model(rank_tokenizer, seed=4), args, train_dataset=lists,
                                            eval_dataset=lists, processing_class=rank_tokenizer)  # fmt: skip
            results[f"{loss_type}_bs{batch_size}"] = _clean(trainer.evaluate())
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    cli = parser.parse_args()
    results = evaluate_all(cli.output_dir)
    state = PartialState()
    if state.is_main_process:
        report = {"num_processes": state.num_processes, "distributed_type": str(state.distributed_type), **results}
        with open(os.path.join(cli.output_dir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
    end_process_group()  # a gloo group left to interpreter shutdown can abort a finished rank
