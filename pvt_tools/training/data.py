# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Image-classification data for training PVT: loading, checks, RGB conversion and the DeiT augmentations.

Shared by train.py (Accelerate), finetune_with_trainer.py (Trainer) and demo.py:

    dataset = load_image_classification_dataset(DataArguments())    # DatasetDict "train" / "validation", checked
    names = class_names(dataset["train"], "label")
    train_transform = build_train_transform(32, mean, std, AugmentationArguments())
    train_dataset = ImageClassificationDataset(dataset["train"], train_transform, "image", "label", seed=42)
    loader = DataLoader(train_dataset, batch_size=64, collate_fn=collate_image_batch)

Sources: a Hub dataset (`dataset_name`, optionally a local folder of data files), image folders (`train_dir` /
`validation_dir`, class = sub-folder name), or, with neither, scikit-learn's bundled handwritten digits (1,797 real
8x8 scans, no download). Every problem with the data stops with a `DataError` that names it and the fix, before any
training: a missing split or column, labels out of range, an empty split, unreadable image files (or those are
skipped and counted, `corrupt_images="skip"`).
"""

import functools
import io
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import PIL.Image
import pyarrow
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from torchvision.transforms import v2

from pvt_tools.training.arguments import (  # noqa: F401  (re-exported: the flags are defined there)
    DEFAULT_TRAIN_VAL_SPLIT,
    DIGIT_NAMES,
    DIGITS_DATASET_NAME,
    SHORT_RUN_AUGMENTATION,
    AugmentationArguments,
    DataArguments,
    DataError,
)

logger = logging.getLogger(__name__)

# Fixed, so that the validation split and sample subsets stay the same whatever the training --seed.
SPLIT_SEED = 1234
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def load_digits_dataset() -> DatasetDict:
    """scikit-learn's bundled handwritten digits as RGB images: dark ink on white, 8x8 pixels, labels "0".."9"."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    ink = np.round(digits.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8): 0..16 ink levels -> 0..255
    images = [PIL.Image.fromarray(np.repeat(255 - scan[:, :, None], 3, axis=2)) for scan in ink]
    features = datasets.Features({"image": datasets.Image(), "label": ClassLabel(names=DIGIT_NAMES)})
    train = Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)
    return DatasetDict({"train": train})


def split_off_validation(train: Dataset, fraction: float, label_column: str) -> DatasetDict:
    """`fraction` of `train` held out for validation: seeded (SPLIT_SEED), stratified by class when the labels are
    a ClassLabel."""
    stratify = isinstance(train.features[label_column], ClassLabel)
    parts = train.train_test_split(
        test_size=fraction, seed=SPLIT_SEED, stratify_by_column=label_column if stratify else None
    )
    return DatasetDict({"train": parts["train"], "validation": parts["test"]})


@functools.cache  # a few seconds (the stratified split), the same every time
def digits_split_indices() -> dict[str, tuple[int, ...]]:
    """Which of scikit-learn's digit scans are training and which validation digits. The classification default
    holds these out (--train_val_split 0.15), and the detection and segmentation canvases draw their digits from the
    same parts, so a backbone pretrained on the digits has seen none of their validation digits."""
    from sklearn.datasets import load_digits

    labels = load_digits().target.tolist()
    features = datasets.Features({"index": datasets.Value("int64"), "label": ClassLabel(names=DIGIT_NAMES)})
    indexed = Dataset.from_dict({"index": list(range(len(labels))), "label": labels}, features=features)
    split = split_off_validation(indexed, DEFAULT_TRAIN_VAL_SPLIT, "label")  # the same call as the classifier's
    return {name: tuple(part[:]["index"]) for name, part in split.items()}  # [:]: one read, not a lazy column


