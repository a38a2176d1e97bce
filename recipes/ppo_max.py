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

Tiny smoke run on CPU (`recipes/configs/ppo_max_tiny.yaml`; its model and data paths are placeholders to override):

```
python recipes/ppo_max.py --config recipes/configs/ppo_max_tiny.yaml \
    --model_name_or_path path/to/sft_model --reward_model_path path/to/reward_model --dataset_name path/to/prompts
```

Full-size run on GPUs (`recipes/configs/ppo_max.yaml`: PPO-max paper defaults on a 1.5B SFT model; any file in
`recipes/accelerate_configs/` works, and `--num_processes` overrides its process count):

```
accelerate launch --config_file recipes/accelerate_configs/single_gpu.yaml recipes/ppo_max.py \
    --config recipes/configs/ppo_max.yaml  # 1 GPU
accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_processes 8 recipes/ppo_max.py \
    --config recipes/configs/ppo_max.yaml  # 8 GPUs, ZeRO-3
```

or equivalently `ppomax-trl ppo --accelerate_config zero3 --num_processes 8 --config recipes/configs/ppo_max.yaml`.

`--trainer ppo_max` (default) parses a `PPOMaxConfig` and trains a `PPOMaxTrainer`: every PPO-max piece on by default.
`--trainer ppo` parses a `PPOConfig` (plain PPO defaults, the `trl.experimental.ppo` semantics) and trains a
`PPOTrainer`. The same flags work for both; only the defaults of the fields you do not set differ.

The reward is the reward model at `--reward_model_path` and/or the Python functions of `--reward_funcs`
(`module:function`, TRL's reward-function signature); pass `--reward_model_path none` to use functions only. The critic
is `--value_model_path` if given, else a trainable copy of the reward model (PPO-max), else the policy backbone with a
new value head. The dataset needs a prompt column (text or conversational); `--dataset_name` is a Hub name or a local
folder/file that `datasets.load_dataset` reads.
"""

import sys
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.recipe_utils import (
    load_rewards,
    load_splits,
    load_tokenizer,
    model_kwargs,
    train_and_save,
    use_trial_output_dir,
)


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
    use_trial_output_dir(training_args)
    kwargs = model_kwargs(model_args)
    tokenizer = load_tokenizer(model_args)
    policy = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    reward_model, reward_funcs = load_rewards(training_args.reward_model_path, script_args.reward_funcs, **kwargs)
    value_model = None
    if script_args.value_model_path:
        value_model = AutoModelForSequenceClassification.from_pretrained(
            script_args.value_model_path, num_labels=1, **kwargs
        )
    train_dataset, eval_dataset = load_splits(script_args, training_args, script_args.prompt_column)

    trainer_cls = PPOMaxTrainer if script_args.trainer == "ppo_max" else PPOTrainer
    trainer = trainer_cls(
        training_args,
        tokenizer,
        policy,
        None,  # reference policy: a frozen copy of the policy (or the adapter-free base with PEFT)
        reward_model,
        train_dataset,
        value_model,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
        reward_funcs=reward_funcs,
    )
    train_and_save(trainer)


def parse_args(args: list[str] | None = None) -> tuple[PPOScriptArguments, PPOConfig, ModelConfig]:
    """Parse with `PPOMaxConfig`, then again with `PPOConfig` for `--trainer ppo`, so each gets its own defaults."""
    parsed = TrlParser((PPOScriptArguments, PPOMaxConfig, ModelConfig)).parse_args_and_config(args)
    if parsed[0].trainer == "ppo":
        parsed = TrlParser((PPOScriptArguments, PPOConfig, ModelConfig)).parse_args_and_config(args)
    return parsed[:3]


if __name__ == "__main__":
    main(*parse_args(sys.argv[1:]))
