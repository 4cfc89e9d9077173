# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""The flags that `pvt-train-detection` and `pvt-train-segmentation` share, defined once.

Each function adds one run of flags to an argparse group, in the order `--help` lists them; the command adds its
own flags around them and passes in its own defaults and help text where the two differ. Values are checked as
they are parsed (paths must exist, a misspelt --pvt_variant gets a did-you-mean), and the counts that pvt-train
shares (batch sizes, epochs, steps, accumulation) by `training.dense.check_dense_run` in pvt-train's words.
"""

import argparse
import json
from pathlib import Path

from pvt_tools.training.arguments import DEFAULT_TRAIN_VAL_SPLIT
from pvt_tools.usage import (
    PVT_VARIANT_NAMES,
    UsageError,
    check_variant_name,
    run_console_command,
)

# The models each command trains (training.detection.IMAGE_PROCESSOR_CLASSES, training.segmentation.ARCHITECTURES and
# segmentation_data.TASKS, which import torch), named here so that `--help` answers at once; tests keep them equal.
DETECTION_ARCHITECTURES = ("detr", "deformable_detr")
SEGMENTATION_ARCHITECTURES = ("mask2former", "upernet")
SEGMENTATION_TASKS = ("semantic", "instance")


def positive_int(value: str) -> int:
    """argparse type: a count that must be > 0."""
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {number}")
    return number


def variant_name(value: str) -> str:
    """argparse type: a PVT variant, with a did-you-mean suggestion for a near miss."""
    try:
        return check_variant_name(value, "--pvt_variant")
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def existing_folder_or_hub_id(value: str) -> str:
    """argparse type: --dataset_name that looks like a path must exist."""
    if value.startswith((".", "/", "~")) and not Path(value).expanduser().exists():
        raise argparse.ArgumentTypeError(f"{value} does not exist: give an existing folder or a Hub repo id org/name")
    return value


def add_dataset_flags(group: argparse._ArgumentGroup, *, dataset_name_help: str) -> None:
    """--dataset_name, --dataset_config_name and --train_val_split."""
    group.add_argument("--dataset_name", type=existing_folder_or_hub_id, help=dataset_name_help)
    group.add_argument("--dataset_config_name")
    group.add_argument(
        "--train_val_split",
        type=float,
        default=DEFAULT_TRAIN_VAL_SPLIT,
        help="Used when there is no validation split.",
    )


def add_digits_flags(group: argparse._ArgumentGroup, *, canvas_size: int) -> None:
    """The size of the embedded digits data, used when there is no --dataset_name."""
    group.add_argument("--num_train_images", type=positive_int, default=2000, help="Digits canvases for training.")
    group.add_argument(
        "--num_validation_images", type=positive_int, default=200, help="Digits canvases for validation."
    )
    group.add_argument(
        "--canvas_size", type=positive_int, default=canvas_size, help="Side of the digits canvases, in pixels."
    )


def add_backbone_flags(group: argparse._ArgumentGroup, *, model_config_help: str) -> None:
    """--pvt_checkpoint or --pvt_variant (+ --pvt_config_overrides) for the backbone, --detector_config_overrides
    for the model around it (`model_config_help` names its config and an example)."""
    group.add_argument(
        "--pvt_checkpoint",
        help="PVT folder or Hub repo id whose weights start the backbone (or a trained detector / segmenter with a "
        "PVT backbone, whose backbone is taken).",
    )
    variant_help = "The randomly initialised backbone, when there is no --pvt_checkpoint"
    group.add_argument(
        "--pvt_variant", type=variant_name, default="pvt-tiny", help=f"{variant_help}: {', '.join(PVT_VARIANT_NAMES)}."
    )
    group.add_argument(
        "--pvt_config_overrides",
        type=json.loads,
        default={},
        help="JSON for the random backbone's PvtConfig, e.g. '{\"depths\": [1, 1, 1, 1]}'.",
    )
    group.add_argument("--detector_config_overrides", type=json.loads, default={}, help=model_config_help)


def add_batch_and_learning_rate_flags(
    group: argparse._ArgumentGroup,
    *,
    learning_rate_help: str | None,
    backbone_learning_rate: float | None,
    backbone_learning_rate_help: str,
    learning_rate: float | None = 1e-4,
    train_batch_size: int = 8,
) -> None:
    """Batch sizes per device, the learning rate of the model around the backbone and that of the backbone."""
    group.add_argument("--per_device_train_batch_size", type=int, default=train_batch_size)
    group.add_argument("--per_device_eval_batch_size", type=int, default=8)
    group.add_argument("--learning_rate", type=float, default=learning_rate, help=learning_rate_help)
    group.add_argument(
        "--backbone_learning_rate", type=float, default=backbone_learning_rate, help=backbone_learning_rate_help
    )


def add_schedule_flags(
    group: argparse._ArgumentGroup,
    *,
    weight_decay: float,
    max_grad_norm: float,
    max_grad_norm_help: str,
    num_train_epochs: int,
    max_train_steps_flags: tuple[str, ...],
    max_train_steps_help: str,
    lr_scheduler_type: str,
    num_warmup_steps: int | None,
    num_warmup_steps_help: str | None,
) -> None:
    """Weight decay, gradient clipping, the length of the run and the learning-rate schedule."""
    group.add_argument("--weight_decay", type=float, default=weight_decay)
    group.add_argument("--max_grad_norm", type=float, default=max_grad_norm, help=max_grad_norm_help)
    group.add_argument("--num_train_epochs", type=int, default=num_train_epochs)
    group.add_argument(*max_train_steps_flags, type=int, help=max_train_steps_help)
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--lr_scheduler_type", default=lr_scheduler_type)
    group.add_argument("--num_warmup_steps", type=int, default=num_warmup_steps, help=num_warmup_steps_help)


def add_run_flags(group: argparse._ArgumentGroup) -> None:
    """The seed, checkpoints and resumption, and experiment tracking."""
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--checkpointing_steps", help="Save every N optimizer steps, or 'epoch'.")
    group.add_argument("--resume_from_checkpoint", help="A step_N / epoch_N folder, or 'latest' in --output_dir.")
    group.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Start a new run in an output_dir that holds an earlier run (its checkpoints are removed).",
    )
    group.add_argument("--with_tracking", action="store_true", help="Log to the trackers of --report_to.")
    group.add_argument("--report_to", default="all")


__all__ = [
    "add_backbone_flags",
    "add_batch_and_learning_rate_flags",
    "add_dataset_flags",
    "add_digits_flags",
    "add_run_flags",
    "add_schedule_flags",
    "existing_folder_or_hub_id",
    "positive_int",
    "run_console_command",
    "variant_name",
]
