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
"""`use_vllm` without vLLM: the sampler correction's math against loop twins, the losses' weights, the config's
checks, the install error, and the weights `VLLMGenerator` pushes. The vLLM runs themselves are in tests_vllm/."""

import math
import sys

import pytest
import torch
from conftest import PROMPTS, common_args
from datasets import Dataset

from ppomax_trl import OnlineUNAConfig, PPOConfig, PPOMaxConfig, PPOTrainer
from ppomax_trl.losses import ppo_policy_loss, una_loss
from ppomax_trl.sampler_correction import mismatch_stats, sampler_importance_weights
from ppomax_trl.tiny import tiny_causal_lm, tiny_reward_model
from ppomax_trl.vllm_generation import policy_weights_for_vllm


MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def naive_weights(old, sampler, mask, mode, low, high):
    """Loop twin of `sampler_importance_weights`."""
    rows = []
    for b in range(old.size(0)):
        diffs = []
        for t in range(old.size(1)):
            d = float(old[b, t] - sampler[b, t]) if mask[b, t] else 0.0
            diffs.append(0.0 if math.isnan(d) else d)
        values = [math.exp(sum(diffs))] if mode.startswith("sequence") else [math.exp(d) for d in diffs]
        out = []
        for w in values:
            if mode.endswith("truncate"):
                w = max(w, low) if low is not None else w
                w = min(w, high) if high is not None else w
            elif (low is not None and w < low) or (high is not None and w > high):
                w = 0.0
            out.append(w)
        rows.append(out)
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bounds", [(None, 3.0), (0.5, 2.0), (None, None)])
def test_importance_weights_equal_the_loop_twin(mode, bounds):
    torch.manual_seed(0)
    old = -torch.rand(5, 6) * 2
    sampler = old + 0.6 * torch.randn(5, 6)
    sampler[1, 2] = float("nan")  # a token the sampler could not score: no correction for it
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[0, 4:] = False
    mask[3, 1:] = False
    weights = sampler_importance_weights(old, sampler, mask, mode=mode, clip_min=bounds[0], clip_max=bounds[1])
    expected = naive_weights(old, sampler, mask, mode, *bounds)
    assert weights.shape == ((5, 1) if mode.startswith("sequence") else (5, 6))
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-6)
    assert not weights.requires_grad


def test_importance_weights_are_one_without_a_mismatch_and_reject_unknown_modes():
    old = -torch.rand(3, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    for mode in MODES:
        assert torch.equal(sampler_importance_weights(old, old.clone(), mask, mode=mode, clip_max=3.0),
                           torch.ones(3, 1 if mode.startswith("sequence") else 4))  # fmt: skip
    with pytest.raises(ValueError, match="Unknown importance sampling mode"):
        sampler_importance_weights(old, old, mask, mode="token_clip")


def test_mismatch_stats_over_response_tokens_only():
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    sampler = torch.tensor([[-1.5, -1.0, float("nan")], [-0.5, -0.7, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    stats = mismatch_stats(old, sampler, mask)
    deltas = torch.tensor([0.5, -1.0, 0.0, 0.2])  # NaN and padding left out
    assert stats["mean"].item() == pytest.approx(deltas.abs().mean().item())
    assert stats["max"].item() == pytest.approx(1.0)
    assert stats["kl"].item() == pytest.approx((torch.expm1(deltas) - deltas).mean().item())
    assert mismatch_stats(old, sampler, torch.zeros_like(mask))["max"].item() == 0.0


def test_policy_loss_multiplies_each_token_loss_by_its_importance_weight():
    torch.manual_seed(1)
    logprobs, old, advantages = -torch.rand(4, 5), -torch.rand(4, 5), torch.randn(4, 5)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2, 3:] = False
    weights = torch.rand(4, 5) * 2
    per_token = []
    for w in (weights, torch.ones(4, 5)):
        loss, _ = ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2, importance_weights=w)
        per_token.append(loss)
    ratio = torch.exp(logprobs - old)
    naive = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(0.8, 1.2)) * weights
    assert per_token[0].item() == pytest.approx((naive * mask).sum().item() / mask.sum().item(), rel=1e-6)
    unweighted, _ = ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2)
    assert torch.equal(per_token[1], unweighted)
    # a sequence weight (B, 1) scales every token of its row
    seq = torch.rand(4, 1)
    loss, _ = ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2, importance_weights=seq)
    expected, _ = ppo_policy_loss(logprobs, old, advantages, mask, cliprange=0.2, importance_weights=seq.expand(4, 5))
    assert torch.equal(loss, expected)


