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
"""What a rollout means, pinned against transformers and TRL (issue 11): where stops happen, where the reward model
reads its score, what a reward model with its own tokenizer sees, and which distribution the sampler draws from."""

import pytest
import torch
from conftest import PROMPTS, common_args, eos_biased
from datasets import Dataset

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer, PPOConfig, PPOTrainer
from ppomax_trl.rollout import OnlineRolloutTrainer, PolicyAndValueWrapper
from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model


# Added to the EOS logit of a random tiny policy: p(EOS) ~ 0.15 per token at temperature 1, so with 6 new tokens some
# responses stop and some run to the cap.
RM_TEXTS = ["completely different words for another vocabulary"]


def pad_is_eos_tokenizer(texts=None, vocab_size=320):
    """A tokenizer as TRL's RewardTrainer leaves it when there is no pad token: pad = EOS."""
    tok = build_tiny_tokenizer(texts, vocab_size=vocab_size)
    tok.pad_token = tok.eos_token
    return tok


def prompts_of(tok) -> Dataset:
    return Dataset.from_dict({"input_ids": [tok(p)["input_ids"] for p in PROMPTS]})


def una_trainer(
    tmp_path, tok, policy, reward_model, dataset, *, reward_processing_class=None, reward_funcs=None, **kw
):
    args = OnlineUNAConfig(**common_args(tmp_path, **{"temperature": 1.0, "response_length": 6, **kw}))
    return OnlineUNATrainer(
        args, tok, policy, None, reward_model, dataset,
        reward_processing_class=reward_processing_class, reward_funcs=reward_funcs,
    )  # fmt: skip


def sample(trainer, rows, *, seed=0, model=None):
    queries, query_mask = trainer._collate_prompts(rows)
    torch.manual_seed(seed)
    return trainer.generate_responses(model or trainer.model, queries, query_mask, temperature=1.0, top_p=1.0)


def constant_reward(prompts, completions, **kwargs):
    return [0.0] * len(completions)


def all_rows(trainer):
    return [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]


def policy_ids(batch, i, *, drop_stop=False):
    """Unpadded prompt + response ids of row `i`, optionally without the stop token."""
    response = batch["responses"][i][batch["response_mask"][i]]
    if drop_stop and batch["stopped"][i]:
        response = response[:-1]
    return torch.cat([batch["queries"][i][batch["query_mask"][i].bool()], response])


