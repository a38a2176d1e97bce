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
"""One configuration of `tests/test_configurations.py` on several processes, for `test_distributed.py`.

    accelerate launch --config_file recipes/accelerate_configs/ci/ddp.yaml --num_processes 2 \
        tests/distributed/config_script.py --output_dir /tmp/out --trainer ppomax --precision bf16 \
        --tokenizer pad_eq_eos --schedule linear_warmup

Same tiny models, batch layout (4 rollouts per process as 2 micro-batches of 2, 2 PPO epochs) and probes
(`config_probes.py`) as the single-process tests; 2 updates (after PPO-max's 2 critic warm-up steps). Every process
writes what it saw, checked by the test:

- `rank{i}.json`: the first-minibatch report per update, the rollout scores that differ from the reward model's own
  forward, what after a stop token reached a loss, what moved in the critic warm-up, the dtypes of the policy's LM
  head in the update forwards, and sha256 digests of the trained policy and critic;
- `rank{i}.pt`: the trained policy and critic weights as this process holds them.
"""

import argparse
import json
import os

import pytest
import torch
from config_probes import (
    CRITIC_WARMUP_STEPS,
    PRECISIONS,
    SCHEDULES,
    TOKENIZERS,
    LossProbe,
    WarmupProbe,
    after_stop_problems,
    build_trainer,
    config_kwargs,
    digest,
    first_minibatch_report,
    later_minibatch_moved,
    make_tokenizer,
    score_mismatches,
    warmup_problems,
)

from ppomax_trl.recipe_utils import end_process_group


PROMPTS = ["the movie was", "i loved", "what a", "the food", "a good cast", "the film", "the acting", "a bad"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--trainer", choices=["ppo", "ppomax", "una"], default="ppomax")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default="pad_ne_eos")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="linear")
    return parser.parse_args()


def _weights(module: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
    if module is None:
        return None
    return {name: param.detach().cpu().clone() for name, param in module.named_parameters()}


def main() -> None:
    cli = parse_args()
    tokenizer = make_tokenizer(cli.tokenizer)
    kwargs = config_kwargs(cli.trainer, cli.precision, cli.schedule)
    kwargs.update(
        output_dir=cli.output_dir,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to="none",
        total_episodes=16,  # 2 updates of 4 rollouts on each of 2 processes
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
    )
    trainer = build_trainer(cli.trainer, kwargs, tokenizer, PROMPTS)
    warmup = None
    if cli.trainer == "ppomax":
        warmup = WarmupProbe(trainer, CRITIC_WARMUP_STEPS)
        trainer.add_callback(warmup)
    with pytest.MonkeyPatch.context() as monkeypatch:
        probe = LossProbe(monkeypatch, trainer)
        try:
            trainer.train()
        finally:
            probe.remove_hooks()

    acc = trainer.accelerator
    wrapper = acc.unwrap_model(trainer.model_wrapped)
    trained = {"policy": _weights(wrapper.policy), "value_model": _weights(wrapper.value_model)}
    reward_model = getattr(trainer.reward_model, "module", trainer.reward_model)  # a DeepSpeed engine under ZeRO
    after_stop, num_after_stop = after_stop_problems(probe, tokenizer.eos_token_id)
    report = {
        "process_index": acc.process_index,
        "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "zero_stage": acc.state.deepspeed_plugin.zero_stage if trainer.is_deepspeed_enabled else None,
        "mixed_precision": acc.mixed_precision,
        "global_step": trainer.state.global_step,
        "num_updates": trainer.args.num_total_batches,
        "critic_warmup_steps": CRITIC_WARMUP_STEPS if cli.trainer == "ppomax" else 0,
        "first_minibatch": {str(step): values for step, values in first_minibatch_report(probe).items()},
        "later_minibatch_moved": later_minibatch_moved(probe),
        "score_mismatches": score_mismatches(probe, reward_model, acc.autocast if cli.precision == "bf16" else None),
        "after_stop_problems": after_stop,
        "num_after_stop": num_after_stop,
        "warmup_problems": None,
        "update_head_dtypes": sorted(str(dtype) for dtype in probe.policy_output_dtypes["update"]),
        "policy_digest": digest(trained["policy"]),
        "value_digest": digest(trained["value_model"]) if trained["value_model"] is not None else None,
    }
    if warmup is not None:
        report["warmup_problems"] = warmup_problems(warmup, probe)
    with open(os.path.join(cli.output_dir, f"rank{acc.process_index}.json"), "w") as f:
        json.dump(report, f, indent=2)
    torch.save(trained, os.path.join(cli.output_dir, f"rank{acc.process_index}.pt"))
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
    end_process_group()  # a gloo group left to interpreter shutdown can abort a finished rank
