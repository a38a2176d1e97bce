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

# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "ppomax-trl",
# ]
# ///


"""
Rank-list (K-wise, InstructGPT) reward-model training on a dataset of ranked lists, the TRL script way.

Single process (CPU or one GPU):

```
python recipes/reward_rank.py --config recipes/configs/reward_rank_tiny.yaml \
    --model_name_or_path path/to/sft_model --dataset_name path/to/ranked_lists --output_dir path/to/reward_model
```

Multi-process through accelerate (pick any file in `recipes/accelerate_configs/`; `--num_processes` overrides it):

```
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/reward_rank.py \
    --config recipes/configs/reward_rank_tiny.yaml --model_name_or_path path/to/sft_model \
    --dataset_name path/to/ranked_lists --output_dir path/to/reward_model
```

or equivalently `ppomax-trl reward --accelerate_config multi_gpu <the same recipe flags>`.

Trains a `RankListRewardTrainer` with a `RankListRewardConfig` (every `trl.RewardConfig` flag plus `--loss_type`,
`--ties`, `--margin_scale`, `--listnet_temperature`). The model is
`AutoModelForSequenceClassification.from_pretrained(model_name_or_path, num_labels=1)`; the dataset rows are `prompt` +
`completions` (a list, best first) with optional `scores` (higher is better, any order), or TRL's `chosen`/`rejected`
pairs; `--dataset_name` is a Hub name or a local folder/file that `datasets.load_dataset` reads. The saved
`output_dir` (model and tokenizer) is what `recipes/ppo_max.py --reward_model_path` takes, and PPO-max initialises its
critic from it: the InstructGPT chain SFT -> ranked-list reward model -> PPO-max.
"""

import os
import sys

from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import RankListRewardConfig, RankListRewardTrainer


def main(script_args: ScriptArguments, training_args: RankListRewardConfig, model_args: ModelConfig) -> None:
    if os.environ.get("WANDB_SWEEP_ID"):  # one output folder per sweep trial (house style §3.5)
        training_args.output_dir = f"{training_args.output_dir}-{os.environ['WANDB_RUN_ID']}"
    model_kwargs = dict(revision=model_args.model_revision, dtype=model_args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=1, **model_kwargs
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # sequence classifiers find the last token through it

    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = dataset[script_args.dataset_test_split]

    trainer = RankListRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    train_result = trainer.train()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub()


def parse_args(args: list[str] | None = None) -> tuple[ScriptArguments, RankListRewardConfig, ModelConfig]:
    return TrlParser((ScriptArguments, RankListRewardConfig, ModelConfig)).parse_args_and_config(args)[:3]


if __name__ == "__main__":
    main(*parse_args(sys.argv[1:]))
