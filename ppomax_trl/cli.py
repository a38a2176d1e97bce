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
"""Console entry point `ppomax-trl`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .extras import MissingExtrasError, require_recipe_extras
from .recipes import (
    RECIPES,
    accelerate_config_names,
    config_names,
    package_dir,
    resolve_accelerate_config,
    resolve_config_argument,
    unknown_flags_message,
)


def launch_command(
    module: str,
    accelerate_config: str | None,
    num_processes: int | None,
    args: list[str],
    main_process_port: int | None = None,
) -> list[str]:
    """`accelerate launch [--config_file C] [--num_processes N] [--main_process_port P] -m ppomax_trl.recipes.<module>
    <args>` with this interpreter. `accelerate_config` and `--config` are names of packaged files or paths relative to
    the current folder; both become absolute paths, and a missing one is a `SystemExit` that says where it looked."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    try:
        if accelerate_config is not None:
            cmd += ["--config_file", str(resolve_accelerate_config(accelerate_config))]
        args = resolve_config_argument(args)
    except FileNotFoundError as error:
        raise SystemExit(f"ppomax-trl: {error}") from None
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    if main_process_port is not None:
        cmd += ["--main_process_port", str(main_process_port)]
    return [*cmd, "-m", f"ppomax_trl.recipes.{module}", *args]


def _add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--accelerate_config",
        default=None,
        help=f"A packaged accelerate config ({', '.join(accelerate_config_names())}) or a path to a YAML file. "
        "Default: accelerate's own default config.",
    )
    parser.add_argument("--num_processes", type=int, default=None, help="Overrides the config's num_processes.")
    parser.add_argument(
        "--main_process_port", type=int, default=None, help="Port of the main process (two jobs on one machine)."
    )


def unknown_recipe_flags(command: str, recipe_args: list[str]) -> str:
    """What `unknown_flags_message` says of `recipe_args` (flags and `--config` keys) against the recipe's own parser
    and the launcher's flags; empty when every one is known."""
    import importlib

    parser = importlib.import_module(f"ppomax_trl.recipes.{RECIPES[command].module}").make_parser()
    launcher = argparse.ArgumentParser(add_help=False)
    _add_launcher_arguments(launcher)
    launcher_flags = [flag for action in launcher._actions for flag in action.option_strings]
    return unknown_flags_message(parser, resolve_config_argument(recipe_args), launcher_flags)


def print_recipe_help(command: str) -> None:
    """The launcher's own options, then every argument of the recipe (its TrlParser's help)."""
    import importlib

    recipe = RECIPES[command]
    module = importlib.import_module(f"ppomax_trl.recipes.{recipe.module}")
    parser = module.make_parser(prog=f"ppomax-trl {command}")
    parser.description = (
        f"Launches the {recipe.module} recipe ({recipe.summary}) through `accelerate launch`. `--config` takes a path "
        f"or a packaged config ({', '.join(name for name in config_names() if name.startswith(recipe.module + '_'))} "
        f"or {recipe.module}); flags override it."
    )
    group = parser.add_argument_group("ppomax-trl (the config file, and the launcher's options for accelerate launch)")
    group.add_argument("--config", help="YAML defaults for the flags above, which override it: a path or a name.")
    _add_launcher_arguments(group)
    parser.print_help()


def print_recipes() -> None:
    """Where the packaged recipes, example configs and accelerate configs are, to read or copy."""
    root = package_dir()
    print(f"Recipes (ppomax_trl.recipes, {root}):")
    for command, recipe in RECIPES.items():
        print(f"  ppomax-trl {command:<11} {root / (recipe.module + '.py')}  ({recipe.summary})")
    print("Configs (--config NAME or a path):")
    for name in config_names():
        print(f"  {name:<17} {root / 'configs' / (name + '.yaml')}")
    print("Accelerate configs (--accelerate_config NAME or a path):")
    for name in accelerate_config_names():
        print(f"  {name:<17} {root / 'accelerate_configs' / (name + '.yaml')}")


def import_function(path: str):
    """`package.module:function` -> the function (how recipes and the CLI name reward functions)."""
    import importlib

    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"Reward functions are given as `module:function`, got {path!r}.")
    return getattr(importlib.import_module(module_name), name)


