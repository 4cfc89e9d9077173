# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""The flags of pvt-train (and of the data and model flags pvt-finetune-trainer and pvt-export-onnx share), as
HfArgumentParser dataclasses, with the checks that need no data.

Standard library only (the checks come from pvt_tools.usage), so that `--help` and a mistyped flag answer before
torch and the training stack are imported. data.py and classification.py re-export these names.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from pvt_tools.usage import (
    PVT_VARIANT_NAMES,
    UsageError,
    check_positive,
    check_training_counts,
    check_variant_name,
    parse_checkpointing_steps,
)

DEFAULT_TRAIN_VAL_SPLIT = 0.15
DIGITS_DATASET_NAME = "scikit-learn-digits"
DIGIT_NAMES = [str(digit) for digit in range(10)]


class DataError(ValueError):
    """The training data cannot be used as given; the message says what is wrong and how to fix it."""


@dataclass
class DataArguments:
    """Where the images come from (flag names of Transformers' image-classification examples)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A dataset on the Hugging Face Hub (or a local folder of data files) to train on. Without it "
            "and without --train_dir, the embedded scikit-learn digits are used."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The configuration of --dataset_name."})
    train_dir: str | None = field(
        default=None, metadata={"help": "A folder of training images, one sub-folder per class."}
    )
    validation_dir: str | None = field(default=None, metadata={"help": "A folder of validation images, same layout."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Training data files (a glob of parquet, arrow or webdataset .tar shards), with --streaming."
        },
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Validation data files, same format as --train_file."}
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the data as a stream (datasets' streaming mode: nothing is downloaded whole); needs "
            "--max_train_steps and a validation split."
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "With --streaming: examples shuffled together (0: the source's order, exact resumption)."},
    )
    train_val_split: float = field(
        default=DEFAULT_TRAIN_VAL_SPLIT,
        metadata={"help": "Fraction of train split off for validation if there is no validation split."},
    )
    train_split_name: str = field(default="train", metadata={"help": "The split to train on."})
    validation_split_name: str = field(
        default="validation",
        metadata={
            "help": "The split that guides the run (evaluated every epoch); when the data has none, "
            "--train_val_split of the training split is held out instead."
        },
    )
    test_split_name: str | None = field(
        default="test",
        metadata={
            "help": "The split the final model is scored on (test_* metrics in all_results.json, as Transformers' "
            "examples with --do_predict), when the data has it; 'none' skips it."
        },
    )
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep only this many test examples."})
    image_column_name: str = field(default="image", metadata={"help": "The column holding the images."})
    label_column_name: str = field(default="label", metadata={"help": "The column holding the class indices."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many validation examples."})
    corrupt_images: Literal["error", "skip"] = field(
        default="error",
        metadata={
            "help": "What to do with image files that cannot be read: 'error' stops and names them, 'skip' leaves "
            "them out, names the first few and lists them all in skipped_images.txt in the output folder."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where `datasets` caches downloads and results."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for checking that every image file can be read."}
    )

    def __post_init__(self):
        sources = [
            flag
            for flag, value in (
                ("--dataset_name", self.dataset_name),
                ("--train_dir", self.train_dir or self.validation_dir),
                ("--train_file", self.train_file or self.validation_file),
            )
            if value is not None
        ]
        if len(sources) > 1:
            raise DataError(f"Give one source of data, not {' and '.join(sources)}.")
        if self.validation_file is not None and self.train_file is None:
            raise DataError("--validation_file needs --train_file: there is nothing to train on.")
        if self.train_file is not None and not self.streaming:
            raise DataError("--train_file is read as a stream: add --streaming (and --max_train_steps).")
        if self.shuffle_buffer_size < 0:
            raise DataError(f"--shuffle_buffer_size must be 0 (no shuffling) or more, got {self.shuffle_buffer_size}.")
        if self.validation_dir is not None and self.train_dir is None:
            raise DataError("--validation_dir needs --train_dir: there is nothing to train on.")
        if not 0.0 <= self.train_val_split < 1.0:
            raise DataError(f"--train_val_split must be in [0, 1), got {self.train_val_split}.")
        if self.test_split_name in ("", "none", "None"):
            self.test_split_name = None
        named = [self.train_split_name, self.validation_split_name, self.test_split_name]
        if len({name for name in named if name}) < len([name for name in named if name]):
            hint = (
                f" (to validate on {self.test_split_name!r}, add --test_split_name none)"
                if self.validation_split_name == self.test_split_name
                else ""
            )
            raise DataError(
                f"--train_split_name {self.train_split_name!r}, --validation_split_name {self.validation_split_name!r} "
                f"and --test_split_name {self.test_split_name!r} must name different splits{hint}: a model scored on "
                "the images it trained or was selected on says nothing about new images."
            )
        for flag, limit in (
            ("--max_train_samples", self.max_train_samples),
            ("--max_eval_samples", self.max_eval_samples),
            ("--max_test_samples", self.max_test_samples),
        ):
            if limit is not None and limit < 0:
                raise DataError(f"{flag} must be a number of examples >= 0, got {limit}.")
        for flag, folder in (("--train_dir", self.train_dir), ("--validation_dir", self.validation_dir)):
            if folder is not None:
                check_class_folders(flag, folder)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGE_FOLDER_EXAMPLE = """  {folder}/
    cat/
      0001.jpg
      0002.jpg
    dog/
      0001.jpg
      ..."""


def check_class_folders(flag: str, folder: str) -> None:
    """An image folder must exist and hold one sub-folder per class: checked before anything is loaded."""
    path = Path(folder)
    if not path.is_dir():
        problem = "does not exist" if not path.exists() else "is not a folder"
        raise DataError(f"{flag} {folder} {problem}: give a folder of images with one subfolder per class.")
    entries = [child for child in path.iterdir() if not child.name.startswith(".")]
    classes = [child.name for child in entries if child.is_dir()]
    loose_images = [child.name for child in entries if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or loose_images:
        if loose_images:
            found = f"images outside any class subfolder ({', '.join(sorted(loose_images)[:3])}, ...)"
        else:
            found = f"only the subfolder {classes[0]!r}" if classes else "no subfolders"
        raise DataError(
            f"{flag} {folder} has {found}: image classification needs one subfolder per class (at least two), "
            f"named after the class, with that class's images inside, e.g.\n"
            + IMAGE_FOLDER_EXAMPLE.format(folder=path.as_posix().rstrip("/"))
        )


# DeiT's regularising augmentations pay off when every image is seen many times (DeiT trains 300 epochs); on a short
# run they keep a model from learning at all (measured on the embedded digits, tiny PVT, 60 steps at batch 32,
# learning rate 5e-4: 14% validation accuracy with them, 57% with crops and flips only). So by default runs of at
# least this many epochs get the DeiT recipe and shorter ones the light one; any flag given explicitly wins.
DEIT_AUGMENTATION_MIN_EPOCHS = 100
DEIT_AUGMENTATION = {
    "random_resized_crop_scale": [0.08, 1.0],
    "rand_augment_num_ops": 2,
    "random_erasing_probability": 0.25,
    "mixup": 0.8,
    "cutmix": 1.0,
}
SHORT_RUN_AUGMENTATION = {
    "random_resized_crop_scale": [0.35, 1.0],
    "rand_augment_num_ops": 0,
    "random_erasing_probability": 0.0,
    "mixup": 0.0,
    "cutmix": 0.0,
}
DEFAULT_FLIP_PROBABILITY = 0.5
BY_RUN_LENGTH = f"default: DeiT's {{deit}} for runs of {DEIT_AUGMENTATION_MIN_EPOCHS}+ epochs, else {{short}}"


@dataclass
class AugmentationArguments:
    """The training augmentations. Unset ones follow the run's length: DeiT's recipe (the one the PVT authors trained
    ImageNet with) for runs of at least 100 epochs, crops and flips only for shorter runs (see `for_run`)."""

    random_resized_crop_scale: list[float] | None = field(
        default=None,
        metadata={
            "help": "Area range (min max) of the random resized crop, as a fraction of the image "
            + BY_RUN_LENGTH.format(deit="0.08 1", short="0.35 1").replace("%", "%%")
            + ")."
        },
    )
    random_crop_padding: int = field(
        default=0,
        metadata={
            "help": "Instead of random resized crops: resize to the training size, pad each side by this many pixels "
            "(repeating the edge) and crop back at a random place. Shifts without rescaling, the usual augmentation "
            "of 28-32 pixel images (Fashion-MNIST, CIFAR: 4); 0: off."
        },
    )
    horizontal_flip_probability: float | None = field(
        default=None,
        metadata={
            "help": f"Probability of a horizontal flip (default {DEFAULT_FLIP_PROBABILITY:g}; 0 for the embedded "
            "digits, whose class a flip can change; give 0 for other digits or text)."
        },
    )
    rand_augment_num_ops: int | None = field(
        default=None,
        metadata={
            "help": "RandAugment operations per image, 0: off (" + BY_RUN_LENGTH.format(deit="2", short="0") + ")."
        },
    )
    rand_augment_magnitude: int = field(default=9, metadata={"help": "RandAugment magnitude, 0..10 (DeiT: m9)."})
    random_erasing_probability: float | None = field(
        default=None,
        metadata={"help": "Probability of random erasing (" + BY_RUN_LENGTH.format(deit="0.25", short="0") + ")."},
    )
    mixup: float | None = field(
        default=None,
        metadata={
            "help": "MixUp alpha, 0: off; with --cutmix, one of them per batch ("
            + BY_RUN_LENGTH.format(deit="0.8", short="0")
            + ")."
        },
    )
    cutmix: float | None = field(
        default=None, metadata={"help": "CutMix alpha, 0: off (" + BY_RUN_LENGTH.format(deit="1.0", short="0") + ")."}
    )
    label_smoothing: float = field(default=0.1, metadata={"help": "Label smoothing of the cross-entropy loss."})
    no_augmentation: bool = field(
        default=False,
        metadata={
            "help": "No random augmentation at all: training images are only resized and normalised (e.g. to check "
            "that several processes or accumulation steps give the same result as one large batch)."
        },
    )

    # Set by for_run when the flip probability is the default rather than a flag (the start summary says so).
    flips_by_default: bool = field(default=False, init=False)

    def for_run(self, num_train_epochs: int, flips_change_labels: bool = False) -> "AugmentationArguments":
        """A copy with every unset augmentation filled in for a run of `num_train_epochs` epochs;
        `flips_change_labels` (the embedded digits: a mirrored 2 or 5 is another digit, or none) turns the default
        flip off."""
        if self.no_augmentation and self.horizontal_flip_probability:
            raise ValueError(
                "--no_augmentation turns every augmentation off, but --horizontal_flip_probability asks for one: give "
                "one or the other."
            )
        if self.horizontal_flip_probability is None:
            flips = 0.0 if flips_change_labels or self.no_augmentation else DEFAULT_FLIP_PROBABILITY
            resolved = replace(self, horizontal_flip_probability=flips).for_run(num_train_epochs, flips_change_labels)
            resolved.flips_by_default = True
            return resolved
        if self.no_augmentation:
            random_ones = [
                name
                for name in (*DEIT_AUGMENTATION, "random_crop_padding")
                if getattr(self, name) not in (None, 0, 0.0)
            ]
            if random_ones:
                raise ValueError(
                    f"--no_augmentation turns every augmentation off, but {', '.join('--' + n for n in random_ones)} "
                    "asks for one: give one or the other."
                )
            off = {**SHORT_RUN_AUGMENTATION, "random_resized_crop_scale": [1.0, 1.0]}
            return replace(self, horizontal_flip_probability=0.0, **off)
        defaults = DEIT_AUGMENTATION if num_train_epochs >= DEIT_AUGMENTATION_MIN_EPOCHS else SHORT_RUN_AUGMENTATION
        return replace(self, **{name: value for name, value in defaults.items() if getattr(self, name) is None})

    def describe(self) -> str:
        """The resolved augmentations in a few words, for the start of a run."""
        if self.no_augmentation:
            return "none (--no_augmentation: resize and normalise only)" + (
                f", label smoothing {self.label_smoothing:g}" if self.label_smoothing else ""
            )
        if self.random_crop_padding:
            parts = [f"random shifts (pad {self.random_crop_padding} and crop)"]
        else:
            low, high = self.random_resized_crop_scale
            parts = [f"random resized crops (scale {low:g}-{high:g})"]
        if self.horizontal_flip_probability > 0:
            turn_off = ", the default: --horizontal_flip_probability 0 if a flip changes the class"
            parts.append(f"flips ({self.horizontal_flip_probability:g}{turn_off if self.flips_by_default else ''})")
        elif self.flips_by_default:
            parts.append("no flips (they can change a digit's class; --horizontal_flip_probability 0.5 turns them on)")
        if self.rand_augment_num_ops:
            parts.append(f"RandAugment ({self.rand_augment_num_ops} ops, m{self.rand_augment_magnitude})")
        if self.random_erasing_probability:
            parts.append(f"random erasing ({self.random_erasing_probability:g})")
        if self.mixup:
            parts.append(f"MixUp ({self.mixup:g})")
        if self.cutmix:
            parts.append(f"CutMix ({self.cutmix:g})")
        if self.label_smoothing:
            parts.append(f"label smoothing {self.label_smoothing:g}")
        return ", ".join(parts)


@dataclass
class ModelArguments:
    """Which network: fine-tune a saved one, or train one of the paper's variants (optionally smaller) from scratch."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A folder or Hub repo holding a PVT classifier to fine-tune (ours or Transformers' Pvt)."},
    )
    variant: str = field(
        default="pvt-tiny",
        metadata={"help": f"Train this paper variant from scratch: {', '.join(PVT_VARIANT_NAMES)}."},
    )
    hidden_sizes: list[int] | None = field(default=None, metadata={"help": "Override: channels of the 4 stages."})
    depths: list[int] | None = field(default=None, metadata={"help": "Override: layers of the 4 stages."})
    num_attention_heads: list[int] | None = field(default=None, metadata={"help": "Override: heads per stage."})
    mlp_ratios: list[int] | None = field(default=None, metadata={"help": "Override: MLP ratio per stage."})
    sequence_reduction_ratios: list[int] | None = field(
        default=None,
        metadata={
            "help": "Override: spatial-reduction ratio per stage (last must be 1). Default from scratch: the one "
            "that keeps keys and values on the paper's 7x7 grid (8 4 2 1 at 224 px, 1 1 1 1 at 32 px)."
        },
    )
    patch_sizes: list[int] | None = field(
        default=None,
        metadata={
            "help": "Override: patch size (= stride) of each stage's patch embedding (the paper's 4 2 2 2; "
            "2 2 2 2 keeps twice the detail of small images, at about 3 times the compute)."
        },
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Training and evaluation resolution (default 224, or the model's own)."}
    )
    drop_path_rate: float | None = field(default=None, metadata={"help": "Stochastic depth (default: per variant)."})
    eval_crop_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Evaluation (and the export's image processor): resize the shorter side to image_size / ratio, "
            "then centre-crop image_size. Default: the scale training saw: the authors' 0.875 after random resized "
            "crops (which zoom in), 1.0 (the whole image) after --random_crop_padding or --no_augmentation."
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Fine-tune a checkpoint whose classifier has a different number of classes."}
    )

    def __post_init__(self):
        check_variant_name(self.variant)
        check_positive(image_size=self.image_size)
        if self.eval_crop_ratio is not None and not 0 < self.eval_crop_ratio <= 1:
            raise UsageError(f"--eval_crop_ratio must be in (0, 1], got {self.eval_crop_ratio}.")


@dataclass
class OptimizationArguments:
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate. Default from scratch: DeiT's 5e-4 x total batch size / 512, but at least "
            "5e-4 (the rule alone gives 3e-5 at batch 32, too low for short runs to learn); fine-tuning "
            "(--model_name_or_path): 5e-5, as Transformers' examples."
        },
    )
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay of linear and conv weights."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Any name of transformers.get_scheduler."})
    num_warmup_steps: int | None = field(
        default=None,
        metadata={
            "help": "Warm-up optimizer steps (default: min(5 epochs, 10%% of the steps), DeiT's 5 epochs "
            "shortened for short runs)."
        },
    )
    num_warmup_epochs: float | None = field(
        default=None, metadata={"help": "Warm-up length in epochs, instead of --num_warmup_steps."}
    )
    max_grad_norm: float | None = field(default=None, metadata={"help": "Gradient clipping (default: per variant)."})

    def __post_init__(self):
        if self.num_warmup_steps is not None and self.num_warmup_epochs is not None:
            raise UsageError("Give --num_warmup_steps or --num_warmup_epochs, not both.")
        if self.learning_rate is not None and self.learning_rate < 0:
            raise UsageError(f"--learning_rate must be 0 or more, got {self.learning_rate}.")


