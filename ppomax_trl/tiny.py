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
"""Tiny models and a tokenizer built locally from configs: for tests, smoke runs and the offline demo.

Nothing here touches the Hub. The tokenizer is a byte-level BPE trained in a fraction of a second on the given texts
(the full 256-byte alphabet means no text is ever unknown), with distinct `<pad>` and `<eos>` and a ChatML template.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification


SPECIAL_TOKENS = ["<pad>", "<eos>", "<|im_start|>", "<|im_end|>"]  # ids 0..3
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEFAULT_TEXTS = [
    "the movie was great and the acting was wonderful",
    "the film was terrible, boring and far too long",
    "i loved every minute of this happy story",
    "what a bad and sad waste of time",
    "a good cast, a fine plot, a lovely ending",
    "the food was cold and the service was awful",
]


def build_tiny_tokenizer(texts: list[str] | None = None, vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A left-padding byte-level BPE tokenizer with `<pad>` (id 0) distinct from `<eos>` (id 1) and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts or DEFAULT_TEXTS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>", additional_special_tokens=SPECIAL_TOKENS[2:]
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.padding_side = "left"  # rollout prompts are left-padded
    return tokenizer


def _tiny_config(tokenizer, hidden_size: int, num_layers: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def tiny_causal_lm(tokenizer, *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM (about 30k parameters at the defaults)."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(_tiny_config(tokenizer, hidden_size, num_layers))
    model.generation_config.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return model


def tiny_reward_model(
    tokenizer, *, seed: int = 1, hidden_size: int = 32, num_layers: int = 2
) -> Qwen2ForSequenceClassification:
    """A randomly initialised Qwen2 sequence classifier with one output: a reward model or critic."""
    torch.manual_seed(seed)
    config = _tiny_config(tokenizer, hidden_size, num_layers)
    config.num_labels = 1
    return Qwen2ForSequenceClassification(config)
