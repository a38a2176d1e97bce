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
"""Runs for `test_normalisation.py`: decisions and losses that must not depend on how a batch is spread over processes.

    python tests/distributed/normalisation_script.py --output_dir /tmp/a --check gradients
    accelerate launch --config_file recipes/accelerate_configs/ci/ddp.yaml --num_processes 2 \
        tests/distributed/normalisation_script.py --output_dir /tmp/b --check gradients --per_device_train_batch_size 2

`--check gradients`: one PPO-max update (ptx on) on a global batch of 4 fixed prompts with fixed responses of unequal
lengths (generation is replaced, so every layout sees the same 4 sequences); the gradients reaching the first optimizer
step are written to `gradients.pt` (main process). 1 process x 4 rows, 1 process x 2 micro-batches of 2 and 2
processes x 2 rows must write the same gradients.

`--check warmup_threshold`: PPO with a critic warm-up and `critic_warmup_loss_threshold` on 2 processes, where a reward
function gives rank 0 a reward of 0 and rank 1 a reward of 3: rank 0's local value loss falls under the threshold,
rank 1's does not. Every rank writes `rank{i}.json` (step counters) and `rank{i}.pt` (policy and critic weights).

`--check reward_contract`: PPO on 2 processes with three GRPO-style reward functions (the completion length; one that
applies only to rank 0's rollouts and returns None on rank 1; an async one) weighted by `reward_weights`, and
`log_metric` calls, one of them made on rank 1 only. Every rank writes `rank{i}.json`: what each function returned at
each step, the scores the trainer trained on, and the log history.
"""

import argparse
import json
import os

import torch
from datasets import Dataset
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ppomax_trl import PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl import ppo_utils as pu
from ppomax_trl.recipe_utils import end_process_group
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


PROMPTS = ["the movie was great", "i", "what a bad and sad", "the food was"]
PTX_TEXTS = ["a good cast, a fine plot", "the film", "i loved every minute of this happy story", "a bad"]
RESPONSE_LENGTHS = [5, 1, 3, 2]  # by prompt: unequal, so per-process token means differ from the global one
ADVANTAGE_OPTIONS = {
    "paper": {},
    "global_whitening": {
        "whiten_advantages": True, "whiten_advantages_globally": True, "loss_agg_mode": "seq-mean-token-mean"
    },
    "local_whitening": {"whiten_advantages": True, "loss_agg_mode": "seq-mean-token-mean"},
}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--check", choices=["gradients", "warmup_threshold", "reward_contract"], required=True)
    parser.add_argument("--per_device_train_batch_size", type=int, default=4)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument(
        "--advantages", choices=list(ADVANTAGE_OPTIONS), default="paper",
        help="`--check gradients`: PPO-max's unwhitened token-mean update, or whitened advantages (over all processes "
        "or per process) with the sequence-mean loss",
    )  # fmt: skip
    return parser.parse_args()