@dataclass
class RunArguments:
    output_dir: str = field(
        default="outputs/pvt-image-classification",
        metadata={
            "help": "The trained model (from_pretrained(output_dir) loads it), step_N / epoch_N checkpoints, "
            "all_results.json and the training curves go here."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start a new run in an output_dir that holds an earlier run (its checkpoints are removed)."},
    )
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per process."})
    num_train_epochs: int = field(default=3, metadata={"help": "Epochs to train (DeiT on ImageNet: 300)."})
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps; overrides the epochs.", "aliases": ["--max_steps"]}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    seed: int = field(default=42, metadata={"help": "Seed of the initialisation, data order and augmentations."})
    checkpointing_steps: str | None = field(
        default=None, metadata={"help": "Save the training state every N optimizer steps, or 'epoch'."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder to continue from, or 'latest' (in output_dir)."}
    )
    with_tracking: bool = field(default=False, metadata={"help": "Log to experiment trackers (--report_to)."})
    report_to: str = field(
        default="all", metadata={"help": "Accelerate tracker(s): tensorboard, wandb, comet_ml, ... or 'all'."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the export to --hub_model_id at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "The Hub repo, 'org/name', to push to."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Worker processes per data loader."})

    def __post_init__(self):
        check_training_counts(self)
        parse_checkpointing_steps(self.checkpointing_steps)
