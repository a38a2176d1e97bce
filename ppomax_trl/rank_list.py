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
"""Rank-list (K-wise) reward-model training: `RankListRewardConfig`, `RankListRewardTrainer` and their collator.

InstructGPT (https://huggingface.co/papers/2203.02155 §3.5) trains its reward model on rankings of K = 4..9
completions per prompt: one batch element is one prompt with all its completions, every completion gets exactly one
forward pass, and the loss averages over all C(K, 2) pairs of the prompt. `RankListRewardTrainer` does that on top of
`trl.RewardTrainer`; the losses are the pure functions `ppomax_trl.losses.rank_list_loss` (spec:
`una_ranklist_spec.md` Part B).

Accepted rows (standard text or conversational messages, or already tokenized):

- `prompt` + `completions` (a list, best first);
- `prompt` + `completions` + `scores` (any order, higher is better; sorted here, ties per `ties`);
- TRL's preference rows `chosen` / `rejected` (K = 2, optional `prompt` and `margin`);
- tokenized: `completions_ids` (full prompt + completion ids, best first or with `scores`), or TRL's
  `chosen_ids` / `rejected_ids`.

The trained model is the plain `AutoModelForSequenceClassification(num_labels=1)` that `RewardTrainer` trains, so
`ppomax_trl.PPOTrainer` takes it as `reward_model` and as the critic initialisation.

Overrides of `trl.RewardTrainer` (house style rule 9). Private methods, overridden because TRL has no public hook
for them, are pinned by `tests/test_rank_list.py::test_private_overrides_match_parent_signatures`:

- `_prepare_dataset(dataset, processing_class, args, dataset_name)` (private): validates, sorts and tokenizes the
  ranked lists. TRL calls it inside `__init__` *before* `Trainer.__init__`, and again from `evaluate()` on an
  already prepared dataset, so it reads only its arguments and is idempotent.
- `_set_signature_columns_if_needed()` (private): keeps the rank-list columns.
- `__init__` (swaps in `DataCollatorForRankList`), `compute_loss`, `evaluate` (records the metric prefix for the
  pooled `eval_loss`), `log` (public).
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.data.data_collator import DataCollatorMixin
from transformers.utils import logging
from trl import RewardConfig, RewardTrainer

from .checkpoints import AtomicCheckpointMixin
from .losses import RANK_LIST_LOSS_TYPES, rank_list_loss, rank_list_pair_mask
from .model_utils import tokenizer_with_padding


logger = logging.get_logger(__name__)

TIE_POLICIES = ("drop_pairs", "keep")
_PAIR_LOSSES = ("instructgpt", "sigmoid_no_log")
# Bookkeeping columns written by `_prepare_dataset` and removed before it returns.
_K_COLUMN, _TIED_COLUMN, _DROPPED_COLUMN = "_rank_list_size", "_rank_all_tied", "_rank_dropped_too_long"
# Kept column: how many unrankable lists, dropped at preparation, a list carries into `rank/skipped_lists`.
SKIPPED_COLUMN = "skipped_lists"


# ----------------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class RankListRewardConfig(RewardConfig):
    r"""
    Configuration for [`RankListRewardTrainer`]: every [`~trl.RewardConfig`] field, plus the rank-list loss.

    `per_device_train_batch_size` counts **lists** (prompts): a step forwards the sum of their list sizes.

    Parameters:
        loss_type (`str`, *optional*, defaults to `"instructgpt"`):
            `"instructgpt"` (mean `-log sigma(r_i - r_j)` over the pairs of a list, then over lists), `"listmle"`
            (Plackett-Luce), `"listnet"` (graded scores) or `"sigmoid_no_log"` (bounded, not a likelihood). See
            [`~ppomax_trl.losses.rank_list_loss`]. For every loss type, `eval_loss` is the training objective on the
            whole eval set: the mean over its rankable lists of each list's loss (pair losses: the list's mean over
            its pairs; ListMLE: its sum over positions; ListNet: its cross-entropy; plus its centring term), pooled
            over batches and processes, never a mean of batch means.
        ties (`str`, *optional*, defaults to `"drop_pairs"`):
            Equal gold scores. `"drop_pairs"`: tied pairs carry no comparison (loss and metrics), and lists whose
            scores are all equal are skipped (logged and counted in `rank/skipped_lists`). `"keep"`: tied
            completions keep their input order and the list is treated as strictly ordered. ListNet always uses the
            graded scores as targets.
        margin_scale (`float`, *optional*):
            Pair losses only: margin `m_ij = margin_scale * (s_i - s_j)` from the score gap. Rows without `scores`
            get their list positions as scores (`K - 1, ..., 0`), so the margin is per rank step. A `margin` column
            (K = 2 rows, as in TRL) takes precedence.
        listnet_temperature (`float`, *optional*, defaults to `1.0`):
            tau of the ListNet target distribution `softmax(scores / tau)`.
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Completions whose tokenized prompt + completion exceed this are dropped from their list (counted and
            logged); the rest of the list keeps its order. At K = 2 this drops the row, as `RewardTrainer` does.

    > [!NOTE]
    > Inherited TRL defaults: `bf16=True` fails on CPU, so pass `bf16=False` (or `use_cpu=True`) there.
    """

    loss_type: str = field(
        default="instructgpt",
        metadata={
            "help": "Rank-list loss: 'instructgpt' (mean -log sigmoid over the pairs of a list, then over lists), "
            "'listmle' (Plackett-Luce), 'listnet' (graded scores) or 'sigmoid_no_log' (bounded, not a likelihood). "
            "eval_loss is the mean over all eval lists of each list's loss.",
            "choices": list(RANK_LIST_LOSS_TYPES),
        },
    )
    ties: str = field(
        default="drop_pairs",
        metadata={
            "help": "Equal gold scores: 'drop_pairs' (tied pairs carry no comparison; all-tied lists are skipped and "
            "counted) or 'keep' (tied completions keep their input order).",
            "choices": list(TIE_POLICIES),
        },
    )
    margin_scale: float | None = field(
        default=None,
        metadata={
            "help": "Pair losses only: margin m_ij = margin_scale * (s_i - s_j) from the gold score gap (list "
            "positions when a row has no scores). A 'margin' column takes precedence."
        },
    )
    listnet_temperature: float = field(
        default=1.0, metadata={"help": "Temperature tau of the ListNet targets softmax(scores / tau)."}
    )
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Completions whose tokenized prompt + completion exceed this many tokens are dropped from their "
            "list (counted); lists left with fewer than 2 completions are skipped. None: no limit."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.loss_type not in RANK_LIST_LOSS_TYPES:
            raise ValueError(f"`loss_type={self.loss_type!r}` is not supported; use one of {RANK_LIST_LOSS_TYPES}.")
        if self.ties not in TIE_POLICIES:
            raise ValueError(f"`ties={self.ties!r}` is not supported; use one of {TIE_POLICIES}.")
        if self.margin_scale is not None:
            if self.margin_scale < 0:
                raise ValueError(f"`margin_scale` must be >= 0, got {self.margin_scale}; use None for no margin.")
            if self.loss_type not in _PAIR_LOSSES:
                raise ValueError(
                    f"`margin_scale` applies to pair losses {_PAIR_LOSSES}, not `loss_type={self.loss_type!r}`; "
                    "unset `margin_scale` or change `loss_type`."
                )
        if not self.listnet_temperature > 0:
            raise ValueError(f"`listnet_temperature` must be > 0, got {self.listnet_temperature}.")


# ----------------------------------------------------------------------------------------------------------------------
# Collator
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class DataCollatorForRankList(DataCollatorMixin):
    """
    Flattens B ranked lists into one padded batch of their N = sum_b K_b real completions (no padded list slots).

    Each example holds `completions_ids` (K_b token-id lists, best first) and `scores` (K_b floats, non-increasing).
    Returns `input_ids` and `attention_mask` `(N, L)`, right-padded (the reward is read at the last non-pad token),
    `list_sizes` `(B,)`, `scores` `(B, K_max)` (0 in padded slots) and, when the examples have them, `margin` `(B,)`
    and `skipped_lists` `(B,)` (the unrankable lists each list carries, see `RankListRewardTrainer`).

    Args:
        pad_token_id (`int`): padding id. `RankListRewardTrainer` fills it from the tokenizer when left `None`.
        pad_to_multiple_of (`int`, *optional*): pad the sequence length to a multiple of this.
        return_tensors (`str`): only `"pt"`.

    Example:
    ```python
    >>> from ppomax_trl.rank_list import DataCollatorForRankList

    >>> collator = DataCollatorForRankList(pad_token_id=0)
    >>> collator(
    ...     [
    ...         {"completions_ids": [[1, 2, 3], [4, 5], [6]], "scores": [2.0, 1.0, 0.0]},
    ...         {"completions_ids": [[7, 8], [9]], "scores": [1.0, 0.0]},
    ...     ]
    ... )
    {'input_ids': tensor([[1, 2, 3],
                          [4, 5, 0],
                          [6, 0, 0],
                          [7, 8, 0],
                          [9, 0, 0]]),
     'attention_mask': tensor([[1, 1, 1],
                               [1, 1, 0],
                               [1, 0, 0],
                               [1, 1, 0],
                               [1, 0, 0]]),
     'list_sizes': tensor([3, 2]),
     'scores': tensor([[2., 1., 0.],
                       [1., 0., 0.]])}
    ```
    """

    pad_token_id: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.pad_token_id is None:
            raise ValueError("`DataCollatorForRankList.pad_token_id` is None; set it to the tokenizer's pad id.")
        sequences = [ids for example in examples for ids in example["completions_ids"]]  # N lists, list-major
        length = max(len(ids) for ids in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)  # (N, L)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)  # (N, L)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        list_sizes = torch.tensor([len(example["completions_ids"]) for example in examples])  # (B,)
        scores = torch.zeros((len(examples), int(list_sizes.max())))  # (B, K_max)
        for b, example in enumerate(examples):
            scores[b, : len(example["scores"])] = torch.as_tensor(example["scores"], dtype=scores.dtype)
        output = {"input_ids": input_ids, "attention_mask": attention_mask, "list_sizes": list_sizes, "scores": scores}
        if "margin" in examples[0]:
            output["margin"] = torch.tensor([float(example["margin"]) for example in examples])  # (B,)
        if SKIPPED_COLUMN in examples[0]:
            output[SKIPPED_COLUMN] = torch.tensor([int(example[SKIPPED_COLUMN]) for example in examples])  # (B,)
        return output


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------
def rank_list_statistics(
    rewards: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-list ranking statistics, each `(B,)` and summable across batches and processes.

    Gold comparisons are the pairs i < j of real slots with s_i > s_j (every i < j when `scores` is `None`).

    Args:
        rewards (`(B, K)`): predicted rewards, best first. mask (`(B, K)` bool): real slots.
        scores (`(B, K)`, *optional*): gold scores, non-increasing; `None` means a strict order.

    Returns:
        `num_pairs`, `num_correct` (gold pairs with r_i > r_j, strictly, as TRL's `accuracy`), `has_pairs`, `exact`
        (1 if every gold pair is correct, i.e. the predicted order agrees with the gold partial order), `kendall_tau`
        and `tau_defined` (tau-b between rewards and gold scores; undefined, 0 and not counted, when the gold scores
        are constant; 0 when the rewards are), `num_valid_pairs` and `num_tied_pairs` (gold ties), `list_size`,
        `reward_sum`, `reward_sq_sum`, `margin` (r of the first minus r of the last real slot) and
        `adjacent_margin` (`margin / (K_b - 1)`: the mean of r_k - r_(k+1) over adjacent slots).
    """
    mask = mask.bool()
    rewards = rewards.detach().float().masked_fill(~mask, 0.0)
    pairs, valid_pairs, tied = rank_list_pair_mask(mask, scores)  # (B, K, K)
    delta = rewards[:, :, None] - rewards[:, None, :]  # (B, K, K)
    num_pairs = pairs.sum((1, 2)).float()
    num_correct = (pairs & (delta > 0)).sum((1, 2)).float()
    # Kendall tau-b: (concordant - discordant) / sqrt((n0 - n_gold_ties) (n0 - n_reward_ties)) over real pairs.
    gold_sign = torch.ones_like(delta) if scores is None else torch.sign(scores[:, :, None] - scores[:, None, :])
    concordance = (gold_sign * torch.sign(delta) * valid_pairs).sum((1, 2))
    num_valid = valid_pairs.sum((1, 2)).float()
    num_gold_ties = tied.sum((1, 2)).float()
    num_reward_ties = (valid_pairs & (delta == 0)).sum((1, 2)).float()
    denominator = ((num_valid - num_gold_ties) * (num_valid - num_reward_ties)).sqrt()
    # the clamp only keeps the discarded branch of `where` finite (0/0 when the rewards or the scores are constant)
    tau = torch.where(denominator > 0, concordance / denominator.clamp(min=1e-12), torch.zeros_like(denominator))
    list_size = mask.sum(-1)
    first = mask.float().argmax(-1)  # (B,) first real slot (the best)
    last = mask.shape[-1] - 1 - mask.flip(-1).float().argmax(-1)  # (B,) last real slot (the worst)
    margin = rewards.gather(1, first[:, None]).squeeze(1) - rewards.gather(1, last[:, None]).squeeze(1)
    return {
        "num_pairs": num_pairs,
        "num_correct": num_correct,
        "has_pairs": (num_pairs > 0).float(),
        "exact": ((num_correct == num_pairs) & (num_pairs > 0)).float(),
        "kendall_tau": tau,
        "tau_defined": (num_valid > num_gold_ties).float(),
        "num_valid_pairs": num_valid,
        "num_tied_pairs": num_gold_ties,
        "list_size": list_size.float(),
        "reward_sum": rewards.sum(-1),
        "reward_sq_sum": rewards.square().sum(-1),
        "margin": margin * (list_size >= 2),
        "adjacent_margin": margin / (list_size - 1).clamp(min=1),
    }


