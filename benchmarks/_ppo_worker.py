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
"""One timed PPO run in a fresh process; prints one JSON line. Driven by `benchmarks/ppo_vs_trl112.py`.

`--impl trl112` must run under the TRL 1.12 virtualenv's python (`trl.experimental.ppo`); `ppomax_ppo` and
`ppomax_max` run under the system python (`ppomax_trl.PPOTrainer` with `PPOConfig`, `ppomax_trl.PPOMaxTrainer` with
`PPOMaxConfig`). Every implementation gets the same models (same seeds), prompts, batch, response length, PPO epochs,
minibatches, fp32, no gradient checkpointing, `max_grad_norm` and `stop_token=None` (so every rollout generates exactly
`response_length` tokens and the work per update is the same).

Timing: a callback records `time.perf_counter()` at every `on_step_begin` and `on_step_end`. The reported
`s_per_update` is the median interval between successive `on_step_end` calls, the only hook TRL 1.12's loop calls once
per update; the first update (warm-up) is excluded because it has no predecessor. For the ppomax_trl trainers the
`on_step_begin -> on_step_end` intervals (the update alone, without the trainer's per-step logging) are reported too,
as `s_per_update_inner`. `cpu_s_per_update` is the same median in process CPU time (`time.process_time`, all
threads), which background load inflates much less than wall time. `peak_rss_mb` is the process's `ru_maxrss` (KiB on Linux) after training: models, optimizer
state and activations of the whole run, including the python/torch/transformers baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _offline import set_offline_env  # beside this script (the script's folder is on sys.path)


set_offline_env()

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
IMPLS = ("trl112", "ppomax_ppo", "ppomax_max", "una_online", "grpo")

# The smollm2 setting's prompts: short review openers, rendered with the chat template.
REVIEW_PROMPTS = [
    "Write a short review of a pizza place you visited.",
    "Review the latest superhero movie in two sentences.",
    "How was the hotel you stayed at last weekend?",
    "Give a quick review of a pair of running shoes.",
    "What did you think of the concert last night?",
    "Describe your experience at a new coffee shop.",
    "Write a one-line review of a mystery novel.",
    "Review a budget smartphone you have used for a month.",
    "How was the service at the Italian restaurant?",
    "Share your opinion of a popular video game.",
    "Write a brief review of a museum exhibition.",
    "What do you think of the new bakery downtown?",
    "Review a cheap pair of wireless headphones.",
    "How would you rate your last airline flight?",
    "Write a short review of a science fiction TV series.",
    "Describe a meal at a busy street food market.",
]
# The tiny setting's prompts: plain text for the tiny byte-level BPE tokenizer.
TINY_PROMPTS = [
    "the movie was", "i loved", "what a", "the food", "a good cast", "the film", "the acting", "a bad",
    "the plot", "a happy", "the service", "a long", "the ending", "a fine", "the story", "a sad",
]  # fmt: skip


def _load_module(name: str, path: Path):
    """Import a file by path, without importing its package (ppomax_trl's `__init__` imports the trainers, which the
    TRL 1.12 venv must not need)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_models(setting: str, model_dir: str | None, seed: int):
    """(tokenizer, policy, ref_policy, reward_model, value_model, prompt texts), identical for every implementation."""
    import torch

    if setting == "tiny":
        tiny = _load_module("_ppomax_tiny", REPO_ROOT / "ppomax_trl" / "tiny.py")
        tokenizer = tiny.build_tiny_tokenizer()
        policy = tiny.tiny_causal_lm(tokenizer, seed=seed)
        ref_policy = tiny.tiny_causal_lm(tokenizer, seed=seed)
        reward_model = tiny.tiny_reward_model(tokenizer, seed=seed + 1)
        value_model = tiny.tiny_reward_model(tokenizer, seed=seed + 2)
        prompts = TINY_PROMPTS
        input_ids = [tokenizer(p)["input_ids"] for p in prompts]
        return tokenizer, policy, ref_policy, reward_model, value_model, input_ids

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # SmolLM2 ships pad == eos == <|im_end|>, which also closes every chat turn inside the prompts; TRL 1.12 masks by
    # `ids != pad_token_id`, so use <|endoftext|> (id 0, never in a chat prompt) as a distinct pad token.
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.padding_side = "left"

    def load(cls, seed_offset: int, **kwargs):
        torch.manual_seed(seed + seed_offset)  # the fresh `score` heads get the same init in every implementation
        model = cls.from_pretrained(model_dir, dtype=torch.float32, **kwargs)
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model

    policy = load(AutoModelForCausalLM, 0)
    ref_policy = load(AutoModelForCausalLM, 0)
    reward_model = load(AutoModelForSequenceClassification, 1, num_labels=1)
    value_model = load(AutoModelForSequenceClassification, 2, num_labels=1)
    input_ids = [
        list(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)["input_ids"])
        for p in REVIEW_PROMPTS
    ]
    return tokenizer, policy, ref_policy, reward_model, value_model, input_ids


