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
"""Checkpoints that survive faults, for every trainer of the package.

`AtomicCheckpointMixin` goes in front of `transformers.Trainer` (or a TRL trainer) in the bases. A checkpoint becomes
visible only when complete:

1. `Trainer._save_checkpoint` (and every override further down the MRO) runs unchanged, but `_get_output_dir` points
   it at the staging folder `<output_dir>/tmp-checkpoint-N/`, so everything lands in
   `tmp-checkpoint-N/checkpoint-N/`: model(s), optimizer, scheduler, RNG states, `trainer_state.json`, the DeepSpeed
   `global_stepN` shards of every rank, and the subclass's files (`_save_extra_checkpoint_files`).
2. After a barrier (every process has written), the main process renames `tmp-checkpoint-N/checkpoint-N` to
   `<output_dir>/checkpoint-N` (one `rename` on the same filesystem, so atomic) and removes the staging folder. On
   multi-node runs without a shared filesystem, each node's main process then publishes its own copy.
3. Checkpoint rotation (`save_total_limit`) and the Hub push of the checkpoint run after the rename.

`transformers.trainer_utils.get_last_checkpoint` matches `^checkpoint-\\d+$` and rotation globs `checkpoint-*`, so a
staging folder is never resumed from nor rotated. A save that fails (full disk, killed process) leaves
`tmp-checkpoint-N/` behind: resuming with `resume_from_checkpoint=True` ignores it and takes the last complete
checkpoint, and the next save of step N deletes it first.

Before resuming, `train` reads every file of the checkpoint (JSON parsed, safetensors headers, the end of torch zip
files): a truncated file raises `CheckpointFileError`, which names it, instead of a bare `SafetensorError` or
`JSONDecodeError` deep in the load.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints
from transformers.utils import is_peft_available, logging


if is_peft_available():
    from peft import PeftModel, set_peft_model_state_dict


logger = logging.get_logger(__name__)

STAGING_PREFIX = "tmp-"
TRAINER_STATE_NAME = "trainer_state.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be read, usually because the save that wrote it was cut short."""

    def __init__(self, path: str, error: Exception, checkpoint: str | None = None) -> None:
        self.path = path
        checkpoint = checkpoint or os.path.dirname(path)
        super().__init__(
            f"Cannot read checkpoint file {path} ({type(error).__name__}: {error}). It is truncated or corrupted, "
            f"most likely by a save that failed midway (full disk, killed process). Resume from an earlier "
            f"checkpoint (`resume_from_checkpoint=<path>`), or delete {checkpoint} and resume again."
        )


# ----------------------------------------------------------------------------------------------------------------------
# Reading checkpoint files
# ----------------------------------------------------------------------------------------------------------------------
def load_json(path: str, checkpoint: str | None = None) -> Any:
    """`json.load` of `path`; an unreadable file raises `CheckpointFileError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointFileError(path, error, checkpoint) from error


def load_safetensors(path: str, checkpoint: str | None = None) -> dict:
    """`safetensors.torch.load_file` of `path`; an unreadable file raises `CheckpointFileError` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except SafetensorError as error:
        raise CheckpointFileError(path, error, checkpoint) from error


