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
"""Held-out evaluation and completion tables of the online trainers (a mixin of `OnlineRolloutTrainer`).

It owns `evaluate` (the held-out reward distribution: each eval prompt sampled once, raw-score statistics per reward
function), `generate_completions` (near-greedy samples with their scores), the `log_completions` table of each update,
and how a table is printed (rich) and logged (W&B). It calls the trainer's generation and scoring and its `log`; it
must not train, shape rewards or change the algorithm state.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class EvaluationMixin:
    """`evaluate`, `generate_completions` and the completions tables, on an `OnlineRolloutTrainer`."""

    # `log_completions`: the last update's rows, gathered on the main process, until the next `log` prints them
    _completions_to_log: list[dict[str, Any]] | None = None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Held-out reward distribution ([P] §5.2): sample each eval prompt once, report raw-score statistics."""
        dataset = (
            self._prepare_prompt_dataset(eval_dataset, self.processing_class, self.args, "eval")
            if (eval_dataset is not None)
            else self.eval_dataset
        )
        if dataset is None:
            raise ValueError("`evaluate` needs an `eval_dataset` of prompts.")
        per_func, lengths = [], []
        indices, valid = self._eval_shard(len(dataset))
        size = self.args.per_device_eval_batch_size
        for start in range(0, len(indices), size):
            rows = [dataset[i] for i in indices[start : start + size]]
            queries, query_mask = self._collate_prompts(rows)
            batch = self.generate_responses(
                self.model_wrapped, queries, query_mask, temperature=self.args.temperature, top_p=self.args.top_p
            )
            per_func.append(self.rewards_per_func(rows, batch, mode="eval"))
            lengths.append(batch["response_mask"].sum(1).float())
        keep = self.accelerator.gather_for_metrics(torch.tensor(valid, device=self.accelerator.device)).cpu()
        all_per_func = self.accelerator.gather_for_metrics(torch.cat(per_func)).float().cpu()[keep]  # (N, F)
        all_scores = self.scorer.combine_rewards(all_per_func.to(self.accelerator.device), self.state).cpu()
        all_lengths = self.accelerator.gather_for_metrics(torch.cat(lengths)).float().cpu()[keep]
        quantiles = torch.quantile(all_scores, torch.tensor([0.1, 0.5, 0.9]))
        metrics = {
            f"{metric_key_prefix}_objective/scores": all_scores.mean().item(),
            f"{metric_key_prefix}_ppomax/score_std": all_scores.std(unbiased=False).item(),
            f"{metric_key_prefix}_ppomax/score_p10": quantiles[0].item(),
            f"{metric_key_prefix}_ppomax/score_p50": quantiles[1].item(),
            f"{metric_key_prefix}_ppomax/score_p90": quantiles[2].item(),
            f"{metric_key_prefix}_ppomax/response_length": all_lengths.mean().item(),
        }
        # per reward function over the whole eval set, then what the functions passed to `log_metric`
        metrics.update({f"{metric_key_prefix}_{k}": v for k, v in self.scorer.reward_func_stats(all_per_func).items()})
        logged = {f"{metric_key_prefix}_{k}": sum(v) / len(v) for k, v in self._metrics["eval"].items() if v}
        self._metrics["eval"].clear()
        metrics.update(logged)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _eval_shard(self, num_rows: int) -> tuple[list[int], list[bool]]:
        """This process's eval rows (strided) and which are real: padded by repeating rows to the same count on every
        process, so all run the same generation batches (ZeRO-3 gathers inside them) and gather equal sizes."""
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        positions = range(rank, math.ceil(num_rows / world) * world, world)
        return [p % num_rows for p in positions], [p < num_rows for p in positions]

    def generate_completions(self, sampling: bool = False) -> list[dict[str, Any]] | None:
        """Near-greedy (temperature 0.01) completions of `eval_dataset` with their scores, printed and logged.

        `sampling=True` stops after the first eval batch (TRL 1.12 behaviour). Returns the table rows.
        """
        if self.eval_dataset is None:
            return None
        table = []
        size = self.args.per_device_eval_batch_size
        indices, valid = self._eval_shard(len(self.eval_dataset))
        for start in range(0, len(indices), size):
            rows = [self.eval_dataset[i] for i in indices[start : start + size]]
            queries, query_mask = self._collate_prompts(rows)
            batch = self.generate_responses(self.model_wrapped, queries, query_mask, temperature=0.01, top_p=1.0)
            scores = self.score(rows, batch, mode=None)
            extra = self.scorer.last_extra_columns  # what the reward functions passed to `log_extra`
            prompts = self.processing_class.batch_decode(queries, skip_special_tokens=True)
            for i, prompt in enumerate(prompts):
                if not valid[start + i]:
                    continue
                response = self.processing_class.decode(batch["responses"][i][batch["response_mask"][i]])
                entry = {"query": prompt, "model response": response, "score": float(scores[i])}
                for column, values in extra.items():
                    entry.setdefault(column, values[i] if i < len(values) else None)
                table.append(entry)
            if sampling:
                break
        from accelerate.utils import gather_object

        table = gather_object(table)
        self._report_completions(table, num_to_print=5)
        return table

    def _report_completions(
        self, table: list[dict[str, Any]], num_to_print: int | None, title: str | None = None
    ) -> None:
        """Print a gathered completions table (its first `num_to_print` rows; None: all) with rich and, when
        `report_to` has wandb and a run is active, log all of it as W&B's `completions` table at this step. Main
        process only; `generate_completions` and `log_completions` both report through here."""
        if not self.accelerator.is_main_process:
            return
        _print_table(table if num_to_print is None else table[:num_to_print], title=title)
        if "wandb" in (self.args.report_to or []):
            import wandb

            if wandb.run is not None:
                columns = list(dict.fromkeys(column for r in table for column in r))
                # the step explicitly: `WandbCallback` plots every key against `train/global_step`, and wandb would
                # otherwise fill in the last *logged* step (behind when `logging_steps > 1`)
                wandb.log(
                    {
                        "completions": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in table]),
                        "train/global_step": self.state.global_step,
                    }
                )

    # ------------------------------------------------------------------------------------------------------------------
    # Saving, checkpoints, resume
    # ------------------------------------------------------------------------------------------------------------------

    def _keep_completions(
        self, rows: list[dict], batch: dict[str, torch.Tensor], rewards_per_func: torch.Tensor, scores: torch.Tensor
    ) -> None:
        """`log_completions`: this update's rollouts as table rows (prompt, completion, each function's reward, the
        weighted score, the `log_extra` columns), gathered from every process (all must call this) and kept on the
        main process, replacing the previous update's, until `log` prints them."""
        prompts, completions = self.scorer.decode(rows, batch)
        extra = self.scorer.last_extra_columns
        table = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            entry = {
                "step": self.state.global_step + 1,
                "prompt": _as_text(prompt),
                "completion": _as_text(completion),
            }
            for name, value in zip(self.reward_func_names, rewards_per_func[i].tolist(), strict=True):
                entry[name] = None if math.isnan(value) else value  # None: the function does not apply
            entry["score"] = float(scores[i])
            for column, values in extra.items():
                entry.setdefault(column, values[i] if i < len(values) else None)
            table.append(entry)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            table = gather_object(table)
        self._completions_to_log = table if self.accelerator.is_main_process else None


def _print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    if not rows:
        return
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        for row in rows:
            print(row)  # noqa: T201
        return
    columns = list(dict.fromkeys(column for row in rows for column in row))
    table = Table(show_lines=True, title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        # `Text`: a completion's brackets are text, not rich markup
        table.add_row(*(Text(f"{v:.3f}" if isinstance(v, float) else str(v)) for v in map(row.get, columns)))
    Console().print(table)


def _as_text(value: Any) -> str:
    """A prompt or completion for a table: a conversation becomes its messages' contents, one per line."""
    if isinstance(value, list):
        return "\n".join(
            str(message.get("content", message)) if isinstance(message, dict) else str(message) for message in value
        )
    return str(value)


__all__ = ["EvaluationMixin"]
