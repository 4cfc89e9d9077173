# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-train-segmentation`: fine-tune Transformers' Mask2Former or UperNet with a PVT backbone.

pvt-train-segmentation --output_dir out/mask2former-digits        # Mask2Former, semantic, embedded digits
pvt-train-segmentation --architecture upernet --pvt_checkpoint path/to/pvt-small --dataset_name scene_parse_150
pvt-train-segmentation --task instance --output_dir out/instances # Mask2Former, one mask per object
accelerate launch -m pvt_tools.commands.train_segmentation ...    # several processes or machines
"""

import argparse

from pvt_tools.commands.dense_arguments import (
    SEGMENTATION_ARCHITECTURES,
    SEGMENTATION_TASKS,
    add_backbone_flags,
    add_batch_and_learning_rate_flags,
    add_dataset_flags,
    add_digits_flags,
    add_run_flags,
    add_schedule_flags,
    positive_int,
    run_console_command,
)
from pvt_tools.usage import parse_checkpointing_steps

DATASET_IMAGE_SIZE = 512  # the size of Transformers' segmentation examples (ADE20k)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    add_dataset_flags(
        data,
        dataset_name_help="Hub name or local folder of a segmentation data set with 'image' and 'annotation' "
        "(default: digits).",
    )
    data.add_argument(
        "--reduce_labels",
        action="store_true",
        help="Class 0 of the annotations means 'unlabelled': ignore it and number the other classes from 0.",
    )
    data.add_argument("--id2label", help='JSON file of class ids to names, e.g. {"0": "background", "1": "cat"}.')
    add_digits_flags(data, canvas_size=64)
    data.add_argument(
        "--image_size",
        type=positive_int,
        help=f"Images (and label maps) are resized to this square (default: the canvas size for the digits, "
        f"{DATASET_IMAGE_SIZE} for a data set).",
    )
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument("--architecture", choices=SEGMENTATION_ARCHITECTURES, default="mask2former")
    model.add_argument("--task", choices=SEGMENTATION_TASKS, default="semantic", help="instance: Mask2Former only.")
    add_backbone_flags(
        model,
        model_config_help='JSON for the Mask2Former / UperNet config, e.g. \'{"num_queries": 20, "hidden_dim": 128}\'.',
    )
    model.add_argument(
        "--freeze_backbone_stages",
        type=int,
        default=0,
        help="Freeze the PVT's first N stages (patch and position embeddings and layers); 4 freezes the backbone.",
    )

    training = parser.add_argument_group("training")
    training.add_argument("--output_dir", required=True)
    add_batch_and_learning_rate_flags(
        training,
        learning_rate_help=None,
        backbone_learning_rate=None,
        backbone_learning_rate_help="Of the PVT (default: --learning_rate).",
    )
    training.add_argument("--adam_beta1", type=float, default=0.9)
    training.add_argument("--adam_beta2", type=float, default=0.999)
    training.add_argument("--adam_epsilon", type=float, default=1e-8)
    add_schedule_flags(
        training,
        weight_decay=0.0,
        max_grad_norm=0.0,
        max_grad_norm_help="Gradient clipping; 0 turns it off.",
        num_train_epochs=3,
        max_train_steps_flags=("--max_train_steps",),
        max_train_steps_help="Overrides --num_train_epochs.",
        lr_scheduler_type="polynomial",
        num_warmup_steps=0,
        num_warmup_steps_help=None,
    )
    add_run_flags(training)
    args = parser.parse_args(argv)
    args.checkpointing_steps = parse_checkpointing_steps(args.checkpointing_steps)
    if args.image_size is None:  # the digits at their own size: upscaling 64-pixel canvases only slows training
        args.image_size = args.canvas_size if args.dataset_name is None else DATASET_IMAGE_SIZE
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from pvt_tools.training.segmentation import train_segmenter  # torch: only once the flags are read

    return train_segmenter(args)


def run() -> None:
    """Console entry point: a mistake in the flags or the data ends with its message, not a traceback."""
    run_console_command(main)


if __name__ == "__main__":
    run()
