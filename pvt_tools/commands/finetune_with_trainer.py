# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-finetune-trainer`: fine-tune (or train) a PVT image classifier with `transformers.Trainer`.

    pvt-finetune-trainer --model_name_or_path outputs/demo --train_dir photos/train --ignore_mismatched_sizes \\
        --output_dir outputs/trainer --num_train_epochs 10 --eval_strategy epoch
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from transformers.hf_argparser import HfArgumentParser

from pvt_tools.training.arguments import DataArguments, ModelArguments
from pvt_tools.usage import run_console_command

if TYPE_CHECKING:
    from transformers import TrainingArguments

TRAINER_FLAGS_SUMMARY = """Trainer's flags (transformers.TrainingArguments) are passed through; the ones used most:
  --output_dir DIR                 the trained model (from_pretrained(DIR) loads it), checkpoint-N folders, results
  --num_train_epochs N, --max_train_steps N (or --max_steps N)
  --per_device_train_batch_size N, --per_device_eval_batch_size N, --gradient_accumulation_steps N
  --learning_rate LR               default 5e-5 when fine-tuning; from scratch min. 5e-4 (see pvt-train --help)
  --warmup_steps N                 default min(5 epochs, 10% of the steps)
  --lr_scheduler_type NAME, --weight_decay W, --label_smoothing_factor F, --seed N
  --eval_strategy epoch|steps|no
  --save_strategy epoch|steps      checkpoint-N folders (with the optimizer state); default: none, as pvt-train
  --resume_from_checkpoint PATH|latest, --overwrite_output_dir
  --report_to none|tensorboard|wandb|..., --bf16, --use_cpu, --push_to_hub, --hub_model_id ORG/NAME
All of them: --help_trainer (or the TrainingArguments page of the Transformers documentation)."""


@dataclass
class OutputFolderArguments:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start a new run in an output_dir that holds an earlier run (its checkpoints are removed)."},
    )


# Our name of the step flag, accepted here too and given to Trainer under its own name.
STEP_FLAG_ALIASES = {"--max_train_steps": "--max_steps"}


def translate_aliases(argv: list[str]) -> list[str]:
    """--max_train_steps N -> --max_steps N (also in the --flag=value form)."""
    translated = []
    for argument in argv:
        name, separator, value = argument.partition("=")
        translated.append(STEP_FLAG_ALIASES.get(name, name) + separator + value)
    return translated


def given_flags(argv: list[str]) -> set[str]:
    """The flags on the command line, without their values."""
    return {argument.partition("=")[0] for argument in argv if argument.startswith("--")}


def trainer_parser() -> HfArgumentParser:
    """Trainer's own flags (TrainingArguments imports torch: built only when they are read)."""
    from transformers import TrainingArguments

    parser = HfArgumentParser(TrainingArguments, prog="pvt-finetune-trainer", allow_abbrev=False)
    parser.set_defaults(remove_unused_columns=False)  # keep the image column for the transform
    return parser


def parse_args(
    argv: list[str] | None = None,
) -> tuple[DataArguments, ModelArguments, TrainingArguments, frozenset[str], bool]:
    """Our data and model flags first; everything else goes to TrainingArguments (which rejects unknown flags).
    Then the Trainer flags given, so that finetune() adapts only the defaults left alone, and
    --overwrite_output_dir."""
    argv = translate_aliases(list(sys.argv[1:] if argv is None else argv))
    if "--help_trainer" in argv:
        trainer_parser().print_help()
        sys.exit(0)
    parser = HfArgumentParser(
        (DataArguments, ModelArguments, OutputFolderArguments),
        prog="pvt-finetune-trainer",
        description=__doc__.split("\n\n")[0],
        epilog=TRAINER_FLAGS_SUMMARY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    data_args, model_args, output_args, remaining = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    training_args, unknown = trainer_parser().parse_args_into_dataclasses(args=remaining, return_remaining_strings=True)
    if unknown:
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} (neither ours, listed by --help, nor Trainer's, listed by "
            "--help_trainer)"
        )
    return data_args, model_args, training_args, frozenset(given_flags(remaining)), output_args.overwrite_output_dir


def finetune(*arguments, **options):
    """pvt_tools.training.trainer.finetune, imported when called (torch and Trainer)."""
    from pvt_tools.training.trainer import finetune

    return finetune(*arguments, **options)


def main(argv: list[str] | None = None) -> dict[str, float]:
    _, metrics = finetune(*parse_args(argv))
    return metrics


def run() -> None:
    """Console entry point: a mistake in the flags or the data ends with its message, not a traceback."""
    run_console_command(main)


if __name__ == "__main__":
    run()
