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

"""
Rank-list (K-wise, InstructGPT) reward-model training on a dataset of ranked lists, the TRL script way. Shipped in
the wheel; `recipes/reward_rank.py` in the repository runs this module.

Tiny smoke run on CPU, from any folder (`reward_rank_tiny`: a tiny random model and ranked lists built in memory,
`tiny://...`):

```
ppomax-trl reward --config reward_rank_tiny --output_dir reward_rank_tiny
```

Full-size run on GPUs (`reward_rank`: a reward model on the 1.5B SFT model; `--accelerate_config` takes a packaged
name, `single_gpu`, `multi_gpu`, `zero2` or `zero3`, or a path, and `--num_processes` overrides its process count):

```
ppomax-trl reward --accelerate_config single_gpu --config reward_rank  # 1 GPU
ppomax-trl reward --accelerate_config multi_gpu --num_processes 8 --config reward_rank  # 8 GPUs, DDP
```

or equivalently
`accelerate launch --config_file <accelerate config> -m ppomax_trl.recipes.reward_rank --config reward_rank`.
`--config` takes a path (relative to the current folder) or the name of a packaged config (`ppomax-trl recipes` lists
them with their paths, to copy one and edit it).

Trains a `RankListRewardTrainer` with a `RankListRewardConfig` (every `trl.RewardConfig` flag plus `--loss_type`,
`--ties`, `--margin_scale`, `--listnet_temperature`). The model is
`AutoModelForSequenceClassification.from_pretrained(model_name_or_path, num_labels=1)`; the dataset rows are `prompt`
+ `completions` (a list, best first) with optional `scores` (higher is better, any order), or TRL's
`chosen`/`rejected` pairs; `--dataset_name` is a local `.jsonl`/`.json`/`.csv`/`.parquet` file, a folder of them, a
`save_to_disk` folder or a Hub id (`recipe_utils.load_data`).
The saved `output_dir` (model and tokenizer) is what the `ppo_max` recipe's `--reward_model_path` takes, and PPO-max
initialises its critic from it: the InstructGPT chain SFT -> ranked-list reward model -> PPO-max.
"""

import sys

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import RankListRewardConfig, RankListRewardTrainer
from ppomax_trl.recipe_utils import (
    check_inputs,
    end_process_group,
    load_sequence_classifier,
    load_splits,
    load_tokenizer,
    model_kwargs,
    train_and_save,
    use_trial_output_dir,
)
from ppomax_trl.recipes import check_recipe_args, resolve_config_argument


def main(script_args: ScriptArguments, training_args: RankListRewardConfig, model_args: ModelConfig) -> None:
    check_inputs(model_args, script_args)
    use_trial_output_dir(training_args)
    tokenizer = load_tokenizer(model_args)
    model = load_sequence_classifier(model_args.model_name_or_path, **model_kwargs(model_args))
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


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((ScriptArguments, RankListRewardConfig, ModelConfig), prog=prog, allow_abbrev=False)


def parse_args(args: list[str] | None = None) -> tuple[ScriptArguments, RankListRewardConfig, ModelConfig]:
    """`--config` is a path or a packaged config's name (`reward_rank_tiny`)."""
    args = resolve_config_argument(sys.argv[1:] if args is None else args)
    parser = make_parser()
    check_recipe_args(parser, args)  # one line and exit 2 for a mistyped flag or config key
    return parser.parse_args_and_config(args)[:3]


if __name__ == "__main__":
    main(*parse_args())
    end_process_group()