def config_kwargs(args, output_dir: str) -> dict:
    """Settings shared by every implementation (TRL 1.12 field names)."""
    return dict(
        output_dir=output_dir,
        seed=args.seed,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=args.num_mini_batches,
        num_ppo_epochs=args.num_ppo_epochs,
        response_length=args.response_length,
        local_rollout_forward_batch_size=args.batch_size,
        total_episodes=args.batch_size * args.updates,
        temperature=args.temperature,
        stop_token=None,
        max_grad_norm=args.max_grad_norm,
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def build_grpo(args, output_dir: str, tokenizer, policy, reward_model, input_ids, timer):
    """TRL 1.16 `GRPOTrainer` at its defaults on the same models and prompts: one optimizer step per update on
    `batch_size` completions (groups of 4 per prompt), `response_length` new tokens, no stop token, the reward model
    as its reward function, `use_vllm` as given (its colocate weight sync fails on vLLM's CPU backend)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    prompts = tokenizer.batch_decode(input_ids)  # the chat-templated prompt text (GRPO re-tokenizes it)
    config = GRPOConfig(
        output_dir=output_dir, seed=args.seed, bf16=False, fp16=False, gradient_checkpointing=False,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1, num_generations=4,
        max_completion_length=args.response_length, temperature=args.temperature, max_steps=args.updates,
        max_grad_norm=args.max_grad_norm, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, use_vllm=args.use_vllm,
        # every completion runs to the full length, as in the PPO runs (no stop token)
        generation_kwargs={"ignore_eos": True} if args.use_vllm else {"eos_token_id": None, "min_new_tokens": args.response_length},
    )  # fmt: skip
    return GRPOTrainer(
        model=policy, reward_funcs=reward_model, args=config, processing_class=tokenizer,
        reward_processing_classes=tokenizer, train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[timer],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=IMPLS, required=True)
    parser.add_argument("--setting", choices=("tiny", "smollm2"), required=True)
    parser.add_argument("--model-dir", default=None, help="converted SmolLM2 folder (smollm2 setting)")
    parser.add_argument("--updates", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--response-length", type=int, required=True)
    parser.add_argument("--num-ppo-epochs", type=int, required=True)
    parser.add_argument("--num-mini-batches", type=int, required=True)
    parser.add_argument("--max-grad-norm", type=float, required=True)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--use-vllm", action="store_true", help="ppomax impls: sample with vLLM (colocate)")
    args = parser.parse_args()
    if args.use_vllm and args.impl == "trl112":
        parser.error("--use-vllm is for the ppomax_trl trainers (TRL 1.12's PPO has no vLLM)")
    if args.updates < 2:
        parser.error("--updates must be >= 2 (the first update is warm-up)")

    import_start = time.perf_counter()
    import torch
    import transformers
    from datasets import Dataset
    from transformers import TrainerCallback

    if args.impl == "grpo":
        import trl

        import ppomax_trl

        trl_version = trl.__version__
    elif args.impl == "trl112":
        import trl
        from trl.experimental.ppo import PPOConfig, PPOTrainer

        if trl.__version__ != "1.12.0":
            raise RuntimeError(f"--impl trl112 needs TRL 1.12.0, this python has {trl.__version__} ({trl.__file__})")
        trl_version = trl.__version__
    else:
        import trl

        import ppomax_trl

        trl_version = trl.__version__
        if args.impl == "ppomax_ppo":
            from ppomax_trl import PPOConfig, PPOTrainer
        elif args.impl == "una_online":
            from ppomax_trl import OnlineUNAConfig as PPOConfig
            from ppomax_trl import OnlineUNATrainer as PPOTrainer
        else:
            from ppomax_trl import PPOMaxConfig as PPOConfig
            from ppomax_trl import PPOMaxTrainer as PPOTrainer
    import_seconds = time.perf_counter() - import_start

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begins, self.ends, self.cpu_ends = [], [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())

    load_start = time.perf_counter()
    tokenizer, policy, ref_policy, reward_model, value_model, input_ids = build_models(
        args.setting, args.model_dir, args.seed
    )
    dataset = Dataset.from_dict({"input_ids": input_ids})
    load_seconds = time.perf_counter() - load_start

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        if args.impl == "grpo":
            del ref_policy, value_model  # GRPO at its defaults: beta 0 (no reference model), no critic
            trainer = build_grpo(args, output_dir, tokenizer, policy, reward_model, input_ids, timer)
        else:
            kwargs = config_kwargs(args, output_dir)
            if args.impl == "ppomax_max":
                # PPO-max's own recipe stays on (reward normalisation + clipping, no advantage whitening, vf_coef 1,
                # top-p 0.9, ...), but no critic warm-up (it would add value-only updates to the timed run), no ptx.
                kwargs.update(critic_warmup_steps=0, ptx_coef=0.0)
            if args.use_vllm:
                # sampling time, not the correction, is measured; the correction stays at its default (on)
                kwargs.update(use_vllm=True)
            training_args = PPOConfig(**kwargs)
            if args.impl == "una_online":
                del value_model  # critic-free: the value model is never handed over, so it is freed before training
                trainer = PPOTrainer(
                    training_args, tokenizer, policy, ref_policy, reward_model, dataset, callbacks=[timer]
                )
            else:
                trainer = PPOTrainer(
                    training_args, tokenizer, policy, ref_policy, reward_model, dataset, value_model, callbacks=[timer]
                )
        train_start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - train_start

    ends = timer.ends
    if len(ends) != args.updates:
        raise RuntimeError(f"expected {args.updates} on_step_end calls, got {len(ends)}")
    per_update = [b - a for a, b in itertools.pairwise(ends)]  # update 2..N (update 1 is warm-up)
    cpu_per_update = [b - a for a, b in itertools.pairwise(timer.cpu_ends)]
    generation = [e for e in trainer.state.log_history if "sampling/sampling_logp_difference/mean" in e]
    result = {
        "impl": args.impl,
        "use_vllm": args.use_vllm,
        "sampler_logp_difference_mean": generation[-1]["sampling/sampling_logp_difference/mean"]
        if generation
        else None,
        "setting": args.setting,
        "updates": args.updates,
        "timed_updates": len(per_update),
        "s_per_update": statistics.median(per_update),
        "s_per_update_mean": statistics.fmean(per_update),
        "s_per_update_all": per_update,
        "cpu_s_per_update": statistics.median(cpu_per_update),
        "first_update_s": ends[0] - (timer.begins[0] if timer.begins else train_start),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "import_s": import_seconds,
        "load_s": load_seconds,
        "train_s": train_seconds,
        "python": sys.executable,
        "trl": trl_version,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if len(timer.begins) == len(ends):
        inner = [end - begin for begin, end in zip(timer.begins[1:], ends[1:], strict=True)]
        result["s_per_update_inner"] = statistics.median(inner)
    if args.impl not in ("trl112", "grpo"):
        result["ppomax_trl"] = ppomax_trl.__version__
        raw_scores = [e["ppomax/raw_score_mean"] for e in trainer.state.log_history if "ppomax/raw_score_mean" in e]
        result["raw_score_first"], result["raw_score_last"] = raw_scores[0], raw_scores[-1]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