def load_named_dataset(args: DataArguments) -> DatasetDict:
    """--dataset_name: a local folder of data files, or a Hub data set; a name that is neither, or files that cannot
    be read, get an error that names them and the fix (not a Hub traceback)."""
    name = args.dataset_name
    try:
        return datasets.load_dataset(name, args.dataset_config_name, cache_dir=args.cache_dir)
    except (
        datasets.exceptions.DatasetGenerationError,
        datasets.exceptions.DataFilesNotFoundError,
        pyarrow.ArrowException,
    ) as error:
        cause = error.__cause__ or error
        raise DataError(
            f"--dataset_name {name}: its data files cannot be read ({type(cause).__name__}: {cause}). A file may be "
            "truncated or not a data file: write the folder again (for Fashion-MNIST: pvt-prepare-fashion-mnist "
            "--overwrite_output_dir)."
        ) from error
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        if Path(name).exists():
            raise
        offline = huggingface_hub.constants.is_offline_mode()
        hub = "the Hub cannot be asked (HF_HUB_OFFLINE is set)" if offline else "the Hub has no such data set"
        raise DataError(
            f"--dataset_name {name}: there is no folder {name} here, and {hub}. Give a folder of data files (for "
            f"Fashion-MNIST: apt-get install dataset-fashion-mnist, then pvt-prepare-fashion-mnist --output_dir "
            f"{name}) or the name of a Hub data set (org/name)."
        ) from error


def load_raw_dataset(args: DataArguments) -> DatasetDict:
    """The splits as the source has them: a Hub dataset, image folders, or the embedded digits."""
    if args.dataset_name is not None:
        dataset = load_named_dataset(args)
    elif args.train_dir is not None:
        data_files = {"train": os.path.join(args.train_dir, "**")}
        if args.validation_dir is not None:
            data_files["validation"] = os.path.join(args.validation_dir, "**")
        dataset = datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=args.cache_dir)
    else:
        dataset = load_digits_dataset()
    if not isinstance(dataset, DatasetDict):
        raise DataError(f"Expected a dataset with named splits, got {type(dataset).__name__}.")
    return dataset


def dataset_label(args: DataArguments) -> str:
    """How the data is named in a model card."""
    if args.dataset_name is not None:
        return args.dataset_name
    if args.train_file is not None:
        return Path(args.train_file).suffix.lstrip(".") or "files"
    return "imagefolder" if args.train_dir is not None else DIGITS_DATASET_NAME


def check_columns(dataset: DatasetDict, image_column: str, label_column: str) -> None:
    """Every split must have an image column holding images and a label column."""
    for split_name, split in dataset.items():
        missing = [name for name in (image_column, label_column) if name not in split.column_names]
        if missing:
            raise DataError(
                f"The {split_name!r} split has no column {' or '.join(map(repr, missing))}; its columns are "
                f"{split.column_names}. Name the right ones with --image_column_name / --label_column_name."
            )
        if not isinstance(split.features[image_column], datasets.Image):
            raise DataError(
                f"Column {image_column!r} of the {split_name!r} split holds {split.features[image_column]}, not "
                f"images; columns: {split.column_names}. Name the image column with --image_column_name."
            )


def class_names(split: Dataset, label_column: str) -> list[str]:
    """The class names: a ClassLabel's names, or "0".."N-1" for integer labels."""
    feature = split.features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        labels = label_array(split, label_column)
        return [str(index) for index in range(int(labels.max()) + 1 if len(labels) else 0)]
    raise DataError(
        f"Column {label_column!r} holds {feature}; labels must be class indices (ClassLabel or integers). "
        f"Encode string labels first, e.g. dataset.class_encode_column({label_column!r})."
    )


def label_array(split: Dataset, label_column: str) -> np.ndarray:
    return np.asarray(split.with_format("numpy", columns=[label_column])[label_column], dtype=np.int64)


def check_labels(split: Dataset, split_name: str, label_column: str, names: list[str]) -> None:
    """Every label must index one of the classes (-1, "no label" in many Hub datasets, cannot train)."""
    labels = label_array(split, label_column)
    bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
    if bad.size:
        first = int(bad[0])
        raise DataError(
            f"{bad.size} label(s) of the {split_name!r} split are outside 0..{len(names) - 1} (the {len(names)} "
            f"classes {names[:10]}{'...' if len(names) > 10 else ''}); e.g. example {first} has label "
            f"{int(labels[first])}. Unlabelled examples (-1) cannot be trained or evaluated on: filter them out "
            f"(dataset.filter) or use a labelled split, and check --label_column_name."
        )