def _load_pretrained_weights(model: torch.nn.Module, folder: str) -> None:
    """Load weights saved by `save_pretrained` (full or PEFT adapter) into an existing model, in place.

    A truncated or corrupted file raises `checkpoints.CheckpointFileError`, which names it.
    """
    if is_peft_available() and isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_safetensors(os.path.join(folder, "adapter_model.safetensors")))
        return
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"No safetensors weights in {folder}.")
    state = {}
    for name in files:
        state.update(load_safetensors(os.path.join(folder, name)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    tied |= {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise ValueError(f"Checkpoint {folder} does not match the model: missing {missing}, unexpected {unexpected}.")


def _check_file(path: str, checkpoint: str) -> None:
    if path.endswith(".json"):
        load_json(path, checkpoint)
    elif path.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="pt") as f:  # reads the header, which must cover the whole file
                f.keys()
        except SafetensorError as error:
            raise CheckpointFileError(path, error, checkpoint) from error
    elif path.endswith(TORCH_SUFFIXES):
        with open(path, "rb") as f:
            magic = f.read(2)
        # `torch.save` writes zip archives, whose directory is at the end: a cut file has none. Older pickles are
        # left to `torch.load`.
        if not magic or (magic == b"PK" and not zipfile.is_zipfile(path)):
            error = ValueError("empty file" if not magic else "no zip directory: the file is cut short")
            raise CheckpointFileError(path, error, checkpoint)


def verify_checkpoint(checkpoint: str) -> None:
    """Read every JSON, safetensors and torch file under `checkpoint`; raise `CheckpointFileError` on the first bad one.

    Cheap: JSON files are parsed, safetensors files only have their header checked against the file size, and torch
    zip files only have their central directory (at the end of the file) found.
    """
    if not os.path.isdir(checkpoint):
        return  # `Trainer` says what is missing
    for root, dirs, files in os.walk(checkpoint):
        dirs.sort()
        for name in sorted(files):
            _check_file(os.path.join(root, name), checkpoint)


# ----------------------------------------------------------------------------------------------------------------------
# Writing checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def staging_dir(run_dir: str, step: int) -> str:
    """`<run_dir>/tmp-checkpoint-<step>`: not matched by `get_last_checkpoint` nor by checkpoint rotation."""
    return os.path.join(run_dir, f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-{step}")


def publish_checkpoint(staged: str, final: str) -> None:
    """Rename the complete `staged` folder to `final`, then remove its (now empty) staging parent."""
    staging = os.path.dirname(staged)
    if os.path.isdir(final):
        # A save of the same step from an earlier run (resumed from an earlier checkpoint): `rename` cannot replace a
        # non-empty folder, so the old one moves into the staging folder first and is deleted with it.
        logger.warning(f"Replacing {final} with the checkpoint just saved for the same step.")
        os.replace(final, os.path.join(staging, "replaced"))
    os.replace(staged, final)
    shutil.rmtree(staging, ignore_errors=True)


class AtomicCheckpointMixin:
    """Checkpoints become visible only when complete; resuming checks the checkpoint's files first.

    Put it before the `Trainer` subclass in the bases: `class MyTrainer(AtomicCheckpointMixin, Trainer)`. Files that a
    subclass adds to a checkpoint go in `_save_extra_checkpoint_files`, which runs inside the staging folder.
    """

    _staging_run_dir: str | None = None
    _push_pending: bool = False

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        checkpoint = resume_from_checkpoint
        if checkpoint is True and os.path.isdir(self.args.output_dir):
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if isinstance(checkpoint, str):
            verify_checkpoint(checkpoint)
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )  # fmt: skip

    def _save_extra_checkpoint_files(self, checkpoint_dir: str) -> None:
        """Files a subclass adds to each checkpoint; runs on every process, inside the staging folder."""

    def _get_output_dir(self, trial) -> str:
        if self._staging_run_dir is not None:
            return self._staging_run_dir
        return super()._get_output_dir(trial)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self._staging_run_dir is not None:  # pushed from the published folder, after the rename
            self._push_pending = True
            return
        super()._push_from_checkpoint(checkpoint_folder)

    def _save_checkpoint(self, model, trial) -> None:
        args = self.args
        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = staging_dir(run_dir, self.state.global_step)
        staged, final = os.path.join(staging, name), os.path.join(run_dir, name)
        if args.local_process_index == 0:
            shutil.rmtree(staging, ignore_errors=True)  # left by a save of this step that failed
        self.accelerator.wait_for_everyone()

        self._staging_run_dir, self._push_pending = staging, False
        try:
            super()._save_checkpoint(model, trial)
            self._save_extra_checkpoint_files(staged)
        finally:
            self._staging_run_dir = None
        if self.state.best_model_checkpoint == staged:  # `Trainer` found this very checkpoint to be the best one
            self.state.best_model_checkpoint = final
            if args.should_save:
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))

        self.accelerator.wait_for_everyone()  # every rank has written its files (DeepSpeed shards, RNG states)
        with args.main_process_first(local=False, desc=f"publishing {final}"):
            if args.local_process_index == 0 and os.path.isdir(staged):  # gone if a shared filesystem: published
                publish_checkpoint(staged, final)
        if args.should_save:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        if self._push_pending:
            self._push_pending = False
            super()._push_from_checkpoint(final)


__all__ = ["AtomicCheckpointMixin", "CheckpointFileError", "load_json", "load_safetensors", "verify_checkpoint"]
