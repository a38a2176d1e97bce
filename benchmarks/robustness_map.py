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
"""Learning-rate x seed robustness map: vanilla PPO, PPO-max and GRPO on the learned proxy reward model.

```
python benchmarks/robustness_map.py proxy                    # the LoRA proxy: trained once (~45 min), adapter committed
python benchmarks/robustness_map.py all --jobs 2 --commit    # runs not complete, 2 at a time, each committed + map
python benchmarks/robustness_map.py report                   # map.md and map.png (heat map + gold-vs-KL frontier)
```

Every run is one run of `overoptimisation.py` (same SmolLM2-135M policy, PPO training openers, 24-token responses,
sampling, KL coefficient 0.05, held-out evaluation every 10 updates with every completion saved; see its docstring)
with its recipe unchanged and only the policy learning rate and the seed set by the grid (`GRID`): `ppo` is
`PPOTrainer` with TRL 1.12's defaults (one optimizer, so the critic shares the policy's lr), `ppo_max` is
`PPOMaxTrainer` with its defaults (critic lr = 3 x policy lr, the paper's ratio), `grpo` is TRL 1.16's `GRPOTrainer`
(8 generations of 1 prompt, beta 0.05 as in the harness). 100 updates of 8 samples each.

The proxy is the harness's rank-list reward model trained as a LoRA adapter (`overoptimisation.LORA_FLAGS`, lr 2e-4,
2 epochs) on the committed ranked lists of `results/overoptimisation/samples/`; its adapter is committed in
`results/robustness_map/proxy_lora/`, so every session merges the same proxy in seconds and a map spread over several
sessions is trained on one reward model (a full fine-tune is 540 MB and not bitwise the same across sessions).

Resumable: a run checkpoints every 10 updates into the work folder and resumes from it when started again on the same
machine; a run cut off with its machine starts over. `all` skips complete runs; `--commit` commits each run's JSON
as it lands, with `map.md` and `map.png` redrawn (only those files, retrying while another commit holds the index).

The definitions below (`summarise`, `working_range`) were fixed before the first map run finished.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from _offline import set_offline_env  # beside this script (the script's folder is on sys.path)


set_offline_env()

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results" / "robustness_map"
SAMPLES_DIR = HERE / "results" / "overoptimisation" / "samples"  # the committed ranked lists the proxy trains on

import overoptimisation  # noqa: E402  (beside this script)
from stability import log, prepare_base_model, run_processes  # noqa: E402


WORK_DIR = overoptimisation.WORK_DIR.parent / "robustness_map"
TRAINERS = ("ppo", "ppo_max", "grpo")  # `overoptimisation.RUNS` recipes
TRAINER_LABELS = {"ppo": "vanilla PPO (TRL 1.12)", "ppo_max": "PPO-max", "grpo": "GRPO (TRL 1.16)"}
LEARNING_RATES = (3e-6, 1e-5, 3e-5, 1e-4)
SEEDS = (0, 1)
UPDATES = 100
EVAL_EVERY = 10
PROXY_LEARNING_RATE = 2e-4  # LoRA's usual order (the full fine-tune used 3e-5)

# Collapse and gain, as defined before the runs (docs/benchmarks.md, "Robustness map").
TAIL_UPDATES = 20  # "for the last 20 updates": every eval at update >= last - 20 (80, 90 and 100)
DISTINCT_FLOOR = 0.5  # distinct-2 below it at every tail eval: degenerate, repeated text
LENGTH_FLOOR = 0.5  # mean length below this share of the update-0 length at every tail eval: responses shrank to EOS
NOISE_SE = 2.0  # "beyond noise": more than 2 standard errors (two independent 64-sample means combined)


def run_name(trainer: str, learning_rate: float, seed: int) -> str:
    return f"{trainer}_lr{learning_rate:g}_seed{seed}"


def grid(trainers=TRAINERS, learning_rates=LEARNING_RATES, seeds=SEEDS) -> list[tuple[str, float, int]]:
    """(trainer, lr, seed) in the order they run: a whole seed first, so that a partial map covers every cell once;
    within it the highest learning rate first (where trainers differ most)."""
    return [(t, lr, s) for s in seeds for lr in sorted(learning_rates, reverse=True) for t in trainers]


# ----------------------------------------------------------------------------------------------------------------------
# Proxy and runs
# ----------------------------------------------------------------------------------------------------------------------


def make_proxy(args) -> None:
    """The LoRA proxy on the harness's committed lists, its adapter and summary (`proxy.json`) in `--results-dir`."""
    proxy_args = argparse.Namespace(
        openers=overoptimisation.OPENERS_PATH, work_dir=args.work_dir, results_dir=args.results_dir, seed=0,
        base=None, num_train=overoptimisation.SPLITS["proxy_train"], k=8, held_out_k=4, epochs=2,
        learning_rate=PROXY_LEARNING_RATE, rm_args=[], lora=True, samples_dir=SAMPLES_DIR,
    )  # fmt: skip
    overoptimisation.proxy(proxy_args)