def check_not_empty(split: Dataset, split_name: str) -> None:
    if len(split) == 0:
        raise DataError(
            f"The {split_name!r} split is empty: there is nothing to "
            f"{'train' if split_name == 'train' else 'evaluate'} on. Check the dataset or folder, "
            f"--max_{ {'train': 'train', 'test': 'test'}.get(split_name, 'eval') }_samples and --train_val_split."
        )


def image_problem(image: dict) -> str:
    """Empty if the stored image (path or bytes) decodes, else why not."""
    try:
        source = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image["path"]
        with PIL.Image.open(source) as opened:
            opened.load()
    except Exception as error:  # PIL raises many kinds for broken files
        return f"{type(error).__name__}: {error}"
    return ""


def image_problems_batch(images: list[dict]) -> dict[str, list[str]]:
    return {"image_problem": [image_problem(image) for image in images]}


def image_source(image: dict, index: int) -> str:
    return image.get("path") or f"example {index} (embedded bytes)"


def drop_unreadable_images(
    split: Dataset, split_name: str, image_column: str, policy: str, num_proc: int | None = None
) -> tuple[Dataset, list[str]]:
    """Decode every image once; with policy "error" stop naming the unreadable files, with "skip" leave them out.
    Returns the split and the images left out, each as "file (why)". (`datasets` caches the check for file-based
    datasets.)"""
    stored = split.cast_column(image_column, datasets.Image(decode=False))
    problems = stored.map(
        image_problems_batch,
        input_columns=[image_column],
        batched=True,
        remove_columns=stored.column_names,
        num_proc=num_proc,
        desc=f"Checking {split_name} images",
    )["image_problem"]
    bad = [index for index, problem in enumerate(problems) if problem]
    if not bad:
        return split, []
    if policy == "skip":
        described = [f"{image_source(stored[index][image_column], index)} ({problems[index]})" for index in bad]
        bad_set = set(bad)
        return split.select([index for index in range(len(split)) if index not in bad_set]), described
    examples = [f"{image_source(stored[index][image_column], index)} ({problems[index]})" for index in bad[:3]]
    if policy == "error":
        raise DataError(
            f"{len(bad)} image(s) of the {split_name!r} split cannot be read: {'; '.join(examples)}"
            f"{' ...' if len(bad) > 3 else ''}. Fix or remove them, or pass --corrupt_images skip to leave them "
            "out (they are listed in skipped_images.txt in the output folder)."
        )
    raise DataError(f"--corrupt_images must be 'error' or 'skip', got {policy!r}.")


def select_splits(dataset: DatasetDict, args: DataArguments) -> DatasetDict:
    """The source's splits under the names the training code uses: "train", "validation" (the source's, or held
    out of train) and "test" when the source has one (--train_split_name, --validation_split_name,
    --test_split_name)."""
    if args.train_split_name not in dataset:
        raise DataError(
            f"The dataset has no {args.train_split_name!r} split to train on (its splits: {list(dataset)}): name one "
            "with --train_split_name."
        )
    if args.test_split_name is not None and args.test_split_name not in dataset and args.test_split_name != "test":
        raise DataError(
            f"--test_split_name {args.test_split_name!r} is not a split of the dataset (its splits: {list(dataset)})."
        )
    train = dataset[args.train_split_name]
    if args.validation_split_name in dataset:
        selected = {"train": train, "validation": dataset[args.validation_split_name]}
    else:
        check_not_empty(train, "train")
        if args.train_val_split <= 0:
            raise DataError(
                f"The dataset has no {args.validation_split_name!r} split (its splits: {list(dataset)}) and "
                "--train_val_split is 0: give a validation split (--validation_dir, --validation_split_name) or a "
                "fraction of train to split off."
            )
        try:
            selected = dict(split_off_validation(train, args.train_val_split, args.label_column_name))
        except ValueError as error:
            raise DataError(
                f"Cannot split {args.train_val_split:.0%} of the {len(train)} training examples off for "
                f"validation ({error}). Give more data, a validation split, or another --train_val_split."
            ) from error
    if args.test_split_name in dataset:
        test = dataset[args.test_split_name]
        if len(test) and (label_array(test, args.label_column_name) < 0).all():
            logger.warning(
                f"The {args.test_split_name!r} split has no labels (all -1, as in many Hub data sets' test splits): it "
                "is not scored. Pass --test_split_name none to say so, or name a labelled split."
            )
        else:
            selected["test"] = test
    return DatasetDict(selected)


