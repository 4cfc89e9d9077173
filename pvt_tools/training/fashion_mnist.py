# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fashion-MNIST from its idx files (Debian's `dataset-fashion-mnist`, or the four files Zalando publishes) as the
`datasets.DatasetDict` the Hub's `zalando-datasets/fashion_mnist` loads: an `image` column of 28x28 greyscale
images and a `label` ClassLabel with the ten class names, splits "train" (60,000) and "test" (10,000).

    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist")
    write_parquet_folder(dataset, "data/fashion-mnist")      # train.parquet + test.parquet
    # then: pvt-train --dataset_name data/fashion-mnist ...   (the Hub name works the same where the Hub is reachable)

The idx format (LeCun's MNIST files) is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order. Every check runs before anything is
written: a file that is not idx, a truncated one, labels that do not match the images in count or range.
"""

import gzip
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasets import DatasetDict

DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"
# The names and order of the Hub dataset's ClassLabel (zalando-datasets/fashion_mnist).
FASHION_MNIST_NAMES = [
    "T - shirt / top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET_IT = (
    "Install Debian's package (apt-get install dataset-fashion-mnist: the files land in "
    f"{DEBIAN_FOLDER}) or download the four files from https://github.com/zalandoresearch/fashion-mnist."
)
# The idx type codes and the NumPy types they stand for (big-endian where it matters).
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


class IdxError(ValueError):
    """A file is not a whole idx file, or the idx files do not belong together; the message names the file."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an idx file, gzip-compressed (as published) or not."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise IdxError(
                f"{path} is a damaged or truncated gzip file ({error}): fetch it again. {HOW_TO_GET_IT}"
            ) from error
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise IdxError(
            f"{path} is not an idx file (it does not start with an idx magic number: two zero bytes, a type code, "
            f"the number of dimensions; it starts with {raw[:4].hex(' ') or 'nothing'}). {HOW_TO_GET_IT}"
        )
    dtype, ndim = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxError(f"{path} is truncated inside its header: fetch it again. {HOW_TO_GET_IT}")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    stored = len(raw) - header_size
    if stored != expected:
        problem = "is truncated" if stored < expected else "has bytes after its data"
        raise IdxError(
            f"{path} {problem}: its header announces shape {shape} ({expected:,} bytes of data), the file holds "
            f"{stored:,}. Fetch it again. {HOW_TO_GET_IT}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_file(folder: Path, name: str) -> Path | None:
    """The file as published (name.gz) or already decompressed (name)."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def idx_files(folder: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    """The images and labels file of each split, or an error naming every missing file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IdxError(f"{folder} is not a folder holding the Fashion-MNIST idx files. {HOW_TO_GET_IT}")
    found, missing = {}, []
    for split, names in FASHION_MNIST_FILES.items():
        paths = [find_idx_file(folder, name) for name in names]
        missing += [f"{name}.gz" for name, path in zip(names, paths) if path is None]
        found[split] = tuple(paths)
    if missing:
        raise IdxError(f"{folder} lacks {', '.join(missing)}: Fashion-MNIST needs all four idx files. {HOW_TO_GET_IT}")
    return found


def read_split(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One split's (N, H, W) uint8 images and (N,) labels, checked to belong together."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxError(
            f"{images_path} holds {images.dtype} values of shape {images.shape}, not (N, height, width) 8-bit "
            "images: is it a labels file? Check the file names."
        )
    if labels.ndim != 1:
        raise IdxError(
            f"{labels_path} holds values of shape {labels.shape}, not one label per image: is it an images "
            "file? Check the file names."
        )
    if len(labels) != len(images):
        raise IdxError(
            f"{labels_path} holds {len(labels):,} labels but {images_path} holds {len(images):,} images: the two files "
            f"do not belong together. Fetch them again. {HOW_TO_GET_IT}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise IdxError(
            f"{labels_path} holds labels {int(labels.min())}..{int(labels.max())}, outside the {num_classes} "
            f"classes 0..{num_classes - 1}: it is not a Fashion-MNIST labels file. {HOW_TO_GET_IT}"
        )
    return images, labels.astype(np.int64)


def load_fashion_mnist(folder: str | os.PathLike = DEBIAN_FOLDER) -> "DatasetDict":
    """Fashion-MNIST's "train" and "test" splits with the Hub dataset's features, every file checked first."""
    import datasets  # here, not at the top: `pvt-prepare-fashion-mnist --help` answers without loading it
    from datasets import ClassLabel, Dataset, DatasetDict

    arrays = {split: read_split(*paths, len(FASHION_MNIST_NAMES)) for split, paths in idx_files(folder).items()}
    features = datasets.Features({"image": datasets.Image(), "label": ClassLabel(names=FASHION_MNIST_NAMES)})
    return DatasetDict(
        {
            split: Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)
            for split, (images, labels) in arrays.items()
        }
    )


def write_parquet_folder(dataset: "DatasetDict", output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """One `<split>.parquet` per split in `output_dir`, which `datasets.load_dataset(output_dir)` reads back with the
    same features. Written whole or not at all: into a temporary folder beside it, then renamed."""
    from pvt_tools.hub import replace_directory, staging_folder

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds files ({', '.join(sorted(p.name for p in output_dir.iterdir())[:5])}); "
            "nothing was written. Choose another folder or pass --overwrite_output_dir to replace it."
        )
    with staging_folder(output_dir.parent, output_dir.name) as staging:
        for split, part in dataset.items():
            part.to_parquet(staging / f"{split}.parquet")
        os.chmod(staging, 0o755)
        replace_directory(staging, output_dir)
    return output_dir


__all__ = [
    "DEBIAN_FOLDER",
    "FASHION_MNIST_NAMES",
    "IdxError",
    "load_fashion_mnist",
    "read_idx",
    "write_parquet_folder",
]
