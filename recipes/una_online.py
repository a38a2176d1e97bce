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
Online UNA (critic-free RLHF by regression) on a prompt dataset, the TRL script way.

Single process (CPU or one GPU):

```
python recipes/una_online.py --config recipes/configs/una_online_tiny.yaml \
    --model_name_or_path path/to/sft_model --reward_model_path path/to/reward_model --dataset_name path/to/prompts
```

Multi-process through accelerate (pick any file in `recipes/accelerate_configs/`; `--num_processes` overrides it):

```
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/una_online.py \
    --config recipes/configs/una_online_tiny.yaml --model_name_or_path path/to/sft_model \
    --reward_model_path path/to/reward_model --dataset_name path/to/prompts
```

or equivalently `ppomax-trl una-online --accelerate_config multi_gpu <the same recipe flags>`.

Trains an `OnlineUNATrainer` with an `OnlineUNAConfig` (rollout flags as in `recipes/ppo_max.py`, plus `--beta`,
`--una_reference`, `--loss`, `--score_normalizer`). No critic is built. The reward is the reward model at
`--reward_model_path` (a script argument here: `OnlineUNAConfig` has no such field) and/or the Python functions of
`--reward_funcs` (`module:function`, TRL's reward-function signature). The dataset needs a prompt column (text or
conversational); `--dataset_name` is a Hub name or a local folder/file that `datasets.load_dataset` reads.
"""

import os
import sys
from dataclasses import dataclass, field

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer
from ppomax_trl.cli import import_function


@dataclass
class OnlineUNAScriptArguments(ScriptArguments):
    """Script arguments of `recipes/una_online.py`."""

    reward_model_path: str | None = field(
        default=None,
        metadata={"help": "Reward model checkpoint (a 1-label sequence classifier). None: `--reward_funcs` only."},
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions as `module:function` import paths, added to the reward model's score."},
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Dataset column holding the prompts."})


def main(script_args: OnlineUNAScriptArguments, training_args: OnlineUNAConfig, model_args: ModelConfig) -> None:
    if os.environ.get("WANDB_SWEEP_ID"):  # one output folder per sweep trial (house style §3.5)
        training_args.output_dir = f"{training_args.output_dir}-{os.environ['WANDB_RUN_ID']}"
    model_kwargs = dict(revision=model_args.model_revision, dtype=model_args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **model_kwargs)

    reward_model = None
    if script_args.reward_model_path and script_args.reward_model_path.lower() != "none":
        reward_model = AutoModelForSequenceClassification.from_pretrained(
            script_args.reward_model_path, num_labels=1, **model_kwargs
        )
    reward_funcs = [import_function(path) for path in script_args.reward_funcs or []] or None
    if reward_model is None and reward_funcs is None:
        raise ValueError("Give a reward: `--reward_model_path` and/or `--reward_funcs module:function`.")

    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    if script_args.prompt_column != "prompt":
        dataset = dataset.rename_column(script_args.prompt_column, "prompt")
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = dataset[script_args.dataset_test_split]

    trainer = OnlineUNATrainer(
        training_args,
        tokenizer,
        policy,
        None,  # reference policy: a frozen copy of the policy (or the adapter-free base with PEFT)
        reward_model,
        dataset[script_args.dataset_train_split],
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
        reward_funcs=reward_funcs,
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


def parse_args(args: list[str] | None = None) -> tuple[OnlineUNAScriptArguments, OnlineUNAConfig, ModelConfig]:
    return TrlParser((OnlineUNAScriptArguments, OnlineUNAConfig, ModelConfig)).parse_args_and_config(args)[:3]


if __name__ == "__main__":
    main(*parse_args(sys.argv[1:]))
