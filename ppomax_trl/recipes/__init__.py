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

import argparse
import difflib
import sys
from collections.abc import Iterable
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


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`; did you mean X?` with the `difflib` close matches of `word` (similarity >= 0.8, within 0.1 of the best one:
    `--learning_rate` for `--learnin_rate`, not also `--value_learning_rate`); empty without any."""
    matches = difflib.get_close_matches(word, candidates, cutoff=0.8)
    ratios = [difflib.SequenceMatcher(None, word, match).ratio() for match in matches]
    matches = [match for match, ratio in zip(matches, ratios, strict=True) if ratio >= ratios[0] - 0.1]
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


def _config_path(args: list[str]) -> str | None:
    """The value of `--config X` or `--config=X` in `args`, None without one."""
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.removeprefix("--config=")
    return None


def _is_value(arg: str) -> bool:
    """A token argparse reads as a value, not an option: no leading `-`, a number (`-0.1`, `-1e-5`) or with a space."""
    if not arg.startswith("-") or " " in arg:
        return True
    try:
        float(arg)
    except ValueError:
        return False
    return True


def unknown_flags_message(parser: argparse.ArgumentParser, args: list[str], other_flags: Iterable[str] = ()) -> str:
    """The flags of `args` (`--flag value` or `--flag=value`) that `parser` (or `other_flags`, or `--config`) does not
    name exactly, and the keys of the `--config` YAML that are none of its fields, each with its close matches
    (`difflib`): "unknown flag --learning_rat; did you mean --learning_rate?". Empty when all are known. Abbreviations
    are unknown: argparse would take `--learning_rat` for `--learning_rate` unless `allow_abbrev=False`."""
    known = {"--config", *other_flags, *(flag for action in parser._actions for flag in action.option_strings)}
    # suggest each field's `--name` (HfArgumentParser adds a `--name-with-dashes` alias too)
    suggestions = sorted(flag for flag in known if "-" not in flag.removeprefix("--"))
    problems = []
    for arg in args:
        if arg == "--":
            break
        flag = arg.partition("=")[0]
        if not _is_value(arg) and flag not in known:
            problems.append(f"unknown flag {flag}{_did_you_mean(flag, suggestions)}")
    config = _config_path(args)
    if config is not None and Path(config).is_file():
        import yaml

        keys = yaml.safe_load(Path(config).read_text())
        fields = {action.dest for action in parser._actions} | {"env"}  # `env:` sets environment variables (TrlParser)
        for key in keys if isinstance(keys, dict) else []:
            if key not in fields:
                problems.append(f"unknown key {key} in {config}{_did_you_mean(str(key), sorted(fields))}")
    return "; ".join(problems)


def check_recipe_args(parser: argparse.ArgumentParser, args: list[str]) -> None:
    """Exit 2 with one line on stderr (`unknown_flags_message`) when `args` has a flag or `--config` key that `parser`
    does not know; what a recipe's `parse_args` runs first, so that a direct run fails the way `ppomax-trl` does."""
    message = unknown_flags_message(parser, args)
    if message:
        sys.stderr.write(f"{parser.prog}: error: {message}\n")
        raise SystemExit(2)


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
