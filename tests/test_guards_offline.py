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
"""Input guards of the offline trainers (issue 12, item 5): malformed rank-list and UNA rows fail early naming the row,
0/1 binary labels are accepted, and a tokenizer without a pad token is padded on a copy, never on the caller's."""

import copy

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from ppomax_trl import RankListRewardConfig, RankListRewardTrainer, UNAConfig, UNATrainer
from ppomax_trl.model_utils import tokenizer_with_padding
from ppomax_trl.rank_list import _prepare_row
from ppomax_trl.tiny import tiny_causal_lm, tiny_reward_model


def rank_args(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, gradient_checkpointing=False,
                  report_to="none", save_strategy="no", per_device_train_batch_size=2, max_steps=1,
                  disable_tqdm=True, learning_rate=1e-3, seed=0)  # fmt: skip
    kwargs.update(overrides)
    return RankListRewardConfig(**kwargs)


def una_args(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path / "out"), bf16=False, gradient_checkpointing=False, report_to="none",
                  save_strategy="no", disable_tqdm=True, per_device_train_batch_size=2, max_steps=1,
                  seed=0)  # fmt: skip
    kwargs.update(overrides)
    return UNAConfig(**kwargs)


@pytest.fixture
def no_pad(tokenizer):
    """The caller's tokenizer: no pad token, an EOS."""
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = None
    return tok


def prepare(example, fmt="list", index=3, tokenizer=None):
    return _prepare_row(example, index, fmt=fmt, processing_class=tokenizer, max_length=None, ties="keep")


# ----------------------------------------------------------------------------------------------------------------------
# Rank lists: malformed completions and prompts name the row and the completion
# ----------------------------------------------------------------------------------------------------------------------
def test_rank_list_none_completion_names_row_and_completion(tmp_path, tokenizer):
    rows = {"prompt": ["the film was", "i"], "completions": [[" great", " bad"], [" ok", None, " no"]]}
    with pytest.raises(ValueError, match=r"Row 1: completion 1 of the ranked list is None"):
        RankListRewardTrainer(tiny_reward_model(tokenizer), rank_args(tmp_path), train_dataset=Dataset.from_dict(rows),
                              processing_class=tokenizer)  # fmt: skip


def test_rank_list_none_in_a_preference_pair_names_the_column(tmp_path, tokenizer):
    rows = {"prompt": ["p", "q"], "chosen": [" a", " b"], "rejected": [" c", None]}
    with pytest.raises(ValueError, match=r"Row 1: completion 1 \(`rejected`\) of the ranked list is None"):
        RankListRewardTrainer(tiny_reward_model(tokenizer), rank_args(tmp_path), train_dataset=Dataset.from_dict(rows),
                              processing_class=tokenizer)  # fmt: skip


@pytest.mark.parametrize(
    "completions, completion_index, message",
    [
        ([" a", 5], 1, "must be a string or a list of messages"),
        ([" a", {"content": "x"}], 1, "must be a string or a list of messages"),
        ([[{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "b"}, None]], 1,
         "message 1 is not a `{'role': ..., 'content': ...}` dict"),
        ([[{"content": "a"}], [{"role": "assistant", "content": "b"}]], 0, "message 0 is not"),
    ],
)  # fmt: skip
def test_rank_list_non_text_non_message_completion_names_row_and_completion(
    tokenizer, completions, completion_index, message
):
    with pytest.raises(ValueError, match=rf"Row 3: completion {completion_index} .*{message}"):
        prepare({"completions": completions}, tokenizer=tokenizer)


def test_rank_list_tokenized_none_completion_names_row_and_completion(tokenizer):
    with pytest.raises(ValueError, match=r"Row 3: completion 1 of `completions_ids` is None"):
        prepare({"completions_ids": [[5, 6], None]}, fmt="list_ids", tokenizer=tokenizer)
    with pytest.raises(
        ValueError, match=r"Row 3: completion 1 \(`rejected_ids`\) must be a list of token ids, got str"
    ):
        prepare({"chosen_ids": [5, 6], "rejected_ids": "7 8"}, fmt="pair_ids", tokenizer=tokenizer)


def test_rank_list_none_prompt_names_the_row(tmp_path, tokenizer):
    rows = {"prompt": ["the film was", None], "completions": [[" great", " bad"], [" ok", " no"]]}
    with pytest.raises(ValueError, match=r"Row 1: `prompt` is None"):
        RankListRewardTrainer(tiny_reward_model(tokenizer), rank_args(tmp_path), train_dataset=Dataset.from_dict(rows),
                              processing_class=tokenizer)  # fmt: skip
    # Preference rows without a prompt column still work (the prompt is implicit in chosen/rejected).
    pairs = {"chosen": ["the film was great", "i ok"], "rejected": ["the film was bad", "i no"]}
    RankListRewardTrainer(tiny_reward_model(tokenizer), rank_args(tmp_path), train_dataset=Dataset.from_dict(pairs),
                          processing_class=tokenizer)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# UNA: a None prompt names the row; 0/1 labels are binary feedback, other labels raise naming the row
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rows",
    [
        {"prompt": ["p", None], "completion": [" a", " b"], "label": [True, False]},
        {"prompt": ["p", None], "chosen": [" a", " b"], "rejected": [" c", " d"]},
    ],
)
def test_una_none_prompt_names_the_row(tmp_path, tokenizer, rows):
    with pytest.raises(ValueError, match=r"Row 1: `prompt` is None"):
        UNATrainer(tiny_causal_lm(tokenizer), args=una_args(tmp_path), train_dataset=Dataset.from_dict(rows),
                   processing_class=tokenizer)  # fmt: skip


