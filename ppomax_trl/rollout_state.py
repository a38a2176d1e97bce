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
"""The resumable algorithm state of an online trainer, in one place that saves and loads itself.

`RolloutState` holds what a checkpoint carries beyond `Trainer`'s own files: the running moments of the raw scores,
the critic warm-up counters, the episode count and the collapse monitor. Its `state_dict()` is the `ppomax_state.json`
of a checkpoint (subclasses add their keys next to it: the KL controller, the ptx position). It must not compute
rewards, run models or read files: the trainer writes and reads the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import ppo_utils as pu


PPOMAX_STATE_NAME = "ppomax_state.json"


@dataclass
class RolloutState:
    """Algorithm state that an exact resume needs."""

    collapse_monitor: pu.CollapseMonitor  # the paper's collapse monitors: baselines and which signals are on
    reward_moments: pu.RunningMoments = field(default_factory=pu.RunningMoments)  # raw scores, pooled over processes
    episode: int = 0  # prompts sampled so far, all processes together
    critic_warmup_done: int = 0  # critic warm-up steps run
    critic_warmup_finished: bool = False  # whether the warm-up is over (it may end early on its loss threshold)

    def state_dict(self) -> dict[str, Any]:
        return {
            "reward_moments": self.reward_moments.state_dict(),
            "critic_warmup_done": self.critic_warmup_done,
            "critic_warmup_finished": self.critic_warmup_finished,
            "episode": self.episode,
            "collapse_monitor": self.collapse_monitor.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reward_moments = pu.RunningMoments.from_state_dict(state["reward_moments"])
        self.critic_warmup_done = state["critic_warmup_done"]
        self.critic_warmup_finished = state["critic_warmup_finished"]
        self.episode = state["episode"]
        self.collapse_monitor.load_state_dict(state.get("collapse_monitor", {}))  # absent in 0.1.0 checkpoints


__all__ = ["PPOMAX_STATE_NAME", "RolloutState"]