def load_image_classification_dataset(args: DataArguments) -> tuple[DatasetDict, dict[str, list[str]]]:
    """The checked "train" and "validation" splits (and "test" when the data has one), and the unreadable images
    skipped per split ("file (why)")."""
    dataset = load_raw_dataset(args)
    check_columns(dataset, args.image_column_name, args.label_column_name)
    dataset = select_splits(dataset, args)
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples, "test": args.max_test_samples}
    for split_name in dataset:
        if limits[split_name] is not None:
            split = dataset[split_name]
            dataset[split_name] = split.shuffle(seed=SPLIT_SEED).select(range(min(limits[split_name], len(split))))
    skipped = {}
    for split_name in dataset:
        check_not_empty(dataset[split_name], split_name)
        dataset[split_name], skipped[split_name] = drop_unreadable_images(
            dataset[split_name],
            split_name,
            args.image_column_name,
            args.corrupt_images,
            args.preprocessing_num_workers,
        )
        check_not_empty(dataset[split_name], split_name)
    names = class_names(dataset["train"], args.label_column_name)
    if not isinstance(dataset["train"].features[args.label_column_name], ClassLabel):
        names = max(names, class_names(dataset["validation"], args.label_column_name), key=len)
    for split_name in dataset:
        check_labels(dataset[split_name], split_name, args.label_column_name, names)
    return dataset, skipped


SKIPPED_IMAGES_FILE = "skipped_images.txt"
SKIPPED_SHOWN = 3


def report_skipped_images(skipped: dict[str, list[str]], output_dir: str | os.PathLike) -> str | None:
    """Write every skipped image to output_dir/skipped_images.txt (one "split: file (why)" a line) and return a
    message naming the first few, or None when nothing was skipped."""
    lines = [f"{split}: {described}" for split, described_list in skipped.items() for described in described_list]
    if not lines:
        return None
    path = Path(output_dir) / SKIPPED_IMAGES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.incomplete")
    partial.write_text("\n".join(lines) + "\n")
    os.replace(partial, path)
    shown = "; ".join(lines[:SKIPPED_SHOWN]) + (
        f"; ... ({len(lines) - SKIPPED_SHOWN} more)" if len(lines) > SKIPPED_SHOWN else ""
    )
    return f"Left out {len(lines)} unreadable image(s) (--corrupt_images skip): {shown}. All of them: {path}"


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any PIL image as 8-bit RGB: 16-bit greys scaled (not clipped) to 8 bits, transparency composited onto
    white (as Transformers' image processors do), grayscale, palette and CMYK converted by PIL."""
    if image.mode in SIXTEEN_BIT_MODES:
        # PIL's own conversion clips 16-bit values at 255; scale 0..65535 to 0..255 instead.
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        image = PIL.Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = PIL.Image.fromarray(np.clip(np.round(np.asarray(image)), 0, 255).astype(np.uint8))
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def build_train_transform(
    image_size: int, mean: list[float], std: list[float], augmentation: AugmentationArguments
) -> v2.Compose:
    """DeiT's per-image training transform: random resized crop, flip, RandAugment, normalise, random erasing.
    MixUp / CutMix act on whole batches: see `build_batch_mixing`. Unset augmentations must be filled in first
    (`AugmentationArguments.for_run`)."""
    unset = [name for name in SHORT_RUN_AUGMENTATION if getattr(augmentation, name) is None]
    if unset:
        raise ValueError(f"Augmentations {unset} are unset: call AugmentationArguments.for_run(epochs) first.")
    if augmentation.no_augmentation:
        return v2.Compose(
            [
                v2.ToImage(),
                v2.Resize((image_size, image_size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean, std),
            ]
        )
    if augmentation.random_crop_padding > 0:
        crop = [
            v2.Resize((image_size, image_size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.RandomCrop(image_size, padding=augmentation.random_crop_padding, padding_mode="edge"),
        ]
    else:
        crop = [
            v2.RandomResizedCrop(
                image_size,
                scale=tuple(augmentation.random_resized_crop_scale),
                interpolation=v2.InterpolationMode.BICUBIC,
                antialias=True,
            )
        ]
    steps: list[v2.Transform] = [v2.ToImage(), *crop]
    if augmentation.horizontal_flip_probability > 0:
        steps.append(v2.RandomHorizontalFlip(augmentation.horizontal_flip_probability))
    if augmentation.rand_augment_num_ops > 0:
        # timm's "rand-m9": magnitude 9 on a 0..10 scale, i.e. 11 bins; empty areas filled with the mean colour.
        steps.append(
            v2.RandAugment(
                num_ops=augmentation.rand_augment_num_ops,
                magnitude=augmentation.rand_augment_magnitude,
                num_magnitude_bins=11,
                interpolation=v2.InterpolationMode.BILINEAR,
                fill=[round(255 * channel) for channel in mean],
            )
        )
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if augmentation.random_erasing_probability > 0:
        steps.append(v2.RandomErasing(augmentation.random_erasing_probability, value="random"))
    return v2.Compose(steps)


def build_eval_transform(image_processor) -> Callable[[PIL.Image.Image], torch.Tensor]:
    """The exported image processor itself, so that validation sees exactly what users of the export will."""

    def transform(image: PIL.Image.Image) -> torch.Tensor:
        return image_processor(image, return_tensors="pt")["pixel_values"][0]

    return transform


def build_batch_mixing(mixup_alpha: float, cutmix_alpha: float, num_labels: int) -> v2.Transform | None:
    """MixUp or CutMix (one of them, chosen per batch as in DeiT) turning (images, labels) into
    (mixed images, soft labels); None when both are off."""
    mixers = []
    if mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_labels))
    if cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_labels))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


@contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Inside the block the global CPU generator starts from `seed`; after it, it is as before. (What
    `torch.random.fork_rng(devices=[])` + `torch.manual_seed` do, without manual_seed's cost of seeding every
    accelerator backend, which dominates on small images.)"""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """An independent seed per (run seed, epoch, example)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ImageClassificationDataset(torch.utils.data.Dataset):
    """A `datasets` split as {"pixel_values", "labels"} examples for a DataLoader.

    With a `seed`, each example's random transform is seeded from (seed, epoch, index) and leaves the global RNG
    untouched: augmentations then do not depend on data-loader workers, prefetching, the number of processes or
    where a run was resumed. Call `set_epoch` at the start of every epoch.
    """

    def __init__(self, split: Dataset, transform, image_column: str, label_column: str, seed: int | None = None):
        self.split = split
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        example = self.split[index]
        image = to_rgb(example[self.image_column])
        if self.seed is None:
            pixel_values = self.transform(image)
        else:
            with seeded_cpu_rng(sample_seed(self.seed, self.epoch, index)):
                pixel_values = self.transform(image)
        return {"pixel_values": pixel_values, "labels": example[self.label_column]}


def make_batch_transform(transform, image_column: str, label_column: str):
    """For `Dataset.with_transform` (the Trainer route): a batch of examples -> pixel_values and labels only."""

    def batch_transform(batch: dict) -> dict:
        return {
            "pixel_values": [transform(to_rgb(image)) for image in batch[image_column]],
            "labels": batch[label_column],
        }

    return batch_transform


def collate_image_batch(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack examples into {"pixel_values": (B, C, H, W), "labels": (B,)}."""
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples], dtype=torch.long),
    }


__all__ = [
    "AugmentationArguments",
    "DataArguments",
    "DataError",
    "ImageClassificationDataset",
    "build_batch_mixing",
    "build_eval_transform",
    "build_train_transform",
    "class_names",
    "collate_image_batch",
    "dataset_label",
    "digits_split_indices",
    "load_digits_dataset",
    "load_image_classification_dataset",
    "make_batch_transform",
    "report_skipped_images",
    "split_off_validation",
    "to_rgb",
]
