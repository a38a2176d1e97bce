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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ppomax-trl", description="PPO and PPO-max on current TRL.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="Offline PPO-max run on tiny models (seconds); prints what improved.")
    demo.add_argument("--output_dir", default=None, help="Where to write the run (default: a temp folder).")
    demo.add_argument("--num_updates", type=int, default=40, help="PPO updates after the critic warm-up.")
    demo.add_argument("--seed", type=int, default=0, help="Random seed.")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        result = run_demo(output_dir=args.output_dir, num_updates=args.num_updates, seed=args.seed)
        return 0 if result["after"] > result["before"] else 1
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