def summarize_rank_list_statistics(sums: dict[str, float]) -> dict[str, float]:
    """Logged metrics from `rank_list_statistics` summed over lists (and batches, and processes).

    Ratios of sums, so metrics accumulated over many eval batches equal the metric of the concatenated set.
    """
    out = {}
    if sums.get("num_pairs", 0) > 0:
        out["accuracy"] = sums["num_correct"] / sums["num_pairs"]
    if sums.get("has_pairs", 0) > 0:
        out["rank/pair_accuracy_macro"] = sums["pair_accuracy"] / sums["has_pairs"]
        out["rank/exact_order_accuracy"] = sums["exact"] / sums["has_pairs"]
    if sums.get("tau_defined", 0) > 0:
        out["rank/kendall_tau"] = sums["kendall_tau"] / sums["tau_defined"]
    if sums.get("list_size", 0) > 0:
        mean = sums["reward_sum"] / sums["list_size"]
        out["rank/mean_reward"] = mean
        out["rank/std_reward"] = math.sqrt(max(sums["reward_sq_sum"] / sums["list_size"] - mean**2, 0.0))
    if sums.get("num_lists", 0) > 0:
        out["rank/margin"] = sums["margin"] / sums["num_lists"]
        out["rank/adjacent_margin"] = sums["adjacent_margin"] / sums["num_lists"]
        out["rank/list_size"] = sums["list_size"] / sums["num_lists"]
    if sums.get("num_valid_pairs", 0) > 0:
        out["rank/tie_rate"] = sums["num_tied_pairs"] / sums["num_valid_pairs"]
    if "listnet_kl" in sums and sums.get("num_ranked", 0) > 0:
        out["rank/listnet_kl"] = sums["listnet_kl"] / sums["num_ranked"]
    if "skipped_lists" in sums:
        out["rank/skipped_lists"] = sums["skipped_lists"]  # a count, not a mean
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------
def _is_conversation(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and isinstance(value[0], dict) and "role" in value[0]


def _column_names(dataset: Dataset | IterableDataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)).keys())  # an IterableDataset may not know its columns before reading


