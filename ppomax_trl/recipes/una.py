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
Offline UNA (pairwise, binary and score feedback) on a local or Hub dataset, the TRL script way. Shipped in the wheel;
`recipes/una.py` in the repository runs this module.

Tiny smoke run on CPU, from any folder (`una_tiny`: a tiny random policy and mixed feedback rows built in memory,
`tiny://...`):

```
ppomax-trl una --config una_tiny --output_dir una_tiny
```

Full-size run on GPUs (`una`: UNA on a 1.5B SFT model; `--accelerate_config` takes a packaged
name, `single_gpu`, `multi_gpu`, `zero2` or `zero3`, or a path, and `--num_processes` overrides its process count):

```
ppomax-trl una --accelerate_config single_gpu --config una  # 1 GPU
ppomax-trl una --accelerate_config multi_gpu --num_processes 8 --config una  # 8 GPUs, DDP
```

or equivalently `accelerate launch --config_file <accelerate config> -m ppomax_trl.recipes.una --config una`.
`--config` takes a path (relative to the current folder) or the name of a packaged config (`ppomax-trl recipes` lists
them with their paths, to copy one and edit it).

Trains a `UNATrainer` with a `UNAConfig` (`--beta`, `--binary_loss`, `--score_loss`, `--score_normalizer`, ...). The
rows may mix TRL's preference rows (`prompt`/`chosen`/`rejected`), unpaired rows (`prompt`/`completion`/`label`) and
scored rows (`prompt`/`completion`/`score`); `--dataset_name` is a local `.jsonl`/`.json`/`.csv`/`.parquet` file, a
folder of them, a `save_to_disk` folder or a Hub id (`recipe_utils.load_data`). The reference policy is
`--ref_model_path` if given, else a frozen copy of the policy (the adapter-free base with PEFT).
"""

import sys
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import UNAConfig, UNATrainer
from ppomax_trl.recipe_utils import (
    check_inputs,
    end_process_group,
    load_causal_lm,
    load_splits,
    load_tokenizer,
    model_kwargs,
    train_and_save,
    use_trial_output_dir,
)
from ppomax_trl.recipes import check_recipe_args, resolve_config_argument


@dataclass
class UNAScriptArguments(ScriptArguments):
    """Script arguments of the `una` recipe."""

    ref_model_path: str | None = field(
        default=None, metadata={"help": "Reference policy checkpoint. Default: a frozen copy of the policy."}
    )


def main(script_args: UNAScriptArguments, training_args: UNAConfig, model_args: ModelConfig) -> None:
    check_inputs(model_args, script_args)
    use_trial_output_dir(training_args)
    kwargs = model_kwargs(model_args)
    tokenizer = load_tokenizer(model_args)
    model = load_causal_lm(model_args.model_name_or_path, **kwargs)
    ref_model = None
    if script_args.ref_model_path:
        ref_model = load_causal_lm(script_args.ref_model_path, **kwargs)
    train_dataset, eval_dataset = load_splits(script_args, training_args)

    trainer = UNATrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    train_and_save(trainer)


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((UNAScriptArguments, UNAConfig, ModelConfig), prog=prog, allow_abbrev=False)


def parse_args(args: list[str] | None = None) -> tuple[UNAScriptArguments, UNAConfig, ModelConfig]:
    """`--config` is a path or a packaged config's name (`una_tiny`)."""
    args = resolve_config_argument(sys.argv[1:] if args is None else args)
    parser = make_parser()
    check_recipe_args(parser, args)  # one line and exit 2 for a mistyped flag or config key
    return parser.parse_args_and_config(args)[:3]


if __name__ == "__main__":
    main(*parse_args())
    end_process_group()