def test_una_loss_weights_each_example():
    policy, ref, targets = (
        torch.tensor([-3.0, -1.0, -2.0]),
        torch.tensor([-2.0, -2.0, -2.5]),
        torch.tensor([0.9, 0.1, 0.5]),
    )
    weights = torch.tensor([1.0, 0.0, 2.5])
    loss, _ = una_loss(policy, ref, targets, beta=0.5, feedback="score", weights=weights)
    per_example = (torch.sigmoid(0.5 * (policy - ref)) - targets).square()
    assert loss.item() == pytest.approx((weights * per_example).mean().item())


def test_vllm_fields_are_checked_with_the_fix(tmp_path):
    assert PPOMaxConfig(output_dir=str(tmp_path)).vllm_importance_sampling_correction  # on by default, as TRL GRPO
    assert PPOConfig(output_dir=str(tmp_path)).vllm_importance_sampling_mode == "sequence_mask"
    with pytest.raises(ValueError, match="vllm_mode"):
        PPOConfig(output_dir=str(tmp_path), vllm_mode="remote")
    with pytest.raises(ValueError, match="vllm_importance_sampling_mode"):
        PPOConfig(output_dir=str(tmp_path), vllm_importance_sampling_mode="token")
    with pytest.raises(ValueError, match=r"bounds need"):
        PPOConfig(
            output_dir=str(tmp_path), vllm_importance_sampling_clip_min=2.0, vllm_importance_sampling_clip_max=1.0
        )
    with pytest.raises(ValueError, match="top_k"):
        PPOConfig(output_dir=str(tmp_path), top_k=-1)
    # the UNA loss is one regression per sequence: token weights have no meaning there
    with pytest.raises(ValueError, match="'sequence_mask'"):
        OnlineUNAConfig(output_dir=str(tmp_path), use_vllm=True, vllm_importance_sampling_mode="token_truncate")
    OnlineUNAConfig(output_dir=str(tmp_path), use_vllm=True, vllm_importance_sampling_mode="sequence_truncate")


def test_use_vllm_without_vllm_fails_at_construction_with_the_install_lines(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, as where it is not installed
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in PROMPTS]})
    args = PPOConfig(**common_args(tmp_path, use_vllm=True))
    with pytest.raises(ImportError) as error:
        PPOTrainer(args, tokenizer, tiny_causal_lm(tokenizer), None, tiny_reward_model(tokenizer), dataset)
    message = str(error.value)
    assert "PPOTrainer: `use_vllm=True` needs vLLM" in message
    assert "pip install 'ppomax-trl[vllm]'" in message and "bash scripts/vllm_env.sh" in message


