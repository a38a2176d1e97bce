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
"""A verifiable-reward task: two-number sums, "What is 23 + 45? Answer with just the number.", with a + b < 100.

Used by the `arithmetic` recipe config (`ppomax-trl ppo --config arithmetic`, dataset `arithmetic://`) and by
`benchmarks/arithmetic.py` (PPO-max vs PPO-max with the VAPO/VC-PPO options vs TRL's `GRPOTrainer`). Everything is
generated here from a seed, offline.

- `make_splits(num_train, num_held_out, seed)`: conversational `prompt` rows with an `answer` column. The two splits
  share no pair of numbers in either order, so a held-out question is never a training question with its terms
  swapped.
- `exact_match_reward(prompts, completions, answer, **kwargs)`: TRL `GRPOTrainer`'s reward-function signature; 1.0 when
  the last number in the completion (parsed as a grader would: see `last_number`) equals `answer`, else 0.0 (the
  "final answer" convention of verifiable-reward RL, e.g. DAPO https://huggingface.co/papers/2503.14476 scores the
  extracted final answer against the reference).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence


TEMPLATE = "What is {a} + {b}? Answer with just the number."
MAX_SUM = 99  # a + b < 100
# A run: a maximal run of word characters (any script) that does not follow a word character or a ".", with an
# optional leading "." and a minus sign ("-" or U+2212 "−", not after a word character: "10-2" holds 10 and 2). Runs
# join across "." or "," between two digits ("1,068", "3.5", "1.2.3") and across an exponent sign ("1e-2"), so no
# number is read from inside a longer run. Only runs starting with a digit are number-like ("SmolLM2" is a word).
RUN = re.compile(r"(?<![\w.])([-\u2212]?)(\.?\w+(?:(?:(?<=\d)[.,]|(?<=\d[eE])[-+\u2212])(?=\d)\w+)*)")
# A well-formed number (ASCII digits only): digits, or 1-3 digits then groups of ",ddd"; optional decimals; ".5" too.
NUMBER = re.compile(r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+")


def question_pairs(seed: int) -> list[tuple[int, int]]:
    """Every unordered pair {a, b} with 1 <= a <= b and a + b <= `MAX_SUM`, shuffled by `seed`, each put in a random
    order (a, b) or (b, a): 2450 pairs, so at most 2450 questions in all."""
    pairs = [(a, b) for a in range(1, MAX_SUM + 1) for b in range(a, MAX_SUM + 1 - a)]
    rng = random.Random(seed)
    rng.shuffle(pairs)
    return [(b, a) if rng.random() < 0.5 else (a, b) for a, b in pairs]


def question_row(a: int, b: int) -> dict:
    """One dataset row: the conversational prompt and the answer."""
    return {"prompt": [{"role": "user", "content": TEMPLATE.format(a=a, b=b)}], "answer": a + b}


def make_splits(num_train: int = 1024, num_held_out: int = 64, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows): `question_row`s of disjoint pairs, deterministic in `seed`."""
    pairs = question_pairs(seed)
    if num_train + num_held_out > len(pairs):
        raise ValueError(f"At most {len(pairs)} distinct questions; asked for {num_train} + {num_held_out}.")
    held_out = [question_row(a, b) for a, b in pairs[:num_held_out]]
    train = [question_row(a, b) for a, b in pairs[num_held_out : num_held_out + num_train]]
    return train, held_out


def completion_text(completion: str | list[dict]) -> str:
    """The text of a completion: a string, or (conversational, as TRL passes it) the last message's content."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def last_number(text: str) -> float | None:
    """The last number written in digits in `text`, read as a grader reads it, or None when there is none.

    The last number-like run (`RUN`: a maximal run that starts with a digit, or "." then a digit) is the answer. It
    counts only when it is a well-formed number (`NUMBER`): ASCII digits, "," only as a thousands separator ("1,068" is
    1068; "1,06" is malformed), "." as the decimal point, and a minus sign "-" or U+2212 "−" in front ("−68" is -68).
    A malformed last run gives None, never a part of it: "1068" holds no 68, "1e2" no 2 (no scientific notation), and
    fullwidth or Arabic-Indic digits are not digits. "forty-two" has no number; "10-2" ends with 2 (subtraction)."""
    runs = [(sign, run) for sign, run in RUN.findall(text) if run.lstrip(".")[:1].isdigit()]
    if not runs:
        return None
    sign, run = runs[-1]
    if not NUMBER.fullmatch(run):
        return None
    value = float(run.replace(",", ""))
    return -value if sign else value


def exact_match_reward(
    prompts: Sequence, completions: Sequence[str | list[dict]], answer: Sequence[int | float | str], **kwargs
) -> list[float]:
    """1.0 where the last number of the completion equals the `answer` column (as numbers: "72.0" matches 72), else
    0.0. Numbers are parsed as a grader would (`last_number`): a number is a maximal run, so no partial match inside
    a longer one ("1068" and "1e2" hold no 68 or 2); "," is a thousands separator ("1,068" is 1068); "-" and U+2212
    "−" are minus signs; ASCII digits only (fullwidth or Arabic-Indic digits score 0); a malformed last number scores
    0. TRL's reward-function signature: `prompts`, `completions` (strings, or assistant messages for conversational
    prompts) and the dataset columns as keyword arguments; the rest (`completion_ids`, `trainer_state`, ...) is
    ignored."""
    rewards = []
    for completion, target in zip(completions, answer, strict=True):
        value = last_number(completion_text(completion))
        rewards.append(float(value is not None and value == float(target)))
    return rewards
