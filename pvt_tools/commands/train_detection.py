# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-train-detection`: fine-tune Transformers' DETR or Deformable DETR with a PVT backbone.

pvt-train-detection --output_dir out/detr-digits                   # DETR, PVT-Tiny from scratch, embedded digits
pvt-train-detection --architecture deformable_detr --pvt_checkpoint path/to/pvt-small ...
accelerate launch -m pvt_tools.commands.train_detection ...        # several processes or machines
"""

import argparse
import json
import sys
from pathlib import Path

from configuration_pvt import PVT_VARIANTS
from pvt_tools.training.checkpoints import CheckpointError, NonFiniteLossError
from pvt_tools.training.classification import check_variant_name
from pvt_tools.training.detection import IMAGE_PROCESSOR_CLASSES, train_detector
from pvt_tools.training.loop import UsageError, parse_checkpointing_steps


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
    """argparse type: --dataset_name / --pvt_checkpoint that look like a path must exist."""
    if value.startswith((".", "/", "~")) and not Path(value).expanduser().exists():
        raise argparse.ArgumentTypeError(f"{value} does not exist: give an existing folder or a Hub repo id org/name")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        type=existing_folder_or_hub_id,
        help="Hub name or local folder of a detection data set (default: the embedded digits canvases).",
    )
    data.add_argument("--dataset_config_name")
    data.add_argument("--train_val_split", type=float, default=0.15, help="Used when there is no validation split.")
    data.add_argument("--num_train_images", type=positive_int, default=2000, help="Digits canvases for training.")
    data.add_argument("--num_validation_images", type=positive_int, default=200, help="Digits canvases for validation.")
    data.add_argument("--canvas_size", type=positive_int, default=128, help="Side of the digits canvases, in pixels.")
    data.add_argument(
        "--invalid_boxes",
        choices=["drop", "error"],
        default="drop",
        help="Boxes with a non-positive size or outside the image: drop them (and report how many) or stop.",
    )
    data.add_argument(
        "--image_square_size",
        type=positive_int,
        default=1333,
        help="Images are resized so that their longer side is this, then padded to a square of this side.",
    )
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument("--architecture", choices=list(IMAGE_PROCESSOR_CLASSES), default="detr")
    model.add_argument(
        "--pvt_checkpoint",
        type=existing_folder_or_hub_id,
        help="PVT folder or Hub repo id whose weights start the backbone.",
    )
    model.add_argument(
        "--pvt_variant",
        type=variant_name,
        default="pvt-tiny",
        help=f"The randomly initialised backbone, when there is no --pvt_checkpoint: {', '.join(PVT_VARIANTS)}.",
    )
    model.add_argument(
        "--pvt_config_overrides",
        type=json.loads,
        default={},
        help="JSON for the random backbone's PvtConfig, e.g. '{\"depths\": [1, 1, 1, 1]}'.",
    )
    model.add_argument(
        "--detector_config_overrides",
        type=json.loads,
        default={},
        help='JSON for the DETR / Deformable DETR config, e.g. \'{"num_queries": 20, "d_model": 128}\'.',
    )
    model.add_argument("--freeze_backbone", action="store_true", help="Train the detector's head only.")

    training = parser.add_argument_group("training")
    training.add_argument(
        "--output_dir",
        required=True,
        help="The trained detector (from_pretrained(output_dir) loads it; the PVT code files travel with it), "
        "step_N / epoch_N checkpoints, all_results.json and the training curves go here.",
    )
    training.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Start a new run in an output_dir that holds an earlier run (its checkpoints are removed).",
    )
    training.add_argument("--per_device_train_batch_size", type=positive_int, default=8)
    training.add_argument("--per_device_eval_batch_size", type=positive_int, default=8)
    training.add_argument(
        "--learning_rate", type=float, default=1e-4, help="Of the transformer and the heads (default: DETR's 1e-4)."
    )
    training.add_argument("--backbone_learning_rate", type=float, default=1e-5, help="Of the PVT (DETR's: 1e-5).")
    training.add_argument("--weight_decay", type=float, default=1e-4)
    training.add_argument("--max_grad_norm", type=float, default=0.1, help="DETR's gradient clipping; 0 turns it off.")
    training.add_argument("--num_train_epochs", type=positive_int, default=50)
    training.add_argument(
        "--max_train_steps", "--max_steps", type=positive_int, help="Optimizer steps; overrides --num_train_epochs."
    )
    training.add_argument("--gradient_accumulation_steps", type=positive_int, default=1)
    training.add_argument("--lr_scheduler_type", default="cosine")
    training.add_argument(
        "--num_warmup_steps", type=int, help="Warm-up optimizer steps (default: none, as DETR's own training)."
    )
    training.add_argument("--seed", type=int, default=42)
    training.add_argument("--checkpointing_steps", help="Save every N optimizer steps, or 'epoch'.")
    training.add_argument("--resume_from_checkpoint", help="A step_N / epoch_N folder, or 'latest' in --output_dir.")
    training.add_argument("--with_tracking", action="store_true", help="Log to the trackers of --report_to.")
    training.add_argument("--report_to", default="all")
    args = parser.parse_args(argv)
    try:
        args.checkpointing_steps = parse_checkpointing_steps(args.checkpointing_steps)
    except UsageError as error:
        parser.error(str(error))
    warmup, steps = args.num_warmup_steps, args.max_train_steps
    if warmup is not None and steps is not None and 0 < steps <= warmup:
        parser.error(
            f"the warm-up ({warmup} steps, --num_warmup_steps) is at least as long as the whole run ({steps} "
            "optimizer steps, --max_train_steps): shorten it or train longer."
        )
    return args


def main(argv: list[str] | None = None) -> dict:
    return train_detector(parse_args(argv))


def run() -> None:
    """Console entry point: a mistake in the flags or the data ends with its message, not a traceback."""
    try:
        main()
    except (CheckpointError, NonFiniteLossError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    run()