def plot_run(path: str, output: str | None) -> int:
    """`ppomax-trl plot`: 0 when the PNG is written; 2, as for a usage error, when there is no log history to plot
    (the message says where it looked); 1 without matplotlib."""
    from .plots import load_log_history, plot_monitors

    try:
        source, log_history = load_log_history(path)
        output = Path(output or (Path(path) if Path(path).is_dir() else Path(path).parent) / "monitors.png")
        panels = plot_monitors(log_history, output, title=str(source))
    except (FileNotFoundError, ValueError) as error:
        print(f"ppomax-trl plot: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"ppomax-trl plot: error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {output} ({'; '.join(panels)}) from {source}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ppomax-trl", description="PPO and PPO-max on current TRL.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="Offline PPO-max run on tiny models (seconds); prints what improved.")
    demo.add_argument("--output_dir", default=None, help="Where to write the run (default: a temp folder).")
    demo.add_argument("--num_updates", type=int, default=40, help="PPO updates after the critic warm-up.")
    demo.add_argument("--seed", type=int, default=0, help="Random seed.")
    quickstart = commands.add_parser(
        "quickstart",
        help="PPO-max on SmolLM2-135M-Instruct writing positive reviews (VADER reward), offline, ~5 min on 2 CPU cores.",
    )
    quickstart.add_argument("--output_dir", default="quickstart_output", help="Where monitors.png and results go.")
    quickstart.add_argument("--num_updates", type=int, default=20, help="PPO-max updates after the critic warm-up.")
    quickstart.add_argument("--seed", type=int, default=0, help="Random seed.")
    quickstart.add_argument("--model_dir", default=None, help="A converted SmolLM2 folder (default: the user cache).")
    quickstart.add_argument("--report_to", default="none", help="`none`, or `wandb` (works with WANDB_MODE=offline).")
    quickstart.add_argument("--learning_rate", type=float, default=5e-5, help="Policy learning rate (critic: 3x).")
    quickstart.add_argument(
        "--use_vllm",
        action="store_true",
        help="Sample with vLLM (needs vLLM: on a CPU, run it with .venv-vllm/bin/ppomax-trl after scripts/vllm_env.sh).",
    )
    commands.add_parser("recipes", help="List the packaged recipes, example configs and accelerate configs (paths).")
    plot = commands.add_parser(
        "plot", help="Draw a run's monitors.png (reward, KL, value loss, clip fraction, ...) from its log history."
    )
    plot.add_argument(
        "path",
        help="An output_dir or checkpoint folder (its log_history.json(l) or trainer_state.json, else the newest "
        "checkpoint's), or one of those files.",
    )
    plot.add_argument("--output", default=None, help="The PNG to write (default: monitors.png in the folder).")
    for command, recipe in RECIPES.items():
        launcher = commands.add_parser(
            command,
            add_help=False,  # `--help` prints the recipe's arguments too
            allow_abbrev=False,  # every flag it does not name exactly belongs to the recipe
            help=f"The {recipe.module} recipe ({recipe.summary}) through `accelerate launch`, e.g. `--config "
            f"{recipe.module}_tiny`; `ppomax-trl {command} --help` lists its arguments.",
        )
        launcher.add_argument("-h", "--help", action="store_true", help="Show the launcher's and the recipe's flags.")
        _add_launcher_arguments(launcher)
    args, recipe_args = parser.parse_known_args(argv)
    if args.command in RECIPES:
        if args.help:
            print_recipe_help(args.command)
            return 0
        module = RECIPES[args.command].module
        cmd = launch_command(module, args.accelerate_config, args.num_processes, recipe_args, args.main_process_port)
        message = unknown_recipe_flags(args.command, recipe_args)
        if message:  # one line, before anything is launched (not a traceback per process)
            print(f"ppomax-trl {args.command}: error: {message}", file=sys.stderr)
            return 2
        try:
            require_recipe_extras(args.command, cmd)  # wandb, deepspeed, SmolLM2 assets: all missing ones, now
        except MissingExtrasError as error:
            raise SystemExit(str(error)) from None
        return subprocess.run(cmd, check=False).returncode
    if recipe_args:
        parser.error(f"unrecognized arguments: {' '.join(recipe_args)}")
    if args.command == "plot":
        return plot_run(args.path, args.output)
    if args.command == "recipes":
        print_recipes()
        return 0
    if args.command == "demo":
        from .demo import run_demo

        result = run_demo(output_dir=args.output_dir, num_updates=args.num_updates, seed=args.seed)
        return 0 if result["after"] > result["before"] else 1
    if args.command == "quickstart":
        from .quickstart import run_quickstart

        try:
            run_quickstart(
                args.output_dir, args.num_updates, args.seed, args.model_dir, args.report_to, args.learning_rate,
                use_vllm=args.use_vllm,
            )  # fmt: skip
        except MissingExtrasError as error:  # raised before anything is loaded
            raise SystemExit(str(error)) from None
        except ImportError as error:  # `--use_vllm` without vLLM: the message has the install lines
            if not args.use_vllm:
                raise
            raise SystemExit(str(error)) from None
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
