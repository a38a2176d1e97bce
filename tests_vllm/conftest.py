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
"""Fixtures of the vLLM tests, which run in the vLLM environment (`bash scripts/run.sh test-vllm`).

The main suite's helpers are reused from `tests/conftest.py` (loaded under another module name). vLLM's CPU attention
needs a head size it has kernels for, so the policy here is the tiny Qwen2 at hidden size 128 (head size 32); its
weights are scaled up so that greedy decoding does not repeat one token, which would make "vLLM's output equals the
policy's" a weak check.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch


os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine: the tiny models need a few MiB
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
_spec = importlib.util.spec_from_file_location("main_conftest", Path(__file__).parents[1] / "tests" / "conftest.py")
main_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(main_conftest)
PROMPTS, common_args, eos_biased, fp32_accelerator = (
    main_conftest.PROMPTS, main_conftest.common_args, main_conftest.eos_biased, main_conftest.fp32_accelerator,
)  # fmt: skip
HELD_OUT = ["the acting", "what a bad", "a fine plot", "the service"]
HIDDEN = 128

from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model  # noqa: E402


def lively_policy(tokenizer, seed: int = 0):
    policy = tiny_causal_lm(tokenizer, seed=seed, hidden_size=HIDDEN)
    with torch.no_grad():
        for p in policy.parameters():
            if p.dim() == 2:
                p.mul_(12.0)
    return policy


def reward_model(tokenizer, seed: int = 1):
    return tiny_reward_model(tokenizer, seed=seed, hidden_size=HIDDEN)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


def hf_greedy(policy, tokenizer, prompts, max_new_tokens, stop_token_ids):
    """The HF policy's greedy continuations of `prompts`, cut after the stop token, as lists of ids."""
    from ppomax_trl import ppo_utils as pu
    from ppomax_trl.prompts import collate_prompts

    ids, mask = collate_prompts(
        [{"input_ids": tokenizer(p)["input_ids"]} for p in prompts], tokenizer.pad_token_id, "cpu"
    )
    with torch.no_grad():
        out = policy.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
            eos_token_id=stop_token_ids, pad_token_id=tokenizer.pad_token_id, top_k=None, top_p=None, temperature=None,
        )[:, ids.size(1) :]  # fmt: skip
    out, keep, _ = pu.truncate_after_stop(out, stop_token_ids=stop_token_ids, pad_token_id=tokenizer.pad_token_id)
    return [row[m].tolist() for row, m in zip(out, keep, strict=True)]


def vllm_greedy(generator, model, tokenizer, prompts):
    """The generator's greedy (temperature 0) continuations of `prompts`, as lists of ids."""
    from ppomax_trl.prompts import collate_prompts

    ids, mask = collate_prompts(
        [{"input_ids": tokenizer(p)["input_ids"]} for p in prompts], tokenizer.pad_token_id, "cpu"
    )
    out = generator.generate(model, ids, mask, temperature=0.0, top_p=1.0)
    return [row[m].tolist() for row, m in zip(out.ids, out.mask, strict=True)]
