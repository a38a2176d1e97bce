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
"""Golden trajectories of the online trainers, for `tests/test_golden_trajectory.py`.

A trajectory is every logged metric (time-dependent ones left out) and a sha256 digest of every weight after a few
updates with fixed seeds, for `PPOTrainer`, `PPOMaxTrainer` (critic warm-up, reward normalisation, ptx, a reward model
next to a reward function) and `OnlineUNATrainer`, in fp32 and CPU bf16 autocast, with evaluation and a checkpoint
mid-run, and the digest of a run resumed from that checkpoint. A refactor of the rollout engine must leave them
bit-identical: same metrics, same digests.

    python tests/golden/trajectory.py --output_dir /tmp/golden                  # one process: golden_1.json
    OMP_NUM_THREADS=1 accelerate launch --config_file recipes/accelerate_configs/ci/ddp.yaml --num_processes 2 \
        tests/golden/trajectory.py --output_dir /tmp/golden                     # DDP: golden_2.json, rank digests
    python tests/golden/trajectory.py --record                                 # both, into tests/golden/reference.json

`--record` writes the reference from the current code: run it on the commit *before* a change that must not move the
trajectories, and commit the file with that commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # before torch loads MKL: reproducible kernels (as tests/conftest.py)

import torch


# sha256 of a state dict, shared with the distributed tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
from config_probes import digest


HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REFERENCE = HERE / "reference.json"
KINDS = ("ppo", "ppomax", "una")
PRECISIONS = ("fp32", "bf16")
PROMPTS = ["the movie was", "i loved", "what a", "the food", "a good cast", "the film", "the acting", "a bad"]
EVAL_PROMPTS = ["the cast", "i hated", "a fine plot", "the service"]
PTX_TEXTS = ["a fine film with a good cast", "the food was cold and the service slow", "i loved every minute"]
TIME_DEPENDENT = ("eps", "runtime", "per_second", "total_flos")


def fingerprint() -> dict[str, str]:
    """What bit-identical results depend on besides the code: the torch build and the CPU's kernels."""
    return {"torch": torch.__version__, "machine": platform.machine(), "cpu": torch.backends.cpu.get_cpu_capability()}


def stable_metrics(log_history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if not any(t in k for t in TIME_DEPENDENT)} for entry in log_history]


def reward_length(prompts, completions, completion_ids, **kwargs):
    """A dense reward function of the text and the length."""
    return [0.3 * text.count("e") - 0.1 * len(ids) for text, ids in zip(completions, completion_ids, strict=True)]


def eos_biased(policy, eos_id: int):
    """`policy` with its EOS logit raised, so that some responses stop and some run to the cap."""

    def add_bias(module, inputs, logits):
        logits = logits.clone()
        logits[..., eos_id] += 3.0
        return logits

    policy.lm_head.register_forward_hook(add_bias)
    return policy


def build_trainer(kind: str, precision: str, output_dir: str, **overrides):
    from datasets import Dataset

    from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer, PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
    from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model

    tokenizer = build_tiny_tokenizer()
    train = Dataset.from_dict({"prompt": PROMPTS})
    held_out = Dataset.from_dict({"prompt": EVAL_PROMPTS})
    common = dict(
        output_dir=output_dir, use_cpu=True, bf16=precision == "bf16", report_to="none", disable_tqdm=True,
        activation_checkpointing=False, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        num_mini_batches=2, response_length=6, max_steps=4, logging_steps=1, learning_rate=1e-3, seed=0,
        eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=2, save_strategy="steps", save_steps=2,
        num_sample_generations=0, temperature=1.0, top_p=1.0, stop_token="eos",
    )  # fmt: skip
    common.update(overrides)
    policy = eos_biased(tiny_causal_lm(tokenizer, seed=0), tokenizer.eos_token_id)
    if kind == "ppo":
        args = PPOConfig(**common, num_ppo_epochs=2, whiten_rewards=True)
        return PPOTrainer(args, tokenizer, policy, None, tiny_reward_model(tokenizer, seed=1), train,
                          tiny_reward_model(tokenizer, seed=2), eval_dataset=held_out)  # fmt: skip
    if kind == "ppomax":
        args = PPOMaxConfig(**common, critic_warmup_steps=1, value_learning_rate=3e-3, ptx_coef=0.5, ptx_batch_size=2,
                            kl_controller="adaptive", reward_weights=[1.0, 0.5])  # fmt: skip
        return PPOMaxTrainer(args, tokenizer, policy, None, tiny_reward_model(tokenizer, seed=1), train,
                             eval_dataset=held_out, reward_funcs=[reward_length],
                             ptx_dataset=Dataset.from_dict({"text": PTX_TEXTS}))  # fmt: skip
    args = OnlineUNAConfig(**common, beta=0.5)
    return OnlineUNATrainer(args, tokenizer, policy, None, None, train, eval_dataset=held_out,
                            reward_funcs=[reward_length])  # fmt: skip


