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

Tiny smoke run on CPU (`recipes/configs/una_online_tiny.yaml`; its model and data paths are placeholders to override):

```
python recipes/una_online.py --config recipes/configs/una_online_tiny.yaml \
    --model_name_or_path path/to/sft_model --reward_model_path path/to/reward_model --dataset_name path/to/prompts
```

Full-size run on GPUs (`recipes/configs/una_online.yaml`: online UNA on a 1.5B SFT model; any file in
`recipes/accelerate_configs/` works, and `--num_processes` overrides its process count):

```
accelerate launch --config_file recipes/accelerate_configs/single_gpu.yaml recipes/una_online.py \
    --config recipes/configs/una_online.yaml  # 1 GPU
accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_processes 8 recipes/una_online.py \
    --config recipes/configs/una_online.yaml  # 8 GPUs, ZeRO-3
```

or equivalently
`ppomax-trl una-online --accelerate_config zero3 --num_processes 8 --config recipes/configs/una_online.yaml`.

Trains an `OnlineUNATrainer` with an `OnlineUNAConfig` (rollout flags as in `recipes/ppo_max.py`, plus `--beta`,
`--una_reference`, `--loss`, `--score_normalizer`). No critic is built. The reward is the reward model at
`--reward_model_path` (a script argument here: `OnlineUNAConfig` has no such field) and/or the Python functions of
`--reward_funcs` (`module:function`, TRL's reward-function signature). The dataset needs a prompt column (text or
conversational); `--dataset_name` is a Hub name or a local folder/file that `datasets.load_dataset` reads.
"""

import sys
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer
from ppomax_trl.recipe_utils import (
    load_rewards,
    load_splits,
    load_tokenizer,
    model_kwargs,
    train_and_save,
    use_trial_output_dir,
)


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
    use_trial_output_dir(training_args)
    kwargs = model_kwargs(model_args)
    tokenizer = load_tokenizer(model_args)
    policy = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    reward_model, reward_funcs = load_rewards(script_args.reward_model_path, script_args.reward_funcs, **kwargs)
    train_dataset, eval_dataset = load_splits(script_args, training_args, script_args.prompt_column)

    trainer = OnlineUNATrainer(
        training_args,
        tokenizer,
        policy,
        None,  # reference policy: a frozen copy of the policy (or the adapter-free base with PEFT)
        reward_model,
        train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
        reward_funcs=reward_funcs,
    )
    train_and_save(trainer)


def parse_args(args: list[str] | None = None) -> tuple[OnlineUNAScriptArguments, OnlineUNAConfig, ModelConfig]:
    return TrlParser((OnlineUNAScriptArguments, OnlineUNAConfig, ModelConfig)).parse_args_and_config(args)[:3]


if __name__ == "__main__":
    main(*parse_args(sys.argv[1:]))
