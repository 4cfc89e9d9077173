"""Object-detection data in the layout of Transformers' object-detection examples, and its checks.

Every example has an `image`, its `width` and `height`, an `image_id`, and `objects` with COCO boxes
(`bbox` = [x, y, width, height] in pixels), `category` (a ClassLabel), `area` and `id`. The embedded default needs
no download: scikit-learn's 8x8 handwritten digits pasted at random positions and scales onto larger canvases, each
digit's box being the tight box around its ink and its class the digit.
"""

import math

import datasets
import numpy as np
from PIL import Image

from pvt_tools.training.data import DIGIT_NAMES, digits_split_indices

INK_THRESHOLD = 64  # a resized digit's pixels at least this bright (of 255) count for its box


def detection_features(category_names: list[str]) -> datasets.Features:
    """The columns of Transformers' object-detection examples (e.g. the cppe-5 data set)."""
    return datasets.Features(
        {
            "image_id": datasets.Value("int64"),
            "image": datasets.Image(),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "objects": {
                "id": datasets.List(datasets.Value("int64")),
                "area": datasets.List(datasets.Value("float32")),
                "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                "category": datasets.List(datasets.ClassLabel(names=category_names)),
            },
        }
    )


def category_names(dataset: datasets.Dataset) -> list[str]:
    """Class names of a detection data set's `objects.category` column."""
    objects = dataset.features["objects"]
    category = objects["category"] if isinstance(objects, dict) else objects.feature["category"]
    names = getattr(getattr(category, "feature", category), "names", None)
    if names is None:
        raise ValueError(
            "objects.category must be a ClassLabel (or a list of ClassLabel) so that classes have names; cast the "
            "column, e.g. dataset.cast_column('objects', ...) with datasets.ClassLabel(names=[...])."
        )
    return list(names)


