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
"""What a PPO user reads: the monitor figure (`plot_monitors`, `ppomax-trl plot`) and `log_completions` tables."""

import json
import math
import re
import subprocess
import sys

import pytest
from conftest import common_args, recipe_env

from ppomax_trl import PPOMaxConfig, PPOMaxTrainer
from ppomax_trl.plots import load_log_history, monitor_figure, plot_monitors, write_log_history


pytest.importorskip("matplotlib")  # the `[quickstart]` extra


PNG = b"\x89PNG\r\n\x1a\n"
PPO_PANELS = [
    "reward",
    "KL to the reference (nats per token)",
    "value loss",
    "explained variance of the returns",
    "clip fraction",
    "policy entropy (nats per token)",
    "approx KL, rollout -> updated policy",
    "response length (tokens)",
    "perplexity of the responses",
]
PPO_KEYS = [
    "ppomax/raw_score_mean", "ppomax/kl_per_token", "ppomax/kl_per_token_k3", "loss/value_avg",
    "val/explained_variance", "policy/clipfrac_avg", "val/clipfrac_avg", "policy/entropy_avg", "policy/approxkl_avg",
    "policy/approxkl_k3_avg", "ppomax/response_length", "ppomax/response_length_max", "ppomax/ppl_policy",
    "ppomax/ppl_ref", "objective/kl", "grad_norm",
]  # fmt: skip
UNA_KEYS = [
    "ppomax/raw_score_mean", "ppomax/kl_per_token", "ppomax/kl_per_token_k3", "una/loss", "ppomax/response_length",
    "ppomax/response_length_max", "ppomax/ppl_policy", "ppomax/ppl_ref", "objective/kl",
]  # fmt: skip


def synthetic_history(keys, steps=12, max_length_share=0.2, warmup=2):
    """A log history as a trainer writes it: held-out reward at step 0 and at the end, one train row per step."""
    history = [{"step": 0, "eval_objective/scores": 0.1}]
    for step in range(1, steps + 1):
        row = {key: 0.5 + 0.1 * math.sin(step + i) for i, key in enumerate(keys)}
        row.update({"step": step, "ppomax/max_length_share": max_length_share})
        if "loss/value_avg" in keys:
            row["ppomax/critic_warmup"] = float(step <= warmup)
        history.append(row)
    history[3]["val/explained_variance"] = math.nan  # undefined at one update: left out, not a broken line
    history.append({"step": steps, "eval_objective/scores": 0.4})
    return history


def test_plot_monitors_draws_the_ppo_diagnostics(tmp_path):
    path = tmp_path / "monitors.png"
    titles = plot_monitors(synthetic_history(PPO_KEYS), path, title="test")
    assert titles == PPO_PANELS
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000


def test_plot_monitors_leaves_out_what_the_run_did_not_log_or_cannot_move(tmp_path):
    # online UNA: no critic, so no value, clip, entropy or approx-KL panels; its own loss instead
    una_titles = plot_monitors(synthetic_history(UNA_KEYS), tmp_path / "una.png")
    assert una_titles == [
        "reward",
        "KL to the reference (nats per token)",
        "UNA loss",
        "response length (tokens)",
        "perplexity of the responses",
    ]
    # every response ran to the cap at every step (length monitor off): the length panel would be flat
    pinned = synthetic_history(PPO_KEYS, max_length_share=1.0)
    expected = [title for title in PPO_PANELS if title != "response length (tokens)"]
    assert plot_monitors(pinned, tmp_path / "pinned.png") == expected
    assert plot_monitors(pinned, tmp_path / "forced.png", show_length=True) == PPO_PANELS
    assert plot_monitors(synthetic_history(PPO_KEYS), tmp_path / "off.png", show_length=False) == expected
    # one epoch on one minibatch: the ratio is 1 when it is measured, so the clip fraction is 0 at every step
    one_pass = [
        {**row, "policy/clipfrac_avg": 0.0, "val/clipfrac_avg": 0.0} if "loss/value_avg" in row else row
        for row in synthetic_history(PPO_KEYS)
    ]
    assert plot_monitors(one_pass, tmp_path / "one_pass.png") == [t for t in PPO_PANELS if t != "clip fraction"]
    with pytest.raises(ValueError, match="none of the monitors"):
        plot_monitors([{"step": 1, "loss": 0.3}], tmp_path / "empty.png")


def test_held_out_reward_is_markers_and_the_warmup_is_shaded():
    import matplotlib.pyplot as plt

    fig = monitor_figure(synthetic_history(PPO_KEYS))
    try:
        reward = fig.axes[0]
        held_out = next(line for line in reward.get_lines() if line.get_label() == "held-out")
        assert held_out.get_linestyle() == "None" and held_out.get_marker() == "o"  # two points, not a line
        assert list(held_out.get_xdata()) == [0, 12]
        assert [text.get_text() for text in reward.texts] == ["0.10", "0.40"]
        assert "critic warm-up" in [handle.get_label() for handle in reward.get_legend().legend_handles]
    finally:
        plt.close(fig)


