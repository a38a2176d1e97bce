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
Online UNA (critic-free RLHF by regression) on a prompt dataset, the TRL script way. Shipped in the wheel;
`recipes/una_online.py` in the repository runs this module.

Tiny smoke run on CPU, from any folder (`una_online_tiny`: tiny random models and prompts built in memory,
`tiny://...`):

```
ppomax-trl una-online --config una_online_tiny --output_dir una_online_tiny
```

Full-size run on GPUs (`una_online`: online UNA on a 1.5B SFT model; `--accelerate_config` takes a packaged
name, `single_gpu`, `multi_gpu`, `zero2` or `zero3`, or a path, and `--num_processes` overrides its process count):

```
ppomax-trl una-online --accelerate_config single_gpu --config una_online  # 1 GPU
ppomax-trl una-online --accelerate_config zero3 --num_processes 8 --config una_online  # 8 GPUs, ZeRO-3
```

or equivalently
`accelerate launch --config_file <accelerate config> -m ppomax_trl.recipes.una_online --config una_online`.
`--config` takes a path (relative to the current folder) or the name of a packaged config (`ppomax-trl recipes` lists
them with their paths, to copy one and edit it).

Trains an `OnlineUNATrainer` with an `OnlineUNAConfig` (rollout flags as in the `ppo_max` recipe, plus `--beta`,
`--una_reference`, `--loss`, `--score_normalizer`). No critic is built. The reward is the reward model at
`--reward_model_path` (a script argument here: `OnlineUNAConfig` has no such field) and/or the Python functions of
`--reward_funcs` (`module:function`, TRL's reward-function signature). The dataset needs a prompt column (text or
conversational); `--dataset_name` is a local `.jsonl`/`.json`/`.csv`/`.parquet` file, a folder of them, a
`save_to_disk` folder or a Hub id (`recipe_utils.load_data`). A reward model is used only when named.
"""

import sys
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer
from ppomax_trl.recipe_utils import (
    check_inputs,
    end_process_group,
    load_causal_lm,
    load_rewards,
    load_splits,
    load_tokenizer,
    model_kwargs,
    train_and_save,
    use_trial_output_dir,
)
from ppomax_trl.recipes import check_recipe_args, resolve_config_argument


@dataclass
class OnlineUNAScriptArguments(ScriptArguments):
    """Script arguments of the `una_online` recipe."""

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
    check_inputs(model_args, script_args, reward=(script_args.reward_model_path, script_args.reward_funcs))
    use_trial_output_dir(training_args)
    kwargs = model_kwargs(model_args)
    tokenizer = load_tokenizer(model_args)
    policy = load_causal_lm(model_args.model_name_or_path, **kwargs)
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


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((OnlineUNAScriptArguments, OnlineUNAConfig, ModelConfig), prog=prog, allow_abbrev=False)


def parse_args(args: list[str] | None = None) -> tuple[OnlineUNAScriptArguments, OnlineUNAConfig, ModelConfig]:
    """`--config` is a path or a packaged config's name (`una_online_tiny`)."""
    args = resolve_config_argument(sys.argv[1:] if args is None else args)
    parser = make_parser()
    check_recipe_args(parser, args)  # one line and exit 2 for a mistyped flag or config key
    return parser.parse_args_and_config(args)[:3]


if __name__ == "__main__":
    main(*parse_args())
    end_process_group()
