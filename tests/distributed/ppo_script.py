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
"""Tiny multi-process PPO / PPO-max run for `test_distributed.py`, launched with `accelerate launch`.

    accelerate launch --config_file recipes/accelerate_configs/ci/zero2.yaml --num_processes 2 \
        tests/distributed/ppo_script.py --output_dir /tmp/out --trainer ppomax

Everything is built offline from configs with fixed seeds. It runs `train()`, `evaluate()` and
`generate_completions()` on 5 held-out prompts (an uneven split over 2 processes), then `save_model()`, and writes,
next to the saved model:

- `rank{i}.json` (every process): the running reward moments and step counters that process holds, and sha256
  digests of the trained policy and critic it holds;
- `rank{i}_trained_state.pt` (every process): those trained policy and critic weights, gathered under ZeRO-3;
- `report.json` (main process): log history, eval metrics and completions, batch sizes, and how far the policy, the
  critic and the trainer-built reference (and critic, with `--critic reward|policy`) are from their sources;
- `initial_state.pt` / `trained_state.pt` (main process): the policy and critic weights before training and after
  it, read from the live (gathered, under ZeRO-3) modules, independently of `save_model`.
"""

import argparse
import contextlib
import json
import os

import torch
from config_probes import digest
from datasets import Dataset
from transformers import TrainerCallback

from ppomax_trl import PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.recipe_utils import end_process_group
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


