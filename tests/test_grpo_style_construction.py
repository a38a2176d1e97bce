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
"""The online trainers built as TRL GRPO users write it: keywords, `model` as a name/path, tokenizer, reference and
reward model optional; TRL 1.12's positional order keeps working."""

import pytest
import torch
from conftest import PROMPTS, common_args
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import is_peft_available

from ppomax_trl import OnlineUNAConfig, OnlineUNATrainer, PPOConfig, PPOMaxConfig, PPOMaxTrainer, PPOTrainer
from ppomax_trl.tiny import tiny_causal_lm


TRAINERS = [(PPOTrainer, PPOConfig), (PPOMaxTrainer, PPOMaxConfig), (OnlineUNATrainer, OnlineUNAConfig)]


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def one_update_config(config_class, tmp_path, **overrides):
    """Config kwargs for exactly one policy update (4 prompts), no critic warm-up."""
    kwargs = common_args(tmp_path, total_episodes=4, **overrides)
    if issubclass(config_class, PPOConfig):
        kwargs["critic_warmup_steps"] = 0
    return config_class(**kwargs)


@pytest.fixture(scope="module")
def prompts():
    return Dataset.from_dict({"prompt": PROMPTS[:4]})


@pytest.mark.parametrize(("trainer_class", "config_class"), TRAINERS, ids=lambda c: c.__name__)
def test_grpo_keywords_with_a_model_path_build_and_train(
    tmp_path, tiny_model_dirs, prompts, trainer_class, config_class
):
    folder = tiny_model_dirs["policy"]
    trainer = trainer_class(
        model=str(folder),
        reward_funcs=length_reward,
        args=one_update_config(config_class, tmp_path),
        train_dataset=prompts,
    )
    saved = AutoTokenizer.from_pretrained(folder)
    assert trainer.processing_class.name_or_path == str(folder)
    assert trainer.processing_class.get_vocab() == saved.get_vocab()
    assert trainer.model.policy.config._name_or_path == str(folder)
    assert next(trainer.model.policy.parameters()).dtype == torch.float32
    assert trainer.ref_model is not None and trainer.reward_model is None
    trainer.train()
    assert trainer.state.global_step == 1


@pytest.mark.parametrize("dtype", ["bfloat16", torch.bfloat16])
def test_model_init_kwargs_dtype_loads_bf16_weights(tmp_path, tiny_model_dirs, prompts, dtype):
    args = one_update_config(PPOMaxConfig, tmp_path, model_init_kwargs={"dtype": dtype})
    trainer = PPOMaxTrainer(model=str(tiny_model_dirs["policy"]), reward_funcs=length_reward, args=args,
                            train_dataset=prompts)  # fmt: skip
    assert {p.dtype for p in trainer.model.policy.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trainer.ref_model.parameters()} == {torch.bfloat16}


def test_model_path_loads_float32_by_default_and_auto_keeps_the_saved_dtype(tmp_path, tokenizer, prompts):
    """As TRL's `create_model_from_path`: float32 unless `model_init_kwargs` says otherwise ('auto': the saved one)."""
    folder = tmp_path / "bf16_policy"
    tiny_causal_lm(tokenizer).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    trainer = OnlineUNATrainer(model=str(folder), reward_funcs=length_reward,
                               args=one_update_config(OnlineUNAConfig, tmp_path), train_dataset=prompts)  # fmt: skip
    assert next(trainer.model.policy.parameters()).dtype == torch.float32
    args = one_update_config(OnlineUNAConfig, tmp_path, model_init_kwargs={"dtype": "auto"})
    trainer = OnlineUNATrainer(model=str(folder), reward_funcs=length_reward, args=args, train_dataset=prompts)
    assert next(trainer.model.policy.parameters()).dtype == torch.bfloat16


def test_model_init_kwargs_from_a_json_string(tmp_path):
    """The CLI passes dicts as JSON strings (`--model_init_kwargs '{"dtype": "bfloat16"}'`)."""
    args = PPOMaxConfig(**common_args(tmp_path), model_init_kwargs='{"dtype": "bfloat16"}')
    assert args.model_init_kwargs == {"dtype": "bfloat16"}


def test_bad_dtype_string_is_refused_naming_the_trainer(tmp_path, tiny_model_dirs, prompts):
    args = one_update_config(PPOMaxConfig, tmp_path, model_init_kwargs={"dtype": "bf16"})
    with pytest.raises(ValueError, match=r"PPOMaxTrainer.*dtype"):
        PPOMaxTrainer(model=str(tiny_model_dirs["policy"]), reward_funcs=length_reward, args=args,
                      train_dataset=prompts)  # fmt: skip


@pytest.mark.skipif(not is_peft_available(), reason="needs peft")
@pytest.mark.parametrize(("trainer_class", "config_class"), TRAINERS[1:], ids=lambda c: c.__name__)
def test_peft_config_with_a_model_path(tmp_path, tiny_model_dirs, prompts, trainer_class, config_class):
    from peft import LoraConfig, PeftModel

    trainer = trainer_class(
        model=str(tiny_model_dirs["policy"]),
        reward_funcs=length_reward,
        args=one_update_config(config_class, tmp_path),
        train_dataset=prompts,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert isinstance(trainer.model.policy, PeftModel) and trainer.is_peft_model
    assert trainer.ref_model is None  # the reference is the adapter-disabled base
    trainer.train()
    assert trainer.state.global_step == 1


def test_model_object_without_tokenizer_loads_it_from_its_name_or_path(tmp_path, tiny_model_dirs, prompts):
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["policy"])
    trainer = PPOTrainer(model=policy, reward_funcs=length_reward, args=one_update_config(PPOConfig, tmp_path),
                         train_dataset=prompts)  # fmt: skip
    assert trainer.processing_class.name_or_path == str(tiny_model_dirs["policy"])