def test_pushed_weights_are_the_policy_or_its_merged_adapter(tokenizer):
    from peft import LoraConfig, get_peft_model

    policy = tiny_causal_lm(tokenizer, seed=0)
    plain = dict(policy_weights_for_vllm(policy, gather=False))
    assert plain.keys() == dict(policy.named_parameters()).keys()
    assert all(torch.equal(plain[name], p) for name, p in policy.named_parameters())

    base_names = set(plain)
    peft_model = get_peft_model(
        tiny_causal_lm(tokenizer, seed=0), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter (B = 0 at init would merge to the base weights)
    before = {name: p.clone() for name, p in peft_model.named_parameters()}
    pushed = {name: tensor.clone() for name, tensor in policy_weights_for_vllm(peft_model, gather=False)}
    assert set(pushed) == base_names  # transformers checkpoint names, no adapter weights
    reference = tiny_causal_lm(tokenizer, seed=0)
    reference_merged = get_peft_model(reference, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    reference_merged.load_state_dict(before, strict=False)
    expected = reference_merged.merge_and_unload().state_dict()
    for name, tensor in pushed.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(pushed[q], plain[q])  # the adapter is in the pushed weights
    # the adapter is unmerged again: the policy is bit-identical to before
    assert all(torch.equal(p, before[name]) for name, p in peft_model.named_parameters())


class FakeServerClient:
    """Stands in for TRL's `VLLMClient`: records what the generator sends, answers like `vllm-serve`."""

    def __init__(self, completions, logprobs):
        self.completions, self.logprobs, self.requests, self.pushed, self.resets = completions, logprobs, [], [], 0

    def generate(self, prompts, **kwargs):
        self.requests.append((prompts, kwargs))
        return {"completion_ids": self.completions, "logprobs": [[[v] for v in row] for row in self.logprobs]}

    def update_named_param(self, name, tensor):
        self.pushed.append((name, tensor.clone()))

    def reset_prefix_cache(self):
        self.resets += 1


def test_server_mode_sends_prompt_ids_and_stop_settings_and_pushes_the_policy(tmp_path, tokenizer):
    """Server mode through a fake client (a real one needs `trl vllm-serve` and NCCL): the request carries the prompt
    ids without padding and our stop settings; responses are cut at the stop token like every other; the push sends
    every policy weight under its checkpoint name, then resets the server's prefix cache."""
    from conftest import fp32_accelerator

    from ppomax_trl.prompts import collate_prompts
    from ppomax_trl.vllm_generation import VLLMGenerator

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    args = PPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", use_vllm=True,
                     vllm_mode="server", response_length=4, top_k=5)  # fmt: skip
    generator = object.__new__(VLLMGenerator)  # the constructor would connect to a server
    generator.accelerator, generator.args, generator.pad_token_id, generator.stop_token_ids = (
        fp32_accelerator(), args, pad, [eos],
    )  # fmt: skip
    generator._gather, generator._on_cpu = False, True
    generator.client = FakeServerClient([[7, eos], [8, 9, 10, 11]], [[-0.5, -0.25], [-1.0, -1.0, -2.0, -0.5]])
    rows = [{"input_ids": tokenizer(p)["input_ids"]} for p in PROMPTS[:2]]
    ids, mask = collate_prompts(rows, pad, "cpu")
    out = generator.generate(None, ids, mask, temperature=0.7, top_p=0.9)
    prompts, kwargs = generator.client.requests[0]
    assert prompts == [row["input_ids"] for row in rows]  # no padding sent
    assert kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9 and kwargs["top_k"] == 5
    assert kwargs["max_tokens"] == 4 and kwargs["logprobs"] == 0
    assert kwargs["generation_kwargs"] == {"ignore_eos": True, "stop_token_ids": [eos]}
    assert out.ids.tolist() == [[7, eos, pad, pad], [8, 9, 10, 11]]
    assert out.stopped.tolist() == [True, False] and out.mask.sum(1).tolist() == [2, 4]
    assert out.logprobs.tolist() == [[-0.5, -0.25, 0.0, 0.0], [-1.0, -1.0, -2.0, -0.5]]

    policy = tiny_causal_lm(tokenizer)
    generator.sync_weights(policy)
    pushed = dict(generator.client.pushed)
    assert pushed.keys() == dict(policy.named_parameters()).keys() and generator.client.resets == 1
    assert all(torch.equal(pushed[name], p) for name, p in policy.named_parameters())