# ----------------------------------------------------------------------------------------------------------------------
# 5. The reward model reads its score where transformers' sequence classifier does
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pad_is_eos", [False, True], ids=["pad!=eos", "pad==eos"])
def test_reward_model_score_is_its_own_forward_on_the_row(tmp_path, pad_is_eos):
    tok = pad_is_eos_tokenizer() if pad_is_eos else build_tiny_tokenizer()
    policy = eos_biased(tiny_causal_lm(tok), tok.eos_token_id)
    reward_model = tiny_reward_model(tok)
    assert reward_model.config.pad_token_id == tok.pad_token_id
    trainer = una_trainer(tmp_path, tok, policy, reward_model, prompts_of(tok), stop_token="eos")
    rows = all_rows(trainer)
    batch = sample(trainer, rows)
    assert batch["stopped"].any() and not batch["stopped"].all()  # both kinds of response are exercised
    scores = trainer.score(rows, batch)
    for i in range(len(rows)):
        # transformers reads the last token that is not `config.pad_token_id`: the token before the EOS when pad == EOS
        expected = reward_model(input_ids=policy_ids(batch, i)[None]).logits[0, 0]
        torch.testing.assert_close(scores[i], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rm_pad_is_eos", [False, True], ids=["rm-pad!=eos", "rm-pad==eos"])
def test_cross_tokenizer_score_is_the_reward_models_own_forward(tmp_path, tokenizer, rm_pad_is_eos):
    rm_tok = pad_is_eos_tokenizer(RM_TEXTS, 300) if rm_pad_is_eos else build_tiny_tokenizer(RM_TEXTS, vocab_size=300)
    reward_model = tiny_reward_model(rm_tok, seed=5)
    policy = eos_biased(tiny_causal_lm(tokenizer), tokenizer.eos_token_id)
    trainer = una_trainer(tmp_path, tokenizer, policy, reward_model, prompts_of(tokenizer),
                          reward_processing_class=rm_tok, stop_token="eos")  # fmt: skip
    rows = all_rows(trainer)
    batch = sample(trainer, rows)
    assert batch["stopped"].any() and not batch["stopped"].all()
    scores = trainer.score(rows, batch)
    for i in range(len(rows)):
        # special tokens kept (they may be chat markers the RM knows), the policy's stop token swapped for the RM's
        # EOS, tokenized as TRL's RewardTrainer tokenizes text
        text = tokenizer.decode(policy_ids(batch, i, drop_stop=True))
        text += rm_tok.eos_token if batch["stopped"][i] else ""
        expected = reward_model(**rm_tok(text, return_tensors="pt")).logits[0, 0]
        torch.testing.assert_close(scores[i], expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# 6. A reward model with its own tokenizer
# ----------------------------------------------------------------------------------------------------------------------
def test_cross_tokenizer_reward_model_gets_a_policy_backbone_critic(tmp_path, tokenizer, prompt_dataset):
    rm_tok = build_tiny_tokenizer(RM_TEXTS, vocab_size=300)
    assert len(rm_tok) < len(tokenizer)  # the RM's embedding cannot take the policy's ids
    reward_model = tiny_reward_model(rm_tok, seed=5)
    policy = tiny_causal_lm(tokenizer)
    args = PPOConfig(**common_args(tmp_path, total_episodes=4, stop_token="eos"))
    with pytest.warns(UserWarning, match="value_model"):
        trainer = PPOTrainer(args, tokenizer, policy, None, reward_model, prompt_dataset, None,
                             reward_processing_class=rm_tok)  # fmt: skip
    critic = trainer.model.value_model
    assert critic.get_input_embeddings().num_embeddings == len(tokenizer)
    backbone = policy.model.state_dict()
    for name, value in critic.model.state_dict().items():
        assert torch.equal(value, backbone[name]), name  # the policy backbone, not the reward model
    trainer.train()
    assert trainer.state.global_step == 1


def test_conversational_reward_model_sees_its_chat_template(tmp_path, tokenizer):
    rm_tok = build_tiny_tokenizer(RM_TEXTS, vocab_size=300)  # same ChatML markers, different vocabulary
    reward_model = tiny_reward_model(rm_tok, seed=5)
    seen = []
    reward_model.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("input_ids")), with_kwargs=True)
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in PROMPTS]})
    policy = eos_biased(tiny_causal_lm(tokenizer), tokenizer.eos_token_id)
    trainer = una_trainer(tmp_path, tokenizer, policy, reward_model, dataset, reward_processing_class=rm_tok,
                          stop_token="eos")  # fmt: skip
    rows = all_rows(trainer)
    batch = sample(trainer, rows)
    assert batch["stopped"].any() and not batch["stopped"].all()
    seen.clear()
    scores = trainer.score(rows, batch)
    (input_ids,) = seen  # one batched forward, ids passed by keyword
    start, end = rm_tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    for i, row in enumerate(rows):
        # user turn + assistant turn; the assistant turn is closed only when the response stopped
        assert (input_ids[i] == start).sum() == 2
        assert (input_ids[i] == end).sum() == (2 if batch["stopped"][i] else 1)
        # naive twin: TRL's RewardTrainer tokenization of prompt + assistant message
        response = batch["responses"][i][batch["response_mask"][i]]
        completion = tokenizer.decode(response[:-1] if batch["stopped"][i] else response, skip_special_tokens=True)
        messages = row["prompt"] + [{"role": "assistant", "content": completion}]
        ids = rm_tok.apply_chat_template(
            messages, tokenize=True, return_dict=True, continue_final_message=not bool(batch["stopped"][i])
        )["input_ids"]
        expected = reward_model(input_ids=torch.tensor([ids])).logits[0, 0]
        torch.testing.assert_close(scores[i], expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# 7. No explicit stop: stop at the policy's EOS, as TRL 1.12 did
# ----------------------------------------------------------------------------------------------------------------------
def test_default_stop_ids_come_from_the_policy_generation_config(tmp_path, tokenizer):
    args = OnlineUNAConfig(**common_args(tmp_path))
    assert args.stop_token is None and args.stop_token_id is None
    policy = tiny_causal_lm(tokenizer)
    resolve = OnlineRolloutTrainer._resolve_stop_token_ids
    assert resolve(args, tokenizer, policy) == [tokenizer.eos_token_id]
    policy.generation_config.eos_token_id = [tokenizer.eos_token_id, 3]  # e.g. EOS and <|im_end|>
    assert resolve(args, tokenizer, policy) == [tokenizer.eos_token_id, 3]
    policy.generation_config.eos_token_id = None  # no EOS in the generation config: the tokenizer's
    assert resolve(args, tokenizer, policy) == [tokenizer.eos_token_id]
    explicit = OnlineUNAConfig(**common_args(tmp_path, stop_token_id=7))
    assert resolve(explicit, tokenizer, policy) == [7]


def test_no_stop_token_stops_at_the_policy_eos(tmp_path, tokenizer, prompt_dataset):
    eos = tokenizer.eos_token_id
    policy = eos_biased(tiny_causal_lm(tokenizer), eos)
    trainer = una_trainer(tmp_path, tokenizer, policy, None, prompt_dataset, reward_funcs=constant_reward)
    assert trainer.stop_token_ids == [eos]
    batch = sample(trainer, all_rows(trainer))
    has_eos = (batch["responses"] == eos).any(1)
    assert has_eos.any() and not has_eos.all()
    assert torch.equal(batch["stopped"], has_eos)
    mask = batch["response_mask"]
    for i in range(len(has_eos)):
        if has_eos[i]:
            first = int((batch["responses"][i] == eos).nonzero()[0])
            assert mask[i].sum() == first + 1 and mask[i, first]  # the EOS is the last real token, nothing after it
        else:
            assert mask[i].all()


@pytest.mark.parametrize("kind", ["ppo", "una"])
def test_missing_eos_penalty_hits_only_responses_without_eos(tmp_path, tokenizer, prompt_dataset, kind):
    eos, penalty = tokenizer.eos_token_id, 2.0
    policy = eos_biased(tiny_causal_lm(tokenizer), eos)
    if kind == "ppo":
        args = PPOConfig(**common_args(tmp_path, temperature=1.0, response_length=6, missing_eos_penalty=penalty))
        trainer = PPOTrainer(args, tokenizer, policy, None, None, prompt_dataset, tiny_reward_model(tokenizer),
                             reward_funcs=constant_reward)  # fmt: skip
    else:
        trainer = una_trainer(tmp_path, tokenizer, policy, None, prompt_dataset, reward_funcs=constant_reward,
                              missing_eos_penalty=penalty)  # fmt: skip
    batch = sample(trainer, all_rows(trainer))
    has_eos = (batch["responses"] == eos).any(1)
    assert has_eos.any() and not has_eos.all()
    raw = torch.linspace(-1.0, 1.0, len(has_eos))
    expected = raw - penalty * (~has_eos).float()
    if kind == "ppo":  # PPOConfig: no normalisation, no clip, so the shaped score is the raw score minus the penalty
        torch.testing.assert_close(trainer.shape_scores(raw, batch["stopped"]), expected)
    else:  # sigmoid normaliser
        torch.testing.assert_close(trainer.score_targets(raw, batch["stopped"]), torch.sigmoid(expected))


# ----------------------------------------------------------------------------------------------------------------------
# 8. The sampler is pi_old: softmax(logits / T), nothing from the model's own generation_config
# ----------------------------------------------------------------------------------------------------------------------
def test_sampling_ignores_the_models_own_logits_processors(tmp_path, tokenizer, prompt_dataset, caplog):
    plain = tiny_causal_lm(tokenizer)
    penalized = tiny_causal_lm(tokenizer)  # same seed: same weights
    penalized.generation_config.update(repetition_penalty=5.0, no_repeat_ngram_size=1)
    own_config = penalized.generation_config
    with caplog.at_level("WARNING", logger="ppomax_trl.rollout"):
        trainer = una_trainer(tmp_path, tokenizer, penalized, None, prompt_dataset, reward_funcs=constant_reward,
                              response_length=24)  # fmt: skip
    rows = all_rows(trainer)
    got = sample(trainer, rows)
    expected = sample(trainer, rows, model=PolicyAndValueWrapper(plain, None))
    # the unpenalised sample repeats tokens, so the penalties would have changed it
    assert any(
        len(set(r[m].tolist())) < int(m.sum())
        for r, m in zip(expected["responses"], expected["response_mask"], strict=True)
    )
    assert torch.equal(got["responses"], expected["responses"])
    assert penalized.generation_config is own_config  # restored afterwards
    assert own_config.repetition_penalty == 5.0 and own_config.no_repeat_ngram_size == 1
    ignored = [r.getMessage() for r in caplog.records if "repetition_penalty" in r.getMessage()]
    assert len(ignored) == 1 and "no_repeat_ngram_size" in ignored[0]


@pytest.mark.parametrize("top_p, warned", [(0.9, True), (1.0, False)])
def test_truncated_sampling_warns_once_at_construction(tmp_path, tokenizer, prompt_dataset, caplog, top_p, warned):
    with caplog.at_level("WARNING", logger="ppomax_trl.rollout"):
        trainer = una_trainer(tmp_path, tokenizer, tiny_causal_lm(tokenizer), None, prompt_dataset,
                              reward_funcs=constant_reward, top_p=top_p)  # fmt: skip
        sample(trainer, all_rows(trainer))
    messages = [r.getMessage() for r in caplog.records if "top_p" in r.getMessage()]
    assert len(messages) == (1 if warned else 0)
    if warned:
        assert "off-policy" in messages[0]


def test_bf16_generation_and_reward_model_run_under_autocast(tmp_path, tokenizer, prompt_dataset):
    policy = tiny_causal_lm(tokenizer)
    dtypes = []
    policy.lm_head.register_forward_hook(lambda module, inputs, logits: dtypes.append(logits.dtype))
    trainer = una_trainer(tmp_path, tokenizer, policy, tiny_reward_model(tokenizer), prompt_dataset, bf16=True,
                          use_cpu=True)  # fmt: skip
    rows = all_rows(trainer)[:4]
    batch = sample(trainer, rows)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # sampled in the precision that training runs in
    scores = trainer.score(rows, batch)
    assert torch.equal(scores, scores.bfloat16().float())  # the reward head ran in bf16 too
