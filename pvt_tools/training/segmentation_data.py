# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Segmentation data in the layout of Transformers' segmentation examples, and the embedded default.

Every example has an `image` and an `annotation`:

- semantic segmentation (examples/pytorch/semantic-segmentation): the annotation is a label map, one class id per
  pixel (255 = not labelled). With `reduce_labels` class 0 is "unlabelled" and becomes 255, the others shift down.
- instance segmentation (examples/pytorch/instance-segmentation): the annotation is an RGB image whose red
  channel holds the class id + 1 (0 = no object) and whose green channel the instance id (0 = no instance).

The embedded default needs no download: the digits canvases of detection_data.py (scikit-learn's 8x8 digits pasted
onto noisy canvases, never overlapping). A digit's stroke pixels (its ink, at least INK_THRESHOLD bright inside its
box) carry its class; everything else is background. For instance segmentation each pasted digit is one instance.
"""

import datasets
import numpy as np
from PIL import Image

from pvt_tools.training.data import DIGIT_NAMES
from pvt_tools.training.detection_data import INK_THRESHOLD, make_digits_detection_dataset

BACKGROUND = "background"
IGNORE_INDEX = 255  # the label of pixels that count for no class (Transformers' segmentation examples)
TASKS = ("semantic", "instance")


def digits_id2label(task: str) -> dict[int, str]:
    """Class names of the embedded data: background and the ten digits (semantic), the ten digits (instance: the
    background is no object)."""
    names = [BACKGROUND, *DIGIT_NAMES] if task == "semantic" else DIGIT_NAMES
    return dict(enumerate(names))


def digit_masks(canvas: np.ndarray, boxes: list[list[float]]) -> list[np.ndarray]:
    """One boolean stroke mask per box: the canvas pixels at least INK_THRESHOLD bright inside it. The boxes are
    tight around each digit's ink and never overlap, so every stroke pixel belongs to exactly one digit."""
    ink = canvas >= INK_THRESHOLD
    masks = []
    for x, y, width, height in boxes:
        mask = np.zeros_like(ink)
        x, y, width, height = int(x), int(y), int(width), int(height)
        mask[y : y + height, x : x + width] = ink[y : y + height, x : x + width]
        masks.append(mask)
    return masks


def make_digits_segmentation_dataset(
    num_images: int,
    canvas_size: int = 64,
    task: str = "semantic",
    split: str = "train",
    seed: int = 0,
    digit_sizes: tuple[int, int] | None = None,
) -> datasets.Dataset:
    """`num_images` digits canvases with their annotations (see the module docstring); "train" draws digits from
    the classification default's training digits, any other split from its validation digits. Same seed, same
    data."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    detection = make_digits_detection_dataset(
        num_images,
        canvas_size,
        digit_sizes=digit_sizes,
        split=split,
        seed=seed,
    )
    rows = []
    for example in detection:
        canvas = np.asarray(example["image"].convert("L"))
        objects = example["objects"]
        masks = digit_masks(canvas, objects["bbox"])
        semantic = np.zeros(canvas.shape, dtype=np.uint8)  # 0: background (semantic) / no object (instance)
        instances = np.zeros(canvas.shape, dtype=np.uint8)
        for instance_id, (mask, category) in enumerate(zip(masks, objects["category"]), start=1):
            semantic[mask] = category + 1  # semantic: background is class 0; instance: class id + 1
            instances[mask] = instance_id
        if task == "semantic":
            annotation = Image.fromarray(semantic, mode="L")
        else:
            annotation = Image.fromarray(np.stack([semantic, instances, np.zeros_like(semantic)], axis=-1), mode="RGB")
        rows.append({"image": example["image"], "annotation": annotation})
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    return datasets.Dataset.from_list(rows, features=features, split=split)


def make_digits_segmentation_splits(
    num_train: int = 2000, num_validation: int = 200, canvas_size: int = 64, task: str = "semantic", seed: int = 0
) -> datasets.DatasetDict:
    """The embedded default: train and validation canvases of disjoint digits."""
    return datasets.DatasetDict(
        {
            "train": make_digits_segmentation_dataset(num_train, canvas_size, task, split="train", seed=seed),
            "validation": make_digits_segmentation_dataset(
                num_validation, canvas_size, task, split="validation", seed=seed + 1
            ),
        }
    )


def reduce_label_map(label_map: np.ndarray) -> np.ndarray:
    """`reduce_labels`: 0 ("unlabelled") -> IGNORE_INDEX, every other class id one lower (as the image processors)."""
    label_map = label_map.astype(np.int64)
    return np.where(label_map == 0, IGNORE_INDEX, label_map - 1)


def semantic_label_map(annotation: Image.Image, task: str, reduce_labels: bool) -> np.ndarray:
    """The per-pixel class ids (IGNORE_INDEX where none) of an annotation, as metrics compare them: the label
    map itself (semantic), or the red channel, class id + 1 (instance)."""
    if task == "instance":
        return reduce_label_map(np.asarray(annotation.convert("RGB"))[..., 0])
    label_map = np.asarray(annotation)
    if label_map.ndim != 2:
        raise ValueError(
            f"A semantic-segmentation annotation must be a one-channel label map (class id per pixel), got an image "
            f"of mode {annotation.mode!r}: save annotations as 8-bit grey ('L') or palette ('P') PNGs."
        )
    return reduce_label_map(label_map) if reduce_labels else label_map.astype(np.int64)


def instance_annotation(annotation: Image.Image) -> tuple[np.ndarray, dict[int, int]]:
    """An instance annotation as the image processor takes it: the instance-id map (green channel) and, for each
    instance id, its red-channel class id (class + 1; 0 = no object)."""
    pixels = np.asarray(annotation.convert("RGB"))
    semantic, instances = pixels[..., 0], pixels[..., 1].copy()  # a writable copy: the processor wraps it in a tensor
    pairs = np.unique(np.stack([instances.ravel(), semantic.ravel()], axis=1), axis=0)
    instance_to_class = {int(instance): int(label) for instance, label in pairs}
    if len(instance_to_class) != len(pairs):
        clashing = sorted({int(instance) for instance, _ in pairs if sum(pairs[:, 0] == instance) > 1})
        raise ValueError(
            f"instance id(s) {clashing} carry more than one class in the red channel: each instance (green) must "
            f"lie within one class."
        )
    return instances, instance_to_class


__all__ = [
    "BACKGROUND",
    "IGNORE_INDEX",
    "TASKS",
    "digit_masks",
    "digits_id2label",
    "instance_annotation",
    "make_digits_segmentation_dataset",
    "make_digits_segmentation_splits",
    "reduce_label_map",
    "semantic_label_map",
]