def _detect_format(column_names: list[str]) -> str:
    if "completions_ids" in column_names:  # checked first: a prepared dataset also keeps its text columns
        return "list_ids"
    if "chosen_ids" in column_names and "rejected_ids" in column_names:
        return "pair_ids"
    if "completions" in column_names:
        return "list"
    if "chosen" in column_names and "rejected" in column_names:
        return "pair"
    raise ValueError(
        f"Unrecognised rank-list dataset columns {column_names}. Expected `prompt` + `completions` (best first), "
        "`prompt` + `completions` + `scores`, `chosen` + `rejected` (optional `prompt`), or tokenized "
        "`completions_ids` (optional `scores`) / `chosen_ids` + `rejected_ids`."
    )


def _check_text(value: Any, index: int, what: str) -> None:
    """A prompt or completion is a string or a non-empty list of messages; else a `ValueError` naming row and entry."""
    if isinstance(value, str):
        return
    if value is None:
        raise ValueError(f"Row {index}: {what} is None; drop it (with its score) or drop the row.")
    if isinstance(value, list) and value and any(isinstance(message, dict) for message in value):
        for position, message in enumerate(value):
            if not (isinstance(message, dict) and "role" in message):
                raise ValueError(
                    f"Row {index}: {what}: message {position} is not a `{{'role': ..., 'content': ...}}` dict, got "
                    f"{message!r}."
                )
        return
    raise ValueError(
        f"Row {index}: {what} must be a string or a list of messages, got {type(value).__name__} {value!r}."
    )


