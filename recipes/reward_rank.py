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

Tiny smoke run on CPU (`recipes/configs/reward_rank_tiny.yaml`; its model and data paths are placeholders to override):

```
python recipes/reward_rank.py --config recipes/configs/reward_rank_tiny.yaml \
    --model_name_or_path path/to/sft_model --dataset_name path/to/ranked_lists --output_dir path/to/reward_model
```

Full-size run on GPUs (`recipes/configs/reward_rank.yaml`: a reward model on the 1.5B SFT model; any file in
`recipes/accelerate_configs/` works, and `--num_processes` overrides its process count):

```
accelerate launch --config_file recipes/accelerate_configs/single_gpu.yaml recipes/reward_rank.py \
    --config recipes/configs/reward_rank.yaml  # 1 GPU
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml --num_processes 8 recipes/reward_rank.py \
    --config recipes/configs/reward_rank.yaml  # 8 GPUs, DDP
```

or equivalently
`ppomax-trl reward --accelerate_config multi_gpu --num_processes 8 --config recipes/configs/reward_rank.yaml`.

Trains a `RankListRewardTrainer` with a `RankListRewardConfig` (every `trl.RewardConfig` flag plus `--loss_type`,
`--ties`, `--margin_scale`, `--listnet_temperature`). The model is
`AutoModelForSequenceClassification.from_pretrained(model_name_or_path, num_labels=1)`; the dataset rows are `prompt` +
`completions` (a list, best first) with optional `scores` (higher is better, any order), or TRL's `chosen`/`rejected`
pairs; `--dataset_name` is a Hub name or a local folder/file that `datasets.load_dataset` reads. The saved
`output_dir` (model and tokenizer) is what `recipes/ppo_max.py --reward_model_path` takes, and PPO-max initialises its
critic from it: the InstructGPT chain SFT -> ranked-list reward model -> PPO-max.
"""

import sys

from transformers import AutoModelForSequenceClassification
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import RankListRewardConfig, RankListRewardTrainer
from ppomax_trl.recipe_utils import load_splits, load_tokenizer, model_kwargs, train_and_save, use_trial_output_dir


def main(script_args: ScriptArguments, training_args: RankListRewardConfig, model_args: ModelConfig) -> None:
    use_trial_output_dir(training_args)
    tokenizer = load_tokenizer(model_args)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=1, **model_kwargs(model_args)
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # sequence classifiers find the last token through it
    train_dataset, eval_dataset = load_splits(script_args, training_args)

    trainer = RankListRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    train_and_save(trainer)


def parse_args(args: list[str] | None = None) -> tuple[ScriptArguments, RankListRewardConfig, ModelConfig]:
    return TrlParser((ScriptArguments, RankListRewardConfig, ModelConfig)).parse_args_and_config(args)[:3]


if __name__ == "__main__":
    main(*parse_args(sys.argv[1:]))
