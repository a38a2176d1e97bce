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
"""PPO and PPO-max for current TRL: drop-in `PPOTrainer`/`PPOConfig` and the `PPOMaxTrainer`/`PPOMaxConfig` recipe."""

from .online_una import OnlineUNAConfig, OnlineUNATrainer
from .ppo_config import OnlineRolloutConfig, PPOConfig, PPOMaxConfig
from .ppo_trainer import PolicyAndValueWrapper, PPOMaxTrainer, PPOTrainer
from .rank_list import DataCollatorForRankList, RankListRewardConfig, RankListRewardTrainer
from .una_config import UNAConfig
from .una_trainer import DataCollatorForUNA, UNATrainer


__version__ = "0.1.0"

__all__ = [
    "DataCollatorForRankList",
    "DataCollatorForUNA",
    "OnlineRolloutConfig",
    "OnlineUNAConfig",
    "OnlineUNATrainer",
    "PPOConfig",
    "PPOMaxConfig",
    "PPOMaxTrainer",
    "PPOTrainer",
    "PolicyAndValueWrapper",
    "RankListRewardConfig",
    "RankListRewardTrainer",
    "UNAConfig",
    "UNATrainer",
]
