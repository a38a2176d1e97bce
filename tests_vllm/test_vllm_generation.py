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
"""`VLLMGenerator` on its own (one engine for the module): it samples the policy it was given, stops and pads exactly
as `HFGenerator`, reports the sampled tokens' log-probs, and follows the policy's weights (plain and LoRA)."""

import pytest
import torch
from conftest import PROMPTS, fp32_accelerator, hf_greedy, lively_policy, vllm_greedy

from ppomax_trl import PPOConfig
from ppomax_trl.modules import PolicyAndValueWrapper, _gather_response_logprobs
from ppomax_trl.prompts import collate_prompts
from ppomax_trl.vllm_generation import VLLMGenerator


LENGTH = 10


@pytest.fixture(scope="module")
def engine(tokenizer, tmp_path_factory):
    args = PPOConfig(output_dir=str(tmp_path_factory.mktemp("engine")), use_cpu=True, bf16=False, report_to="none",
                     use_vllm=True, response_length=LENGTH, seed=0)  # fmt: skip
    policy = lively_policy(tokenizer)
    generator = VLLMGenerator(
        fp32_accelerator(), args, policy, pad_token_id=tokenizer.pad_token_id,
        stop_token_ids=[tokenizer.eos_token_id], max_prompt_tokens=16,
    )  # fmt: skip
    return generator, policy


def sample(generator, policy, tokenizer, prompts=PROMPTS, temperature=1.0):
    ids, mask = collate_prompts(
        [{"input_ids": tokenizer(p)["input_ids"]} for p in prompts], tokenizer.pad_token_id, "cpu"
    )
    torch.manual_seed(0)
    return (
        ids,
        mask,
        generator.generate(PolicyAndValueWrapper(policy, None), ids, mask, temperature=temperature, top_p=1.0),
    )


def test_greedy_output_equals_the_policy_and_log_probs_are_the_training_forward(engine, tokenizer):
    generator, policy = engine
    greedy = vllm_greedy(generator, PolicyAndValueWrapper(policy, None), tokenizer, PROMPTS)
    assert greedy == hf_greedy(policy, tokenizer, PROMPTS, LENGTH, [tokenizer.eos_token_id])
    assert len({tuple(g) for g in greedy}) > 1 and any(len(set(g)) > 2 for g in greedy)  # not a degenerate policy

    ids, mask, out = sample(generator, policy, tokenizer)
    full = torch.cat([ids, out.ids], dim=1)
    attention = torch.cat([mask, out.mask.long()], dim=1)
    with torch.no_grad():
        logits = policy(input_ids=full, attention_mask=attention).logits[:, ids.size(1) - 1 : -1]
    training = _gather_response_logprobs(logits, out.ids, 1.0)
    # the same tokens scored by vLLM's sampler and by the training forward (fp32, temperature 1, no top-p/top-k)
    assert (training - out.logprobs).abs()[out.mask].max().item() < 1e-3
    assert (out.logprobs[~out.mask] == 0).all()


def test_sampling_is_seeded_by_torch_like_the_trainer_seeds_each_step(engine, tokenizer):
    generator, policy = engine
    first, second = sample(generator, policy, tokenizer)[2], sample(generator, policy, tokenizer)[2]
    assert torch.equal(first.ids, second.ids)
    torch.manual_seed(1)
    ids, mask = collate_prompts(
        [{"input_ids": tokenizer(p)["input_ids"]} for p in PROMPTS], tokenizer.pad_token_id, "cpu"
    )
    other = generator.generate(PolicyAndValueWrapper(policy, None), ids, mask, temperature=1.0, top_p=1.0)
    assert not torch.equal(other.ids, first.ids)


@pytest.mark.parametrize("pad_is_stop", [False, True])
def test_responses_stop_and_pad_exactly_as_hf_generation(engine, tokenizer, pad_is_stop):
    generator, policy = engine
    # the stop token: one that about half of the free samples contain, so that some responses stop and some run on
    _, _, free = sample(generator, policy, tokenizer, prompts=PROMPTS * 4)
    rows_with = {}
    for row in free.ids.tolist():
        for token in set(row):
            rows_with[token] = rows_with.get(token, 0) + 1
    stop = min(rows_with, key=lambda token: abs(rows_with[token] - len(free.ids) / 2))
    pad = stop if pad_is_stop else tokenizer.pad_token_id  # pad == EOS tokenizers: the pad id is the stop token
    generator.pad_token_id, generator.stop_token_ids = pad, [stop]
    try:
        _, _, out = sample(generator, policy, tokenizer, prompts=PROMPTS * 4)
    finally:
        generator.pad_token_id, generator.stop_token_ids = tokenizer.pad_token_id, [tokenizer.eos_token_id]
    assert out.stopped.any() and not out.stopped.all()
    assert out.ids.size(1) <= LENGTH
    for ids, mask, stopped in zip(out.ids, out.mask, out.stopped, strict=True):
        kept = ids[mask].tolist()
        assert mask.tolist() == [True] * len(kept) + [False] * (len(mask) - len(kept))  # a prefix
        assert (ids[~mask] == pad).all()  # nothing after the stop token
        assert bool(stopped) == (kept[-1] == stop) and stop not in kept[:-1]
        if not stopped:
            assert len(kept) == LENGTH  # only the cap ends a response without a stop token


def test_a_stop_token_other_than_eos_ends_responses_and_eos_does_not(engine, tokenizer):
    generator, policy = engine
    _, _, free = sample(generator, policy, tokenizer)
    stop = int(free.ids[0, 1])  # a token the policy samples
    generator.stop_token_ids = [stop]
    try:
        _, _, out = sample(generator, policy, tokenizer)
    finally:
        generator.stop_token_ids = [tokenizer.eos_token_id]
    assert out.stopped[0] and out.ids[0, 1] == stop and not out.mask[0, 2:].any()
    for ids, mask, stopped in zip(out.ids, out.mask, out.stopped, strict=True):
        kept = ids[mask].tolist()
        assert stop not in kept[:-1] and bool(stopped) == (kept[-1] == stop)


def test_weights_follow_the_policy_plain_and_lora(engine, tokenizer):
    from peft import LoraConfig, get_peft_model

    generator, policy = engine
    expected_before = hf_greedy(policy, tokenizer, PROMPTS, LENGTH, [tokenizer.eos_token_id])
    other = lively_policy(tokenizer, seed=5)
    generator.sync_weights(PolicyAndValueWrapper(other, None))
    moved = vllm_greedy(generator, PolicyAndValueWrapper(other, None), tokenizer, PROMPTS)
    assert moved == hf_greedy(other, tokenizer, PROMPTS, LENGTH, [tokenizer.eos_token_id]) != expected_before

    lora = get_peft_model(lively_policy(tokenizer), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(std=1.0)
    generator.sync_weights(PolicyAndValueWrapper(lora, None))
    adapted = vllm_greedy(generator, PolicyAndValueWrapper(lora, None), tokenizer, PROMPTS)
    assert adapted == hf_greedy(lora, tokenizer, PROMPTS, LENGTH, [tokenizer.eos_token_id]) != expected_before
    generator.sync_weights(policy)
    assert vllm_greedy(generator, PolicyAndValueWrapper(policy, None), tokenizer, PROMPTS) == expected_before
