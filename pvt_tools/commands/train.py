# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Train or fine-tune a PVT image classifier with Accelerate on any `datasets` image dataset.

    pvt-train                                                  # embedded digits, pvt-tiny from scratch
    pvt-train --train_dir photos/train --validation_dir photos/val --variant pvt-small
    pvt-train --dataset_name cifar10 --image_column_name img --model_name_or_path my/pvt \\
        --ignore_mismatched_sizes --image_size 224 --checkpointing_steps epoch
    pvt-train --streaming --train_file 'shards/train-*.parquet' --validation_file 'shards/val-*.parquet' \
        --max_train_steps 10000 --shuffle_buffer_size 1000      # a stream: nothing is loaded whole
    accelerate launch --num_processes 8 scripts/train.py ...  # GPUs, machines, mixed precision, FSDP

The flags are those of Transformers' run_image_classification_no_trainer.py plus the DeiT recipe's
(--mixup, --cutmix, --label_smoothing, --rand_augment_magnitude, ...); `--help` lists them all.
Writes to --output_dir: the Hub-ready model itself (`from_pretrained(output_dir)` loads it), step_N / epoch_N
checkpoints, all_results.json, training_history.json and training_curves.png. The work is done by
pvt_tools.training.classification.
"""

from transformers.hf_argparser import HfArgumentParser

from pvt_tools.training.arguments import (
    AugmentationArguments,
    DataArguments,
    ModelArguments,
    OptimizationArguments,
    RunArguments,
)
from pvt_tools.usage import run_console_command

ARGUMENT_GROUPS = (DataArguments, ModelArguments, OptimizationArguments, AugmentationArguments, RunArguments)


def parse_args(argv: list[str] | None = None) -> tuple:
    parser = HfArgumentParser(ARGUMENT_GROUPS, description=__doc__.split("\n\n")[0])
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> dict:
    arguments = parse_args(argv)
    from pvt_tools.training.classification import train_image_classifier  # torch: only once the flags are read

    return train_image_classifier(*arguments)


def run() -> None:
    """Console entry point: a mistake in the flags or the data ends with its message, not a traceback."""
    run_console_command(main)


if __name__ == "__main__":
    run()
