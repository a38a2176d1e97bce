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
"""The recipes, shipped in the wheel the way TRL ships `trl/scripts/` and `trl/accelerate_configs/`.

- one module per recipe (`ppo_max`, `reward_rank`, `una`, `una_online`), each with `make_parser()`, `parse_args()` and
  `main()`, runnable as `accelerate launch -m ppomax_trl.recipes.<module> --config ...` or `ppomax-trl <command> ...`;
- `configs/<module>.yaml` (full-size GPU run) and `configs/<module>_tiny.yaml` (a CPU smoke run on tiny models built in
  memory, `tiny://...`), passed to `--config` as a path or by name;
- `accelerate_configs/<name>.yaml`, passed to `ppomax-trl <command> --accelerate_config` by name.

The repository's `recipes/` folder links to these files; nothing here depends on a clone.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import NamedTuple


class Recipe(NamedTuple):
    module: str  # module name in this package, also the stem of its configs
    summary: str


# `ppomax-trl` subcommand -> recipe
RECIPES = {
    "ppo": Recipe("ppo_max", "PPO-max or plain PPO"),
    "reward": Recipe("reward_rank", "rank-list reward-model training, InstructGPT K-wise loss"),
    "una": Recipe("una", "offline UNA on pairwise, binary and score feedback"),
    "una-online": Recipe("una_online", "online UNA, critic-free RLHF by regression"),
}


def package_dir() -> Path:
    """This package's folder on disk (the wheel is installed unzipped, so its data files are plain files)."""
    return Path(str(resources.files(__name__)))


def _packaged_names(folder: str) -> list[str]:
    return sorted(path.stem for path in (package_dir() / folder).glob("*.yaml"))


def config_names() -> list[str]:
    """Names of the packaged example configs (`ppo_max`, `ppo_max_tiny`, ...)."""
    return _packaged_names("configs")


def accelerate_config_names() -> list[str]:
    """Names of the packaged accelerate configs (`single_gpu`, `multi_gpu`, `zero2`, `zero3`)."""
    return _packaged_names("accelerate_configs")


def _resolve_yaml(value: str, folder: str, kind: str, cwd: Path | None) -> Path:
    """A file relative to `cwd` (default: the current folder), else the packaged YAML of that name in `folder`."""
    cwd = Path.cwd() if cwd is None else cwd
    path = cwd / Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    names = _packaged_names(folder)
    if value in names:
        return package_dir() / folder / f"{value}.yaml"
    raise FileNotFoundError(
        f"{kind} {value!r} is neither a file (looked for {path}) nor a packaged {kind} (names: {', '.join(names)})."
    )


def resolve_config(value: str, cwd: Path | None = None) -> Path:
    """`--config VALUE` -> an absolute path: a file relative to `cwd` (default: the current folder), else the packaged
    config of that name (`ppo_max_tiny`). Raises `FileNotFoundError` saying both places it looked."""
    return _resolve_yaml(value, "configs", "config", cwd)


def resolve_accelerate_config(value: str, cwd: Path | None = None) -> Path:
    """`--accelerate_config VALUE` -> an absolute path: a file relative to `cwd`, else the packaged config of that
    name (`zero3`). Raises `FileNotFoundError` saying both places it looked."""
    return _resolve_yaml(value, "accelerate_configs", "accelerate config", cwd)


def resolve_config_argument(args: list[str], cwd: Path | None = None) -> list[str]:
    """`args` with the value of `--config` (`--config X` or `--config=X`) made an absolute path by `resolve_config`,
    so that the recipe reads the file the caller meant whatever folder it runs in."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args) and not args[i + 1].startswith("-"):
            args[i + 1] = str(resolve_config(args[i + 1], cwd))
        elif arg.startswith("--config="):
            args[i] = f"--config={resolve_config(arg.removeprefix('--config='), cwd)}"
    return args
