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
"""The positive-review task: openers, the VADER reward and the text statistics (naive twins)."""

import random

import pytest

from ppomax_trl.reviews import HELD_OUT_OPENERS, TRAIN_OPENERS, distinct_n, repeated_ngram_rate, vader_reward


def naive_distinct_n(texts, n):
    seen, total = [], 0
    for text in texts:
        words = text.split()
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            total += 1
            if gram not in seen:
                seen.append(gram)
    return len(seen) / total if total else 0.0


def naive_repeated_ngram_rate(texts, n):
    repeats, total = 0, 0
    for text in texts:
        words = text.split()
        earlier = []
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            total += 1
            repeats += gram in earlier
            earlier.append(gram)
    return repeats / total if total else 0.0


def test_distinct_2_and_repeated_trigrams_by_hand():
    texts = ["a b a b", "a b c"]  # bigrams ab ba ab | ab bc: 3 unique of 5
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert repeated_ngram_rate(["a b c a b c"], 3) == pytest.approx(1 / 4)  # abc bca cab abc
    assert repeated_ngram_rate(["a b c", "a b c"], 3) == 0.0  # repeats across texts are not loops
    assert distinct_n(["one"], 2) == 0.0 and repeated_ngram_rate([""], 3) == 0.0
    assert distinct_n(["great great great great"] * 3, 2) == pytest.approx(1 / 9)


def test_text_statistics_match_naive_loops():
    rng = random.Random(0)
    vocab = ["good", "bad", "the", "film", "was", "great", "a", "day"]
    for _ in range(50):
        texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(1, 5))]
        for n in (1, 2, 3):
            assert distinct_n(texts, n) == pytest.approx(naive_distinct_n(texts, n))
            assert repeated_ngram_rate(texts, n) == pytest.approx(naive_repeated_ngram_rate(texts, n))


def test_vader_reward_scores_the_completion_sentiment():
    scores = vader_reward(
        ["The film was"] * 3,
        [" wonderful, I loved the acting!", " a boring waste of time, terrible acting.", " released on a Tuesday."],
    )
    assert scores[0] > 0.5 and scores[1] < -0.5 and scores[2] == 0.0
    # only the completion is scored: a negative opener does not drag a positive completion down
    assert vader_reward(["The awful, terrible film"], [" was great."]) == vader_reward(["x"], [" was great."])


def test_openers_are_distinct_and_held_out():
    assert len(TRAIN_OPENERS) == 64 and len(HELD_OUT_OPENERS) == 16
    assert len(set(TRAIN_OPENERS + HELD_OUT_OPENERS)) == 80
    assert all(opener == opener.strip() and opener for opener in TRAIN_OPENERS + HELD_OUT_OPENERS)
