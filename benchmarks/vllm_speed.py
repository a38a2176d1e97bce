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
"""Sampling with vLLM vs `transformers.generate` on SmolLM2-135M-Instruct, side by side in one run.

Two parts, each written into one JSON (`--out`), resumable (finished cells are kept and skipped on a re-run):

- `generation`: the generation seam alone (`HFGenerator` vs `VLLMGenerator`, the trainer's own classes) in one
  process of the vLLM environment: tokens/s for batch 8 and 32 x 24 and 128 new tokens, every response forced to the
  full length (no stop token), alternating HF / vLLM, median of `--reps`.
- `updates`: seconds per update of `PPOTrainer`, `PPOMaxTrainer` and `OnlineUNATrainer` with and without
  `use_vllm`, next to TRL 1.12's `PPOTrainer` (its own virtualenv, see ppo_vs_trl112.py) and TRL 1.16's
  `GRPOTrainer` (with and without its own `use_vllm`), each run a fresh process of `_ppo_worker.py` (median over
  updates 2..N; the first is warm-up), one implementation after the other within a cell.

    bash scripts/vllm_env.sh                                # the vLLM environment (.venv-vllm)
    python benchmarks/vllm_speed.py --out benchmarks/results/vllm_speed_cpu.json
    python benchmarks/vllm_speed.py --part generation --reps 3 --out ...   # one part

On a GPU machine, `benchmarks/gpu_vllm.sh` runs the same with the GPU's vLLM. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _offline import OFFLINE_ENV


HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
GENERATION_CELLS = [(8, 24), (8, 128), (32, 24), (32, 128)]
# (impl, use_vllm) per update cell; TRL 1.12 runs in its own virtualenv, the rest in the vLLM environment
UPDATE_IMPLS = [("trl112", False), ("ppomax_ppo", False), ("ppomax_ppo", True), ("ppomax_max", False),
                ("ppomax_max", True), ("una_online", False), ("una_online", True), ("grpo", False),
                ("grpo", True)]  # fmt: skip
UPDATE_CELLS = [(8, 128), (32, 128), (8, 24)]


def log(message: str) -> None:
    print(f"[vllm-speed] {message}", file=sys.stderr, flush=True)


def env(threads: int) -> dict:
    out = {**os.environ, **OFFLINE_ENV, "PYTHONWARNINGS": "ignore", "VLLM_CPU_KVCACHE_SPACE": "2"}
    out.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out.pop("PYTHONPATH", None)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# generation (runs inside the vLLM environment: `--inner-generation`)
# ----------------------------------------------------------------------------------------------------------------------
def inner_generation(model_dir: str, reps: int, device: str) -> None:
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ppomax_trl import PPOConfig
    from ppomax_trl.generation import HFGenerator
    from ppomax_trl.modules import PolicyAndValueWrapper
    from ppomax_trl.prompts import collate_prompts
    from ppomax_trl.vllm_generation import VLLMGenerator

    sys.path.insert(0, str(HERE))
    from _ppo_worker import REVIEW_PROMPTS

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token, tokenizer.padding_side = "<|endoftext|>", "left"
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    model = PolicyAndValueWrapper(policy, None)
    prompts = [
        list(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)["input_ids"])
        for p in REVIEW_PROMPTS
    ]
    results = {}
    generators = {}
    configs = {}
    for backend in ("hf", "vllm"):
        configs[backend] = PPOConfig(output_dir="/tmp/vllm-speed", use_cpu=device == "cpu", bf16=False, report_to="none",
                         use_vllm=backend == "vllm", response_length=max(n for _, n in GENERATION_CELLS),
                         local_rollout_forward_batch_size=max(b for b, _ in GENERATION_CELLS))  # fmt: skip
    # after the configs: a `TrainingArguments` resets accelerate's shared state
    accelerator = Accelerator(cpu=device == "cpu")
    for backend, args in configs.items():
        start = time.perf_counter()
        if backend == "hf":
            generators[backend] = HFGenerator(accelerator, args, tokenizer.pad_token_id, None)
        else:
            longest = max(map(len, prompts))
            generators[backend] = VLLMGenerator(accelerator, args, policy, pad_token_id=tokenizer.pad_token_id,
                                                stop_token_ids=None, max_prompt_tokens=longest)  # fmt: skip
        results[f"{backend}_init_s"] = time.perf_counter() - start
    for batch, length in GENERATION_CELLS:
        rows = [{"input_ids": prompts[i % len(prompts)]} for i in range(batch)]
        ids, mask = collate_prompts(rows, tokenizer.pad_token_id, device)
        timings = {"hf": [], "vllm": []}
        for rep in range(reps + 1):  # rep 0 warms both up
            for backend, generator in generators.items():
                generator.args.response_length = length
                torch.manual_seed(rep)
                start = time.perf_counter()
                out = generator.generate(model, ids, mask, temperature=1.0, top_p=1.0)
                seconds = time.perf_counter() - start
                tokens = int(out.mask.sum())
                if rep:
                    timings[backend].append((seconds, tokens))
        cell = {}
        for backend, runs in timings.items():
            seconds = statistics.median(s for s, _ in runs)
            tokens = statistics.median(t for _, t in runs)
            cell[backend] = {
                "s": seconds,
                "tokens": tokens,
                "tokens_per_s": tokens / seconds,
                "all_s": [s for s, _ in runs],
            }
        cell["speedup"] = cell["hf"]["s"] / cell["vllm"]["s"]
        results[f"batch{batch}_tokens{length}"] = cell
        log(f"generation batch {batch} x {length}: HF {cell['hf']['s']:.2f} s, vLLM {cell['vllm']['s']:.2f} s")
    results["torch_threads"] = torch.get_num_threads()
    print(json.dumps(results), flush=True)


def run_generation(python: Path, model_dir: str, reps: int, threads: int, device: str) -> dict:
    cmd = [str(python), str(Path(__file__).resolve()), "--inner-generation", "--model-dir", model_dir,
           "--reps", str(reps), "--device", device]  # fmt: skip
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env(threads), cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"generation worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------------------------------------------------
# updates
# ----------------------------------------------------------------------------------------------------------------------
def run_update(python: Path, impl: str, use_vllm: bool, batch: int, length: int, updates: int, model_dir: str,
               threads: int) -> dict:  # fmt: skip
    cmd = [str(python), str(HERE / "_ppo_worker.py"), "--impl", impl, "--setting", "smollm2", "--model-dir", model_dir,
           "--updates", str(updates), "--batch-size", str(batch), "--response-length", str(length),
           "--num-ppo-epochs", "1", "--num-mini-batches", "1", "--max-grad-norm", "1.0"]  # fmt: skip
    if use_vllm:
        cmd.append("--use-vllm")
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env(threads), cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{") and '"impl"' in line]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {impl} vllm={use_vllm} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1])
    result["process_wall_s"] = time.perf_counter() - start
    return result


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip


def markdown(report: dict) -> str:
    """The tables of docs/benchmarks.md from a report."""
    lines = ["| batch x new tokens | HF `generate` s | vLLM s | HF tokens/s | vLLM tokens/s | vLLM speed-up |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for key, cell in report.get("generation", {}).items():
        if isinstance(cell, dict):
            hf, vl = cell["hf"], cell["vllm"]
            shape = key.removeprefix("batch").replace("_tokens", " x ")
            lines.append(f"| {shape} | {hf['s']:.2f} | {vl['s']:.2f} | {hf['tokens_per_s']:.0f} | "
                         f"{vl['tokens_per_s']:.0f} | {cell['speedup']:.2f}x |")  # fmt: skip
    for key, cell in report.get("updates", {}).items():
        base = cell.get("trl112", {}).get("s_per_update")
        lines += ["", f"Seconds per update, {key.removeprefix('batch').replace('_tokens', ' x ')} new tokens:", "",
                  "| trainer | s/update | vs TRL 1.12 PPO | sampler mismatch (mean abs log-prob) |",
                  "| --- | ---: | ---: | ---: |"]  # fmt: skip
        for name, run in cell.items():
            if "error" in run:
                lines.append(f"| {name} | failed: {run['error'][:120]} | | |")
                continue
            ratio = f"{run['s_per_update'] / base:.2f}x" if base else ""
            mismatch = run.get("sampler_logp_difference_mean")
            lines.append(
                f"| {name} | {run['s_per_update']:.1f} | {ratio} | {'' if mismatch is None else f'{mismatch:.4f}'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "vllm_speed_cpu.json")
    parser.add_argument("--part", choices=("all", "generation", "updates"), default="all")
    parser.add_argument("--reps", type=int, default=2, help="generation: timed repetitions per cell (median)")
    parser.add_argument("--updates", type=int, default=3, help="updates per training run (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vllm-python", type=Path, default=DEFAULT_VLLM_PYTHON)
    parser.add_argument("--trl112-venv", type=Path, default=HERE / ".venv-trl112")
    parser.add_argument("--model-dir", default=None, help="converted SmolLM2 folder (default: ppomax_trl.assets)")
    parser.add_argument("--cells", default=None, help="update cells as B:T,B:T (default: 8:128,32:128,8:24)")
    parser.add_argument("--no-trl112", action="store_true", help="skip TRL 1.12 (e.g. on a GPU without its venv)")
    parser.add_argument("--impls", default=None, help="only these update runs, e.g. trl112,ppomax_ppo,ppomax_ppo+vllm")
    parser.add_argument("--table", action="store_true", help="print the markdown tables of --out and exit")
    parser.add_argument("--inner-generation", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.out.read_text())))
        return
    if args.model_dir is None:
        from ppomax_trl.assets import ensure_smollm2

        args.model_dir = str(ensure_smollm2())
    if args.inner_generation:
        inner_generation(args.model_dir, args.reps, args.device)
        return
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.setdefault("machine", machine())
    report["vllm_python"] = str(args.vllm_python)

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    if args.part in ("all", "generation") and "generation" not in report:
        report["generation"] = run_generation(args.vllm_python, args.model_dir, args.reps, args.threads, args.device)
        save()
    if args.part in ("all", "updates"):
        cells = UPDATE_CELLS
        if args.cells:
            cells = [tuple(int(x) for x in cell.split(":")) for cell in args.cells.split(",")]
        impls = [(i, v) for i, v in UPDATE_IMPLS if not (args.no_trl112 and i == "trl112")]
        if args.impls:
            wanted = set(args.impls.split(","))
            impls = [(i, v) for i, v in impls if f"{i}{'+vllm' if v else ''}" in wanted]
        trl112 = None
        if not args.no_trl112:
            from ppo_vs_trl112 import ensure_trl112_venv

            trl112 = ensure_trl112_venv(args.trl112_venv)
        updates = report.setdefault("updates", {})
        for batch, length in cells:
            cell = updates.setdefault(f"batch{batch}_tokens{length}", {})
            for impl, use_vllm in impls:
                key = f"{impl}{'+vllm' if use_vllm else ''}"
                if key in cell:
                    continue
                python = trl112 if impl == "trl112" else args.vllm_python
                log(f"updates batch {batch} x {length}: {key}")
                try:
                    result = run_update(
                        python, impl, use_vllm, batch, length, args.updates, args.model_dir, args.threads
                    )
                except RuntimeError as error:
                    if impl != "grpo" or not use_vllm:
                        raise
                    # TRL's colocate weight sync calls vLLM's per-parameter `load_weights`, which the CPU backend's
                    # packed weights do not support: recorded, not fatal
                    cell[key] = {"error": str(error).splitlines()[-1][:300]}
                    save()
                    log(f"  failed: {cell[key]['error']}")
                    continue
                cell[key] = {k: result.get(k) for k in ("s_per_update", "s_per_update_all", "first_update_s",
                             "peak_rss_mb", "process_wall_s", "sampler_logp_difference_mean", "trl", "transformers")}  # fmt: skip
                save()
                log(f"  {result['s_per_update']:.2f} s/update")
    save()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