PROMPTS = ["the movie was", "i loved", "what a", "the food", "a good cast", "the film", "the acting", "a bad"]
EVAL_PROMPTS = ["the cast", "i hated", "a fine plot", "the service", "what a lovely"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--trainer", choices=["ppo", "ppomax"], default="ppomax")
    parser.add_argument("--no_save", action="store_true", help="Skip `trainer.save_model()`.")
    parser.add_argument("--per_device_train_batch_size", type=int, default=2)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument(
        "--from_pretrained",
        action="store_true",
        help="Save the tiny models, create the config, then reload them with `from_pretrained` (under ZeRO-3 with "
        "`zero3_init_flag`, they load already partitioned).",
    )
    parser.add_argument(
        "--critic",
        choices=["given", "reward", "policy"],
        default="given",
        help="given: pass a value model; reward: let the trainer copy the reward model; policy: no reward model "
        "(a reward function instead), the trainer builds the critic from the policy backbone.",
    )
    parser.add_argument(
        "--no_ds3_gather", action="store_true", help="Generate from the sharded ZeRO-3 policy (no gathering)."
    )
    return parser.parse_args()


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full copy of the weights; ZeRO-3 partitioned ones are gathered (a collective: call it on every rank)."""
    params = dict(module.named_parameters())
    context = contextlib.nullcontext()
    if any(hasattr(param, "ds_id") for param in params.values()):
        import deepspeed

        context = deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None)
    with context:
        return {name: param.detach().clone().cpu() for name, param in params.items()}


def _max_abs_diff(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    return max(float((state[key] - reference[key]).abs().max()) for key in reference)


def _norm(state: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in state.values())))


class WarmupSnapshot(TrainerCallback):
    """Copies the policy weights at the end of the critic warm-up (they must still equal the initial ones)."""

    def __init__(self) -> None:
        self.trainer, self.policy = None, None

    def on_step_end(self, args, state, control, **kwargs):
        warmup_steps = getattr(args, "critic_warmup_steps", 0)
        if warmup_steps > 0 and state.global_step == warmup_steps:
            trainer = self.trainer
            wrapper = trainer.accelerator.unwrap_model(trainer.model_wrapped)
            self.policy = _state(wrapper.policy)
        return control


def _length_reward(prompts, completions, **kwargs) -> list[float]:
    return [len(completion) / 10 for completion in completions]


def main() -> None:
    cli = parse_args()
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    # models first: once a config exists under `zero3_init_flag`, transformers builds sub-models inside
    # `deepspeed.zero.Init`, and a directly constructed `Qwen2ForSequenceClassification` cannot initialise its
    # partitioned embedding (`from_pretrained` after the config is the supported ZeRO-3 path)
    policy = tiny_causal_lm(tokenizer, seed=0)
    reward_model = tiny_reward_model(tokenizer, seed=1)
    value_model = tiny_reward_model(tokenizer, seed=2)
    initial = {"policy": _state(policy), "reward_model": _state(reward_model), "value_model": _state(value_model)}
    common = dict(
        output_dir=cli.output_dir,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=cli.per_device_train_batch_size,
        gradient_accumulation_steps=cli.gradient_accumulation_steps,
        ds3_gather_for_generation=not cli.no_ds3_gather,
        response_length=5,
        total_episodes=8,
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-3,
        weight_decay=0.01,  # AdamW then moves every parameter, so a policy frozen in the critic warm-up must have lr 0
        seed=0,
    )
    if cli.trainer == "ppomax":
        args = PPOMaxConfig(**common, value_learning_rate=1e-3, critic_warmup_steps=1)
        trainer_cls = PPOMaxTrainer
    else:
        args = PPOConfig(**common)
        trainer_cls = PPOTrainer

    if cli.from_pretrained:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        folder = os.path.join(cli.output_dir, "initial_models")
        for name, model in (("policy", policy), ("reward_model", reward_model), ("value_model", value_model)):
            model.save_pretrained(os.path.join(folder, name), is_main_process=args.process_index == 0)
        args.distributed_state.wait_for_everyone()
        policy = AutoModelForCausalLM.from_pretrained(os.path.join(folder, "policy"))
        reward_model = AutoModelForSequenceClassification.from_pretrained(os.path.join(folder, "reward_model"))
        value_model = AutoModelForSequenceClassification.from_pretrained(os.path.join(folder, "value_model"))

    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in PROMPTS]})
    # 5 held-out prompts: an uneven split over 2 processes (3 + 2), which `evaluate` must pad and drop again
    eval_dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in EVAL_PROMPTS]})

    kwargs = {}
    if cli.critic != "given":
        value_model = None
    if cli.critic == "policy":  # no reward model: the critic is the policy backbone with a new head
        reward_model, kwargs["reward_funcs"] = None, _length_reward
    snapshot = WarmupSnapshot()
    trainer = trainer_cls(
        args,
        tokenizer,
        policy,
        None,
        reward_model,
        dataset,
        value_model,
        eval_dataset=eval_dataset,
        callbacks=[snapshot],
        **kwargs,
    )
    snapshot.trainer = trainer
    # reference: a frozen copy of the policy made by the trainer (a DeepSpeed engine under ZeRO)
    ref_model = getattr(trainer.ref_model, "module", trainer.ref_model)
    ref_init_max_diff = _max_abs_diff(_state(ref_model), initial["policy"])
    critic_init_max_diff = None
    if cli.critic != "given":
        critic = _state(trainer.model.value_model)
        source = initial["reward_model"] if cli.critic == "reward" else initial["policy"]
        critic_init_max_diff = _max_abs_diff(critic, {k: v for k, v in source.items() if k in critic})
        initial["value_model"] = critic
    trainer.train()
    eval_metrics = trainer.evaluate()
    completions = trainer.generate_completions()
    if not cli.no_save:
        trainer.save_model()

    wrapper = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    trained = {"policy": _state(wrapper.policy), "value_model": _state(wrapper.value_model)}

    acc = trainer.accelerator
    rank_report = {
        "process_index": acc.process_index,
        "num_processes": acc.num_processes,
        "reward_moments": trainer.reward_moments.state_dict(),
        "global_step": trainer.state.global_step,
        "critic_warmup_done": trainer.critic_warmup_done,
        "episode": trainer.episode,
        "policy_digest": digest(trained["policy"]),
        "value_digest": digest(trained["value_model"]),
    }
    with open(os.path.join(cli.output_dir, f"rank{acc.process_index}.json"), "w") as f:
        json.dump(rank_report, f, indent=2)
    torch.save(trained, os.path.join(cli.output_dir, f"rank{acc.process_index}_trained_state.pt"))
    if acc.is_main_process:
        report = {
            "trainer": cli.trainer,
            "distributed_type": str(acc.distributed_type),
            "zero_stage": acc.state.deepspeed_plugin.zero_stage if trainer.is_deepspeed_enabled else None,
            "num_processes": acc.num_processes,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "batch_size": args.batch_size,
            "local_batch_size": args.local_batch_size,
            "global_step": trainer.state.global_step,
            "critic_warmup_steps": getattr(args, "critic_warmup_steps", 0),
            "max_grad_norm": args.max_grad_norm,
            # DeepSpeed clips inside `engine.step()` with its own config value, filled from `max_grad_norm`
            "deepspeed_gradient_clipping": (
                trainer.model_wrapped.gradient_clipping() if trainer.is_deepspeed_enabled else None
            ),
            "log_history": trainer.state.log_history,
            "policy_norm_before": _norm(initial["policy"]),
            "policy_norm_after": _norm(trained["policy"]),
            "policy_max_abs_change": _max_abs_diff(trained["policy"], initial["policy"]),
            "value_max_abs_change": _max_abs_diff(trained["value_model"], initial["value_model"]),
            "eval_metrics": eval_metrics,
            "eval_rows": len(EVAL_PROMPTS),
            "completions": completions,
            "ref_init_max_abs_diff": ref_init_max_diff,
            "critic": cli.critic,
            # critic built by the trainer: max |difference| to the weights it was copied from (reward model or
            # policy backbone), read before training
            "critic_init_max_abs_diff": critic_init_max_diff,
        }
        if snapshot.policy is not None:
            report["policy_max_abs_change_in_warmup"] = _max_abs_diff(snapshot.policy, initial["policy"])
        with open(os.path.join(cli.output_dir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        initial.pop("reward_model")
        torch.save(initial, os.path.join(cli.output_dir, "initial_state.pt"))
        torch.save(trained, os.path.join(cli.output_dir, "trained_state.pt"))
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
    end_process_group()  # a gloo group left to interpreter shutdown can abort a finished rank
