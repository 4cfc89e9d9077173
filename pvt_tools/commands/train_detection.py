# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-train-detection`: fine-tune Transformers' DETR or Deformable DETR with a PVT backbone.

pvt-train-detection --output_dir out/detr-digits                   # DETR, PVT-Tiny from scratch, embedded digits
pvt-train-detection --architecture deformable_detr --pvt_checkpoint path/to/pvt-small ...
accelerate launch -m pvt_tools.commands.train_detection ...        # several processes or machines
"""

import argparse

from pvt_tools.commands.dense_arguments import (
    DETECTION_ARCHITECTURES,
    add_backbone_flags,
    add_batch_and_learning_rate_flags,
    add_dataset_flags,
    add_digits_flags,
    add_run_flags,
    add_schedule_flags,
    positive_int,
    run_console_command,
)
from pvt_tools.usage import UsageError, parse_checkpointing_steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    add_dataset_flags(
        data,
        dataset_name_help="Hub name or local folder of a detection data set (default: the embedded digits canvases).",
    )
    add_digits_flags(data, canvas_size=128)
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
    model.add_argument("--architecture", choices=DETECTION_ARCHITECTURES, default="detr")
    add_backbone_flags(
        model,
        model_config_help='JSON for the DETR / Deformable DETR config, e.g. \'{"num_queries": 20, "d_model": 128}\'.',
    )
    model.add_argument("--freeze_backbone", action="store_true", help="Train the detector's head only.")

    training = parser.add_argument_group("training")
    training.add_argument(
        "--output_dir",
        required=True,
        help="The trained detector (from_pretrained(output_dir) loads it; the PVT code files travel with it), "
        "step_N / epoch_N checkpoints, all_results.json and the training curves go here.",
    )
    add_batch_and_learning_rate_flags(
        training,
        learning_rate_help="Of the transformer and the heads (default: DETR's 1e-4).",
        backbone_learning_rate=1e-5,
        backbone_learning_rate_help="Of the PVT (DETR's: 1e-5).",
    )
    add_schedule_flags(
        training,
        weight_decay=1e-4,
        max_grad_norm=0.1,
        max_grad_norm_help="DETR's gradient clipping; 0 turns it off.",
        num_train_epochs=50,
        max_train_steps_flags=("--max_train_steps", "--max_steps"),
        max_train_steps_help="Optimizer steps; overrides --num_train_epochs.",
        lr_scheduler_type="cosine",
        num_warmup_steps=None,
        num_warmup_steps_help="Warm-up optimizer steps (default: none, as DETR's own training).",
    )
    add_run_flags(training)
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
    args = parse_args(argv)
    from pvt_tools.training.detection import train_detector  # torch: only once the flags are read

    return train_detector(args)


def run() -> None:
    """Console entry point: a mistake in the flags or the data ends with its message, not a traceback."""
    run_console_command(main)


if __name__ == "__main__":
    run()
