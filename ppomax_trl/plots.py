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
"""The monitor figure of an online run (`monitors.png`) from its log history, and the files that hold that history.

`plot_monitors` draws one panel per monitor the run logged: the quickstart calls it, and `ppomax-trl plot OUTPUT_DIR`
calls it on any run through `load_log_history` (a `log_history.json`/`.jsonl`, or the `log_history` of a
`trainer_state.json`). matplotlib (the `[quickstart]` extra) is imported only to draw.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any


LOG_HISTORY_NAME = "log_history.json"
TRAINER_STATE_NAME = "trainer_state.json"

# What the figure can show: (title, [(log key, label)]), one panel each, in this order. A panel is drawn when one of
# its keys has a finite value in the log; the critic's panels are absent for online UNA, which has no critic.
MONITOR_PANELS = [
    ("reward", [("ppomax/raw_score_mean", "train batch (raw)"), ("eval_objective/scores", "held-out")]),
    ("KL to the reference (nats per token)", [("ppomax/kl_per_token", "k1"), ("ppomax/kl_per_token_k3", "k3")]),
    ("value loss", [("loss/value_avg", "critic")]),
    ("explained variance of the returns", [("val/explained_variance", "critic")]),
    ("clip fraction", [("policy/clipfrac_avg", "policy ratio"), ("val/clipfrac_avg", "value")]),
    ("policy entropy (nats per token)", [("policy/entropy_avg", "mean")]),
    ("approx KL, rollout -> updated policy", [("policy/approxkl_avg", "k2"), ("policy/approxkl_k3_avg", "k3")]),
    ("UNA loss", [("una/loss", "loss")]),
    ("response length (tokens)", [("ppomax/response_length", "mean"), ("ppomax/response_length_max", "max")]),
    ("perplexity of the responses", [("ppomax/ppl_policy", "policy"), ("ppomax/ppl_ref", "reference")]),
]
LENGTH_PANEL = "response length (tokens)"
# `collapse_max_length_share`'s default: at or above it at every logged step, the length is the cap by construction
PINNED_LENGTH_SHARE = 0.9
FEW_EVALUATIONS = 5  # up to this many held-out points are markers only: a line through two points suggests a trend


def _series(log_history: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) of every row that logged `key` as a finite number."""
    points = []
    for row in log_history:
        value = row.get(key)
        if "step" in row and isinstance(value, int | float) and math.isfinite(value):
            points.append((row["step"], float(value)))
    return points


def _length_is_pinned(log_history: list[dict[str, Any]]) -> bool:
    """True when at every logged step at least `PINNED_LENGTH_SHARE` of the responses ran to `response_length`: the
    length monitor is off (no stop token, or a model that does not stop within the cap) and its panel is flat."""
    shares = [value for _, value in _series(log_history, "ppomax/max_length_share")]
    return bool(shares) and min(shares) >= PINNED_LENGTH_SHARE


def _warmup_end(log_history: list[dict[str, Any]]) -> int:
    """Last step that logged `ppomax/critic_warmup` > 0 (0 without a critic warm-up)."""
    return int(max((step for step, value in _series(log_history, "ppomax/critic_warmup") if value > 0), default=0))


