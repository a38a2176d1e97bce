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
"""Prompts: a prompt dataset checked and tokenized, streamed deterministically, and left-padded for generation.

It owns the `input_ids` / `prompt` dataset contract (text or conversational prompts, chat template applied), the
deterministic index stream that makes a resumed run draw exactly the prompts it would have drawn, and the left-padded
`(B, P)` prompt batch. It must not generate, score or know about models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from datasets import Dataset

from .ppo_config import OnlineRolloutConfig


class _IndexStream:
    """Deterministic infinite stream of dataset indices: epoch e is `randperm(n)` seeded with `seed + e`.

    Item k of the stream depends only on `(n, seed, k)`, so a resumed run draws exactly the prompts it would have.
    """

    def __init__(self, num_rows: int, seed: int) -> None:
        self.num_rows, self.seed, self._cache = num_rows, seed, {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            self._cache = {
                epoch: torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + epoch))
            }
        return self._cache[epoch]

    def take(self, start: int, count: int) -> list[int]:
        return [int(self._permutation(k // self.num_rows)[k % self.num_rows]) for k in range(start, start + count)]


def prepare_prompt_dataset(dataset: Dataset, tokenizer, args: OnlineRolloutConfig, split: str) -> Dataset:
    """A prompt dataset checked (columns, rows, `max_prompt_length`) with an `input_ids` column: `prompt` rows are
    tokenized (chat template applied to conversations). Context checks against the models are the trainer's."""
    columns = dataset.column_names
    if "input_ids" not in columns and "prompt" not in columns:
        raise ValueError(
            f"The {split} dataset needs an `input_ids` column (tokenized prompts, as in TRL 1.12) or a `prompt` "
            f"column (text or conversational); it has {columns}."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {split} dataset is empty.")
    source = "input_ids" if "input_ids" in columns else "prompt"
    missing = [i for i, value in enumerate(dataset[source]) if value is None]
    if missing:
        raise ValueError(
            f"The {split} dataset has no `{source}` in row(s) {missing[:10]}{' ...' if len(missing) > 10 else ''} "
            f"({len(missing)} in all). Drop or fill those rows."
        )
    if "input_ids" not in columns:
        from trl.data_utils import is_conversational, maybe_apply_chat_template

        conversational = is_conversational(dataset[0])

        def tokenize(row):
            text = maybe_apply_chat_template({"prompt": row["prompt"]}, tokenizer)["prompt"]
            ids = tokenizer(text, add_special_tokens=not conversational)["input_ids"]
            return {"input_ids": ids}

        dataset = dataset.map(tokenize, num_proc=args.dataset_num_proc, desc=f"Tokenizing {split} prompts")
    lengths = [len(ids) for ids in dataset["input_ids"]]
    if min(lengths) == 0:
        raise ValueError(f"The {split} dataset has an empty prompt (row {lengths.index(0)}).")
    if args.max_prompt_length is not None and max(lengths) > args.max_prompt_length:
        raise ValueError(
            f"A {split} prompt has {max(lengths)} tokens > max_prompt_length={args.max_prompt_length} (row "
            f"{lengths.index(max(lengths))}). Filter or shorten the prompts, or raise `max_prompt_length`."
        )
    return dataset


def collate_prompts(
    rows: list[dict], pad_id: int, device, collator: Callable | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded `(B, P)` prompt ids and mask of `rows` (through the user's `collator` when given), on `device`."""
    if collator is not None:
        batch = collator([{"input_ids": row["input_ids"]} for row in rows])
        input_ids = batch["input_ids"]
        mask = batch.get("attention_mask", (input_ids != pad_id).long())
        if (mask[:, -1] == 0).any():
            raise ValueError(
                "The data collator pads prompts on the right; generation needs left padding. Set "
                "`tokenizer.padding_side = 'left'` or drop the custom `data_collator`."
            )
        return input_ids.to(device), mask.to(device)
    width = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids = torch.as_tensor(row["input_ids"], dtype=torch.long)
        input_ids[i, width - len(ids) :] = ids
        mask[i, width - len(ids) :] = 1
    return input_ids.to(device), mask.to(device)


__all__ = ["collate_prompts", "prepare_prompt_dataset"]
