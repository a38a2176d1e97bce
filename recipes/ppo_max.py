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

# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "ppomax-trl",
# ]
# ///

"""Runs the `ppo_max` recipe. Its code is `ppomax_trl/recipes/ppo_max.py`, shipped in the wheel (read it there) and
launched from any folder with `ppomax-trl ppo ...` or `accelerate launch -m ppomax_trl.recipes.ppo_max ...`; this file
keeps the clone's `python recipes/ppo_max.py ...` and `accelerate launch recipes/ppo_max.py ...` working.

    python recipes/ppo_max.py --config recipes/configs/ppo_max_tiny.yaml --output_dir ppo_max_tiny
"""

from ppomax_trl.recipes.ppo_max import main, parse_args


if __name__ == "__main__":
    main(*parse_args())
