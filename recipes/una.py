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

Single process (CPU or one GPU):

```
python recipes/una.py --config recipes/configs/una_tiny.yaml \
    --model_name_or_path path/to/sft_model --dataset_name path/to/feedback --output_dir path/to/una_model
```

Multi-process through accelerate (pick any file in `recipes/accelerate_configs/`; `--num_processes` overrides it):

```
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/una.py \
    --config recipes/configs/una_tiny.yaml --model_name_or_path path/to/sft_model \
    --dataset_name path/to/feedback --output_dir path/to/una_model
```

or equivalently `ppomax-trl una --accelerate_config multi_gpu <the same recipe flags>`.

Trains a `UNATrainer` with a `UNAConfig` (`--beta`, `--binary_loss`, `--score_loss`, `--score_normalizer`, ...). The
rows may mix TRL's preference rows (`prompt`/`chosen`/`rejected`), unpaired rows (`prompt`/`completion`/`label`) and
scored rows (`prompt`/`completion`/`score`); `--dataset_name` is a Hub name or a local folder/file that
`datasets.load_dataset` reads. The reference policy is `--ref_model_path` if given, else a frozen copy of the policy
(the adapter-free base with PEFT).
"""

import os
import sys
from dataclasses import dataclass, field

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ppomax_trl import UNAConfig, UNATrainer


@dataclass
class UNAScriptArguments(ScriptArguments):
    """Script arguments of `recipes/una.py`."""

    ref_model_path: str | None = field(
        default=None, metadata={"help": "Reference policy checkpoint. Default: a frozen copy of the policy."}
    )


def main(script_args: UNAScriptArguments, training_args: UNAConfig, model_args: ModelConfig) -> None:
    if os.environ.get("WANDB_SWEEP_ID"):  # one output folder per sweep trial (house style §3.5)
        training_args.output_dir = f"{training_args.output_dir}-{os.environ['WANDB_RUN_ID']}"
    model_kwargs = dict(revision=model_args.model_revision, dtype=model_args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **model_kwargs)
    ref_model = None
    if script_args.ref_model_path:
        ref_model = AutoModelForCausalLM.from_pretrained(script_args.ref_model_path, **model_kwargs)

    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = dataset[script_args.dataset_test_split]

    trainer = UNATrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
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


def parse_args(args: list[str] | None = None) -> tuple[UNAScriptArguments, UNAConfig, ModelConfig]:
    return TrlParser((UNAScriptArguments, UNAConfig, ModelConfig)).parse_args_and_config(args)[:3]


if __name__ == "__main__":
    main(*parse_args(sys.argv[1:]))