def _check_token_ids(value: Any, index: int, what: str) -> None:
    if value is None:
        raise ValueError(f"Row {index}: {what} is None; drop it (with its score) or drop the row.")
    if isinstance(value, (list, tuple)):
        return
    # A data error of a row, so a ValueError as every other row check (house style), not a TypeError.
    raise ValueError(f"Row {index}: {what} must be a list of token ids, got {type(value).__name__}.")


def _tokenize_completion(processing_class, prompt, completion, example: dict[str, Any]) -> list[int]:
    """Ids of prompt + completion, as `RewardTrainer` tokenizes chosen and rejected."""
    if _is_conversation(completion) or _is_conversation(prompt):
        if not (_is_conversation(completion) and (prompt is None or _is_conversation(prompt))):
            raise ValueError("Mixed formats: a conversational prompt needs conversational completions and vice versa.")
        messages = list(prompt or []) + list(completion)
        tools = example.get("tools")
        tools = json.loads(tools) if isinstance(tools, str) else tools  # as TRL: tools may be stored as JSON text
        kwargs = {"tools": tools, **(example.get("chat_template_kwargs") or {})}
        return list(
            processing_class.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]
        )
    eos = processing_class.eos_token
    if eos is not None and not completion.endswith(eos):  # as TRL: standard text gets an EOS, the reward read there
        completion = completion + eos
    return list(processing_class(text=(prompt or "") + completion)["input_ids"])


