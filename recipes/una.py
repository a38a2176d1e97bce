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
Offline UNA (pairwise, binary and score feedback) on a local or Hub dataset, the TRL script way.

Tiny smoke run on CPU (`recipes/configs/una_tiny.yaml`; its model and data paths are placeholders to override):

```
python recipes/una.py --config recipes/configs/una_tiny.yaml \
    --model_name_or_path path/to/sft_model --dataset_name path/to/feedback --output_dir path/to/una_model
```

Full-size run on GPUs (`recipes/configs/una.yaml`: UNA on a 1.5B SFT model; any file in `recipes/accelerate_configs/`
works, and `--num_processes` overrides its process count):

```
accelerate launch --config_file recipes/accelerate_configs/single_gpu.yaml recipes/una.py \
    --config recipes/configs/una.yaml  # 1 GPU
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml --num_processes 8 recipes/una.py \
    --config recipes/configs/una.yaml  # 8 GPUs, DDP
```

or equivalently `ppomax-trl una --accelerate_config multi_gpu --num_processes 8 --config recipes/configs/una.yaml`.

Trains a `UNATrainer` with a `UNAConfig` (`--beta`, `--binary_loss`, `--score_loss`, `--score_normalizer`, ...). The
rows may mix TRL's preference rows (`prompt`/`chosen`/`rejected`), unpaired rows (`prompt`/`completion`/`label`) and
scored rows (`prompt`/`completion`/`score`); `--dataset_name` is a Hub name or a local folder/file that
`datasets.load_dataset` reads. The reference policy is `--ref_model_path` if given, else a frozen copy of the policy
(the adapter-free base with PEFT).
"""

import sys
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import UNAConfig, UNATrainer
from ppomax_trl.recipe_utils import load_splits, load_tokenizer, model_kwargs, train_and_save, use_trial_output_dir


@dataclass
class UNAScriptArguments(ScriptArguments):
    """Script arguments of `recipes/una.py`."""

    ref_model_path: str | None = field(
        default=None, metadata={"help": "Reference policy checkpoint. Default: a frozen copy of the policy."}
    )


def main(script_args: UNAScriptArguments, training_args: UNAConfig, model_args: ModelConfig) -> None:
    use_trial_output_dir(training_args)
    kwargs = model_kwargs(model_args)
    tokenizer = load_tokenizer(model_args)
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    ref_model = None
    if script_args.ref_model_path:
        ref_model = AutoModelForCausalLM.from_pretrained(script_args.ref_model_path, **kwargs)
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


def parse_args(args: list[str] | None = None) -> tuple[UNAScriptArguments, UNAConfig, ModelConfig]:
    return TrlParser((UNAScriptArguments, UNAConfig, ModelConfig)).parse_args_and_config(args)[:3]


if __name__ == "__main__":
    main(*parse_args(sys.argv[1:]))
