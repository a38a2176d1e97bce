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
"""`report_to="wandb"` with wandb offline: what lands in the run folder, read back with wandb's own reader."""

import json

import pytest
import wandb
from conftest import PROMPTS, common_args, wandb_history

from ppomax_trl import PPOMaxConfig, PPOMaxTrainer


MONITORS = [  # as wandb sees them: transformers' `rewrite_logs` prefixes every training key with `train/`
    "train/ppomax/kl_per_token",
    "train/ppomax/response_length",
    "train/ppomax/ppl_policy",
    "train/objective/scores",
    "train/objective/kl",
]


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """An offline wandb session writing under `tmp_path`, finished and torn down afterwards (no run leaks)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "ppomax-trl-test")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR"):  # tables are staged there: not in $HOME
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    wandb.teardown()  # a session started earlier in this process would ignore the variables above
    yield tmp_path / "wandb"
    if wandb.run is not None:
        wandb.finish()
    wandb.teardown()


def test_ppo_max_logs_monitors_and_completion_tables_to_wandb(
    tmp_path, tokenizer, models, prompt_dataset, wandb_offline
):
    policy, reward_model, _ = models
    eval_dataset = prompt_dataset.select(range(5))
    args = PPOMaxConfig(
        **common_args(
            tmp_path,
            report_to=["wandb"],
            critic_warmup_steps=1,  # step 1: critic warm-up; steps 2 and 3: PPO updates (8 episodes, 4 per batch)
            num_sample_generations=2,  # a completions table after each PPO update
            logging_steps=2,  # step 3's table comes after the last logged step: it must carry its own step
            per_device_eval_batch_size=len(eval_dataset),
        )
    )
    trainer = PPOMaxTrainer(
        args, tokenizer, policy, None, reward_model, prompt_dataset, eval_dataset=eval_dataset
    )  # the critic: a copy of the reward model
    trainer.train()
    assert trainer.state.global_step == 3
    wandb.finish()  # flushes the transaction log

    (run_dir,) = wandb_offline.glob("offline-run-*")
    history = wandb_history(run_dir)

    # (a) one completions table per PPO update, at that update's step, one row per eval prompt
    tables = [row for row in history if "completions.path" in row]
    assert [row["train/global_step"] for row in tables] == [2, 3]
    for row in tables:
        assert row["completions._type"] == "table-file" and row["completions.nrows"] == len(eval_dataset)
        table = json.loads((run_dir / "files" / row["completions.path"]).read_text())
        assert table["columns"] == ["query", "model response", "score"]
        assert [query for query, _, _ in table["data"]] == PROMPTS[: len(eval_dataset)]
        assert all(isinstance(score, float) for _, _, score in table["data"])

    # (b) the PPO-max monitors, under the names a dashboard or sweep metric uses, at the logged steps
    logged = [row for row in history if "train/ppomax/kl_per_token" in row]
    assert [row["train/global_step"] for row in logged] == [2, 3]  # logging_steps=2, then the end-of-training log
    for row in logged:
        assert set(MONITORS) <= set(row), set(MONITORS) - set(row)
        assert row["train/ppomax/ppl_policy"] > 1 and row["train/ppomax/response_length"] > 0


def test_log_completions_sends_each_updates_rollouts_to_wandb_without_an_eval_set(
    tmp_path, tokenizer, models, prompt_dataset, wandb_offline
):
    policy, reward_model, value_model = models

    def brevity(completions, **kwargs):
        return [-len(text) / 10 for text in completions]

    args = PPOMaxConfig(**common_args(tmp_path, report_to=["wandb"], critic_warmup_steps=0, log_completions=True))
    trainer = PPOMaxTrainer(
        args, tokenizer, policy, None, reward_model, prompt_dataset, value_model, reward_funcs=brevity
    )
    trainer.train()  # 2 updates of 4 rollouts, logging_steps=1, no eval_dataset
    wandb.finish()

    (run_dir,) = wandb_offline.glob("offline-run-*")
    tables = [row for row in wandb_history(run_dir) if "completions.path" in row]
    assert [row["train/global_step"] for row in tables] == [1, 2]
    for row in tables:
        assert row["completions.nrows"] == args.batch_size  # every rollout, not only the printed ones
        table = json.loads((run_dir / "files" / row["completions.path"]).read_text())
        columns = ["step", "prompt", "completion", *trainer.reward_func_names, "score"]
        assert table["columns"] == columns and "brevity" in columns
        assert {line[0] for line in table["data"]} == {row["train/global_step"]}