def _ink_box(digit: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the pixels of `digit` at least INK_THRESHOLD bright, or None if there are none."""
    rows = np.flatnonzero((digit >= INK_THRESHOLD).any(axis=1))
    columns = np.flatnonzero((digit >= INK_THRESHOLD).any(axis=0))
    if rows.size == 0:
        return None
    return int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1)


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], margin: int = 2) -> bool:
    x, y, width, height = box
    return any(
        x < other_x + other_width + margin
        and other_x < x + width + margin
        and y < other_y + other_height + margin
        and other_y < y + height + margin
        for other_x, other_y, other_width, other_height in others
    )


def default_digit_sizes(canvas_size: int) -> tuple[int, int]:
    """Digits between a quarter and half the canvas side: large enough to read after an 8x upscale."""
    return max(8, canvas_size // 4), max(8, canvas_size // 2)


def make_digits_detection_dataset(
    num_images: int,
    canvas_size: int = 64,
    digits_per_image: tuple[int, int] = (1, 3),
    digit_sizes: tuple[int, int] | None = None,
    split: str = "train",
    seed: int = 0,
) -> datasets.Dataset:
    """`num_images` canvases of `canvas_size` pixels, each with 1-3 non-overlapping digits on a noisy dark
    background, between a quarter and half the canvas side unless `digit_sizes` says otherwise. "train" draws from
    the classification default's training digits, any other split from its validation digits
    (`digits_split_indices`), so validation digits are unseen, also by a classifier pretrained on the digits."""
    from sklearn.datasets import load_digits

    digit_sizes = digit_sizes or default_digit_sizes(canvas_size)
    if digit_sizes[1] > canvas_size:
        raise ValueError(f"digit_sizes {digit_sizes} do not fit a {canvas_size}-pixel canvas: lower them.")
    digits = load_digits()
    pool = digits_split_indices()["train" if split == "train" else "validation"]
    rng = np.random.default_rng(seed)
    features = detection_features(DIGIT_NAMES)
    rows = []
    object_id = 0
    for image_id in range(num_images):
        canvas = rng.integers(0, 40, size=(canvas_size, canvas_size), dtype=np.uint8)
        boxes, categories = [], []
        for _ in range(rng.integers(digits_per_image[0], digits_per_image[1] + 1)):
            index = int(rng.choice(pool))
            size = int(rng.integers(digit_sizes[0], digit_sizes[1] + 1))
            ink = np.asarray(digits.images[index] * (255 / 16), dtype=np.uint8)
            digit = np.asarray(Image.fromarray(ink).resize((size, size), Image.Resampling.BILINEAR))
            ink_box = _ink_box(digit)
            if ink_box is None:
                continue
            for _attempt in range(20):  # a free spot, or no digit at all
                left, top = (int(value) for value in rng.integers(0, canvas_size - size + 1, size=2))
                box = (left + ink_box[0], top + ink_box[1], ink_box[2], ink_box[3])
                if not _overlaps(box, boxes):
                    region = canvas[top : top + size, left : left + size]
                    np.maximum(region, digit, out=region)
                    boxes.append(box)
                    categories.append(int(digits.target[index]))
                    break
        image = Image.fromarray(canvas).convert("RGB")
        rows.append(
            {
                "image_id": image_id,
                "image": image,
                "width": canvas_size,
                "height": canvas_size,
                "objects": {
                    "id": list(range(object_id, object_id + len(boxes))),
                    "area": [float(width * height) for _, _, width, height in boxes],
                    "bbox": [[float(value) for value in box] for box in boxes],
                    "category": categories,
                },
            }
        )
        object_id += len(boxes)
    return datasets.Dataset.from_list(rows, features=features, split=split)


def make_digits_detection_splits(
    num_train: int = 2000, num_validation: int = 200, canvas_size: int = 64, seed: int = 0
) -> datasets.DatasetDict:
    """The embedded default: train and validation canvases of disjoint digits."""
    return datasets.DatasetDict(
        {
            "train": make_digits_detection_dataset(num_train, canvas_size, split="train", seed=seed),
            "validation": make_digits_detection_dataset(num_validation, canvas_size, split="validation", seed=seed + 1),
        }
    )


def box_problem(box: list[float], width: int, height: int) -> str | None:
    """Why a COCO box [x, y, w, h] is malformed in a width x height image, or None if it is fine."""
    if len(box) != 4 or not all(math.isfinite(value) for value in box):
        return f"box {box} is not four finite numbers"
    x, y, box_width, box_height = box
    if box_width <= 0 or box_height <= 0:
        return f"box {box} has a non-positive size"
    if x < 0 or y < 0 or x + box_width > width or y + box_height > height:
        return f"box {box} lies (partly) outside the {width}x{height} image"
    return None


def check_boxes(dataset: datasets.Dataset, on_invalid: str = "drop") -> tuple[datasets.Dataset, int]:
    """Find malformed boxes (non-positive size, outside the image). `on_invalid="drop"` removes those objects and
    returns how many; `"error"` raises a ValueError naming the first example and box. Image sizes come from the
    `width`/`height` columns when present, else from the images."""
    if on_invalid not in ("drop", "error"):
        raise ValueError(f"on_invalid must be 'drop' or 'error', got {on_invalid!r}.")
    has_sizes = {"width", "height"} <= set(dataset.column_names)
    columns = ["objects", "width", "height"] if has_sizes else ["objects", "image"]
    keep_masks, dropped = [], 0
    for index, example in enumerate(dataset.select_columns(columns)):
        width, height = (example["width"], example["height"]) if has_sizes else example["image"].size
        keep = []
        for box in example["objects"]["bbox"]:
            problem = box_problem(box, width, height)
            if problem and on_invalid == "error":
                image_id = dataset[index]["image_id"] if "image_id" in dataset.column_names else index
                raise ValueError(
                    f"example {index} (image_id {image_id}): {problem}. Fix the annotation, or drop such boxes "
                    f"(on_invalid='drop', --invalid_boxes drop)."
                )
            keep.append(problem is None)
        dropped += keep.count(False)
        keep_masks.append(keep)
    if dropped == 0:
        return dataset, 0

    def keep_valid_objects(objects: dict, index: int) -> dict:
        mask = keep_masks[index]
        kept_objects = {name: [value for value, kept in zip(values, mask) if kept] for name, values in objects.items()}
        return {"objects": kept_objects}

    return dataset.map(keep_valid_objects, with_indices=True, input_columns=["objects"]), dropped


__all__ = [
    "box_problem",
    "category_names",
    "check_boxes",
    "default_digit_sizes",
    "detection_features",
    "make_digits_detection_dataset",
    "make_digits_detection_splits",
]