def test_load_log_history_reads_each_format_and_says_where_it_looked(tmp_path):
    history = synthetic_history(PPO_KEYS, steps=3)
    write_log_history(history, tmp_path / "log_history.json")
    source, rows = load_log_history(tmp_path)
    assert source == tmp_path / "log_history.json" and rows[1]["step"] == 1
    assert math.isnan(rows[3]["val/explained_variance"])  # NaN round-trips, as in trainer_state.json
    (tmp_path / "run.jsonl").write_text("\n".join(json.dumps(row) for row in history) + "\n")
    assert load_log_history(tmp_path / "run.jsonl")[1] == rows
    for step in (2, 10):  # the newest checkpoint by step number, not by name
        (tmp_path / "out" / f"checkpoint-{step}").mkdir(parents=True)
        state = {"global_step": step, "log_history": history[:step]}
        (tmp_path / "out" / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(state))
    assert load_log_history(tmp_path / "out")[0] == tmp_path / "out" / "checkpoint-10" / "trainer_state.json"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"log_history\.json, log_history\.jsonl, trainer_state\.json"):
        load_log_history(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_log_history(tmp_path / "missing")
    (tmp_path / "bad.json").write_text('{"global_step": 3}')
    with pytest.raises(ValueError, match="log_history"):
        load_log_history(tmp_path / "bad.json")


def ppomax_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ppomax_trl", *args],
        capture_output=True,
        text=True,
        env=recipe_env(),
        timeout=300,
        check=False,
    )


def test_plot_command_draws_a_real_runs_monitors(tmp_path, tokenizer, models, prompt_dataset):
    policy, reward_model, _ = models
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=1, save_strategy="steps", save_steps=3))
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset)
    trainer.train()  # step 1: critic warm-up; steps 2-3: PPO updates; checkpoint-3 holds trainer_state.json
    output_dir = tmp_path / "out"
    assert not (output_dir / "trainer_state.json").exists()  # only `save_state()` writes it there

    result = ppomax_cli("plot", str(output_dir))
    assert result.returncode == 0, result.stderr
    assert "checkpoint-3/trainer_state.json" in result.stdout and "value loss" in result.stdout
    assert (output_dir / "monitors.png").read_bytes()[:8] == PNG

    result = ppomax_cli("plot", str(output_dir / "checkpoint-3"), "--output", str(tmp_path / "checkpoint.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "checkpoint.png").read_bytes()[:8] == PNG


def test_plot_command_without_a_log_history_exits_2_naming_what_it_looked_for(tmp_path):
    result = ppomax_cli("plot", str(tmp_path))
    assert result.returncode == 2
    for name in ("log_history.json", "log_history.jsonl", "trainer_state.json", "checkpoint-*/trainer_state.json"):
        assert name in result.stderr
    assert "save_state()" in result.stderr and not result.stdout
    result = ppomax_cli("plot", str(tmp_path / "missing"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def brevity(completions, **kwargs):
    return [-len(text) / 10 for text in completions]


def starts_with_the(completions, **kwargs):
    return [float(text.startswith("the")) for text in completions]


def test_log_completions_prints_each_reward_function_without_an_eval_set(
    tmp_path, tokenizer, models, prompt_dataset, capfd, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps cells to the terminal width: keep each completion on one line
    policy, _, value_model = models
    seen = []

    def recorded(completions, **kwargs):
        seen.append(list(completions))
        return [1.0] * len(completions)

    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=0, log_completions=True, logging_steps=1))
    reward_funcs = [brevity, starts_with_the, recorded]
    trainer = PPOMaxTrainer(
        args, tokenizer, policy, None, None, prompt_dataset, value_model, reward_funcs=reward_funcs
    )
    assert trainer.eval_dataset is None
    capfd.readouterr()
    trainer.train()
    out = capfd.readouterr().out
    assert trainer.state.global_step == 2
    # the header: one column per reward function (the trainer's log lines name them too, as rewards/<name>/mean)
    header = ("step", "prompt", "completion", "brevity", "starts_with_the", "recorded", "score")
    assert any(re.search(r"\W+".join(header), line) for line in out.splitlines()), out
    assert out.count("Step 1") == 1 and out.count("Step 2") == 1  # one table per logged step, printed once
    last_step = [text.strip() for text in seen[-1] if text.strip()]
    assert last_step and all(text in out for text in last_step)


def test_log_completions_is_off_by_default(tmp_path, tokenizer, models, prompt_dataset, capfd):
    policy, reward_model, value_model = models
    args = PPOMaxConfig(**common_args(tmp_path, critic_warmup_steps=0))
    assert args.log_completions is False
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, value_model)
    capfd.readouterr()
    trainer.train()
    assert "completion" not in capfd.readouterr().out
    assert trainer._completions_to_log is None