def run_command(args, trainer: str, learning_rate: float, seed: int) -> list[str]:
    flags = [
        "run", "--run", trainer, "--name", run_name(trainer, learning_rate, seed), "--updates", str(args.updates),
        "--eval-every", str(args.eval_every), "--save-every", str(args.eval_every), "--seed", str(seed),
        "--learning-rate", str(learning_rate), "--threads", "1", "--results-dir", str(args.results_dir),
        "--work-dir", str(args.work_dir),
    ]  # fmt: skip
    if args.tiny:
        flags += ["--tiny", "--eval-samples", "4"]
    return [sys.executable, str(HERE / "overoptimisation.py"), *flags]


def run_path(results_dir: Path, name: str) -> Path:
    return results_dir / "runs" / f"{name}.json"


def is_complete(results_dir: Path, name: str) -> bool:
    path = run_path(results_dir, name)
    return path.is_file() and json.loads(path.read_text()).get("complete", False)


def commit_files(paths: list[Path], message: str, attempts: int = 20) -> None:
    """Commit `paths` alone (whatever else is staged stays staged), retrying while another git command holds the
    index lock; a run that landed is never lost to a busy index."""
    repo = subprocess.run(["git", "-C", str(paths[0].parent), "rev-parse", "--show-toplevel"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    names = [str(path) for path in paths]
    for attempt in range(attempts):
        subprocess.run(["git", "-C", repo, "add", "--", *names], capture_output=True, text=True, check=False)
        done = subprocess.run(["git", "-C", repo, "commit", "-q", "-m", message, "--", *names],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode == 0:
            return
        if "index.lock" not in done.stderr:
            raise RuntimeError(f"git commit of {names} failed: {done.stderr.strip() or done.stdout.strip()}")
        time.sleep(1 + attempt)
    raise RuntimeError(f"git commit of {names}: the index stayed locked for {attempts} attempts")


def landed_message(record: dict) -> str:
    summary = summarise(record)
    return (
        f"robustness map: {record['name']} landed (gold {summary['gold_first']:+.3f} -> {summary['gold_last']:+.3f}, "
        f"KL {summary['kl']:.1f}, distinct-2 {summary['distinct_2']:.2f}"
        f"{', collapsed: ' + ', '.join(summary['collapse_reasons']) if summary['collapsed'] else ''})"
    )


def run_all(args) -> None:
    """The grid's runs not complete yet, `--jobs` at a time in fresh one-thread processes; with `--commit`, each run's
    JSON is committed as its process ends, with the map (`report`) redrawn. The proxy is merged first, once, so that
    no two runs race to write it."""
    if not args.tiny:  # tiny runs build their own base; their proxy is the caller's
        overoptimisation.ensure_proxy(args.work_dir, args.results_dir, prepare_base_model(args.work_dir))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"  # inherited by the run processes (torch also gets --threads 1)
    pending = [cell for cell in grid(args.trainers, args.learning_rates, args.seeds)
               if not is_complete(args.results_dir, run_name(*cell))]  # fmt: skip
    log(f"{len(pending)} runs to go: {', '.join(run_name(*cell) for cell in pending)}")

    def landed(name: str) -> None:
        record = json.loads(run_path(args.results_dir, name).read_text())
        log(landed_message(record))
        if args.commit:  # the run with the map redrawn around it
            report(args)
            paths = [run_path(args.results_dir, name), args.results_dir / "map.md", args.results_dir / "map.png"]
            commit_files(paths, landed_message(record))

    run_processes({run_name(*cell): run_command(args, *cell) for cell in pending}, args.jobs, on_success=landed)


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def summarise(record: dict) -> dict:
    """One run's row of the map: gold first -> last and whether the gain is beyond noise, the last eval's KL,
    distinct-2, length and EOS rate, and whether (and why) it collapsed.

    gain = gold(last) - gold(update 0), beyond noise when gain > 2 sqrt(se_0^2 + se_last^2).
    Collapsed when any of: distinct-2 < 0.5 at every eval of the last 20 updates ("distinct-2"); mean length < 0.5 x
    the update-0 length at every eval of the last 20 updates ("length"); gold(last) < gold(best eval) - 2 sqrt(se_best^2
    + se_last^2) ("gold fell"). Length pinned at the 24-token cap is not a collapse here: 91% of the base policy's
    held-out completions already end at the cap."""
    evals = record["evals"]
    first, last = evals[0], evals[-1]
    tail = [e for e in evals if e["update"] >= last["update"] - TAIL_UPDATES]
    best = max(evals, key=lambda e: e["gold"])
    gain, gain_se = last["gold"] - first["gold"], math.hypot(first["gold_se"], last["gold_se"])
    reasons = []
    if all(e["distinct_2"] < DISTINCT_FLOOR for e in tail):
        reasons.append("distinct-2")
    if all(e["length"] < LENGTH_FLOOR * first["length"] for e in tail):
        reasons.append("length")
    if best["gold"] - last["gold"] > NOISE_SE * math.hypot(best["gold_se"], last["gold_se"]):
        reasons.append("gold fell")
    eos_rate = last.get("eos_rate")
    if eos_rate is None and "completions" in last:
        eos_rate = sum(c.get("eos", False) for c in last["completions"]) / len(last["completions"])
    return {
        "name": record.get("name", record["run"]),
        "trainer": record["run"],
        "learning_rate": record["config"]["learning_rate"],
        "seed": record["seed"],
        "gold_first": first["gold"],
        "gold_last": last["gold"],
        "gain": gain,
        "gain_se": gain_se,
        "improved": gain > NOISE_SE * gain_se,
        "best_gold": best["gold"],
        "best_update": best["update"],
        "kl": last["kl_seq"],
        "distinct_2": last["distinct_2"],
        "length": last["length"],
        "eos_rate": eos_rate,
        "collapsed": bool(reasons),
        "collapse_reasons": reasons,
        "minutes": record.get("seconds", last["seconds"]) / 60,
    }


def cells(summaries: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """(trainer, lr) -> that cell's runs, by seed."""
    out: dict[tuple[str, float], list[dict]] = {}
    for summary in sorted(summaries, key=lambda s: s["seed"]):
        out.setdefault((summary["trainer"], summary["learning_rate"]), []).append(summary)
    return out


def cell_works(runs: list[dict], seeds=SEEDS) -> bool:
    """A cell works when every seed ran, improved gold beyond noise and did not collapse."""
    return sorted(r["seed"] for r in runs) == sorted(seeds) and all(r["improved"] and not r["collapsed"] for r in runs)


def working_range(works_by_lr: dict[float, bool]) -> tuple[float, float | None, float | None]:
    """(width, lowest, highest) of the widest run of adjacent grid learning rates that all work: width = highest /
    lowest, 1 for a single rate, 0 (and None, None) when none works."""
    best = (0.0, None, None)
    run: list[float] = []
    for lr in [*sorted(works_by_lr), None]:
        if lr is not None and works_by_lr[lr]:
            run.append(lr)
            continue
        if run and run[-1] / run[0] > best[0]:
            best = (run[-1] / run[0], run[0], run[-1])
        run = []
    return best


def judge(summaries: list[dict], trainers=TRAINERS, learning_rates=LEARNING_RATES, seeds=SEEDS) -> dict:
    """Per trainer: working learning rates, the range's width, the learning rates with a collapsed seed; and the two
    targets (judged only on a complete grid): PPO-max's width >= 2x vanilla's and GRPO's (and > 0), and PPO-max
    collapses at no learning rate where vanilla PPO or GRPO has no collapsed seed."""
    by_cell = cells(summaries)
    per_trainer = {}
    for trainer in trainers:
        works = {lr: cell_works(by_cell.get((trainer, lr), []), seeds) for lr in learning_rates}
        width, low, high = working_range(works)
        collapsed = [lr for lr in learning_rates if any(r["collapsed"] for r in by_cell.get((trainer, lr), []))]
        per_trainer[trainer] = {"working": [lr for lr in learning_rates if works[lr]], "width": width, "low": low,
                                "high": high, "collapsed_at": collapsed}  # fmt: skip
    complete = len(summaries) == len(trainers) * len(learning_rates) * len(seeds)
    result = {"per_trainer": per_trainer, "complete": complete, "runs": len(summaries)}
    if complete and "ppo_max" in per_trainer:
        mine = per_trainer["ppo_max"]
        others = [t for t in trainers if t != "ppo_max"]
        result["wider"] = mine["width"] > 0 and all(mine["width"] >= 2 * per_trainer[t]["width"] for t in others)
        result["collapses_only_where_others_do"] = all(
            all(lr in per_trainer[t]["collapsed_at"] for t in others) for lr in mine["collapsed_at"]
        )
    return result


def load_summaries(results_dir: Path) -> list[dict]:
    """The complete runs' summaries (a run still going is not on the map)."""
    folder = results_dir / "runs"
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return [summarise(record) for record in records if record.get("complete")]


def format_range(verdict: dict) -> str:
    if verdict["low"] is None:
        return "none (width 0)"
    if verdict["low"] == verdict["high"]:
        return f"{verdict['low']:g} only (width 1x)"
    return f"{verdict['low']:g} .. {verdict['high']:g} (width {verdict['width']:.1f}x)"


def map_markdown(summaries: list[dict]) -> str:
    yes_no = {True: "yes", False: "**no**"}
    header = (
        "| trainer | lr | seed | gold first -> last (gain +- s.e.) | best gold (update) | KL/seq last | distinct-2 last "
        "| length last | EOS rate last | collapsed | wall-clock |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {t: i for i, t in enumerate(TRAINERS)}
    for s in sorted(summaries, key=lambda s: (order.get(s["trainer"], 9), s["learning_rate"], s["seed"])):
        eos = "-" if s["eos_rate"] is None else f"{s['eos_rate']:.2f}"
        gain = f"{s['gain']:+.3f} +- {s['gain_se']:.3f}{'' if s['improved'] else ', noise'}"
        lines.append(
            f"| {s['trainer']} | {s['learning_rate']:g} | {s['seed']} | {s['gold_first']:+.3f} -> "
            f"{s['gold_last']:+.3f} ({gain}) | {s['best_gold']:+.3f} ({s['best_update']}) | {s['kl']:.2f} "
            f"| {s['distinct_2']:.2f} | {s['length']:.1f} | {eos} "
            f"| {'**' + ', '.join(s['collapse_reasons']) + '**' if s['collapsed'] else 'no'} | {s['minutes']:.0f} min |"
        )
    lines += [
        "",
        "| trainer | lr | seeds | mean gain | seed spread: gold last, gain, KL | works |",
        "|---|---|---|---|---|---|",
    ]
    for (trainer, lr), runs in sorted(cells(summaries).items(), key=lambda i: (order.get(i[0][0], 9), i[0][1])):
        spread = "-"
        if len(runs) > 1:
            spread = ", ".join(
                f"{max(r[key] for r in runs) - min(r[key] for r in runs):.3f}" for key in ("gold_last", "gain", "kl")
            )
        mean_gain = sum(r["gain"] for r in runs) / len(runs)
        works = yes_no[cell_works(runs)] if len(runs) == len(SEEDS) else f"pending ({len(runs)} of {len(SEEDS)} seeds)"
        lines.append(f"| {trainer} | {lr:g} | {len(runs)} | {mean_gain:+.3f} | {spread} | {works} |")
    verdict = judge(summaries)
    range_header = (
        "| trainer | working range (cells where both seeds ran, improved beyond noise, none collapsed) "
        "| lrs with a collapsed seed |"
    )
    lines += ["", range_header, "|---|---|---|"]
    for trainer, v in verdict["per_trainer"].items():
        collapsed = ", ".join(f"{lr:g}" for lr in v["collapsed_at"]) or "none"
        lines.append(f"| {trainer} | {format_range(v)} | {collapsed} |")
    lines.append("")
    if verdict["complete"]:
        lines.append(f"- PPO-max's range >= 2x vanilla PPO's and GRPO's: {yes_no[verdict['wider']]}")
        lines.append(
            f"- PPO-max collapses only where the others do: {yes_no[verdict['collapses_only_where_others_do']]}"
        )
    else:
        total = len(TRAINERS) * len(LEARNING_RATES) * len(SEEDS)
        lines.append(f"- Targets: not judged yet ({verdict['runs']} of {total} runs complete).")
    return "\n".join(lines)


def plot_map(summaries: list[dict], records: list[dict], path: Path) -> None:
    """Left: trainer x learning rate, colour = mean gold gain over the seeds run, text = each seed's gain, a cross per
    collapsed seed. Right: every eval of every run, gold vs sqrt(KL), colour = trainer, marker = lr, dashed = seed 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_cell = cells(summaries)
    gains = np.full((len(TRAINERS), len(LEARNING_RATES)), np.nan)
    for (trainer, lr), runs in by_cell.items():
        if trainer in TRAINERS and lr in LEARNING_RATES:
            gains[TRAINERS.index(trainer), LEARNING_RATES.index(lr)] = sum(r["gain"] for r in runs) / len(runs)
    fig, (heat, frontier) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [1, 1.3]})
    limit = max(0.05, float(np.nanmax(np.abs(gains))) if not np.all(np.isnan(gains)) else 0.05)
    image = heat.imshow(np.ma.masked_invalid(gains), cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    heat.set_facecolor("0.85")  # cells not run yet
    for (trainer, lr), runs in by_cell.items():
        if trainer not in TRAINERS or lr not in LEARNING_RATES:
            continue
        row, column = TRAINERS.index(trainer), LEARNING_RATES.index(lr)
        text = "\n".join(f"s{r['seed']} {r['gain']:+.2f}{'' if r['improved'] else ' (n)'}" for r in runs)
        heat.text(column, row, text, ha="center", va="center", fontsize=8)
        for i in range(sum(r["collapsed"] for r in runs)):
            heat.plot(column + 0.3 + 0.08 * i, row - 0.3, marker="X", color="black", markersize=10)
    heat.set_xticks(range(len(LEARNING_RATES)), [f"{lr:g}" for lr in LEARNING_RATES])
    heat.set_yticks(range(len(TRAINERS)), [TRAINER_LABELS[t] for t in TRAINERS])
    heat.set_xlabel("policy learning rate")
    heat.set_title("gold gain (last - first eval); X = collapsed seed, (n) = within noise", fontsize=10)
    fig.colorbar(image, ax=heat, fraction=0.046)

    colours = {"ppo": "tab:red", "ppo_max": "tab:blue", "grpo": "tab:green"}
    markers = dict(zip(LEARNING_RATES, ("o", "s", "^", "D"), strict=True))
    for record in records:
        trainer, lr, seed = record["run"], record["config"]["learning_rate"], record["seed"]
        evals = record["evals"]
        frontier.plot([max(e["kl_seq"], 0.0) ** 0.5 for e in evals], [e["gold"] for e in evals],
                      color=colours.get(trainer, "gray"), marker=markers.get(lr, "."), markersize=4,
                      linestyle="-" if seed == 0 else "--", linewidth=1, alpha=0.8)  # fmt: skip
    for trainer in TRAINERS:
        frontier.plot([], [], color=colours[trainer], label=TRAINER_LABELS[trainer])
    for lr, marker in markers.items():
        frontier.plot([], [], color="black", marker=marker, linestyle="none", label=f"lr {lr:g}")
    frontier.set_xlabel("sqrt(KL to reference), KL in nats per sequence")
    frontier.set_ylabel("gold (VADER), held-out mean of 64")
    frontier.set_title("gold vs KL, every eval of every run (solid seed 0, dashed seed 1)", fontsize=10)
    frontier.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args) -> None:
    summaries = load_summaries(args.results_dir)
    if not summaries:
        log(f"no complete runs in {args.results_dir / 'runs'}")
        return
    records = [json.loads(p.read_text()) for p in sorted((args.results_dir / "runs").glob("*.json"))]
    plot_map(summaries, [r for r in records if r.get("complete")], args.results_dir / "map.png")
    text = "## Robustness map\n\n" + map_markdown(summaries) + "\n"
    (args.results_dir / "map.md").write_text(text)
    log(f"wrote {args.results_dir / 'map.png'} and map.md")
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = {name: commands.add_parser(name) for name in ("proxy", "all", "report")}
    for command in sub.values():
        command.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    for name in ("proxy", "all"):
        sub[name].add_argument("--work-dir", type=Path, default=WORK_DIR, help="base model, proxy, run checkpoints")
    sub["all"].add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    sub["all"].add_argument("--commit", action="store_true", help="commit each run's JSON as it lands")
    sub["all"].add_argument("--trainers", nargs="*", choices=TRAINERS, default=TRAINERS)
    sub["all"].add_argument("--learning-rates", nargs="*", type=float, default=LEARNING_RATES)
    sub["all"].add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    sub["all"].add_argument("--updates", type=int, default=UPDATES)
    sub["all"].add_argument("--eval-every", type=int, default=EVAL_EVERY)
    sub["all"].add_argument("--tiny", action="store_true", help="tiny random models (plumbing check; needs a proxy)")
    args = parser.parse_args(argv)
    {"proxy": make_proxy, "all": run_all, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