def test_model_object_without_a_name_needs_a_tokenizer(tmp_path, tokenizer, prompts):
    with pytest.raises(ValueError, match=r"OnlineUNATrainer.*processing_class"):
        OnlineUNATrainer(model=tiny_causal_lm(tokenizer), reward_funcs=length_reward,
                         args=one_update_config(OnlineUNAConfig, tmp_path), train_dataset=prompts)  # fmt: skip


def test_reward_model_and_ref_model_paths_are_loaded(tmp_path, tiny_model_dirs, prompts):
    trainer = PPOMaxTrainer(
        model=str(tiny_model_dirs["policy"]),
        ref_model=str(tiny_model_dirs["policy"]),
        reward_model=str(tiny_model_dirs["reward"]),
        args=one_update_config(PPOMaxConfig, tmp_path),
        train_dataset=prompts,
    )
    assert type(trainer.reward_model).__name__.endswith("ForSequenceClassification")
    assert trainer.reward_model.config.num_labels == 1
    assert trainer.ref_model.config._name_or_path == str(tiny_model_dirs["policy"])
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())


def test_args_default_to_the_trainer_config_named_after_the_model(tmp_path, tiny_model_dirs, prompts, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = PPOMaxTrainer(model=str(tiny_model_dirs["policy"]), reward_funcs=length_reward, train_dataset=prompts)
    assert type(trainer.args) is PPOMaxConfig and trainer.args.output_dir == "policy-PPO-max"
    trainer = OnlineUNATrainer(model=str(tiny_model_dirs["policy"]), reward_funcs=length_reward,
                               train_dataset=prompts)  # fmt: skip
    assert type(trainer.args) is OnlineUNAConfig and trainer.args.output_dir == "policy-OnlineUNA"


@pytest.mark.parametrize(("trainer_class", "config_class"), TRAINERS, ids=lambda c: c.__name__)
def test_errors_name_the_class_that_was_called(tmp_path, tiny_model_dirs, prompts, trainer_class, config_class):
    name = trainer_class.__name__
    args = one_update_config(config_class, tmp_path)
    with pytest.raises(ValueError, match=rf"^{name}\b.*`reward_model`, `reward_funcs`"):
        trainer_class(model=str(tiny_model_dirs["policy"]), args=args, train_dataset=prompts)
    with pytest.raises(TypeError, match=rf"^{name}\b.*`model`"):
        trainer_class(reward_funcs=length_reward, args=args, train_dataset=prompts)
    # GRPO's positional order (model first) is not TRL 1.12's (args first): say so
    with pytest.raises(TypeError, match=rf"^{name}\b.*keyword"):
        trainer_class(str(tiny_model_dirs["policy"]), length_reward, train_dataset=prompts)


def test_model_init_kwargs_with_a_model_object_warns(tmp_path, tokenizer, tiny_model_dirs, models, prompts, caplog):
    policy, reward_model, _ = models
    args = one_update_config(PPOConfig, tmp_path, model_init_kwargs={"dtype": "bfloat16"})
    with caplog.at_level("WARNING"):
        trainer = PPOTrainer(args, tokenizer, policy, None, reward_model, prompts)
    assert caplog.text.count("model_init_kwargs` is ignored") == 1
    assert next(trainer.model.policy.parameters()).dtype == torch.float32
    caplog.clear()
    with caplog.at_level("WARNING"):
        PPOTrainer(model=str(tiny_model_dirs["policy"]), reward_model=reward_model, args=args, train_dataset=prompts)
    assert "model_init_kwargs` is ignored" not in caplog.text  # used, not ignored


def test_trl112_positional_order_still_works(tmp_path, tokenizer, models, prompts):
    policy, reward_model, _ = models
    args = one_update_config(PPOMaxConfig, tmp_path)
    trainer = PPOMaxTrainer(args, tokenizer, policy, None, reward_model, prompts)
    assert trainer.processing_class is tokenizer and trainer.model.policy is policy
    trainer = PPOMaxTrainer(args=args, processing_class=tokenizer, model=tiny_causal_lm(tokenizer), ref_model=None,
                            reward_model=reward_model, train_dataset=prompts)  # fmt: skip
    assert trainer.reward_model is reward_model


def test_offline_una_loads_a_model_path_the_same_way(tmp_path, tokenizer):
    """`UNATrainer` shares the loader: float32 by default (transformers 5 alone would keep the saved bf16)."""
    from ppomax_trl import UNAConfig, UNATrainer

    folder = tmp_path / "bf16_policy"
    tiny_causal_lm(tokenizer).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    pairs = Dataset.from_dict({"prompt": ["the movie was"], "chosen": [" good"], "rejected": [" bad"]})
    args = UNAConfig(output_dir=str(tmp_path / "una"), report_to="none", bf16=False)
    trainer = UNATrainer(model=str(folder), args=args, train_dataset=pairs)
    assert next(trainer.model.parameters()).dtype == torch.float32
    assert trainer.processing_class.name_or_path == str(folder)
