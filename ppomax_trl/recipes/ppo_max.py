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
PPO-max (or plain PPO) on a prompt dataset, the TRL script way. Shipped in the wheel; `recipes/ppo_max.py` in the
repository runs this module.

Tiny smoke run on CPU, from any folder (`ppo_max_tiny`: tiny random models and prompts built in memory, `tiny://...`):

```
ppomax-trl ppo --config ppo_max_tiny --output_dir ppo_max_tiny
```

Full-size run on GPUs (`ppo_max`: PPO-max paper defaults on a 1.5B SFT model; `--accelerate_config` takes a packaged
name, `single_gpu`, `multi_gpu`, `zero2` or `zero3`, or a path, and `--num_processes` overrides its process count):

```
ppomax-trl ppo --accelerate_config single_gpu --config ppo_max  # 1 GPU
ppomax-trl ppo --accelerate_config zero3 --num_processes 8 --config ppo_max  # 8 GPUs, ZeRO-3
```

or equivalently `accelerate launch --config_file <accelerate config> -m ppomax_trl.recipes.ppo_max --config ppo_max`.
`--config` takes a path (relative to the current folder) or the name of a packaged config (`ppomax-trl recipes` lists
them with their paths, to copy one and edit it).

`--trainer ppo_max` (default) parses a `PPOMaxConfig` and trains a `PPOMaxTrainer`: every PPO-max piece on by default.
`--trainer ppo` parses a `PPOConfig` (plain PPO defaults, the `trl.experimental.ppo` semantics) and trains a
`PPOTrainer`. The same flags work for both; only the defaults of the fields you do not set differ.

The reward is the reward model at `--reward_model_path` and/or the Python functions of `--reward_funcs`
(`module:function`, TRL's reward-function signature). A reward model is used only when named: this recipe's default is
none, not `PPOConfig`'s TRL 1.12 default (`EleutherAI/pythia-160m`), and a run that names neither stops before
loading anything. The policy is `--model_name_or_path` (or TRL 1.12's `--sft_model_path`). The critic
is `--value_model_path` if given, else a trainable copy of the reward model (PPO-max), else the policy backbone with a
new value head; with `--use_peft`, that critic gets a LoRA of the policy's shape (adapters only are saved). The
dataset needs a prompt column (text or conversational); `--dataset_name` is a local `.jsonl`/`.json`/`.csv`/`.parquet`
file, a folder of them, a `save_to_disk` folder or a Hub id (`recipe_utils.load_data`).
"""

import sys
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
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
class PPOScriptArguments(ScriptArguments):
    """Script arguments of the `ppo_max` recipe; `--reward_model_path` is the `PPOConfig` field of the same name."""

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
        metadata={
            "help": "Critic to start from: a 1-label sequence classifier folder (or a PEFT adapter of one), or an "
            "earlier run's output_dir (its value_model/). Default: a copy of the reward model (PPO-max), else the "
            "policy backbone with a new head; with --use_peft, that critic gets a LoRA of the policy's shape and only "
            "adapters are saved (pass the reward model's folder here for a full critic)."
        },
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Dataset column holding the prompts."})


def resolve_policy_path(training_args: PPOConfig, model_args: ModelConfig) -> None:
    """`--sft_model_path`, where TRL 1.12's PPO script loaded its policy from, names the policy (and tokenizer) when
    `--model_name_or_path` does not; naming both, differently, is an error."""
    sft_model_path = training_args.sft_model_path
    if sft_model_path is None or sft_model_path == model_args.model_name_or_path:
        return
    if model_args.model_name_or_path is not None:
        raise ValueError(
            f"Two policies: `--model_name_or_path {model_args.model_name_or_path}` and `--sft_model_path "
            f"{sft_model_path}` (TRL 1.12's name for it). Give one."
        )
    model_args.model_name_or_path = sft_model_path


def main(script_args: PPOScriptArguments, training_args: PPOConfig, model_args: ModelConfig) -> None:
    resolve_policy_path(training_args, model_args)
    check_inputs(model_args, script_args, reward=(training_args.reward_model_path, script_args.reward_funcs))
    use_trial_output_dir(training_args)
    kwargs = model_kwargs(model_args)
    tokenizer = load_tokenizer(model_args)
    policy = load_causal_lm(model_args.model_name_or_path, **kwargs)
    reward_model, reward_funcs = load_rewards(training_args.reward_model_path, script_args.reward_funcs, **kwargs)
    train_dataset, eval_dataset = load_splits(script_args, training_args, script_args.prompt_column)

    trainer_cls = PPOMaxTrainer if script_args.trainer == "ppo_max" else PPOTrainer
    trainer = trainer_cls(
        training_args,
        tokenizer,
        policy,
        None,  # reference policy: a frozen copy of the policy (or the adapter-free base with PEFT)
        reward_model,
        train_dataset,
        script_args.value_model_path,  # a folder: the trainer loads the critic (or an earlier run's value_model/)
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
        reward_funcs=reward_funcs,
    )
    train_and_save(trainer)


def make_parser(prog: str | None = None, config_class: type[PPOConfig] = PPOMaxConfig) -> TrlParser:
    """The recipe's parser with `PPOMaxConfig` defaults (what `--help` shows; `--trainer ppo` swaps in `PPOConfig`).

    `reward_model_path` and `sft_model_path` default to None here: the config fields keep TRL 1.12's
    `EleutherAI/pythia-160m` (what its example script read), but the recipe uses a reward model only when one is named.
    """
    parser = TrlParser((PPOScriptArguments, config_class, ModelConfig), prog=prog, allow_abbrev=False)
    parser.set_defaults(reward_model_path=None, sft_model_path=None)
    return parser


def parse_args(args: list[str] | None = None) -> tuple[PPOScriptArguments, PPOConfig, ModelConfig]:
    """Parse with `PPOMaxConfig`, then again with `PPOConfig` for `--trainer ppo`, so each gets its own defaults.
    `--config` is a path or a packaged config's name (`ppo_max_tiny`)."""
    args = resolve_config_argument(sys.argv[1:] if args is None else args)
    parser = make_parser()
    check_recipe_args(parser, args)  # one line and exit 2 for a mistyped flag or config key
    parsed = parser.parse_args_and_config(args)
    if parsed[0].trainer == "ppo":
        parsed = make_parser(config_class=PPOConfig).parse_args_and_config(args)
    return parsed[:3]


if __name__ == "__main__":
    main(*parse_args())
    end_process_group()
