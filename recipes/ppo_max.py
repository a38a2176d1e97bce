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
PPO-max (or plain PPO) on a prompt dataset, the TRL script way.

Single process (CPU or one GPU):

```
python recipes/ppo_max.py --config recipes/configs/ppo_max_tiny.yaml \
    --model_name_or_path path/to/sft_model --reward_model_path path/to/reward_model --dataset_name path/to/prompts
```

Multi-process through accelerate (pick any file in `recipes/accelerate_configs/`; `--num_processes` overrides it):

```
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/ppo_max.py \
    --config recipes/configs/ppo_max_tiny.yaml --model_name_or_path path/to/sft_model \
    --reward_model_path path/to/reward_model --dataset_name path/to/prompts
```

or equivalently `ppomax-trl ppo --accelerate_config multi_gpu <the same recipe flags>`.

`--trainer ppo_max` (default) parses a `PPOMaxConfig` and trains a `PPOMaxTrainer`: every PPO-max piece on by default.
`--trainer ppo` parses a `PPOConfig` (plain PPO defaults, the `trl.experimental.ppo` semantics) and trains a
`PPOTrainer`. The same flags work for both; only the defaults of the fields you do not set differ.

The reward is the reward model at `--reward_model_path` and/or the Python functions of `--reward_funcs`
(`module:function`, TRL's reward-function signature); pass `--reward_model_path none` to use functions only. The critic
is `--value_model_path` if given, else a trainable copy of the reward model (PPO-max), else the policy backbone with a
new value head. The dataset needs a prompt column (text or conversational); `--dataset_name` is a Hub name or a local
folder/file that `datasets.load_dataset` reads.
"""

import os
import sys
from dataclasses import dataclass, field

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.cli import import_function


@dataclass
class PPOScriptArguments(ScriptArguments):
    """Script arguments of `recipes/ppo_max.py`; `--reward_model_path` is the `PPOConfig` field of the same name."""

    trainer: str = field(
        default="ppo_max",
        metadata={
            "help": "`ppo_max`: PPOMaxTrainer with PPOMaxConfig defaults; `ppo`: PPOTrainer with plain PPOConfig "
            "defaults.",
            "choices": ["ppo_max", "ppo"],
        },
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions as `module:function` import paths, added to the reward model's score."},
    )
    value_model_path: str | None = field(
        default=None,
        metadata={"help": "Critic checkpoint (a 1-label sequence classifier). Default: built from the reward model."},
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Dataset column holding the prompts."})


def main(script_args: PPOScriptArguments, training_args: PPOConfig, model_args: ModelConfig) -> None:
    if os.environ.get("WANDB_SWEEP_ID"):  # one output folder per sweep trial (house style §3.5)
        training_args.output_dir = f"{training_args.output_dir}-{os.environ['WANDB_RUN_ID']}"
    model_kwargs = dict(revision=model_args.model_revision, dtype=model_args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **model_kwargs)

    reward_model = None
    if training_args.reward_model_path and training_args.reward_model_path.lower() != "none":
        reward_model = AutoModelForSequenceClassification.from_pretrained(
            training_args.reward_model_path, num_labels=1, **model_kwargs
        )
    value_model = None
    if script_args.value_model_path:
        value_model = AutoModelForSequenceClassification.from_pretrained(
            script_args.value_model_path, num_labels=1, **model_kwargs
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

    trainer_cls = PPOMaxTrainer if script_args.trainer == "ppo_max" else PPOTrainer
    trainer = trainer_cls(
        training_args,
        tokenizer,
        policy,
        None,  # reference policy: a frozen copy of the policy (or the adapter-free base with PEFT)
        reward_model,
        dataset[script_args.dataset_train_split],
        value_model,
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


def parse_args(args: list[str] | None = None) -> tuple[PPOScriptArguments, PPOConfig, ModelConfig]:
    """Parse with `PPOMaxConfig`, then again with `PPOConfig` for `--trainer ppo`, so each gets its own defaults."""
    parsed = TrlParser((PPOScriptArguments, PPOMaxConfig, ModelConfig)).parse_args_and_config(args)
    if parsed[0].trainer == "ppo":
        parsed = TrlParser((PPOScriptArguments, PPOConfig, ModelConfig)).parse_args_and_config(args)
    return parsed[:3]


if __name__ == "__main__":
    main(*parse_args(sys.argv[1:]))
