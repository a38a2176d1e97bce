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


ACCELERATE_CONFIGS = ("single_gpu", "multi_gpu", "zero2", "zero3")
# subcommand -> (recipe file, help)
RECIPES = {
    "ppo": ("ppo_max.py", "PPO-max or plain PPO"),
    "reward": ("reward_rank.py", "rank-list reward-model training, InstructGPT K-wise loss"),
    "una": ("una.py", "offline UNA on pairwise, binary and score feedback"),
    "una-online": ("una_online.py", "online UNA, critic-free RLHF by regression"),
}


def recipes_dir() -> Path:
    """`recipes/` of the repository: it is not packaged, so it is found next to the package in a clone/editable install."""
    path = Path(__file__).resolve().parent.parent / "recipes"
    if not path.is_dir():
        raise SystemExit(
            f"ppomax-trl: no recipes folder at {path}. The recipes ship with the repository, not the wheel: clone it "
            "and install it in editable mode (`git clone <repo-url> && pip install -e <clone>`), or run "
            "`accelerate launch <clone>/recipes/ppo_max.py ...` directly."
        )
    return path


def launch_command(
    recipe: str, accelerate_config: str | None, num_processes: int | None, args: list[str]
) -> list[str]:
    """`accelerate launch [--config_file C] [--num_processes N] recipes/<recipe> <args>` with this interpreter."""
    recipes = recipes_dir()
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config is not None:
        config = recipes / "accelerate_configs" / f"{accelerate_config}.yaml"
        if accelerate_config not in ACCELERATE_CONFIGS:
            config = Path(accelerate_config)
        if not config.is_file():
            raise SystemExit(
                f"ppomax-trl: accelerate config {config} not found (names: {', '.join(ACCELERATE_CONFIGS)})."
            )
        cmd += ["--config_file", str(config)]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    return [*cmd, str(recipes / recipe), *args]


def import_function(path: str):
    """`package.module:function` -> the function (how recipes and the CLI name reward functions)."""
    import importlib

    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"Reward functions are given as `module:function`, got {path!r}.")
    return getattr(importlib.import_module(module_name), name)


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
    for command, (recipe, what) in RECIPES.items():
        launcher = commands.add_parser(
            command,
            description=f"Launch recipes/{recipe} ({what}) through `accelerate launch`. Every flag not listed here goes "
            f"to the recipe, e.g. `--config recipes/configs/{recipe.removesuffix('.py')}_tiny.yaml`.",
            allow_abbrev=False,  # every flag it does not name exactly belongs to the recipe
            help=f"Launch recipes/{recipe} ({what}) through `accelerate launch`; other flags go to the recipe (see its "
            "--help).",
        )
        launcher.add_argument(
            "--accelerate_config",
            default=None,
            help=f"One of {', '.join(ACCELERATE_CONFIGS)} (recipes/accelerate_configs/NAME.yaml) or a path to a YAML "
            "file. Default: accelerate's own default config.",
        )
        launcher.add_argument("--num_processes", type=int, default=None, help="Overrides the config's num_processes.")
    args, recipe_args = parser.parse_known_args(argv)
    if args.command in RECIPES:
        cmd = launch_command(RECIPES[args.command][0], args.accelerate_config, args.num_processes, recipe_args)
        return subprocess.run(cmd, check=False).returncode
    if recipe_args:
        parser.error(f"unrecognized arguments: {' '.join(recipe_args)}")
    if args.command == "demo":
        from .demo import run_demo

        result = run_demo(output_dir=args.output_dir, num_updates=args.num_updates, seed=args.seed)
        return 0 if result["after"] > result["before"] else 1
    if args.command == "quickstart":
        from .quickstart import run_quickstart

        run_quickstart(
            args.output_dir, args.num_updates, args.seed, args.model_dir, args.report_to, args.learning_rate
        )
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
