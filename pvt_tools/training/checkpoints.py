# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Checkpoints of an Accelerate training run that a kill cannot break, and resuming from them.

Nothing here knows about the model or the task; train.py (classification) and the detection training use it alike,
usually through `training_loop.run_training`:

    progress = TrainingProgress()                    # optimizer steps done, epoch, batches of the epoch consumed
    save_checkpoint(accelerator, output_dir, "step_500", progress, run_settings, extra_state={"history": ...})
        # every process calls it. `accelerator.save_state` (model weights as safetensors, optimizer, scheduler,
        # RNG states of every process, gradient scaler) goes into output_dir/.step_500.incomplete, then
        # training_state.json (the progress, run settings and extra state); only then is it renamed to
        # output_dir/step_500, so a kill during a save never leaves a broken checkpoint under a real name.
    path = resolve_checkpoint("latest" or a path, output_dir)   # "latest": the complete checkpoint furthest along
    progress, extra_state = load_checkpoint(accelerator, path, run_settings)
        # accelerator.load_state (model, optimizer, scheduler, RNG) + the saved progress; refuses to continue
        # with a different batch layout (run_settings: e.g. processes, batch size, accumulation).
    batches = resume_batches(accelerator, train_dataloader, progress)   # skip_first_batches within the epoch
    check_finite_loss(losses, progress, output_dir)  # raises NonFiniteLossError naming the step and the last
                                                      # good checkpoint, before the bad update is applied

Checkpoint folders are named step_N (N optimizer steps done) or epoch_N (epoch N, counted from 0, finished and
evaluated), like Transformers' no_trainer examples. Only training_state.json and the files of
`accelerator.save_state` are written; Accelerate reads its optimizer/scheduler/RNG files back with
`torch.load(weights_only=True)`.
"""

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from pvt_tools.hub import replace_directory, set_shared_file_modes
from pvt_tools.usage import CommandError

TRAINING_STATE_NAME = "training_state.json"
PROCESS_STATE_NAME = "process_state_{}.json"
CHECKPOINT_NAME = re.compile(r"^(step|epoch)_\d+$")


@dataclass
class TrainingProgress:
    """Where a run is: enough to continue it exactly."""

    completed_steps: int = 0  # optimizer updates done
    epoch: int = 0  # the epoch in progress, or the last one finished when `epoch_finished`
    batches_seen: int = 0  # batches of `epoch` each process has consumed (micro-batches, with accumulation)
    epoch_finished: bool = False  # `epoch` was trained to its end (or to max_train_steps) and evaluated

    def resume_point(self) -> tuple[int, int]:
        """(epoch to continue with, batches of it to skip)."""
        if self.epoch_finished:
            return self.epoch + 1, 0
        return self.epoch, self.batches_seen


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from; the message says why and what to do."""


class NonFiniteLossError(CommandError, RuntimeError):
    """The loss became NaN or infinite; training stopped before applying that update."""


def read_training_state(path: str | os.PathLike) -> dict:
    state_file = Path(path) / TRAINING_STATE_NAME
    if not state_file.is_file():
        raise CheckpointError(
            f"{path} is not a complete checkpoint (no {TRAINING_STATE_NAME}); give a step_N or epoch_N folder "
            "that a training run wrote, or 'latest'."
        )
    return json.loads(state_file.read_text())


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first (by progress, not by file times)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    complete = [
        path
        for path in output_dir.iterdir()
        if path.is_dir() and CHECKPOINT_NAME.match(path.name) and (path / TRAINING_STATE_NAME).is_file()
    ]

    def order(path: Path) -> tuple[int, bool]:
        progress = read_training_state(path)["progress"]
        return progress["completed_steps"], progress["epoch_finished"]

    return sorted(complete, key=order)


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_checkpoint(resume_from_checkpoint: str, output_dir: str | os.PathLike) -> Path | None:
    """The folder to resume from: a given path, or for "latest" the newest complete checkpoint in `output_dir`
    (None when there is none yet, so that a restarted job simply begins)."""
    if resume_from_checkpoint == "latest":
        return find_latest_checkpoint(output_dir)
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise CheckpointError(f"--resume_from_checkpoint {path} does not exist; give a checkpoint folder or 'latest'.")
    read_training_state(path)
    return path


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    name: str,
    progress: TrainingProgress,
    run_settings: dict,
    extra_state: dict | None = None,
    process_state: dict | None = None,
) -> Path:
    """Write the full training state as output_dir/name, atomically (see the module docstring). Every process
    must call it; `process_state` (e.g. a data stream's position, different on every process) is written by each
    process as process_state_<rank>.json."""
    output_dir = Path(output_dir)
    final = output_dir / name
    staging = output_dir / f".{name}.incomplete"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        state = {"progress": asdict(progress), "run_settings": run_settings, "extra_state": extra_state or {}}
        (staging / TRAINING_STATE_NAME).write_text(json.dumps(state, indent=2))
    if process_state is not None:
        (staging / PROCESS_STATE_NAME.format(accelerator.process_index)).write_text(json.dumps(process_state))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        set_shared_file_modes(staging)
        replace_directory(staging, final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    accelerator: Accelerator, path: str | os.PathLike, run_settings: dict
) -> tuple[TrainingProgress, dict]:
    """Restore model, optimizer, scheduler and RNG states from `path`; return its progress and extra state."""
    state = read_training_state(path)
    saved_settings = state["run_settings"]
    changed = {
        key: (saved_settings.get(key), value) for key, value in run_settings.items() if saved_settings.get(key) != value
    }
    if changed:
        details = ", ".join(f"{key}: {old} in the checkpoint, {new} now" for key, (old, new) in changed.items())
        raise CheckpointError(
            f"Cannot resume from {path}: {details}. Resuming continues the data order exactly, which needs the same "
            "settings; run with those of the checkpoint, or start a new run in another --output_dir."
        )
    accelerator.load_state(str(path))
    return TrainingProgress(**state["progress"]), state["extra_state"]


def read_process_state(path: str | os.PathLike, process_index: int) -> dict:
    """What process `process_index` saved in the checkpoint at `path` (save_checkpoint's `process_state`)."""
    state_file = Path(path) / PROCESS_STATE_NAME.format(process_index)
    if not state_file.is_file():
        raise CheckpointError(
            f"{path} holds no {state_file.name}: it was not written by a --streaming run, so the stream position "
            "cannot be restored. Resume it without --streaming, or start a new run in another --output_dir."
        )
    return json.loads(state_file.read_text())


def resume_batches(accelerator: Accelerator, train_dataloader, progress: TrainingProgress):
    """The batches still to train on in `progress.epoch`: the prepared dataloader, without those already seen."""
    _, skip = progress.resume_point()
    if skip == 0:
        return train_dataloader
    return accelerator.skip_first_batches(train_dataloader, skip)


def check_finite_loss(losses: torch.Tensor, progress: TrainingProgress, output_dir: str | os.PathLike) -> None:
    """Raise NonFiniteLossError when any process's loss (gathered into `losses`) is NaN or infinite."""
    if bool(torch.isfinite(losses).all()):
        return
    bad_value = losses[~torch.isfinite(losses)][0].item()
    latest = find_latest_checkpoint(output_dir)
    keep = (
        f"The last good checkpoint is {latest}: resume from it (--resume_from_checkpoint {latest}) with a lower "
        "--learning_rate or --max_grad_norm"
        if latest is not None
        else "No checkpoint had been written yet (--checkpointing_steps N writes them); lower --learning_rate or set "
        "--max_grad_norm and start again"
    )
    raise NonFiniteLossError(
        f"The training loss became {bad_value} at optimizer step {progress.completed_steps + 1} (epoch "
        f"{progress.epoch}, batch {progress.batches_seen + 1}). Training stopped before applying that update; "
        f"nothing was saved after it. {keep}."
    )


__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainingProgress",
    "check_finite_loss",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_process_state",
    "resolve_checkpoint",
    "resume_batches",
    "save_checkpoint",
]