def _prepare_row(example, index, *, fmt, processing_class, max_length, ties) -> dict[str, Any]:
    # Malformed entries fail here naming the row and the completion, not later as a bare TypeError/AttributeError.
    if fmt == "list_ids":
        completions_ids = example["completions_ids"]
        if not isinstance(completions_ids, (list, tuple)):
            raise ValueError(f"Row {index}: `completions_ids` must be a list, got {type(completions_ids).__name__}.")
        for k, ids in enumerate(completions_ids):
            _check_token_ids(ids, index, f"completion {k} of `completions_ids`")
        sequences = [list(ids) for ids in completions_ids]
    elif fmt == "pair_ids":
        for k, column in enumerate(("chosen_ids", "rejected_ids")):
            _check_token_ids(example[column], index, f"completion {k} (`{column}`)")
        sequences = [list(example["chosen_ids"]), list(example["rejected_ids"])]
    else:
        completions = example["completions"] if fmt == "list" else [example["chosen"], example["rejected"]]
        if not isinstance(completions, list):
            raise ValueError(f"Row {index}: `completions` must be a list, got {type(completions).__name__}.")
        names = [""] * len(completions) if fmt == "list" else [" (`chosen`)", " (`rejected`)"]
        for k, (completion, name) in enumerate(zip(completions, names, strict=True)):
            _check_text(completion, index, f"completion {k}{name} of the ranked list")
        prompt = example.get("prompt")
        if "prompt" in example:  # an absent column is an implicit prompt; a None in a present one is a broken row
            if prompt is None:
                raise ValueError(
                    f'Row {index}: `prompt` is None; give every row a prompt ("" for none) or drop the row.'
                )
            _check_text(prompt, index, "`prompt`")
        sequences = [_tokenize_completion(processing_class, prompt, c, example) for c in completions]
    size = len(sequences)
    raw_scores = example.get("scores") if fmt in ("list", "list_ids") else None
    if raw_scores is None:
        scores = [float(size - 1 - k) for k in range(size)]  # positions: the list is already best first
    else:
        if len(raw_scores) != size:
            raise ValueError(
                f"Row {index}: {len(raw_scores)} scores for {size} completions; give one score per completion."
            )
        if any(s is None or not math.isfinite(float(s)) for s in raw_scores):
            raise ValueError(f"Row {index}: non-finite score in {list(raw_scores)}; fix or drop the row.")
        order = sorted(range(size), key=lambda k: -float(raw_scores[k]))  # stable: ties keep their input order
        sequences = [sequences[k] for k in order]
        scores = [float(raw_scores[k]) for k in order]
    if "margin" in example and example["margin"] is not None and size != 2:
        raise ValueError(
            f"Row {index}: a `margin` column needs chosen/rejected pairs (K = 2), got K = {size}; use `margin_scale` "
            "for lists."
        )
    dropped = 0
    if max_length is not None:
        keep = [len(ids) <= max_length for ids in sequences]
        dropped = size - sum(keep)
        sequences = [ids for ids, k in zip(sequences, keep, strict=True) if k]
        scores = [s for s, k in zip(scores, keep, strict=True) if k]
    all_tied = len(scores) >= 2 and ties == "drop_pairs" and max(scores) == min(scores)
    return {
        "completions_ids": sequences,
        "scores": scores,
        _K_COLUMN: len(sequences),
        _TIED_COLUMN: all_tied,
        _DROPPED_COLUMN: dropped,
    }


def carry_skipped_lists(rankable: list[bool]) -> list[int]:
    """How many unrankable lists each list carries into `rank/skipped_lists` (0 for the unrankable ones).

    Unrankable lists are dropped at preparation, so no batch draws them. Each is carried by the next rankable list of
    the dataset (the trailing ones by the last), so a logging window counts the skipped lists next to the lists it
    draws, and one epoch counts each of them once.

    Example: `carry_skipped_lists([True, False, True, False, False, True, False]) == [0, 0, 1, 0, 0, 3, 0]`.
    """
    carried, pending, last = [0] * len(rankable), 0, None
    for index, ok in enumerate(rankable):
        if ok:
            carried[index], pending, last = pending, 0, index
        else:
            pending += 1
    if last is not None:
        carried[last] += pending
    return carried


def ranked_to_pairs(dataset: Dataset, ties: str = "drop_pairs") -> Dataset:
    """Expand ranked lists (`prompt`, `completions`, optional `scores`) into TRL preference rows.

    Every gold pair (i better than j) of a list becomes a `prompt` / `chosen` / `rejected` row, so a list of K
    strictly ranked completions gives C(K, 2) rows. `ties` as in [`RankListRewardConfig`]. For pairwise-only trainers
    and for the pairwise baseline of `benchmarks/rank_list_vs_pairwise.py`.
    """
    if ties not in TIE_POLICIES:
        raise ValueError(f"`ties={ties!r}` is not supported; use one of {TIE_POLICIES}.")

    def expand(batch):
        out = {"prompt": [], "chosen": [], "rejected": []}
        for row in range(len(batch["completions"])):
            completions = batch["completions"][row]
            scores = (
                batch["scores"][row] if "scores" in batch else [len(completions) - k for k in range(len(completions))]
            )
            order = sorted(range(len(completions)), key=lambda k: -float(scores[k]))
            for a in range(len(order)):
                for b in range(a + 1, len(order)):
                    i, j = order[a], order[b]
                    if ties == "drop_pairs" and float(scores[i]) == float(scores[j]):
                        continue
                    out["prompt"].append(batch["prompt"][row] if "prompt" in batch else "")
                    out["chosen"].append(completions[i])
                    out["rejected"].append(completions[j])
        return out

    return dataset.map(expand, batched=True, remove_columns=dataset.column_names)