def monitor_figure(
    log_history: list[dict[str, Any]],
    warmup_steps: int | None = None,
    title: str = "",
    show_length: bool | None = None,
):
    """The `matplotlib` figure of `plot_monitors` (same arguments); the caller closes it."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "Plotting the monitors needs matplotlib: pip install 'ppomax-trl[quickstart]' (or matplotlib)."
        ) from error
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    length_pinned = _length_is_pinned(log_history)
    if show_length is None:
        show_length = not length_pinned
    panels, constant = [], []
    for panel_title, series in MONITOR_PANELS:
        if panel_title == LENGTH_PANEL and not show_length:
            continue
        drawn = [(key, label, points) for key, label in series if (points := _series(log_history, key))]
        values = [{value for _, value in points} for _, _, points in drawn]
        if any(len(points) > 1 for *_, points in drawn) and all(len(v) == 1 for v in values):
            # e.g. the clip fraction and approx KL of one epoch on one minibatch: the ratio is 1 by construction
            constant.append(f"{panel_title} = {' / '.join(f'{v.pop():.3g}' for v in values)}")
        elif drawn:
            panels.append((panel_title, drawn))
    if not panels:
        keys = sorted({key for _, series in MONITOR_PANELS for key, _ in series})
        raise ValueError(f"The log history has none of the monitors to plot ({', '.join(keys)}).")
    if warmup_steps is None:
        warmup_steps = _warmup_end(log_history)

    ncols = 2 if len(panels) <= 4 else 3
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        fig.delaxes(ax)
    for ax, (panel_title, drawn) in zip(axes.flat, panels, strict=False):
        for key, label, points in drawn:
            steps, values = zip(*points, strict=True)
            if key.startswith("eval_"):  # a few evaluations: markers (and their values), not a line through them
                few = len(points) <= FEW_EVALUATIONS
                ax.plot(steps, values, "o" if few else "o--", color="C3", markersize=6, label=label)
                for step, value in points if few else ():
                    ax.annotate(f"{value:.2f}", (step, value), xytext=(4, 4), textcoords="offset points", fontsize=7)
            else:
                ax.plot(steps, values, marker="o" if len(points) < 8 else None, markersize=3, label=label)
        if panel_title.startswith("explained variance"):
            ax.axhline(0.0, color="0.6", linewidth=0.8, linestyle=":")
        if warmup_steps:
            ax.axvspan(0, warmup_steps, color="0.9", label="critic warm-up")
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    notes = []
    if length_pinned and not show_length:
        share = f"{PINNED_LENGTH_SHARE:.0%}"
        notes.append(f"No length panel: at least {share} of the responses ran to response_length at every step")
    if constant:
        notes.append(f"Constant at every logged step, not drawn: {', '.join(constant)}")
    if notes:
        fig.text(0.5, 0.005, ". ".join(notes) + ".", ha="center", fontsize=7, color="0.4")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.025 if notes else 0, 1, 1))
    return fig


def plot_monitors(
    log_history: list[dict[str, Any]],
    path: str | Path,
    warmup_steps: int | None = None,
    title: str = "",
    show_length: bool | None = None,
) -> list[str]:
    """Write one PNG with a panel per monitor in `log_history` (x = training step); return the panels' titles.

    Args:
        log_history (`list[dict]`):
            `trainer.state.log_history` rows; each needs a `step`. Non-finite values (an undefined explained
            variance) are left out.
        path (`str` or `Path`):
            The PNG to write.
        warmup_steps (`int`, *optional*):
            Steps of critic warm-up to shade. `None`: the last step that logged `ppomax/critic_warmup` > 0.
        title (`str`, *optional*):
            The figure's title.
        show_length (`bool`, *optional*):
            Draw the response-length panel. `None`: unless every logged step had at least `PINNED_LENGTH_SHARE` of its
            responses at `response_length` (the length monitor is off and the panel would be flat at the cap).

    Panels (`MONITOR_PANELS`), each only when logged: reward (train batch, held-out as markers), KL to the reference,
    value loss, explained variance, clip fraction, policy entropy, approx KL of the update, UNA loss, response
    length, perplexity. A panel whose every series has one value at every step (the clip fraction of a single epoch
    on a single minibatch is 0 by construction) is not drawn; a note under the figure gives its value.
    """
    import matplotlib.pyplot as plt

    fig = monitor_figure(log_history, warmup_steps=warmup_steps, title=title, show_length=show_length)
    titles = [ax.get_title() for ax in fig.axes]
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return titles


def write_log_history(log_history: list[dict[str, Any]], path: str | Path) -> None:
    """`log_history` as a JSON list (NaN stays `NaN`, as in `trainer_state.json`), for `ppomax-trl plot` and re-plots."""
    Path(path).write_text(json.dumps(log_history, indent=1) + "\n")


def _checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def _read_log_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("log_history"), list):
        return data["log_history"]
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return data
    raise ValueError(f"{path} is neither a list of log rows nor a {TRAINER_STATE_NAME} with a `log_history`.")


def load_log_history(path: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """(the file read, its log-history rows) for a run.

    `path` is a file (`log_history.json`: a JSON list of rows; `*.jsonl`: one row per line; or a `trainer_state.json`)
    or a folder (an `output_dir` or a checkpoint), where the first of these is read: `log_history.json`,
    `log_history.jsonl`, `trainer_state.json`, then the newest `checkpoint-*/trainer_state.json`. Raises
    `FileNotFoundError` naming every place it looked.
    """
    path = Path(path)
    if path.is_file():
        return path, _read_log_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist.")
    candidates = [path / LOG_HISTORY_NAME, path / "log_history.jsonl", path / TRAINER_STATE_NAME]
    checkpoints = sorted((p for p in path.glob("checkpoint-*") if p.is_dir()), key=_checkpoint_step, reverse=True)
    candidates += [checkpoint / TRAINER_STATE_NAME for checkpoint in checkpoints]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, _read_log_file(candidate)
    raise FileNotFoundError(
        f"No log history in {path}: looked for {LOG_HISTORY_NAME}, log_history.jsonl, {TRAINER_STATE_NAME} and "
        f"checkpoint-*/{TRAINER_STATE_NAME} there. Trainers write {TRAINER_STATE_NAME} into each checkpoint "
        f"(`save_strategy`) and into `output_dir` with `trainer.save_state()` (the recipes call it); the quickstart "
        f"writes {LOG_HISTORY_NAME}."
    )


__all__ = ["MONITOR_PANELS", "load_log_history", "monitor_figure", "plot_monitors", "write_log_history"]
