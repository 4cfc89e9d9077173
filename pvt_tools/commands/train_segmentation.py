# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-train-segmentation`: fine-tune Transformers' Mask2Former or UperNet with a PVT backbone.

pvt-train-segmentation --output_dir out/mask2former-digits        # Mask2Former, semantic, embedded digits
pvt-train-segmentation --architecture upernet --pvt_checkpoint path/to/pvt-small --dataset_name scene_parse_150
pvt-train-segmentation --task instance --output_dir out/instances # Mask2Former, one mask per object
accelerate launch -m pvt_tools.commands.train_segmentation ...    # several processes or machines
"""

import argparse
import json
import sys

from configuration_pvt import PVT_VARIANTS
from pvt_tools.training.checkpoints import CheckpointError, NonFiniteLossError
from pvt_tools.training.loop import parse_checkpointing_steps
from pvt_tools.training.segmentation import ARCHITECTURES, train_segmenter
from pvt_tools.training.segmentation_data import TASKS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        help="Hub name or local folder of a segmentation data set with 'image' and 'annotation' (default: digits).",
    )
    data.add_argument("--dataset_config_name")
    data.add_argument("--train_val_split", type=float, default=0.15, help="Used when there is no validation split.")
    data.add_argument(
        "--reduce_labels",
        action="store_true",
        help="Class 0 of the annotations means 'unlabelled': ignore it and number the other classes from 0.",
    )
    data.add_argument("--id2label", help='JSON file of class ids to names, e.g. {"0": "background", "1": "cat"}.')
    data.add_argument("--num_train_images", type=int, default=2000, help="Digits canvases for training.")
    data.add_argument("--num_validation_images", type=int, default=200, help="Digits canvases for validation.")
    data.add_argument("--canvas_size", type=int, default=64, help="Side of the digits canvases, in pixels.")
    data.add_argument("--image_size", type=int, default=512, help="Images (and label maps) are resized to this square.")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument("--architecture", choices=ARCHITECTURES, default="mask2former")
    model.add_argument("--task", choices=TASKS, default="semantic", help="instance: Mask2Former only.")
    model.add_argument("--pvt_checkpoint", help="PVT folder or Hub repo id whose weights start the backbone.")
    model.add_argument(
        "--pvt_variant",
        choices=list(PVT_VARIANTS),
        default="pvt-tiny",
        help="The randomly initialised backbone, when there is no --pvt_checkpoint.",
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
        help='JSON for the Mask2Former / UperNet config, e.g. \'{"num_queries": 20, "hidden_dim": 128}\'.',
    )
    model.add_argument(
        "--freeze_backbone_stages",
        type=int,
        default=0,
        help="Freeze the PVT's first N stages (patch and position embeddings and layers); 4 freezes the backbone.",
    )

    training = parser.add_argument_group("training")
    training.add_argument("--output_dir", required=True)
    training.add_argument("--per_device_train_batch_size", type=int, default=8)
    training.add_argument("--per_device_eval_batch_size", type=int, default=8)
    training.add_argument("--learning_rate", type=float, default=1e-4)
    training.add_argument("--backbone_learning_rate", type=float, help="Of the PVT (default: --learning_rate).")
    training.add_argument("--adam_beta1", type=float, default=0.9)
    training.add_argument("--adam_beta2", type=float, default=0.999)
    training.add_argument("--adam_epsilon", type=float, default=1e-8)
    training.add_argument("--weight_decay", type=float, default=0.0)
    training.add_argument("--max_grad_norm", type=float, default=0.0, help="Gradient clipping; 0 turns it off.")
    training.add_argument("--num_train_epochs", type=int, default=3)
    training.add_argument("--max_train_steps", type=int, help="Overrides --num_train_epochs.")
    training.add_argument("--gradient_accumulation_steps", type=int, default=1)
    training.add_argument("--lr_scheduler_type", default="polynomial")
    training.add_argument("--num_warmup_steps", type=int, default=0)
    training.add_argument("--seed", type=int, default=42)
    training.add_argument("--checkpointing_steps", help="Save every N optimizer steps, or 'epoch'.")
    training.add_argument("--resume_from_checkpoint", help="A step_N / epoch_N folder, or 'latest' in --output_dir.")
    training.add_argument("--with_tracking", action="store_true", help="Log to the trackers of --report_to.")
    training.add_argument("--report_to", default="all")
    args = parser.parse_args(argv)
    args.checkpointing_steps = parse_checkpointing_steps(args.checkpointing_steps)
    return args


def main(argv: list[str] | None = None) -> dict:
    return train_segmenter(parse_args(argv))


def run() -> None:
    """Console entry point: a mistake in the flags or the data ends with its message, not a traceback."""
    try:
        main()
    except (CheckpointError, NonFiniteLossError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    run()