# ----------------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------------
class RankListRewardTrainer(AtomicCheckpointMixin, RewardTrainer):
    """
    Reward-model trainer on ranked lists of K >= 2 completions per prompt (InstructGPT's K-wise loss by default).

    Same arguments as [`~trl.RewardTrainer`]; `args` is a [`RankListRewardConfig`]. The data formats are in the
    module docstring. Each step flattens the real completions of its B lists into one `(sum_b K_b, L)` batch and calls
    the model once, so every completion gets exactly one forward pass. The `processing_class` passed in is never
    changed: without a pad token (or with `args.eos_token` set) the trainer works on a copy, padded with EOS (one
    warning), keeps it as `self.processing_class` and saves it with the model. A `None` or malformed prompt or
    completion fails at preparation with its row and completion index.

    Example:

    ```python
    from datasets import Dataset
    from ppomax_trl import RankListRewardConfig, RankListRewardTrainer

    dataset = Dataset.from_dict(
        {"prompt": ["The sky is"], "completions": [[" blue.", " clear.", " green.", " loud."]]}  # best first
    )
    trainer = RankListRewardTrainer(model, RankListRewardConfig("out", bf16=False), train_dataset=dataset,
                                    processing_class=tokenizer)
    trainer.train()
    ```

    Logged metrics (`eval_` prefix in evaluation, pooled over processes and over every eval batch): `accuracy`
    (pairwise, over all gold pairs; TRL's key), `rank/pair_accuracy_macro`, `rank/exact_order_accuracy`,
    `rank/kendall_tau`, `rank/mean_reward`, `rank/std_reward`, `rank/margin` (best minus worst),
    `rank/adjacent_margin`, `rank/list_size`, `rank/tie_rate`, `rank/skipped_lists`, `rank/listnet_kl` (ListNet,
    per ranked list) and TRL's `num_tokens`. Pooled means ratios of sums over lists, with `gather_for_metrics`
    dropping the lists the sampler repeats to even out the processes, so neither the eval batch size nor the number of
    processes changes an eval metric. `eval_loss` is pooled the same way: the mean over the eval lists of each list's
    loss (see `loss_type`).

    `rank/skipped_lists` counts the lists that cannot be ranked (fewer than 2 completions, or all tied under
    `ties="drop_pairs"`): a sum over the logging window (over the eval set in evaluation), not a mean. They are dropped
    while preparing a map-style dataset (and reported once, in a warning and in `trainer.skipped_lists`); each rides
    with the next kept list in the `skipped_lists` column (see [`carry_skipped_lists`]) and is counted in the window
    that draws it, so one epoch counts every skipped list once. Lists a custom collator lets through that the loss
    cannot rank are counted too. Streamed (`IterableDataset`) lists are dropped without a count.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "ppomax-trl", "rank-list-rm"]
    _name = "Rank-list reward"
    _paper: ClassVar[dict[str, str]] = {
        "title": "Training language models to follow instructions with human feedback",
        "id": "2203.02155",
        "citation": (
            "@inproceedings{ouyang2022training,\n"
            "    title        = {{Training language models to follow instructions with human feedback}},\n"
            "    author       = {Long Ouyang and Jeff Wu and Xu Jiang and others},\n"
            "    year         = 2022,\n"
            "    booktitle    = {Advances in Neural Information Processing Systems},\n"
            "}"
        ),
    }

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: RankListRewardConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics: Callable | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        optimizer_cls_and_kwargs: tuple | None = None,
        preprocess_logits_for_metrics: Callable | None = None,
        quantization_config: Any = None,
        peft_config: Any = None,
    ):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
            args = RankListRewardConfig(f"{name.split('/')[-1]}-RankListReward")
        elif not isinstance(args, RankListRewardConfig):
            raise TypeError(
                f"`args` must be a `RankListRewardConfig`, got `{type(args).__name__}`; build one with the same fields."
            )
        if isinstance(processing_class, PreTrainedTokenizerBase):
            # RewardTrainer sets the pad token (and `args.eos_token`/`args.pad_token`) on the tokenizer it receives:
            # it gets a copy whenever it would change one, never the caller's tokenizer.
            given = processing_class
            processing_class = tokenizer_with_padding(processing_class, type(self).__name__)
            overrides = {"eos_token": args.eos_token, "pad_token": args.pad_token}
            if processing_class is given and any(
                value is not None and value != getattr(given, name) for name, value in overrides.items()
            ):
                processing_class = copy.deepcopy(given)
        # RewardTrainer resolves the pad token after its collator is chosen, so ours learns the pad id afterwards.
        default_collator = data_collator is None
        if default_collator:
            data_collator = DataCollatorForRankList(pad_to_multiple_of=args.pad_to_multiple_of)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        if default_collator:
            self.data_collator.pad_token_id = self.processing_class.pad_token_id
        self._rank_sums = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._eval_prefix = "eval"  # of the `evaluate()` running: `log` replaces `{prefix}_loss` with the pooled loss

    # ------------------------------------------------------------------------------------------------ data (private)
    def _prepare_dataset(
        self,
        dataset: Dataset | IterableDataset,
        processing_class: PreTrainedTokenizerBase,
        args: RankListRewardConfig,
        dataset_name: str,
    ) -> Dataset | IterableDataset:
        # Called from RewardTrainer.__init__ before Trainer.__init__ and again by evaluate(): arguments only, and a
        # prepared dataset (completions_ids, sorted scores) maps to itself.
        column_names = _column_names(dataset)
        fmt = _detect_format(column_names)
        consumed = {
            "list": ["completions"],
            "pair": ["chosen", "rejected"],
            "pair_ids": ["chosen_ids", "rejected_ids"],
        }
        map_kwargs: dict[str, Any] = {
            "with_indices": True,
            "fn_kwargs": {
                "fmt": fmt,
                "processing_class": processing_class,
                "max_length": args.max_length,
                "ties": args.ties,
            },
            "remove_columns": consumed.get(fmt, []),
        }
        if isinstance(dataset, Dataset):  # IterableDataset.map takes neither num_proc nor desc
            map_kwargs.update(num_proc=args.dataset_num_proc, desc=f"Preparing ranked lists of {dataset_name}")
        with args.main_process_first(desc=f"rank-list {dataset_name} dataset preparation"):
            dataset = dataset.map(_prepare_row, **map_kwargs)
            if isinstance(dataset, Dataset):
                sizes, all_tied, dropped = dataset[_K_COLUMN], dataset[_TIED_COLUMN], dataset[_DROPPED_COLUMN]
                counts = {
                    "too_short": sum(k < 2 for k in sizes),
                    "all_tied": sum(bool(t) and k >= 2 for k, t in zip(sizes, all_tied, strict=True)),
                    "too_long_completions": sum(dropped),
                }
                if any(counts.values()) and args.process_index == 0:
                    logger.warning(
                        f"Rank-list {dataset_name} dataset: skipped {counts['too_short']} lists with fewer than 2 "
                        f"completions and {counts['all_tied']} lists whose scores are all tied; dropped "
                        f"{counts['too_long_completions']} completions longer than max_length={args.max_length}."
                    )
                if not hasattr(self, "skipped_lists"):
                    self.skipped_lists = {}
                self.skipped_lists[dataset_name] = counts
                carried = carry_skipped_lists([k >= 2 and not t for k, t in zip(sizes, all_tied, strict=True)])
                if SKIPPED_COLUMN in dataset.column_names:  # prepared again: keep what the first preparation carried
                    carried = [c + int(old) for c, old in zip(carried, dataset[SKIPPED_COLUMN], strict=True)]
                    dataset = dataset.remove_columns(SKIPPED_COLUMN)
                dataset = dataset.add_column(SKIPPED_COLUMN, carried)
            filter_kwargs = {"num_proc": args.dataset_num_proc} if isinstance(dataset, Dataset) else {}
            dataset = dataset.filter(
                lambda size, tied: size >= 2 and not tied, input_columns=[_K_COLUMN, _TIED_COLUMN], **filter_kwargs
            )
            dataset = dataset.remove_columns([_K_COLUMN, _TIED_COLUMN, _DROPPED_COLUMN])
        if isinstance(dataset, Dataset) and len(dataset) == 0:
            raise ValueError(f"The {dataset_name} dataset has no list with 2 or more ranked completions left.")
        return dataset

    def _set_signature_columns_if_needed(self):
        # `remove_unused_columns` keeps only these columns for the collator.
        if self._signature_columns is None:
            self._signature_columns = ["completions_ids", "scores", "margin", SKIPPED_COLUMN]

    # ------------------------------------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        list_sizes = inputs["list_sizes"]  # (B,)
        scores = inputs["scores"]  # (B, K)
        B, K = scores.shape
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        # (N,) one forward row per real completion, list-major; fp32 so that the K-wise sums stay exact under bf16
        flat_rewards = outputs.logits.squeeze(-1).float()
        mask = torch.arange(K, device=scores.device)[None, :] < list_sizes[:, None]  # (B, K)
        rewards = flat_rewards.new_zeros((B, K)).masked_scatter(mask, flat_rewards)  # (B, K) best first

        args = self.args
        gold = scores if args.ties == "drop_pairs" else None  # "keep": the list order is strict
        margins = None
        if "margin" in inputs:
            margins = rewards.new_zeros((B, K, K))
            margins[:, 0, 1] = inputs["margin"]
        elif args.margin_scale is not None:
            margins = args.margin_scale * (scores[:, :, None] - scores[:, None, :])  # (B, K, K)
        loss_scores = scores if args.loss_type == "listnet" else gold
        loss, loss_stats = rank_list_loss(
            rewards,
            mask,
            args.loss_type,
            margins,
            scores=loss_scores,
            listnet_temperature=args.listnet_temperature,
            center_rewards_coefficient=args.center_rewards_coefficient,
        )

        if mode == "train":
            num_tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += num_tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            per_list = self._per_list_loss_stats(mode, rewards, mask, margins, loss_scores, loss_stats)
            carried = inputs.get(SKIPPED_COLUMN, torch.zeros_like(list_sizes))  # (B,) skipped at preparation
            per_list["skipped_lists"] = carried.float() + 1.0 - per_list["num_ranked"]
            self._accumulate_rank_metrics(mode, rewards, mask, gold, per_list)

        if return_outputs:
            # Predictions for `Trainer.evaluate`/`predict`: (B, K) rewards, NaN in padded slots.
            return loss, {"rewards": rewards.detach().masked_fill(~mask, float("nan"))}
        return loss

    def _per_list_loss_stats(self, mode, rewards, mask, margins, loss_scores, loss_stats) -> dict[str, torch.Tensor]:
        """`(B,)` per list: `num_ranked` (1 if the loss ranks it), `listnet_kl` (ListNet) and, in evaluation, `loss`.

        `rank_list_loss` returns means over lists. Evaluation needs each list's own values, so that `gather_for_metrics`
        can drop the lists the sampler repeats and pool the rest over the eval set: one call per list. Training logs
        window means, for which the batch mean repeated over the ranked lists is enough.
        """
        args = self.args
        if args.loss_type == "listnet":
            ranked = mask.sum(-1) >= 2  # (B,) as `rank_list_loss`: graded targets rank any list of 2 or more
        else:
            ranked = rank_list_pair_mask(mask, loss_scores)[0].any(-1).any(-1)  # (B,) lists with a gold comparison
        out = {"num_ranked": ranked.float()}
        if mode == "train":
            if "listnet_kl" in loss_stats:
                out["listnet_kl"] = loss_stats["listnet_kl"].float() * out["num_ranked"]
            return out
        losses, kls = rewards.new_zeros(ranked.shape), rewards.new_zeros(ranked.shape)  # (B,)
        for b in ranked.nonzero().flatten().tolist():
            one = slice(b, b + 1)
            losses[b], stats = rank_list_loss(
                rewards[one],
                mask[one],
                args.loss_type,
                None if margins is None else margins[one],
                scores=None if loss_scores is None else loss_scores[one],
                listnet_temperature=args.listnet_temperature,
                center_rewards_coefficient=args.center_rewards_coefficient,
            )
            kls[b] = stats.get("listnet_kl", 0.0)
        out["loss"] = losses
        if args.loss_type == "listnet":
            out["listnet_kl"] = kls
        return out

    def _accumulate_rank_metrics(self, mode, rewards, mask, gold, per_list) -> None:
        stats = rank_list_statistics(rewards, mask, gold)
        stats["pair_accuracy"] = stats["num_correct"] / stats["num_pairs"].clamp(min=1)
        stats["num_lists"] = torch.ones_like(stats["num_pairs"])
        stats.update(per_list)
        keys = sorted(stats)
        per_list = torch.stack([stats[key].float() for key in keys], dim=-1)  # (B, S)
        # gather_for_metrics drops the samples the sampler duplicated to even out the last eval batch.
        per_list = self.accelerator.gather_for_metrics(per_list)  # (B * processes, S)
        sums = self._rank_sums[mode]
        for key, value in zip(keys, per_list.sum(0).tolist(), strict=True):
            sums[key] += value

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """As `RewardTrainer.evaluate`; records the metric prefix, under which `log` writes the pooled loss."""
        # A dict of eval sets comes back here once per set, with its own prefix; sums left by a `predict()` are dropped.
        self._eval_prefix = metric_key_prefix
        self._rank_sums["eval"].clear()
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        sums = self._rank_sums[mode]
        if sums:
            for key, value in summarize_rank_list_statistics(sums).items():
                self._metrics[mode][key] = [value]
            loss_key = f"{self._eval_prefix}_loss"
            if mode == "eval" and sums.get("num_ranked", 0) > 0 and loss_key in logs:
                # The loss of the whole eval set; `Trainer`'s would count the lists the sampler repeats.
                logs[loss_key] = sums["loss"] / sums["num_ranked"]
            sums.clear()
        super().log(logs, start_time)
