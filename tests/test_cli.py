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
"""The console entry point and the offline demo."""

import math
import shutil
import subprocess
import sys

import pytest
import torch

from ppomax_trl import PPOMaxConfig, PPOMaxTrainer
from ppomax_trl.cli import main
from ppomax_trl.demo import letter_o_reward, run_demo


def test_entry_point_is_installed_and_lists_demo():
    exe = shutil.which("ppomax-trl")
    assert exe is not None, "pip install -e . should install the `ppomax-trl` console script"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out
    with pytest.raises(SystemExit):
        main([])  # a subcommand is required


def test_letter_o_reward():
    assert letter_o_reward([], ["oooo", "abcd", "", "o a"]) == [1.0, 0.0, 0.0, 1 / 3]


def test_demo_runs_offline_and_reports_held_out_reward(tmp_path):
    result = run_demo(output_dir=str(tmp_path), num_updates=2)
    assert set(result) == {"before", "after", "seconds"}
    assert all(math.isfinite(v) for v in result.values())
    assert 0.0 <= result["before"] <= 1.0 and 0.0 <= result["after"] <= 1.0


def test_critic_from_policy_backbone_when_only_reward_funcs(tmp_path, tokenizer, models, prompt_dataset):
    from conftest import common_args

    policy = models[0]
    trainer = PPOMaxTrainer(PPOMaxConfig(**common_args(tmp_path)), tokenizer, policy, None, None, prompt_dataset, None,
                            reward_funcs=letter_o_reward)  # fmt: skip
    critic_backbone = dict(trainer.model.value_model.model.named_parameters())
    for name, param in policy.model.named_parameters():
        assert torch.equal(param, critic_backbone[name]), name
    assert trainer.model.value_model.score.out_features == 1


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "ppomax_trl", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout
