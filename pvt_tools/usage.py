# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""The checks every command makes on its flags before it writes anything, written once.

Standard library only, so that a command can run them (and print `--help`) before torch and the training stack
are imported.

- `check_output_folder`: the rule that no command loses a user's work. A folder holding a finished model,
  results or checkpoints is never replaced or mixed into without the overwrite flag; `--resume_from_checkpoint
  latest` in a folder that holds a finished run but no checkpoint is refused, naming what is there; a message
  suggests resuming only when there is a checkpoint to resume from.
- `check_model_reference`: a model or checkpoint flag (--model_name_or_path, --pvt_checkpoint, --model, ...) names
  an existing local path or a well-formed Hub repo id; anything else is one line naming the flag, the value and
  the fix.
- `check_positive`: counts must be > 0.
"""

import difflib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path


class UsageError(ValueError):
    """A flag's value cannot work; the message names the flag, the value and the fix. Raised before anything is
    loaded or written wherever the flags alone show the problem."""


# The paper's variants (configuration_pvt.PVT_VARIANTS, which imports torch): named here so that a command can
# list and check them before torch is imported. tests/test_usage.py keeps the two the same.
PVT_VARIANT_NAMES = ("pvt-tiny", "pvt-small", "pvt-medium", "pvt-large")


def check_variant_name(variant: str, flag: str = "--variant") -> str:
    """A paper variant's name, or an error that suggests the closest one and lists them all."""
    if variant in PVT_VARIANT_NAMES:
        return variant
    close = difflib.get_close_matches(variant.replace("_", "-").lower(), PVT_VARIANT_NAMES, n=1, cutoff=0.5)
    suggestion = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"{flag} {variant!r} is not a PVT variant: {suggestion}Choose one of {', '.join(PVT_VARIANT_NAMES)}."
    )


class CommandError(Exception):
    """A failure a command explains in its message (a NaN loss, a conversion that does not match its reference),
    not a bug: its console entry point prints the message, without a traceback."""


def run_console_command(main: Callable[[], object]) -> None:
    """A console entry point's body: a mistake in the flags, the data or the files ends with its one-line message
    and exit status 2, never a traceback. The usage errors of every command are ValueErrors (UsageError, DataError,
    CheckpointError, ExportError, PushError, OnnxExportError, OfficialCheckpointError, ...); other failures that the
    message explains are CommandErrors."""
    try:
        status = main()
    except (ValueError, CommandError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status if isinstance(status, int) else 0)


def check_positive(**flags: float | None) -> None:
    """Counts such as --max_train_steps must be > 0 (None means "not given")."""
    for name, value in flags.items():
        if value is not None and value <= 0:
            raise UsageError(f"--{name} must be greater than 0, got {value:g}.")


# The counts of every Accelerate training command (pvt-train, detection, segmentation), checked in this order.
TRAINING_COUNTS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "num_train_epochs",
    "max_train_steps",
    "gradient_accumulation_steps",
)


def check_training_counts(settings) -> None:
    """TRAINING_COUNTS > 0 in the same words for every command: `settings` is pvt-train's arguments dataclass or a
    command's argparse namespace."""
    check_positive(**{name: getattr(settings, name) for name in TRAINING_COUNTS})


def parse_checkpointing_steps(value: str | int | None) -> int | str | None:
    """--checkpointing_steps: a number of optimizer steps, "epoch", or None (no checkpoints)."""
    if value is None or value == "epoch" or isinstance(value, int):
        return value
    if str(value).isdigit() and int(value) > 0:
        return int(value)
    raise UsageError(f"--checkpointing_steps must be a positive number of steps or 'epoch', got {value!r}.")


# --- the output folder ---------------------------------------------------------------------------------------------

# Checkpoint folders: ours (step_N / epoch_N, with training_state.json) and Trainer's (checkpoint-N).
CHECKPOINT_FOLDER = re.compile(r"^(step|epoch)_\d+$|^checkpoint-\d+$")
CHECKPOINT_MARKERS = ("training_state.json", "trainer_state.json")
# Files and folders that are a finished run's or an export's work: a model, its results, an ONNX export.
FINISHED_WORK = (
    "model.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "all_results.json",
    "training_history.json",
    "onnx",
)
# Where earlier versions of the training commands put the model; still recognised as finished work.
LEGACY_MODEL_FOLDERS = ("export", "model")


def checkpoints_in(folder: str | os.PathLike) -> list[str]:
    """Names of the complete checkpoint folders in `folder` (step_N, epoch_N, Trainer's checkpoint-N), sorted by
    their number."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        path.name
        for path in folder.iterdir()
        if path.is_dir()
        and CHECKPOINT_FOLDER.match(path.name)
        and any((path / marker).is_file() for marker in CHECKPOINT_MARKERS)
    ]
    return sorted(found, key=lambda name: (int(re.sub(r"\D", "", name)), name))


def finished_work_in(folder: str | os.PathLike) -> list[str]:
    """Names of what in `folder` is a finished model, its results or an export (checkpoints not included)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [name for name in FINISHED_WORK if (folder / name).exists()]
    found += [name for name in LEGACY_MODEL_FOLDERS if (folder / name / "config.json").is_file()]
    return found


def describe_work(finished: list[str], checkpoints: list[str]) -> str:
    """e.g. "a model or results (model.safetensors, all_results.json) and checkpoints (step_3, step_6)"."""
    parts = []
    if finished:
        parts.append(f"a model or results ({', '.join(finished[:6])})")
    if checkpoints:
        shown = checkpoints if len(checkpoints) <= 4 else [*checkpoints[:2], "...", *checkpoints[-2:]]
        parts.append(f"checkpoints ({', '.join(shown)})")
    return " and ".join(parts)


def choices(can_resume: bool, overwrite_flag: str | None, output_flag: str) -> str:
    """What the user can do instead, listing only what works: resume (when there is a checkpoint), replace (when
    the command can), or write elsewhere."""
    options = ["continue it with --resume_from_checkpoint latest"] if can_resume else []
    options += [f"replace it with {overwrite_flag}"] if overwrite_flag else []
    options.append(f"choose another {output_flag}")
    sentence = options[0] if len(options) == 1 else f"{', '.join(options[:-1])}, or {options[-1]}"
    return f"{sentence[0].upper()}{sentence[1:]}."


def check_output_folder(
    folder: str | os.PathLike,
    *,
    overwrite: bool,
    resume_from_checkpoint: str | None = None,
    output_flag: str = "--output_dir",
    overwrite_flag: str | None = "--overwrite_output_dir",
    resumable: bool = True,
) -> list[str]:
    """The rule every command that writes a model follows before it writes anything (see the module docstring).

    Args:
        overwrite: the user asked to replace what is there (`overwrite_flag`).
        resume_from_checkpoint: "latest", a checkpoint path, or None (a new run).
        overwrite_flag: the command's flag that allows replacing; None when it has none (the folder must then be
            free of finished work).
        resumable: the command can continue a run from a checkpoint (the training commands): only then does a
            refusal suggest it.
    Returns the checkpoints found (a new run with `overwrite` removes them once it starts)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{output_flag} {folder} is a file, not a folder: choose another {output_flag}.")
    checkpoints = checkpoints_in(folder)
    finished = finished_work_in(folder)
    if not finished and not checkpoints:
        return checkpoints
    if resume_from_checkpoint == "latest" and not checkpoints and not overwrite:
        raise UsageError(
            f"--resume_from_checkpoint latest: {folder} holds no checkpoint to continue from, but "
            f"{describe_work(finished, [])}; nothing was changed. (A run writes checkpoints only when asked: "
            "--checkpointing_steps N or 'epoch'; --save_strategy with pvt-finetune-trainer.) "
            f"{choices(False, overwrite_flag, output_flag)}"
        )
    if resume_from_checkpoint is None and not overwrite:
        raise UsageError(
            f"{folder} already holds {describe_work(finished, checkpoints)}; nothing was changed. "
            f"{choices(resumable and bool(checkpoints), overwrite_flag, output_flag)}"
        )
    return checkpoints


# --- model and checkpoint flags ------------------------------------------------------------------------------------


def is_repo_id(value: str) -> bool:
    """Whether `value` is a well-formed Hub repo id, by huggingface_hub's own rule (validate_repo_id)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def check_model_reference(flag: str, value: str | os.PathLike | None, *, kind: str = "folder or repo") -> None:
    """A model or checkpoint flag names an existing local path or a well-formed Hub repo id (None: not given).
    `kind`: "folder or repo" (the default), "folder" (a local folder only) or "file" (a local file only)."""
    if value is None:
        return
    text = str(value)
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~user" of no user, or no home directory
        path = Path(text)
    if path.exists():
        if kind == "file" and path.is_dir():
            raise UsageError(f"{flag} {text} is a folder; give the checkpoint file itself.")
        return
    example = "a folder written by a training run or save_pretrained (e.g. outputs/demo)"
    if kind == "file":
        raise UsageError(f"{flag} {text}: no such file. Check the path (run ls on it).")
    if kind == "folder":
        raise UsageError(f"{flag} {text}: no such folder. Give {example}.")
    looks_like_a_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_a_path or not is_repo_id(text):
        raise UsageError(
            f"{flag} {text}: no such folder here, and not a Hub repo id (org/name). Give {example}, or a Hub repo "
            "id such as org/pvt-small."
        )


__all__ = [
    "CommandError",
    "UsageError",
    "check_model_reference",
    "check_output_folder",
    "check_positive",
    "check_variant_name",
    "checkpoints_in",
    "finished_work_in",
    "is_repo_id",
    "parse_checkpointing_steps",
    "run_console_command",
]
