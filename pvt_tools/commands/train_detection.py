# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-train-detection`: fine-tune Transformers' Deformable DETR or DETR with a PVT backbone.

pvt-train-detection --output_dir out/detr-digits --pvt_checkpoint out/upernet-digits --freeze_backbone
pvt-train-detection --architecture detr --dataset_name path/or/hub-name --pvt_checkpoint path/to/pvt-small ...
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

DATASET_IMAGE_SQUARE_SIZE = 1333  # DETR's longest side
DATASET_LEARNING_RATE = 1e-4  # DETR's
DIGITS_LEARNING_RATE = 5e-4  # measured on the digits with a frozen pretrained PVT (benchmarks/detection.md)
# The embedded digits' detector: small enough to learn on 2 CPU cores in minutes (benchmarks/detection.md).
# --detector_config_overrides are applied over it; a data set starts from Transformers' defaults instead.
DIGITS_DETECTOR_CONFIG = {
    "d_model": 128,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_ffn_dim": 256,
    "decoder_ffn_dim": 256,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "num_queries": 20,
}


def build_parser(description: str = __doc__.split("\n\n")[0], output_dir_required: bool = True):
    """The command's flags (also read by `pvt-profile-detection`, which needs no output folder)."""
    parser = argparse.ArgumentParser(description=description)
    data = parser.add_argument_group("data")
    add_dataset_flags(
        data,
        dataset_name_help="Hub name or local folder of a detection data set (default: the embedded digits canvases).",
    )
    add_digits_flags(data, canvas_size=64)
    data.add_argument(
        "--invalid_boxes",
        choices=["drop", "error"],
        default="drop",
        help="Boxes with a non-positive size or outside the image: drop them (and report how many) or stop.",
    )
    data.add_argument(
        "--image_square_size",
        type=positive_int,
        help="Images are resized so that their longer side is this, then padded to a square of this side (default: "
        f"the canvas size for the digits, {DATASET_IMAGE_SQUARE_SIZE} for a data set).",
    )
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument(
        "--architecture",
        choices=DETECTION_ARCHITECTURES,
        default="deformable_detr",
        help="Deformable DETR (default: it learns the digits in minutes) or DETR (the paper's PVT + DETR).",
    )
    add_backbone_flags(
        model,
        model_config_help="JSON for the DETR / Deformable DETR config, e.g. '{\"num_queries\": 50}' (for the digits, "
        "applied over DIGITS_DETECTOR_CONFIG: d_model 128, 2 encoder and 2 decoder layers, 20 queries).",
    )
    model.add_argument("--freeze_backbone", action="store_true", help="Train the detector's head only.")

    training = parser.add_argument_group("training")
    training.add_argument(
        "--output_dir",
        required=output_dir_required,
        help="The trained detector (from_pretrained(output_dir) loads it; the PVT code files travel with it), "
        "step_N / epoch_N checkpoints, all_results.json and the training curves go here.",
    )
    add_batch_and_learning_rate_flags(
        training,
        learning_rate=None,
        train_batch_size=16,
        learning_rate_help=f"Of the transformer and the heads (default: {DIGITS_LEARNING_RATE:g} for the digits, "
        f"DETR's {DATASET_LEARNING_RATE:g} for a data set).",
        backbone_learning_rate=1e-5,
        backbone_learning_rate_help="Of the PVT (DETR's: 1e-5).",
    )
    add_schedule_flags(
        training,
        weight_decay=1e-4,
        max_grad_norm=0.1,
        max_grad_norm_help="DETR's gradient clipping; 0 turns it off.",
        num_train_epochs=24,
        max_train_steps_flags=("--max_train_steps", "--max_steps"),
        max_train_steps_help="Optimizer steps; overrides --num_train_epochs.",
        lr_scheduler_type="cosine",
        num_warmup_steps=None,
        num_warmup_steps_help="Warm-up optimizer steps (default: none, as DETR's own training).",
    )
    add_run_flags(training)
    return parser


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        args.checkpointing_steps = parse_checkpointing_steps(args.checkpointing_steps)
    except UsageError as error:
        parser.error(str(error))
    if args.image_square_size is None:  # the digits at their own size: upscaling the canvases only slows training
        args.image_square_size = args.canvas_size if args.dataset_name is None else DATASET_IMAGE_SQUARE_SIZE
    if args.dataset_name is None:
        args.detector_config_overrides = {**DIGITS_DETECTOR_CONFIG, **args.detector_config_overrides}
    if args.learning_rate is None:
        digits = args.dataset_name is None
        args.learning_rate = DIGITS_LEARNING_RATE if digits else DATASET_LEARNING_RATE
        args.learning_rate_source = f"default for {'the digits' if digits else 'a data set'}"
    else:
        args.learning_rate_source = "--learning_rate"
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
