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
"""vLLM behind the generation seam: `VLLMGenerator`, the second `Generator` (`use_vllm=True`).

Only the policy goes to vLLM. `sync_weights` pushes its current weights (PEFT adapters merged, ZeRO-3 parameters
gathered) after every update; `generate` samples with the config's temperature / top-p / top-k, stops at the same stop
tokens as `HFGenerator` (vLLM's own EOS handling is off), cuts and pads the responses with the same function, and
returns vLLM's log-probs of the sampled tokens so the trainer can measure and correct the sampler mismatch.

Two modes, TRL GRPO's:

- `colocate`: an in-process `vllm.LLM` in every training process (or one per `vllm_tensor_parallel_size` group,
  `distributed_executor_backend="external_launcher"`). The engine is built from the policy's config with dummy
  weights, then the policy is pushed into it, so an in-memory model works as well as a path. Weights are pushed with
  the model runner's in-place reload (`reload_weights(weights_iterator=...)`): it re-runs vLLM's weight processing
  (fused projections, the CPU backend's packed GEMMs), which the per-parameter `model.load_weights` skips.
- `server`: a `trl vllm-serve` process, reached through TRL's `VLLMClient`; the main process sends every process's
  prompts and pushes the weights over the client's communicator (NCCL: GPU only).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import torch
from torch import nn
from transformers.utils import logging

from . import ppo_utils as pu
from .extras import vllm_install_hint
from .generation import Generator, Responses
from .modules import _peft_base
from .ppo_config import OnlineRolloutConfig


logger = logging.get_logger(__name__)


def require_vllm(trainer_name: str) -> None:
    """Fail at construction, before anything loads, when `use_vllm=True` and vLLM cannot be imported."""
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"{trainer_name}: `use_vllm=True` needs vLLM, which cannot be imported here ({error}). "
            f"{vllm_install_hint()} Or set `use_vllm=False` to sample with `transformers.generate`."
        ) from error


def policy_weights_for_vllm(policy: nn.Module, *, gather: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """`(name, tensor)` pairs of the policy as a plain transformers checkpoint would name them.

    A PEFT policy yields its merged weights W + delta_W (each LoRA layer's `get_delta_weight` for its active adapters)
    as new tensors, without touching the model: PEFT's `merge_adapter()` / `unmerge_adapter()` would add and subtract
    delta_W in place, which rounds, so the frozen base would drift a little at every sync. Names lose PEFT's
    `base_model.model.` prefix and `.base_layer`, adapter weights are skipped, a `modules_to_save` copy replaces its
    original. `gather=True` (DeepSpeed ZeRO-3) gathers the parameters around their reads (all at once under PEFT, whose
    delta needs A and B); it is a collective, so every process must run the whole iteration.
    """
    is_peft = hasattr(policy, "peft_config") and hasattr(policy, "get_base_model")

    def gathered(params: list[nn.Parameter]):
        if not gather:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params)

    if not is_peft:
        for name, param in policy.named_parameters():
            with gathered([param]):
                yield name, param.data
        return
    modules = dict(policy.named_modules())
    prefix = getattr(policy, "prefix", "lora_")
    with gathered(list(policy.parameters())), torch.no_grad():
        for name, param in policy.named_parameters():
            if prefix in name or "original_module" in name:
                continue
            tensor = param.data
            owner_name, _, leaf = name.rpartition(".base_layer.")
            if owner_name and leaf == "weight":
                owner = modules[owner_name]
                for adapter in [] if getattr(owner, "merged", False) else owner.active_adapters:
                    if adapter in getattr(owner, "lora_A", {}) or adapter in getattr(owner, "lora_embedding_A", {}):
                        tensor = tensor + owner.get_delta_weight(adapter).to(tensor.dtype)
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            yield name.replace("modules_to_save.default.", ""), tensor


def _load_weights(worker, weights) -> None:
    """Load `(name, tensor)` pairs into the worker's model with its checkpoint loader (runs on a worker)."""
    worker.model_runner.model.load_weights(weights)


def _refresh_cpu_gemms(worker) -> int:
    """Re-pack the CPU GEMMs whose weights an in-place reload updated without re-processing them (runs on a worker).

    vLLM's CPU backend packs every linear weight for its GEMM kernels. `reload_weights` re-processes the layers whose
    weights it loaded, but a tied LM head is not loaded (the checkpoint has no `lm_head.weight`): it shares the
    embedding's storage, which the reload updates in place, while its packed copy keeps the old values. Layers that
    keep their weight next to the packed copy (embeddings and LM heads) are re-processed here; returns how many.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return 0
    model = worker.model_runner.get_model()
    refreshed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        method = getattr(module, "quant_method", None)
        if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.numel() and method:
            method.process_weights_after_loading(module)
            refreshed += 1
    return refreshed


class VLLMGenerator(Generator):
    """Samples rollouts with vLLM; see the module docstring for the two modes."""

    def __init__(
        self,
        accelerator,
        args: OnlineRolloutConfig,
        policy: nn.Module,
        *,
        pad_token_id: int,
        stop_token_ids: list[int] | None,
        max_prompt_tokens: int,
    ):
        self.accelerator, self.args = accelerator, args
        self.pad_token_id, self.stop_token_ids = pad_token_id, stop_token_ids
        self._gather = _is_zero3(accelerator)
        self._on_cpu = accelerator.device.type == "cpu"
        if args.vllm_mode == "server":
            self._start_client()
        else:
            self._start_colocated_engine(policy, max_prompt_tokens)
        self.sync_weights(policy)
        accelerator.wait_for_everyone()

    # ---- construction ------------------------------------------------------------------------------------------------

    def _start_colocated_engine(self, policy: nn.Module, max_prompt_tokens: int) -> None:
        from vllm import LLM

        args, accelerator = self.args, self.accelerator
        tp = args.vllm_tensor_parallel_size
        if accelerator.num_processes % tp:
            raise ValueError(
                f"vllm_tensor_parallel_size={tp} must divide the number of processes ({accelerator.num_processes})."
            )
        self._tp_group = None
        if tp > 1:
            self._tp_group, _ = torch.distributed.new_subgroups_by_enumeration(
                [list(range(i * tp, (i + 1) * tp)) for i in range(accelerator.num_processes // tp)]
            )
        # the engine runs inside this process (no engine-core subprocess, so no `__main__` guard is needed)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if accelerator.num_processes > 1:
            # `external_launcher` reuses this process group: vLLM reads the launcher's rank variables
            os.environ.update(
                RANK=str(accelerator.process_index),
                LOCAL_RANK=str(accelerator.local_process_index),
                WORLD_SIZE=str(accelerator.num_processes),
            )
        base = _peft_base(policy)
        if hasattr(base, "get_base_model"):  # PEFT's inner LoraModel
            base = base.model
        config = base.config
        positions = getattr(config, "max_position_embeddings", None)
        max_model_len = args.vllm_max_model_length
        if max_model_len is None:
            max_model_len = -(-(max_prompt_tokens + args.response_length) // 64) * 64
            max_model_len = min(max_model_len, positions) if positions else max_model_len
        # the engine is built from the policy's config alone (dummy weights); `sync_weights` then pushes the policy, so
        # a model built in memory works like one loaded from a path, and the engine starts from the trained weights
        self._config_dir = tempfile.TemporaryDirectory(prefix="ppomax-vllm-")
        config.save_pretrained(self._config_dir.name)
        dtype = torch.bfloat16 if args.bf16 else (torch.float16 if args.fp16 else next(base.parameters()).dtype)
        self.llm = LLM(
            model=self._config_dir.name,
            skip_tokenizer_init=True,  # prompts go in as ids and come back as ids
            load_format="dummy",
            dtype=dtype,
            seed=args.seed + accelerator.process_index // tp,  # a tensor-parallel group samples as one engine
            tensor_parallel_size=tp,
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            max_model_len=max_model_len,
            max_num_batched_tokens=max(4096, max_model_len),
            enable_sleep_mode=args.vllm_enable_sleep_mode,
            model_impl=args.vllm_model_impl,
            distributed_executor_backend="external_launcher" if accelerator.num_processes > 1 else None,
            enforce_eager=self._on_cpu,  # CUDA graphs on a GPU; the CPU backend runs eagerly
            generation_config="vllm",  # sampling comes from our config only, never the model's generation config
            logprobs_mode="processed_logprobs",  # log-probs of the distribution actually sampled (T, top-p, top-k)
        )
        self._sleeping = False

    def _start_client(self) -> None:
        from trl.generation.vllm_client import VLLMClient

        args = self.args
        self.client = None
        if self.accelerator.is_main_process:
            base_url = args.vllm_server_base_url or f"http://{args.vllm_server_host}:{args.vllm_server_port}"
            self.client = VLLMClient(
                base_url=base_url, group_port=args.vllm_group_port, connection_timeout=args.vllm_server_timeout
            )
            self.client.init_communicator(device=self.accelerator.device)

    # ---- weights -----------------------------------------------------------------------------------------------------

    def sync_weights(self, model: nn.Module) -> None:
        """Push the policy held by `model` (the trainer's wrapper, prepared or not, or the policy itself)."""
        policy = _policy_of(self.accelerator, model)
        weights = policy_weights_for_vllm(policy, gather=self._gather)
        if self.args.vllm_mode == "server":
            if self.client is not None:
                for name, tensor in weights:
                    self.client.update_named_param(name, tensor)
                self.client.reset_prefix_cache()
            else:
                for _ in weights:  # take part in the gathers
                    pass
            return
        if self.args.vllm_enable_sleep_mode and self._sleeping:
            self.llm.wake_up(tags=["weights"])
        if self._on_cpu:
            # in-place reload: re-runs the CPU backend's weight packing, which per-parameter `load_weights` skips
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
            self.llm.collective_rpc(_refresh_cpu_gemms)
        else:
            # GPU: the model's own loader writes into the live parameters (TRL's colocate path, vLLM <= 0.31 too)
            self.llm.collective_rpc(_load_weights, args=(weights,))
        self.llm.reset_prefix_cache()

    # ---- sampling ----------------------------------------------------------------------------------------------------

    def _sampling_params(self, temperature: float, top_p: float, seeds: list[int]):
        from vllm import SamplingParams

        common = {
            "n": 1, "temperature": temperature, "top_p": top_p, "top_k": self.args.top_k,
            "max_tokens": self.args.response_length, "logprobs": 0,
            # stop exactly where `HFGenerator` stops: at the resolved stop tokens, not at vLLM's idea of EOS
            "ignore_eos": True, "stop_token_ids": list(self.stop_token_ids or []), "detokenize": False,
        }  # fmt: skip
        return [SamplingParams(seed=seed, **common) for seed in seeds]

    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        *,
        temperature: float,
        top_p: float,
    ) -> Responses:
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids.cpu(), prompt_mask.cpu(), strict=True)]
        # one seed per prompt from torch's generator, which the trainer seeds per (step, rank): resumable sampling
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        if self.args.vllm_mode == "server":
            completions, logprobs = self._generate_on_server(prompts, temperature, top_p, seeds)
        else:
            completions, logprobs = self._generate_colocated(prompts, temperature, top_p, seeds)
        return self._as_responses(completions, logprobs, prompt_ids.device)

    def _generate_colocated(self, prompts, temperature, top_p, seeds):
        from vllm.inputs import TokensPrompt

        group = self._tp_group
        if group is not None:  # a tensor-parallel engine samples its whole group's prompts at once
            size, rank = torch.distributed.get_world_size(group), torch.distributed.get_rank(group)
            gathered = [None] * size
            torch.distributed.all_gather_object(gathered, (prompts, seeds), group=group)
            counts = [len(p) for p, _ in gathered]
            prompts = [p for chunk, _ in gathered for p in chunk]
            seeds = [s for _, chunk in gathered for s in chunk]
        if self.args.vllm_enable_sleep_mode and self._sleeping:
            self.llm.wake_up(tags=["kv_cache"])
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts],
            self._sampling_params(temperature, top_p, seeds),
            use_tqdm=False,
        )
        if self.args.vllm_enable_sleep_mode:
            self.llm.sleep(level=1)
            self._sleeping = True
        completions = [list(out.outputs[0].token_ids) for out in outputs]
        logprobs = [[next(iter(step.values())).logprob for step in out.outputs[0].logprobs] for out in outputs]
        if group is not None:
            start = sum(counts[:rank])
            completions, logprobs = (x[start : start + counts[rank]] for x in (completions, logprobs))
        return completions, logprobs

    def _generate_on_server(self, prompts, temperature, top_p, seeds):
        from accelerate.utils import broadcast_object_list, gather_object

        # the server takes one seed per request batch, not per prompt: its sampling is not seeded
        all_prompts = gather_object(prompts)
        result = [None]
        if self.client is not None:
            extra = {"ignore_eos": True, "stop_token_ids": list(self.stop_token_ids or [])}
            out = self.client.generate(
                all_prompts, temperature=temperature, top_p=top_p, top_k=self.args.top_k,
                max_tokens=self.args.response_length, logprobs=0, generation_kwargs=extra,
            )  # fmt: skip
            logprobs = [[step[0] for step in sequence] for sequence in out["logprobs"]]
            result = [(out["completion_ids"], logprobs)]
        broadcast_object_list(result, from_process=0)
        completions, logprobs = result[0]
        start = self.accelerator.process_index * len(prompts)
        return completions[start : start + len(prompts)], logprobs[start : start + len(prompts)]

    def _as_responses(self, completions: list[list[int]], logprobs: list[list[float]], device) -> Responses:
        """Right-pad, then cut after the first stop token exactly as `HFGenerator` does."""
        width = max(1, max(len(c) for c in completions))
        ids = torch.full((len(completions), width), self.pad_token_id, dtype=torch.long)
        sampler_logprobs = torch.zeros((len(completions), width), dtype=torch.float32)
        for row, (tokens, values) in enumerate(zip(completions, logprobs, strict=True)):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            sampler_logprobs[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
        ids, mask, stopped = pu.truncate_after_stop(
            ids, stop_token_ids=self.stop_token_ids, pad_token_id=self.pad_token_id
        )
        sampler_logprobs = sampler_logprobs.masked_fill(~mask, 0.0)
        return Responses(ids=ids.to(device), mask=mask.to(device), stopped=stopped.to(device),
                         logprobs=sampler_logprobs.to(device))  # fmt: skip


def _is_zero3(accelerator) -> bool:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def _policy_of(accelerator, model: nn.Module) -> nn.Module:
    unwrapped = accelerator.unwrap_model(model)
    return getattr(unwrapped, "policy", unwrapped)


__all__ = ["VLLMGenerator", "policy_weights_for_vllm", "require_vllm"]