def trajectory(kind: str, precision: str, output_dir: str) -> dict:
    """Train 4 updates (a checkpoint and an evaluation after 2 and 4), then resume a second trainer from the step-2
    checkpoint: metrics of the first run, digests of both."""
    trainer = build_trainer(kind, precision, output_dir)
    trainer.train()
    state = trainer.accelerator.get_state_dict(trainer.model)
    checkpoint = os.path.join(output_dir, "checkpoint-2")
    files = sorted(str(p.relative_to(checkpoint)) for p in Path(checkpoint).rglob("*") if p.is_file())
    resumed = build_trainer(kind, precision, output_dir)
    resumed.train(resume_from_checkpoint=checkpoint)
    return {
        "metrics": stable_metrics(trainer.state.log_history),
        "digest": digest(state),
        "resumed_digest": digest(resumed.accelerator.get_state_dict(resumed.model)),
        "checkpoint_files": [f for f in files if not f.startswith(("rng_state", "global_step"))],
    }


def run_all(output_dir: str) -> None:
    """Every trajectory in this process (or in each of `accelerate launch`'s); rank 0 writes `golden_<N>.json`, every
    rank its digests in `rank<r>_digests.json`."""
    from accelerate import PartialState

    from ppomax_trl.recipe_utils import end_process_group

    state = PartialState()
    results = {}
    for kind in KINDS:
        for precision in PRECISIONS:
            results[f"{kind}-{precision}"] = trajectory(kind, precision, os.path.join(output_dir, kind, precision))
            state.wait_for_everyone()
    digests = {key: [value["digest"], value["resumed_digest"]] for key, value in results.items()}
    with open(os.path.join(output_dir, f"rank{state.process_index}_digests.json"), "w") as f:
        json.dump(digests, f, indent=1)
    if state.is_main_process:
        with open(os.path.join(output_dir, f"golden_{state.num_processes}.json"), "w") as f:
            json.dump(results, f, indent=1)
    end_process_group()


def launch_two_processes(output_dir: str) -> subprocess.CompletedProcess:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "MKL_CBWR": os.environ.get("MKL_CBWR", "AUTO,STRICT")}  # fmt: skip
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes" / "accelerate_configs" / "ci" / "ddp.yaml"),
        "--num_processes", "2", "--main_process_port", str(port),
        str(Path(__file__).resolve()), "--output_dir", output_dir,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)


def record() -> None:
    """Write `reference.json` from the current code: one process, then two."""
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        run_all(one)
        result = launch_two_processes(two)
        if result.returncode != 0:
            raise SystemExit(result.stderr[-6000:])
        reference = {
            "fingerprint": fingerprint(),
            "1": json.loads(Path(one, "golden_1.json").read_text()),
            "2": json.loads(Path(two, "golden_2.json").read_text()),
        }
    REFERENCE.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {REFERENCE}")  # noqa: T201


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", help="Where one run (or each launched process) writes its results.")
    parser.add_argument("--record", action="store_true", help="Rewrite tests/golden/reference.json.")
    cli = parser.parse_args()
    if cli.record:
        record()
    else:
        run_all(cli.output_dir)
