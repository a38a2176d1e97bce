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
"""Loaded by every Python process of a recipe command in the tests (this folder leads `PYTHONPATH`): at exit, a process
whose default process group is still alive writes `undestroyed-<pid>` into `$PPOMAX_EXIT_PROBE_DIR`. Such a group is
left to interpreter shutdown, where gloo can abort the rank with SIGABRT after a finished run (pytorch#190489); the
probe makes that omission visible on every run, not only on the runs it happens to crash."""

import atexit
import os
import sys


def _report_live_process_group() -> None:
    distributed = sys.modules.get("torch.distributed")  # never import torch into a process that did not
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        with open(os.path.join(os.environ["PPOMAX_EXIT_PROBE_DIR"], f"undestroyed-{os.getpid()}"), "w") as marker:
            marker.write(f"rank {distributed.get_rank()} of {distributed.get_world_size()}\n")


if os.environ.get("PPOMAX_EXIT_PROBE_DIR"):
    atexit.register(_report_live_process_group)
