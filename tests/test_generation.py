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
"""The generation seam on its own: `HFGenerator` on a tiny policy, no trainer."""

import torch
from conftest import PROMPTS, eos_biased, fp32_accelerator

from ppomax_trl import OnlineUNAConfig
from ppomax_trl.generation import HFGenerator, Responses
from ppomax_trl.modules import PolicyAndValueWrapper
from ppomax_trl.prompts import collate_prompts
from ppomax_trl.tiny import tiny_causal_lm


def generate(tmp_path, tokenizer, stop_token_ids, response_length=12, bias=3.5):
    args = OnlineUNAConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                           response_length=response_length)  # fmt: skip
    policy = eos_biased(tiny_causal_lm(tokenizer, seed=0), tokenizer.eos_token_id, bias=bias)
    generator = HFGenerator(fp32_accelerator(), args, tokenizer.pad_token_id, stop_token_ids)
    rows = [{"input_ids": tokenizer(p)["input_ids"]} for p in PROMPTS]
    queries, query_mask = collate_prompts(rows, tokenizer.pad_token_id, "cpu")
    torch.manual_seed(0)
    model = PolicyAndValueWrapper(policy, None)
    return generator, model, generator.generate(model, queries, query_mask, temperature=1.0, top_p=1.0)


def test_hf_generator_returns_responses_cut_after_the_stop_token(tmp_path, tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    generator, model, out = generate(tmp_path, tokenizer, [eos])
    assert isinstance(out, Responses) and out.logprobs is None  # `transformers.generate` reports no log-probs
    assert out.ids.shape == out.mask.shape and out.ids.size(0) == len(PROMPTS) and out.ids.size(1) <= 12
    assert out.stopped.any() and not out.stopped.all()  # the EOS bias makes some stop and some run to the cap
    for ids, mask, stopped in zip(out.ids, out.mask, out.stopped, strict=True):
        kept = ids[mask].tolist()
        assert mask.tolist() == [True] * len(kept) + [False] * (len(mask) - len(kept))  # a prefix
        assert (ids[~mask] == pad).all()
        assert bool(stopped) == (kept[-1] == eos) and eos not in kept[:-1]
        if not stopped:
            assert len(kept) == 12
    before = {name: p.clone() for name, p in model.named_parameters()}
    assert generator.sync_weights(model) is None  # nothing to push: generate runs on the policy itself
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_hf_generator_truncates_after_any_stop_token(tmp_path, tokenizer):
    eos = tokenizer.eos_token_id
    # a stop set the model's own EOS is not alone in: the first of them ends each response
    _, _, free = generate(tmp_path, tokenizer, None, bias=-10.0)
    stop = int(free.ids[0, 2])  # the third token of the first response
    _, _, out = generate(tmp_path, tokenizer, [eos, stop], bias=-10.0)
    assert out.stopped[0] and out.mask[0].sum() <= 3
    for ids, mask, stopped in zip(out.ids, out.mask, out.stopped, strict=True):
        kept = ids[mask].tolist()
        assert not any(t in (eos, stop) for t in kept[:-1])
        assert bool(stopped) == (kept[-1] in (eos, stop))
