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
"""`UNATrainer`: offline UNA (https://huggingface.co/papers/2408.15339) on pairwise, binary and score feedback.

UNA fits the implicit reward r = beta * sum_t (log pi_theta(y_t) - log pi_ref(y_t)) to explicit feedback. One run may
mix TRL's preference rows (`prompt`/`chosen`/`rejected`: DPO's sigmoid loss), unpaired preference rows
(`prompt`/`completion`/`label`: targets 1/0) and scored rows (`prompt`/`completion`/`score`: targets in [0, 1] after
a normaliser). The losses are the pure `ppomax_trl.losses.una_loss`; spec: `una_ranklist_spec.md` Part A.

Why `transformers.Trainer` and not TRL's `DPOTrainer` or `KTOTrainer` as the base: `DPOTrainer` keeps its loss in
the private `_compute_loss`, its preference-only tokenization in `_prepare_dataset`, its column list in
`_set_signature_columns_if_needed` and its reference precomputation in `_precompute_ref_logps`, and it forwards every
extra collator key to the model. Binary and score rows would need all four private methods overridden. `KTOTrainer`
builds mismatched-pair KL batches for its reference point that UNA does not use. So this trainer subclasses
`transformers.Trainer` and reuses TRL's public data utilities (`trl.data_utils.is_conversational`, `extract_prompt`,
`common_prefix_length`); its tokenization mirrors `DPOTrainer`'s, so preference rows give DPO's loss to rounding
(tested against `DPOTrainer.compute_loss`).

Overridden `Trainer` methods, all public: `compute_loss`, `prediction_step`, `evaluate`, `log`, `save_model`,
`create_model_card`. No underscore-prefixed `Trainer` method is overridden or called, and `loss_is_scaled_for_ga` (a
public class attribute since transformers 5.19) is set to `False`. Tests pin the parent signatures
(`tests/test_una.py::test_overridden_trainer_hooks_keep_their_signature`) and the absence of private overrides.

Logged metrics (in training, the mean of the steps' means over the logging window; `eval_` prefix in evaluation,
where every metric is pooled over the whole eval set: its sum over all eval rows, or completions for `una/logratio` and
`una/kl`, divided by their count, with `gather_for_metrics` dropping the rows the sampler repeats to even out the
processes, so neither the eval batch size nor the number of processes changes it; `eval_loss` is pooled the same way,
the mean over eval rows of each row's loss, i.e. the training objective on the whole eval set):

- `una/loss/{pairwise,binary,score}`: the mean loss of the rows of each feedback type;
- `una/reward/pairwise_chosen`, `una/reward/pairwise_rejected`, `una/reward/pairwise_margin`,
  `una/reward/pairwise_accuracy`, `una/reward/binary`, `una/reward/score`: mean implicit reward r per feedback type;
- `una/target_mean`, `una/predicted_score`: mean target s and mean sigma(r) over binary and scored rows;
- `una/implied_logratio_target`: mean logit(clamp(s, 1e-3, 1 - 1e-3)) / beta, the log-ratio the loss drives toward;
- `una/logratio`: mean summed log-ratio log pi_theta(y|x) - log pi_ref(y|x) over all completions;
- `una/kl`: mean over completions of sum_t KL(pi_theta(.|x, y_<t) || pi_ref(.|x, y_<t)) on the dataset's completions
  (full-vocabulary, teacher-forced). Not logged with `precompute_ref_log_probs`, which keeps no reference logits.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from accelerate.utils import gather_object, is_peft_model
from datasets import Dataset, IterableDataset
from torch import nn
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
)
from transformers.data.data_collator import DataCollatorMixin
from transformers.utils import is_peft_available, logging
from trl.data_utils import common_prefix_length, extract_prompt, is_conversational

from .checkpoints import AtomicCheckpointMixin
from .losses import UNA_FEEDBACK_TYPES, una_loss
from .model_utils import (
    causal_lm_from_path,
    copy_model,
    disable_dropout,
    freeze,
    tokenizer_of,
    tokenizer_with_padding,
)
from .una_config import UNAConfig


if is_peft_available():
    from peft import PeftConfig, get_peft_model


logger = logging.get_logger(__name__)

FEEDBACK_CODES = {feedback: code for code, feedback in enumerate(UNA_FEEDBACK_TYPES)}  # pairwise 0, binary 1, score 2
# Per-row metric contributions: `"loss"` (the row's loss) feeds the pooled `eval_loss` only, the others are logged.
METRIC_KEYS = (
    "loss",
    *(f"una/loss/{kind}" for kind in UNA_FEEDBACK_TYPES),
    *(f"una/reward/pairwise_{stat}" for stat in ("chosen", "rejected", "margin", "accuracy")),
    "una/reward/binary",
    "una/reward/score",
    "una/target_mean",
    "una/predicted_score",
    "una/implied_logratio_target",
    "una/logratio",
    "una/kl",
)
PREPARED_COLUMNS = ("prompt_ids", "completions_ids", "feedback", "target")
ScoreNormalizer = Callable[[dict[str, Any]], float]


# ----------------------------------------------------------------------------------------------------------------------
# Collator
# ----------------------------------------------------------------------------------------------------------------------
def _pad_right(sequences: list[list[int]], value: int, multiple: int | None) -> torch.Tensor:
    length = max(len(s) for s in sequences)
    if multiple:
        length = -(-length // multiple) * multiple
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


@dataclass
class DataCollatorForUNA(DataCollatorMixin):
    """Collates prepared UNA rows of any feedback mix into one right-padded batch of **real** completions only.

    Each row holds `prompt_ids`, `completions_ids` (two lists, chosen then rejected, for a preference row; one list
    otherwise), `feedback` (`"pairwise"`, `"binary"` or `"score"`), `target` (s in [0, 1]; unused for pairs) and,
    after precomputation, `ref_logps` (one float per completion). With B rows holding N completions in all:

    - `feedback` `(B,)`: codes 0 pairwise, 1 binary, 2 score (first key on purpose: `Trainer` reads the eval batch
      size from the first tensor, so eval losses are weighted by rows);
    - `targets` `(B,)` float; `sequence_index` `(B, 2)`: the rows of `input_ids` holding the chosen (or single) and
      the rejected completion, `-1` when there is none;
    - `input_ids`, `attention_mask`, `completion_mask` `(N, T)`: prompt + completion, truncated to `max_length`
      per `truncation_mode` as TRL's `DataCollatorForPreference` does;
    - `ref_logps` `(N,)` when the rows carry them.

    Example:
    ```python
    >>> collator = DataCollatorForUNA(pad_token_id=0)
    >>> collator([
    ...     {"prompt_ids": [5, 6], "completions_ids": [[7, 8], [9]], "feedback": "pairwise", "target": 0.0},
    ...     {"prompt_ids": [5], "completions_ids": [[4, 3]], "feedback": "binary", "target": 1.0},
    ... ])
    {'feedback': tensor([0, 1]), 'targets': tensor([0., 1.]), 'sequence_index': tensor([[ 0,  1], [ 2, -1]]),
     'input_ids': tensor([[5, 6, 7, 8], [5, 6, 9, 0], [5, 4, 3, 0]]),
     'attention_mask': tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]]),
     'completion_mask': tensor([[0, 0, 1, 1], [0, 0, 1, 0], [0, 1, 1, 0]])}
    ```
    """

    pad_token_id: int
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        with_ref = "ref_logps" in examples[0]
        sequences, completion_masks, sequence_index, ref_logps = [], [], [], []
        for example in examples:
            rows = []
            for completion_ids in example["completions_ids"]:
                ids = list(example["prompt_ids"]) + list(completion_ids)
                mask = [0] * len(example["prompt_ids"]) + [1] * len(completion_ids)
                if self.max_length is not None and len(ids) > self.max_length:
                    keep = slice(None, self.max_length) if self.truncation_mode == "keep_start" else slice(-self.max_length, None)  # fmt: skip
                    ids, mask = ids[keep], mask[keep]
                rows.append(len(sequences))
                sequences.append(ids)
                completion_masks.append(mask)
            sequence_index.append(rows + [-1] * (2 - len(rows)))
            if with_ref:
                if len(example["ref_logps"]) != len(rows):
                    raise ValueError("Each row needs one `ref_logps` value per completion.")
                ref_logps.extend(example["ref_logps"])
        batch = {
            "feedback": torch.tensor([FEEDBACK_CODES[e["feedback"]] for e in examples], dtype=torch.long),
            "targets": torch.tensor([float(e["target"]) for e in examples], dtype=torch.float32),
            "sequence_index": torch.tensor(sequence_index, dtype=torch.long),
            "input_ids": _pad_right(sequences, self.pad_token_id, self.pad_to_multiple_of),
            "attention_mask": _pad_right([[1] * len(s) for s in sequences], 0, self.pad_to_multiple_of),
            "completion_mask": _pad_right(completion_masks, 0, self.pad_to_multiple_of),
        }
        if with_ref:
            batch["ref_logps"] = torch.tensor(ref_logps, dtype=torch.float32)
        return batch


# ----------------------------------------------------------------------------------------------------------------------
# Dataset preparation (pure functions of a row, so that `Dataset.map(num_proc=...)` can pickle them)
# ----------------------------------------------------------------------------------------------------------------------
def _sigmoid(x: float) -> float:
    # Two branches so that exp() never overflows for |x| in the hundreds.
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _is_empty(completion: Any) -> bool:
    if isinstance(completion, str):
        return not completion.strip()
    # Conversational: no message, or only messages whose content is empty.
    return not completion or all(not str(m.get("content") or "").strip() for m in completion)


def _score_target(row: dict, index: int, normalizer: str | ScoreNormalizer, score_range) -> float:
    """Normalised target s in [0, 1] of a scored row, or a `ValueError` naming the row and the normaliser."""
    name = getattr(normalizer, "__name__", repr(normalizer)) if callable(normalizer) else repr(normalizer)
    if callable(normalizer):
        target = normalizer(row)
        hint = "The callable must return a finite value in [0, 1]."
    else:
        score = row.get("score")
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
            raise ValueError(f"Row {index}: `score` must be a finite number, got {score!r}.")
        if normalizer == "identity":
            target = float(score)
            hint = "Use score_normalizer='minmax' (with `score_low`/`score_high`) or 'sigmoid' for other scales."
        elif normalizer == "minmax":
            if score_range is None:
                raise ValueError("score_normalizer='minmax' needs `score_low`/`score_high` or scores in train data.")
            low, high = score_range
            target = (float(score) - low) / (high - low)
            hint = f"It lies outside [score_low, score_high] = [{low}, {high}]; widen them in the config."
        else:  # sigmoid
            target = _sigmoid(float(score))
            hint = ""
    if (
        isinstance(target, bool)
        or not isinstance(target, numbers.Real)
        or not math.isfinite(target)
        or not 0 <= target <= 1
    ):
        raise ValueError(
            f"Row {index}: score {row.get('score')!r} maps to {target!r} under score_normalizer={name}, outside "
            f"[0, 1]. {hint}".rstrip()
        )
    return float(target)


def _classify_row(row: dict, index: int, normalizer, score_range) -> tuple[str, list, float]:
    """`(feedback, completions, target)` of a raw row, or a `ValueError` that names the row and the fix."""
    chosen, rejected, completion = row.get("chosen"), row.get("rejected"), row.get("completion")
    label, score = row.get("label"), row.get("score")
    if chosen is not None or rejected is not None:
        if completion is not None:
            raise ValueError(
                f"Row {index} has both pair columns (`chosen`/`rejected`) and a single `completion`. A row is either "
                "a preference pair or one completion: split it into two rows."
            )
        if chosen is None or rejected is None:
            raise ValueError(f"Row {index} is a preference row with only one of `chosen`/`rejected`; give both.")
        if label is not None or score is not None:
            raise ValueError(
                f"Row {index} is a preference pair but also has a `label` or `score`; pairs carry no target. Put "
                "labelled or scored completions in their own `completion` rows."
            )
        return "pairwise", [chosen, rejected], 0.0
    if completion is None:
        raise ValueError(
            f"Row {index} has no completion: expected `chosen`/`rejected` (preference), or `completion` with "
            "`label` (unpaired preference) or `score` (scored)."
        )
    if label is not None and score is not None:
        raise ValueError(f"Row {index} has both a `label` and a `score`; keep one (binary or score feedback).")
    if label is not None:
        # bools and the integers 0/1 only: other numbers are no binary label, and "yes"/"no" would both be truthy.
        if not (isinstance(label, bool) or (isinstance(label, numbers.Integral) and label in (0, 1))):
            raise ValueError(
                f"Row {index}: `label` must be True/False or 1/0 (1 = desirable), got {label!r} "
                f"({type(label).__name__}). Map the column to booleans, or give graded feedback as a `score`."
            )
        return "binary", [completion], float(label)
    if score is not None or callable(normalizer):
        return "score", [completion], _score_target(row, index, normalizer, score_range)
    raise ValueError(f"Row {index} has a `completion` but neither a `label` nor a `score`.")


def _tokenize_row(row, index, *, tokenizer, normalizer, score_range) -> dict[str, Any]:
    prompt = row["prompt"]
    if prompt is None:
        raise ValueError(f'Row {index}: `prompt` is None; give every row a prompt ("" for none) or drop the row.')
    conversational = is_conversational({"prompt": prompt})
    if not (conversational or isinstance(prompt, str)):
        raise ValueError(f"Row {index}: `prompt` must be a string or a list of messages, got {type(prompt).__name__}.")
    feedback, completions, target = _classify_row(row, index, normalizer, score_range)
    for completion in completions:
        if isinstance(completion, str) == conversational:
            raise ValueError(f"Row {index} mixes a text and a conversational prompt/completion; use one format.")
        if _is_empty(completion):
            raise ValueError(f"Row {index} has an empty completion; UNA needs at least one completion token.")
    if conversational:
        tools = row.get("tools")
        template_kwargs = {"tools": json.loads(tools) if isinstance(tools, str) else tools}
        template_kwargs.update(row.get("chat_template_kwargs") or {})
        prompt_ids = tokenizer.apply_chat_template(
            prompt, tokenize=True, add_generation_prompt=True, return_dict=True, **template_kwargs
        )["input_ids"]
        full_ids = [
            tokenizer.apply_chat_template(prompt + c, tokenize=True, return_dict=True, **template_kwargs)["input_ids"]
            for c in completions
        ]
    else:
        # As TRL's DPOTrainer: text completions end with EOS, so the model learns to stop.
        eos = tokenizer.eos_token
        prompt_ids = tokenizer(prompt)["input_ids"]
        full_ids = [tokenizer(prompt + (c if c.endswith(eos) else c + eos))["input_ids"] for c in completions]
    # As DPOTrainer: the completion starts where prompt and prompt + completion diverge (chat templates or BPE merges
    # at the boundary can render the prompt alone differently).
    prompt_len = min(common_prefix_length(prompt_ids, ids) for ids in full_ids)
    if prompt_len < len(prompt_ids):
        logger.warning_once(
            "The tokenized prompt is not a prefix of the tokenized prompt + completion (chat template or a token "
            "merge at the boundary); the completion starts where they diverge."
        )
    completions_ids = [ids[prompt_len:] for ids in full_ids]
    if any(len(ids) == 0 for ids in completions_ids):
        raise ValueError(f"Row {index}: a completion tokenizes to no token beyond the prompt.")
    return {
        "prompt_ids": prompt_ids[:prompt_len],
        "completions_ids": completions_ids,
        "feedback": feedback,
        "target": target,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------------
class UNATrainer(AtomicCheckpointMixin, Trainer):
    """Offline UNA trainer: fits beta-scaled summed log-ratios to pairwise, binary and score feedback.

    Example:
    ```python
    from datasets import Dataset
    from ppomax_trl import UNAConfig, UNATrainer

    dataset = Dataset.from_list([
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "completion": None, "label": None},
        {"prompt": "The sea is", "chosen": None, "rejected": None, "completion": " wet.", "label": True},
    ])
    trainer = UNATrainer(model="Qwen/Qwen2.5-0.5B", args=UNAConfig(output_dir="una"), train_dataset=dataset)
    trainer.train()
    ```

    Args:
        model (`str` or [`~transformers.PreTrainedModel`] or `peft.PeftModel`):
            The policy, or a name/path loaded with `AutoModelForCausalLM` and `args.model_init_kwargs`.
        ref_model (`str` or [`~transformers.PreTrainedModel`], *optional*):
            The frozen reference pi_ref. `None`: the PEFT base model with the adapter disabled when the policy is
            (or becomes, through `peft_config`) a PEFT model; else nothing with `precompute_ref_log_probs=True` (the
            policy before training is the reference); else a frozen deep copy of the policy. Never reloaded by name.
        args ([`UNAConfig`], *optional*):
            Configuration; `UNAConfig()` when `None`.
        data_collator (*optional*):
            Defaults to [`DataCollatorForUNA`].
        train_dataset ([`~datasets.Dataset`]):
            Rows in any mix of the preference (`prompt`, `chosen`, `rejected`; or `chosen`/`rejected` with an
            implicit prompt), unpaired preference (`prompt`, `completion`, `label`: True/False or the integers 1/0)
            and scored (`prompt`, `completion`, `score`) formats, standard text or conversational. In a mixed dataset
            the unused columns of a row are `None`. Extra `tools` and `chat_template_kwargs` columns reach the chat
            template.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            Same formats; scores are mapped with the training dataset's min-max range.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Tokenizer; loaded from the model's name when `None`. One without a pad token is never changed: the
            trainer pads with a copy whose pad token is EOS (one warning), keeps it as `self.processing_class` and
            saves it with the model.
        callbacks (`list[TrainerCallback]`, *optional*), optimizers (*optional*):
            As in [`~transformers.Trainer`].
        peft_config (`peft.PeftConfig`, *optional*):
            Wraps the policy in a new adapter; the reference is then the adapter-disabled base.
        score_normalizer (`Callable[[dict], float]`, *optional*):
            Replaces `args.score_normalizer`: maps a raw row to its target in [0, 1]. With a callable, every
            `completion` row without a `label` is a scored row, `score` column or not (e.g. for multi-attribute mixes).
    """

    _tag_names: ClassVar[list[str]] = ["ppomax-trl", "una"]
    _name = "UNA"
    _paper: ClassVar[dict[str, str]] = {
        "id": "2408.15339",
        "title": "UNA: Unifying Alignments of RLHF/PPO, DPO and KTO by a Generalized Implicit Reward Function",
    }
    # `compute_loss` returns the mean over the micro-batch's rows; `Trainer` divides by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: str | PreTrainedModel | nn.Module,
        ref_model: str | PreTrainedModel | nn.Module | None = None,
        args: UNAConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        peft_config: PeftConfig | None = None,
        score_normalizer: ScoreNormalizer | None = None,
    ) -> None:
        args = UNAConfig() if args is None else args
        if not isinstance(args, UNAConfig):
            raise TypeError(f"`args` must be a `UNAConfig`, got {type(args).__name__}.")
        if train_dataset is None:
            raise ValueError("`train_dataset` is required.")
        if isinstance(model, str | os.PathLike):
            model = causal_lm_from_path(model, args.model_init_kwargs, type(self).__name__)
        if isinstance(ref_model, str | os.PathLike):
            ref_model = causal_lm_from_path(ref_model, args.model_init_kwargs, type(self).__name__)
        if ref_model is model:
            raise ValueError("`model` and `ref_model` must be different objects; omit `ref_model` for a frozen copy.")
        if processing_class is None:
            processing_class = tokenizer_of(model, type(self).__name__)
        if not isinstance(processing_class, PreTrainedTokenizerBase):
            raise TypeError("`processing_class` must be a tokenizer (vision-language processors are not supported).")
        # Without a pad token: a copy padded with EOS (warned), never the caller's tokenizer changed in place.
        processing_class = tokenizer_with_padding(processing_class, type(self).__name__)

        # PEFT: a new adapter from `peft_config`, or the adapter of a PeftModel passed in.
        if peft_config is not None:
            if not is_peft_available():
                raise ImportError("`peft_config` needs the `peft` library: pip install peft.")
            if is_peft_model(model):
                raise ValueError("Pass either a PeftModel or a `peft_config`, not both: merge the adapter first.")
            model = get_peft_model(model, peft_config)
        if is_peft_model(model) and args.activation_checkpointing:
            model.enable_input_require_grads()  # transformers#42489: checkpointed LoRA otherwise gets no gradient

        # Reference (never reloaded by name, which fails for in-memory models; see trl_landscape.md §5).
        if ref_model is not None:
            self._reference_source = "ref_model"
        elif is_peft_model(model):
            self._reference_source = "peft_base"  # the adapter-disabled base, as in the released code
        elif args.precompute_ref_log_probs:
            self._reference_source = "policy_at_init"  # read once before training, then not kept
        else:
            self._reference_source = "frozen_copy"
            ref_model = copy_model(model)  # a plain deep copy, except under ZeRO-3
        if ref_model is not None:
            freeze(ref_model)
        if args.disable_dropout:
            disable_dropout(model)
            if ref_model is not None:
                disable_dropout(ref_model)

        # Datasets
        if (
            args.precompute_ref_log_probs
            and args.deepspeed_plugin is not None
            and args.deepspeed_plugin.zero_stage == 3
        ):
            raise ValueError(
                "`precompute_ref_log_probs=True` runs before DeepSpeed ZeRO-3 gathers the parameters; set it to False."
            )
        self._tokenizer = processing_class
        self._score_normalizer = score_normalizer if score_normalizer is not None else args.score_normalizer
        self._score_range = self._minmax_range(train_dataset, args)
        train_dataset = self._prepare_una_dataset(train_dataset, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {name: self._prepare_una_dataset(d, args, name) for name, d in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare_una_dataset(eval_dataset, args, "eval")
        if data_collator is None:
            data_collator = DataCollatorForUNA(
                pad_token_id=processing_class.pad_token_id,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.ref_model = ref_model
        if self.ref_model is not None:
            if self.is_deepspeed_enabled:
                from trl.models import prepare_deepspeed

                self.ref_model = prepare_deepspeed(self.ref_model, self.accelerator)
            else:
                self.ref_model = self.accelerator.prepare_model(self.ref_model, evaluation_mode=True)
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list)}  # step means of the window
        self._eval_totals: torch.Tensor | None = None  # (metrics, 2) sums and counts over the eval set so far
        self._eval_prefix = "eval"
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)

        if args.precompute_ref_log_probs:
            self.train_dataset = self._precompute_ref_logps(self.train_dataset, "train")
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {n: self._precompute_ref_logps(d, n) for n, d in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = self._precompute_ref_logps(self.eval_dataset, "eval")

    # ------------------------------------------------------------------------------------------------------------------
    # Data
    # ------------------------------------------------------------------------------------------------------------------
    def _minmax_range(self, dataset: Dataset, args: UNAConfig) -> tuple[float, float] | None:
        """`(low, high)` of the `"minmax"` normaliser: the config's bounds, else the training scores' range."""
        if callable(self._score_normalizer) or self._score_normalizer != "minmax":
            return None
        low, high = args.score_low, args.score_high
        if (low is None or high is None) and isinstance(dataset, Dataset) and "score" in dataset.column_names:
            scores = [s for s in dataset["score"] if isinstance(s, numbers.Real) and math.isfinite(s)]
            if scores:
                low = min(scores) if low is None else low
                high = max(scores) if high is None else high
        if low is None or high is None:
            return None
        if high <= low:
            raise ValueError(
                f"score_normalizer='minmax' got the range [{low}, {high}] (all training scores equal?); set "
                "`score_low` < `score_high` in the config."
            )
        return float(low), float(high)

    def _prepare_una_dataset(self, dataset: Dataset, args: UNAConfig, name: str) -> Dataset:
        """Validate, classify and tokenize raw rows into `PREPARED_COLUMNS`; already prepared datasets pass through."""
        if isinstance(dataset, IterableDataset) or not isinstance(dataset, Dataset):
            raise TypeError(
                f"The {name} dataset must be a map-style `datasets.Dataset` (got {type(dataset).__name__}): min-max "
                "scores and reference precomputation need the whole dataset."
            )
        columns = set(dataset.column_names)
        if set(PREPARED_COLUMNS) <= columns:
            return dataset
        if "prompt" not in columns:
            if {"chosen", "rejected"} <= columns and "completion" not in columns:
                dataset = dataset.map(
                    extract_prompt, num_proc=args.dataset_num_proc, desc=f"Extracting {name} prompts"
                )
            else:
                raise ValueError(f"The {name} dataset has no `prompt` column (columns: {sorted(columns)}).")
        if not ({"chosen", "rejected"} & columns or "completion" in columns):
            raise ValueError(
                f"The {name} dataset has none of the UNA formats: `prompt`/`chosen`/`rejected` (preference), "
                f"`prompt`/`completion`/`label` (unpaired) or `prompt`/`completion`/`score` (scored). Columns: "
                f"{sorted(columns)}."
            )
        if "score" in columns:
            raw = [s for s in dataset["score"] if isinstance(s, numbers.Real) and math.isfinite(s)]
            if raw:
                logger.info(f"UNA {name} raw scores lie in [{min(raw):.4g}, {max(raw):.4g}].")
        dataset = dataset.map(
            _tokenize_row,
            with_indices=True,
            fn_kwargs={
                "tokenizer": self._tokenizer,
                "normalizer": self._score_normalizer,
                "score_range": self._score_range,
            },
            remove_columns=dataset.column_names,
            num_proc=args.dataset_num_proc,
            desc=f"Tokenizing {name} dataset for UNA",
        )
        if args.max_length is not None and args.truncation_mode == "keep_start":
            # A prompt that fills `max_length` would leave no completion token after truncation (as DPOTrainer).
            size = len(dataset)
            dataset = dataset.filter(
                lambda row: len(row["prompt_ids"]) < args.max_length, num_proc=args.dataset_num_proc
            )
            if len(dataset) < size:
                logger.warning(f"Dropped {size - len(dataset)} {name} rows whose prompt fills max_length.")
        if len(dataset) == 0:
            raise ValueError(f"The {name} dataset has no usable row.")
        self._log_dataset_summary(dataset, name)
        return dataset

    def _log_dataset_summary(self, dataset: Dataset, name: str) -> None:
        feedback = dataset["feedback"]
        counts = {kind: feedback.count(kind) for kind in UNA_FEEDBACK_TYPES}
        logger.info(f"UNA {name} dataset: {counts} rows per feedback type.")
        targets = [t for f, t in zip(feedback, dataset["target"], strict=True) if f == "score"]
        if targets:
            logger.info(f"UNA {name} normalised scores lie in [{min(targets):.4g}, {max(targets):.4g}].")
            saturated = sum(t in (0.0, 1.0) for t in targets)
            if saturated:
                logger.warning(
                    f"{saturated} {name} scores normalise to exactly 0 or 1: the MSE never reaches them (the implied "
                    "log-ratio target is infinite), so those rows keep pushing the policy away from the reference."
                )

    # ------------------------------------------------------------------------------------------------------------------
    # Log-probs
    # ------------------------------------------------------------------------------------------------------------------
    @staticmethod
    def _completion_logps(model: nn.Module, inputs: dict[str, torch.Tensor]):
        """Summed completion log-probs `(N,)`, next-token logits `(N, T - 1, V)` and completion mask `(N, T - 1)`."""
        input_ids = inputs["input_ids"]
        logits = model(input_ids=input_ids, attention_mask=inputs["attention_mask"], use_cache=False).logits
        # `[-T:]` drops virtual tokens of prompt-learning adapters; position t predicts token t + 1.
        logits = logits[:, -input_ids.shape[1] :][:, :-1].float()  # (N, T - 1, V)
        labels = input_ids[:, 1:]  # (N, T - 1)
        mask = inputs["completion_mask"][:, 1:].bool()  # (N, T - 1)
        per_token_logps = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
        logps = torch.where(mask, per_token_logps, torch.zeros_like(per_token_logps)).sum(-1)  # (N,)
        return logps, logits, mask

    @contextlib.contextmanager
    def _reference(self, model: nn.Module):
        """The module that computes pi_ref: `ref_model`, the adapter-disabled PEFT base, or the untrained policy."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        unwrapped = self.accelerator.unwrap_model(model)
        if is_peft_model(unwrapped):
            with unwrapped.disable_adapter():
                yield unwrapped
            return
        if self.state.global_step == 0:
            yield model  # precompute_ref_log_probs without a reference: the policy before training is pi_ref
            return
        raise ValueError(
            "Reference log-probs are needed after training started, but `precompute_ref_log_probs=True` kept no "
            "reference model. Pass the dataset at construction time, or pass an explicit `ref_model`."
        )

    def _precompute_ref_logps(self, dataset: Dataset, name: str) -> Dataset:
        """Adds `ref_logps` (one float per completion) to a prepared dataset; rows are split across processes."""
        if "ref_logps" in dataset.column_names:
            return dataset
        batch_size = self.args.precompute_ref_batch_size or (
            self.args.per_device_train_batch_size if name == "train" else self.args.per_device_eval_batch_size
        )
        with self.accelerator.split_between_processes(list(range(len(dataset)))) as local_rows:
            local_rows = list(local_rows)
        values: dict[int, list[float]] = {}
        was_training = self.model.training
        self.model.eval()
        # Under the autocast of the training forwards (as DPOTrainer): with mixed precision, pi_ref read in fp32 would
        # differ from the policy's own first forward, and the step-1 log-ratio would measure the precision gap.
        with torch.no_grad(), self.accelerator.autocast(), self._reference(self.model) as reference:
            for start in range(0, len(local_rows), batch_size):
                rows = local_rows[start : start + batch_size]
                batch = self.data_collator([dataset[i] for i in rows])
                batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                logps = self._completion_logps(reference, batch)[0].tolist()
                for row, (first, second) in zip(rows, batch["sequence_index"].tolist(), strict=True):
                    values[row] = [logps[first]] + ([logps[second]] if second >= 0 else [])
        self.model.train(was_training)
        for part in gather_object([values]):
            values.update(part)
        logger.info(f"Precomputed reference log-probs for {len(values)} {name} rows.")
        return dataset.add_column("ref_logps", [values[i] for i in range(len(dataset))])

    # ------------------------------------------------------------------------------------------------------------------
    # Loss
    # ------------------------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Mean UNA loss over the rows of the batch, each row with the loss of its feedback type."""
        mode = "train" if self.model.training else "eval"
        logps, logits, mask = self._completion_logps(model, inputs)  # (N,), (N, T-1, V), (N, T-1)
        ref_logits = None
        if "ref_logps" in inputs:
            ref_logps = inputs["ref_logps"].to(logps.dtype)
        else:
            with torch.no_grad(), self._reference(model) as reference:
                ref_logps, ref_logits, _ = self._completion_logps(reference, inputs)

        feedback = inputs["feedback"]  # (B,) feedback code of each row
        targets = inputs["targets"]  # (B,) s in [0, 1]; unused for pairs
        index = inputs["sequence_index"]  # (B, 2) rows of `logps` holding each row's completions
        # (B, metrics, 2): each row's [sum, count] per metric of `METRIC_KEYS`; kept on the device (one transfer per
        # step, in `_record_metrics`), summed over rows, then processes (and eval batches), then divided.
        row_metrics = logps.new_zeros((feedback.numel(), len(METRIC_KEYS), 2), dtype=torch.float32)

        def record(key: str, rows: torch.Tensor, values: torch.Tensor, counts: torch.Tensor | float = 1.0) -> None:
            row_metrics[rows, METRIC_KEYS.index(key), 0] = values.detach().float()
            row_metrics[rows, METRIC_KEYS.index(key), 1] = counts

        total = logps.new_zeros(())
        for kind, code in FEEDBACK_CODES.items():
            rows = (feedback == code).nonzero().squeeze(-1)  # (n,) the rows of this feedback type
            count = rows.numel()
            if count == 0:
                continue
            first = index[rows, 0]  # (n,) the chosen or single completion
            if kind == "pairwise":
                second = index[rows, 1]  # (n,) the rejected completion
                policy = torch.stack([logps[first], logps[second]], -1)  # (n, 2)
                reference = torch.stack([ref_logps[first], ref_logps[second]], -1)  # (n, 2)
                row_targets, loss_type = None, None
            else:
                policy, reference, row_targets = logps[first], ref_logps[first], targets[rows]  # (n,)
                loss_type = self.args.binary_loss if kind == "binary" else self.args.score_loss
            beta = self.args.beta_for(kind)
            loss, stats = una_loss(policy, reference, row_targets, beta=beta, feedback=kind, loss=loss_type)
            total = total + loss * count  # a sum over rows; divided by B below, so every row weighs the same
            if mode == "train":
                # Training logs the step's means: the batch means repeated over the rows sum to what they need.
                row_loss, row_stats = loss.expand(count), {key: value.expand(count) for key, value in stats.items()}
            else:
                # Evaluation needs each row's own values, to drop the rows the sampler repeats on some processes and
                # pool the rest over the eval set; `una_loss` returns means, so one call per row.
                with torch.no_grad():
                    singles = []
                    for j in range(count):
                        one = slice(j, j + 1)
                        single_targets = None if row_targets is None else row_targets[one]
                        singles.append(
                            una_loss(
                                policy[one], reference[one], single_targets, beta=beta, feedback=kind, loss=loss_type
                            )
                        )
                row_loss = torch.stack([single_loss for single_loss, _ in singles])
                row_stats = {key: torch.stack([single[key] for _, single in singles]) for key in stats}
            record("loss", rows, row_loss)
            record(f"una/loss/{kind}", rows, row_loss)
            if kind == "pairwise":
                for stat in ("chosen", "rejected", "margin", "accuracy"):
                    record(f"una/reward/pairwise_{stat}", rows, row_stats[f"reward_{stat}"])
            else:
                record(f"una/reward/{kind}", rows, row_stats["reward"])
                record("una/target_mean", rows, row_stats["target"])
                record("una/predicted_score", rows, row_stats["score"])
                record("una/implied_logratio_target", rows, row_stats["implied_logratio_target"])
        loss = total / feedback.numel()

        with torch.no_grad():
            # Per-completion diagnostics, summed over each row's one or two completions and counted per completion.
            all_rows = torch.arange(feedback.numel(), device=index.device)
            has_second = index[:, 1] >= 0  # (B,)
            num_completions = 1.0 + has_second.float()  # (B,)

            def row_sum(values: torch.Tensor) -> torch.Tensor:  # (N,) -> (B,)
                second = values[index[:, 1].clamp(min=0)]
                return values[index[:, 0]] + torch.where(has_second, second, torch.zeros_like(second))

            record("una/logratio", all_rows, row_sum(logps - ref_logps), num_completions)
            if ref_logits is not None:
                # Row by row, so that only one sequence's full-vocabulary log-softmax pair is alive at a time.
                kl = []
                for i in range(logits.shape[0]):
                    logp, logq = logits[i].log_softmax(-1), ref_logits[i].log_softmax(-1)  # (T - 1, V)
                    kl.append(((logp.exp() * (logp - logq)).sum(-1) * mask[i]).sum())
                record("una/kl", all_rows, row_sum(torch.stack(kl)), num_completions)  # (N,) summed per row
        self._record_metrics(mode, row_metrics)
        return (loss, {"logps": logps.detach()}) if return_outputs else loss

    def _record_metrics(self, mode: str, row_metrics: torch.Tensor) -> None:
        """Training: append each metric's step mean over all processes (one all-reduce per step). Evaluation: add the
        batch's sums and counts to the eval totals, without the rows the sampler repeated to even out the processes."""
        if mode == "eval":
            totals = self.accelerator.gather_for_metrics(row_metrics).sum(0)  # (metrics, 2)
            self._eval_totals = totals if self._eval_totals is None else self._eval_totals + totals
            return
        totals = self.accelerator.reduce(row_metrics.sum(0), reduction="sum").tolist()
        for key, (total, count) in zip(METRIC_KEYS, totals, strict=True):
            if key != "loss" and count > 0:  # `Trainer` logs the training loss itself
                self._metrics["train"][key].append(total / count)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation computes the UNA loss (the batch has no `labels`); no logits are returned."""
        inputs = {k: v.to(self.args.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """As `Trainer.evaluate`; a raw dataset passed here is prepared (and its reference precomputed) first."""
        if isinstance(eval_dataset, Dataset):
            eval_dataset = self._prepare_una_dataset(eval_dataset, self.args, metric_key_prefix)
            if self.args.precompute_ref_log_probs:
                eval_dataset = self._precompute_ref_logps(eval_dataset, metric_key_prefix)
        # `log` names the pooled loss after the prefix; totals left by a `predict()` must not count here.
        self._eval_prefix, self._eval_totals = metric_key_prefix, None
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:
            metrics = {key: sum(v) / len(v) for key, v in self._metrics["train"].items() if v}
            self._metrics["train"].clear()
        else:
            # Pooled over the eval set: sums over its rows (completions) divided by their counts.
            totals = self._eval_totals.tolist() if self._eval_totals is not None else [(0.0, 0.0)] * len(METRIC_KEYS)
            pooled = {key: total / count for key, (total, count) in zip(METRIC_KEYS, totals, strict=True) if count}
            self._eval_totals = None
            loss_key = f"{self._eval_prefix}_loss"
            if "loss" in pooled and loss_key in logs:
                # `Trainer`'s eval loss would count the rows the sampler repeats on some processes.
                logs[loss_key] = pooled["loss"]
            metrics = {f"eval_{key}": value for key, value in pooled.items() if key != "loss"}
        logs.update(metrics)  # in place: `Trainer.evaluate` returns this very dict
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------------------------------
    # Saving
    # ------------------------------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, plus a model card next to the weights (checkpoints included)."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.create_model_card(output_dir=output_dir or self.args.output_dir)

    def create_model_card(self, model_name: str | None = None, output_dir: str | None = None, **kwargs) -> None:
        """A short README.md: tags, paper, reference variant, beta and loss per feedback type."""
        if not self.is_world_process_zero():
            return
        output_dir = output_dir or self.args.output_dir
        model_name = model_name or os.path.basename(os.path.normpath(output_dir))
        tags = "\n".join(f"- {tag}" for tag in self._tag_names)
        losses = {"pairwise": "DPO sigmoid", "binary": self.args.binary_loss, "score": self.args.score_loss}
        lines = "\n".join(f"- {kind}: beta = {self.args.beta_for(kind)}, loss = {losses[kind]}" for kind in losses)
        note = (
            "\nScored rows used soft-label BCE, which is not in the paper.\n" if self.args.score_loss == "bce" else ""
        )
        text = (
            f"---\nlibrary_name: transformers\ntags:\n{tags}\n---\n\n# {model_name}\n\n"
            f"Trained with `ppomax_trl.{type(self).__name__}` ({self._name}, offline), "
            f"https://huggingface.co/papers/{self._paper['id']} ({self._paper['title']}; losses as in v2, signs as "
            f"in the released code).\n\nReference: {self._reference_source}.\n\n{lines}\n{note}"
        )
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "README.md"), "w") as f:
            f.write(text)
