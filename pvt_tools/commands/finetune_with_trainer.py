# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-finetune-trainer`: fine-tune (or train) a PVT image classifier with `transformers.Trainer`.

    pvt-finetune-trainer --model_name_or_path outputs/demo --train_dir photos/train --ignore_mismatched_sizes \\
        --output_dir outputs/trainer --num_train_epochs 10 --eval_strategy epoch
"""

from transformers import HfArgumentParser, TrainingArguments

from pvt_tools.training.classification import ModelArguments
from pvt_tools.training.data import DataArguments
from pvt_tools.training.trainer import finetune


def parse_args(argv: list[str] | None = None) -> tuple[DataArguments, ModelArguments, TrainingArguments]:
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainingArguments), description=__doc__.split("\n\n")[0])
    parser.set_defaults(remove_unused_columns=False)  # keep the image column for the transform
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    _, metrics = finetune(*parse_args(argv))
    return metrics


def run() -> None:
    """Console entry point."""
    main()


if __name__ == "__main__":
    run()