@pytest.mark.parametrize("labels", [[1, 0, 1], [True, False, True]])
def test_una_binary_labels_accept_integer_zero_one_and_bools(tmp_path, tokenizer, labels):
    rows = {"prompt": ["p", "q", "r"], "completion": [" a", " b", " c"], "label": labels}
    trainer = UNATrainer(tiny_causal_lm(tokenizer), args=una_args(tmp_path), train_dataset=Dataset.from_dict(rows),
                         processing_class=tokenizer)  # fmt: skip
    assert trainer.train_dataset["feedback"] == ["binary"] * 3
    assert trainer.train_dataset["target"] == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "bad, shown",
    [
        (2, r"2 \(int\)"),
        (-1, r"-1 \(int\)"),
        (0.5, r"0.5 \(float\)"),
        (1.0, r"1.0 \(float\)"),
        ("yes", r"'yes' \(str\)"),
    ],
)
def test_una_other_binary_labels_raise_naming_the_row(tmp_path, tokenizer, bad, shown):
    rows = [{"prompt": "p", "completion": " a", "label": None, "score": 0.5},
            {"prompt": "q", "completion": " b", "label": bad, "score": None}]  # fmt: skip
    with pytest.raises(ValueError, match=rf"Row 1: `label` must be True/False or 1/0 .*got {shown}"):
        UNATrainer(tiny_causal_lm(tokenizer), args=una_args(tmp_path), train_dataset=Dataset.from_list(rows),
                   processing_class=tokenizer)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Tokenizer without a pad token: padded on a copy, with one warning; the caller's tokenizer is never changed
# ----------------------------------------------------------------------------------------------------------------------
def test_tokenizer_with_padding_copies_warns_once_and_leaves_the_callers_tokenizer(no_pad, tokenizer, caplog):
    with caplog.at_level("WARNING", logger="ppomax_trl.model_utils"):
        padded = tokenizer_with_padding(no_pad, "UNATrainer")
    assert padded is not no_pad and no_pad.pad_token is None
    assert padded.pad_token == padded.eos_token == "<eos>" and padded.pad_token_id == no_pad.eos_token_id
    warnings = [r.getMessage() for r in caplog.records if "UNATrainer" in r.getMessage()]
    assert len(warnings) == 1 and "unchanged" in warnings[0] and "<eos>" in warnings[0]

    caplog.clear()
    with caplog.at_level("WARNING", logger="ppomax_trl.model_utils"):
        assert tokenizer_with_padding(tokenizer, "UNATrainer") is tokenizer  # has a pad token: used as is
    assert not caplog.records


def test_tokenizer_without_pad_or_eos_raises_with_the_fix(no_pad):
    no_pad.eos_token = None
    with pytest.raises(ValueError, match=r"RankListRewardTrainer: the tokenizer has neither a pad token nor an EOS.*"
                                         r"add_special_tokens\(\{'pad_token'"):  # fmt: skip
        tokenizer_with_padding(no_pad, "RankListRewardTrainer")


def test_una_trainer_pads_a_copy_and_saves_it(tmp_path, no_pad, caplog):
    rows = {"prompt": ["p", "q"], "completion": [" a", " b"], "label": [True, False]}
    with caplog.at_level("WARNING", logger="ppomax_trl.model_utils"):
        trainer = UNATrainer(tiny_causal_lm(no_pad), args=una_args(tmp_path), train_dataset=Dataset.from_dict(rows),
                             processing_class=no_pad)  # fmt: skip
    assert no_pad.pad_token is None  # the caller's tokenizer is unchanged
    assert trainer.processing_class is not no_pad and trainer.processing_class.pad_token == "<eos>"
    assert trainer.data_collator.pad_token_id == no_pad.eos_token_id
    assert sum("UNATrainer" in r.getMessage() for r in caplog.records) == 1
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    assert AutoTokenizer.from_pretrained(tmp_path / "saved").pad_token == "<eos>"


def test_rank_list_trainer_pads_a_copy_and_saves_it(tmp_path, no_pad, caplog):
    rows = {"prompt": ["the film was", "i"], "completions": [[" great", " bad"], [" ok", " no", " awful"]]}
    model = tiny_reward_model(no_pad)
    with caplog.at_level("WARNING", logger="ppomax_trl.model_utils"):
        trainer = RankListRewardTrainer(model, rank_args(tmp_path), train_dataset=Dataset.from_dict(rows),
                                        processing_class=no_pad)  # fmt: skip
    assert no_pad.pad_token is None  # TRL's RewardTrainer received the copy
    assert trainer.processing_class is not no_pad and trainer.processing_class.pad_token == "<eos>"
    assert model.config.pad_token_id == trainer.data_collator.pad_token_id == no_pad.eos_token_id
    assert sum("RankListRewardTrainer" in r.getMessage() for r in caplog.records) == 1
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    assert AutoTokenizer.from_pretrained(tmp_path / "saved").pad_token == "<eos>"


def test_rank_list_trainer_copies_the_tokenizer_before_trl_sets_args_eos_token(tmp_path, tokenizer):
    caller = copy.deepcopy(tokenizer)
    rows = {"prompt": ["the film was", "i"], "completions": [[" great", " bad"], [" ok", " no"]]}
    trainer = RankListRewardTrainer(tiny_reward_model(caller), rank_args(tmp_path, eos_token="<|im_end|>"),
                                    train_dataset=Dataset.from_dict(rows), processing_class=caller)  # fmt: skip
    assert caller.eos_token == "<eos>" and caller.pad_token == "<pad>"  # unchanged
    assert trainer.processing_class.eos_token == "<|im_end|>" and trainer.processing_class.pad_token == "<pad>"