def fixed_responses(trainer, tokenizer):
    """Replace sampling by a fixed response per prompt (EOS-terminated, length from `RESPONSE_LENGTHS`)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    lengths = {tuple(tokenizer(p)["input_ids"]): n for p, n in zip(PROMPTS, RESPONSE_LENGTHS, strict=True)}

    def generate_responses(model, queries, query_mask, *, temperature, top_p):
        rows = []
        for ids, mask in zip(queries, query_mask, strict=True):
            prompt = tuple(ids[mask.bool()].tolist())
            length = lengths[prompt]
            tokens = [4 + (sum(prompt) * 7 + 13 * t) % 300 for t in range(length - 1)] + [eos]
            rows.append(tokens + [pad] * (trainer.args.response_length - length))
        responses = torch.tensor(rows, device=queries.device)
        responses, response_mask, stopped = pu.truncate_after_stop(responses, stop_token_ids=[eos], pad_token_id=pad)
        return {"queries": queries, "query_mask": query_mask, "responses": responses,
                "response_mask": response_mask, "stopped": stopped}  # fmt: skip

    trainer.generate_responses = generate_responses


def check_gradients(cli, tokenizer) -> None:
    args = PPOMaxConfig(
        output_dir=cli.output_dir, use_cpu=True, bf16=False, report_to="none", disable_tqdm=True, save_strategy="no",
        per_device_train_batch_size=cli.per_device_train_batch_size,
        gradient_accumulation_steps=cli.gradient_accumulation_steps,
        response_length=5, total_episodes=4, num_sample_generations=0, logging_steps=1, seed=0,
        critic_warmup_steps=0, ptx_coef=0.5, max_grad_norm=1e9, learning_rate=1e-3, value_learning_rate=1e-3,
        **ADVANTAGE_OPTIONS[cli.advantages],
    )  # fmt: skip
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in PROMPTS]})
    trainer = PPOMaxTrainer(
        args, tokenizer, tiny_causal_lm(tokenizer, seed=0), None, tiny_reward_model(tokenizer, seed=1), dataset,
        ptx_dataset=Dataset.from_dict({"text": PTX_TEXTS}),
    )  # fmt: skip
    fixed_responses(trainer, tokenizer)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    captured = {}

    def before_step(optimizer, *_):
        if not captured:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None and id(param) in names:
                        captured[names[id(param)]] = param.grad.detach().clone()

    handle = register_optimizer_step_pre_hook(before_step)
    trainer.train()
    handle.remove()
    if trainer.accelerator.is_main_process:
        torch.save(captured, os.path.join(cli.output_dir, "gradients.pt"))


def check_warmup_threshold(cli, tokenizer) -> None:
    def rank_reward(prompts, completions, **kwargs):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return [3.0 * rank] * len(completions)

    args = PPOConfig(
        output_dir=cli.output_dir, use_cpu=True, bf16=False, report_to="none", disable_tqdm=True, save_strategy="no",
        per_device_train_batch_size=2, response_length=4, total_episodes=8, num_sample_generations=0, logging_steps=1,
        seed=0, learning_rate=1e-3, critic_warmup_steps=3, critic_warmup_loss_threshold=1.0,
    )  # fmt: skip
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in PROMPTS * 2]})
    trainer = PPOTrainer(
        args, tokenizer, tiny_causal_lm(tokenizer, seed=0), None, None, dataset, reward_funcs=rank_reward
    )
    local_losses = []
    converged = trainer._warmup_converged

    def record_local_loss():
        values = trainer._update_stats["loss/value_avg"]
        local_losses.append(sum(values) / len(values))
        return converged()

    trainer._warmup_converged = record_local_loss
    trainer.train()
    acc = trainer.accelerator
    wrapper = acc.unwrap_model(trainer.model_wrapped)
    local_value_losses = [e["loss/value_avg"] for e in trainer.state.log_history if "loss/value_avg" in e]
    report = {
        "global_step": trainer.state.global_step,
        "critic_warmup_done": trainer.critic_warmup_done,
        "logged_value_losses": local_value_losses,
        "local_warmup_value_losses": local_losses,
    }
    with open(os.path.join(cli.output_dir, f"rank{acc.process_index}.json"), "w") as f:
        json.dump(report, f)
    weights = {f"policy.{k}": v.detach().cpu() for k, v in wrapper.policy.state_dict().items()}
    weights.update({f"value_model.{k}": v.detach().cpu() for k, v in wrapper.value_model.state_dict().items()})
    torch.save(weights, os.path.join(cli.output_dir, f"rank{acc.process_index}.pt"))


def check_reward_contract(cli, tokenizer) -> None:
    rank = int(os.environ.get("RANK", "0"))  # set by the launcher; the process group starts with the trainer
    returned = []  # (function, step, values)

    def length_reward(prompts, completions, completion_ids, trainer_state, log_metric, **kwargs):
        values = [float(len(ids)) for ids in completion_ids]
        returned.append(("length_reward", trainer_state.global_step, values))
        log_metric("contract/rank", float(rank))
        if rank == 1:
            log_metric("contract/rank_1_only", 5.0)  # a name the other rank never logs
        return values

    def rank_0_only(prompts, completions, trainer_state, **kwargs):
        values = [float(row) for row in kwargs["row"]] if rank == 0 else [None] * len(completions)
        returned.append(("rank_0_only", trainer_state.global_step, values))
        return values

    async def async_text_length(prompts, completions, trainer_state, **kwargs):
        values = [float(len(text)) for text in completions]
        returned.append(("async_text_length", trainer_state.global_step, values))
        return values

    args = PPOConfig(
        output_dir=cli.output_dir, use_cpu=True, bf16=False, report_to="none", disable_tqdm=True, save_strategy="no",
        per_device_train_batch_size=2, response_length=4, total_episodes=8, num_sample_generations=0, logging_steps=1,
        seed=0, learning_rate=1e-3, reward_weights=[1.0, -0.5, 0.25],
    )  # fmt: skip
    dataset = Dataset.from_dict({"prompt": PROMPTS * 2, "row": list(range(2 * len(PROMPTS)))})
    trainer = PPOTrainer(
        args, tokenizer, tiny_causal_lm(tokenizer, seed=0), None, None, dataset,
        reward_funcs=[length_reward, rank_0_only, async_text_length],
    )  # fmt: skip
    trained_scores, score = [], trainer.score

    def recording_score(rows, batch, *rest, **kwargs):
        scores = score(rows, batch, *rest, **kwargs)
        trained_scores.append(scores.tolist())
        return scores

    trainer.score = recording_score
    trainer.train()
    report = {"returned": returned, "trained_scores": trained_scores, "log_history": trainer.state.log_history}
    with open(os.path.join(cli.output_dir, f"rank{trainer.accelerator.process_index}.json"), "w") as f:
        json.dump(report, f)


def main() -> None:
    cli = parse_args()
    tokenizer = build_tiny_tokenizer()
    checks = {"gradients": check_gradients, "warmup_threshold": check_warmup_threshold}
    checks["reward_contract"] = check_reward_contract
    checks[cli.check](cli, tokenizer)


if __name__ == "__main__":
    main()
    end_process_group()  # a gloo group left to interpreter shutdown can abort a finished rank
