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
"""`UNAConfig`: offline UNA (https://huggingface.co/papers/2408.15339) from pairwise, binary and score feedback."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from .losses import UNA_LOSS_TYPES


SCORE_NORMALIZERS = ("identity", "minmax", "sigmoid")
TRUNCATION_MODES = ("keep_start", "keep_end")
# Paper v2 and released code (una_ranklist_spec.md §A.7): beta = 0.03 for DPO (= UNA-pairwise) and UNA-score, 0.01 for UNA-binary.
PAPER_BETAS = {"pairwise": 0.03, "binary": 0.01, "score": 0.03}


@dataclass
class UNAConfig(TrainingArguments):
    r"""
    Configuration for [`UNATrainer`]: offline UNA, which fits the implicit reward
    `r = beta * sum_t (log pi_theta(y_t) - log pi_ref(y_t))` (completion tokens, no length normalisation) to pairwise,
    binary or score feedback. One run may mix all three feedback types; each row is dispatched on its own columns.

    `per_device_train_batch_size` counts **rows**: a preference row forwards two sequences, an unpaired or scored row
    one.

    > Parameters that control the model

    Parameters:
        model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained` when `model` (or `ref_model`) is a string.
            As in TRL: `dtype` defaults to float32 and may be a `torch.dtype`, `"auto"` (the checkpoint's) or
            `"bfloat16"`/`"float16"`/`"float32"`.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Disable dropout in the policy and reference, so that the implicit reward is deterministic and exactly 0
            at initialisation.

    > Parameters that control the data preprocessing

    Parameters:
        dataset_num_proc (`int`, *optional*):
            Number of processes for dataset preprocessing (chat template, tokenization).
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Maximum length of a tokenized prompt + completion; longer sequences are truncated per `truncation_mode`.
            With `"keep_start"`, rows whose prompt alone fills `max_length` are dropped (they would have no completion
            token), as in TRL's `DPOTrainer`. `None`: no truncation.
        truncation_mode (`str`, *optional*, defaults to `"keep_start"`):
            `"keep_start"` or `"keep_end"`, as in TRL's `DPOConfig`.
        pad_to_multiple_of (`int`, *optional*):
            Pad each batch to a multiple of this length.
        score_normalizer (`str`, *optional*, defaults to `"identity"`):
            Maps the raw `score` of scored rows to the target s in [0, 1]: `"identity"` (scores must already lie in
            [0, 1]), `"minmax"` (`(s - score_low) / (score_high - score_low)`) or `"sigmoid"` (`sigma(s)`, for
            reward-model logits). A callable `row -> float` passed to the trainer as `score_normalizer` replaces it.
            A normalised score outside [0, 1] is an error naming the row.
        score_low (`float`, *optional*):
            `"minmax"` only: the raw score mapped to 0. `None`: the smallest score of the training dataset.
        score_high (`float`, *optional*):
            `"minmax"` only: the raw score mapped to 1. `None`: the largest score of the training dataset. Evaluation
            datasets reuse the training range, so both splits are mapped alike.

    > Parameters that control the training

    Parameters:
        beta (`float`, *optional*):
            beta of the implicit reward. `None`: the paper's value per feedback type, 0.03 for pairwise (DPO) and
            score, 0.01 for binary (the paper's v2 experiments and released code, `una_ranklist_spec.md` §A.7). A
            number applies to all.
        binary_loss (`str`, *optional*, defaults to `"mse"`):
            Loss of binary rows: `"mse"` `(sigma(r) - s)^2` or `"bce"` `-[s log sigma(r) + (1 - s) log sigma(-r)]`;
            both are in the paper (v2 Eqs. 11-12).
        score_loss (`str`, *optional*, defaults to `"mse"`):
            Loss of scored rows: `"mse"` (the paper, v2 Eq. 13) or `"bce"` (soft-label BCE; **not in the paper**).
        precompute_ref_log_probs (`bool`, *optional*, defaults to `False`):
            Compute the reference log-probs of every completion once, before training, and read them from the batch
            afterwards. Without a `ref_model` or PEFT adapter, no copy of the policy is then kept in memory. The
            `una/kl` metric needs the reference logits, so it is not logged in this mode.
        precompute_ref_batch_size (`int`, *optional*):
            Rows per batch of the precomputation. `None`: `per_device_train_batch_size` (train) and
            `per_device_eval_batch_size` (eval).

    > [!NOTE]
    > Overrides of [`~transformers.TrainingArguments`] defaults: `learning_rate=5e-6` (the paper's, except 3e-5 for
    > score-only runs), `logging_steps=10`, `bf16=None` (True on a CUDA device unless `fp16`, False otherwise),
    > `remove_unused_columns=False` (the trainer keeps only its own columns and must see them in the collator).
    """

    # JSON strings given on the command line for these fields are parsed to dicts by `TrainingArguments`.
    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["model_init_kwargs"]

    # ---------------------------------------------------------------- TrainingArguments defaults overridden
    learning_rate: float = field(
        default=5e-6,
        metadata={"help": "Initial learning rate (AdamW). The paper uses 5e-6, and 3e-5 for score-only runs."},
    )
    logging_steps: float = field(
        default=10, metadata={"help": "Log every this many steps (a float < 1 is a fraction of the run)."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision. None: True on a CUDA device unless fp16 is set, False otherwise."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Must stay False: the trainer keeps only its own columns and its collator needs them."},
    )

    # ---------------------------------------------------------------- model
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for `from_pretrained` when `model` or `ref_model` is a string."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Disable dropout in policy and reference, so the implicit reward is 0 at initialisation."},
    )

    # ---------------------------------------------------------------- data preprocessing
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Number of processes for dataset preprocessing (chat template, tokenizing)."}
    )
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Maximum tokenized prompt + completion length; longer sequences are truncated per "
            "`truncation_mode`. None: no truncation."
        },
    )
    truncation_mode: str = field(
        default="keep_start",
        metadata={"help": "Truncation beyond `max_length`: 'keep_start' or 'keep_end'.", "choices": TRUNCATION_MODES},
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad each batch to a multiple of this length."}
    )
    score_normalizer: str = field(
        default="identity",
        metadata={
            "help": "Raw score -> target in [0, 1]: 'identity' (scores already in [0, 1]), 'minmax' (with "
            "`score_low`/`score_high`) or 'sigmoid'. Pass a callable to the trainer to replace it.",
            "choices": SCORE_NORMALIZERS,
        },
    )
    score_low: float | None = field(
        default=None,
        metadata={"help": "'minmax' only: raw score mapped to 0. None: the training dataset's smallest score."},
    )
    score_high: float | None = field(
        default=None,
        metadata={"help": "'minmax' only: raw score mapped to 1. None: the training dataset's largest score."},
    )

    # ---------------------------------------------------------------- training
    beta: float | None = field(
        default=None,
        metadata={
            "help": "beta of the implicit reward. None: the paper's per feedback type (0.03 pairwise and score, "
            "0.01 binary); a number applies to all."
        },
    )
    binary_loss: str = field(
        default="mse",
        metadata={"help": "Loss of binary rows: 'mse' or 'bce' (both in the paper).", "choices": UNA_LOSS_TYPES},
    )
    score_loss: str = field(
        default="mse",
        metadata={
            "help": "Loss of scored rows: 'mse' (the paper) or 'bce' (soft-label BCE, not in the paper).",
            "choices": UNA_LOSS_TYPES,
        },
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "Compute the reference log-probs once before training (no `una/kl` metric then)."},
    )
    precompute_ref_batch_size: int | None = field(
        default=None,
        metadata={"help": "Rows per batch of the precomputation. None: the per-device train/eval batch size."},
    )

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = (not self.fp16) and torch.cuda.is_available() and not self.use_cpu
        super().__post_init__()
        if self.remove_unused_columns:
            raise ValueError(
                "UNATrainer needs `remove_unused_columns=False`: it keeps only its own columns, and removing the "
                "others by the model's signature would drop them."
            )
        if self.beta is not None and self.beta <= 0:
            raise ValueError(f"`beta` must be > 0 (or None for the paper's per-feedback values), got {self.beta}.")
        for name in ("binary_loss", "score_loss"):
            if getattr(self, name) not in UNA_LOSS_TYPES:
                raise ValueError(f"`{name}` must be one of {UNA_LOSS_TYPES}, got {getattr(self, name)!r}.")
        if self.score_normalizer not in SCORE_NORMALIZERS:
            raise ValueError(
                f"`score_normalizer` must be one of {SCORE_NORMALIZERS}, got {self.score_normalizer!r}; pass a "
                "callable to `UNATrainer(score_normalizer=...)` for a custom mapping."
            )
        if (self.score_low is not None or self.score_high is not None) and self.score_normalizer != "minmax":
            raise ValueError("`score_low`/`score_high` apply to `score_normalizer='minmax'` only; unset them.")
        if self.score_low is not None and self.score_high is not None and self.score_high <= self.score_low:
            raise ValueError(f"`score_high` ({self.score_high}) must be > `score_low` ({self.score_low}).")
        if self.truncation_mode not in TRUNCATION_MODES:
            raise ValueError(f"`truncation_mode` must be one of {TRUNCATION_MODES}, got {self.truncation_mode!r}.")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError("`max_length` must be >= 2 (a prompt token and a completion token) or None.")
        if self.precompute_ref_batch_size is not None and self.precompute_ref_batch_size < 1:
            raise ValueError("`precompute_ref_batch_size` must be >= 1 or None.")

    def beta_for(self, feedback: str) -> float:
        """beta used for rows of `feedback` (`"pairwise"`, `"binary"` or `"score"`)."""
        return PAPER_BETAS[feedback] if self.beta is None else self.beta
