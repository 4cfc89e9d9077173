# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Turn Fashion-MNIST's idx files into a parquet folder every training command reads with --dataset_name.

    apt-get install dataset-fashion-mnist                  # the four idx files in /usr/share/datasets/fashion-mnist
    pvt-prepare-fashion-mnist --output_dir data/fashion-mnist
    pvt-train --dataset_name data/fashion-mnist ...        # same features as the Hub's zalando-datasets/fashion_mnist

The work is done by pvt_tools.training.fashion_mnist.
"""

import argparse
import sys

from pvt_tools.training.fashion_mnist import (
    DEBIAN_FOLDER,
    IdxError,
    load_fashion_mnist,
    write_parquet_folder,
)  # NumPy only: `datasets` is imported when the data is read


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--idx_dir", default=DEBIAN_FOLDER, help=f"Folder holding the four idx files (default {DEBIAN_FOLDER})."
    )
    parser.add_argument(
        "--output_dir", default="data/fashion-mnist", help="Where train.parquet and test.parquet are written."
    )
    parser.add_argument(
        "--overwrite_output_dir", action="store_true", help="Replace --output_dir if it already holds files."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    dataset = load_fashion_mnist(args.idx_dir)
    output_dir = write_parquet_folder(dataset, args.output_dir, overwrite=args.overwrite_output_dir)
    sizes = ", ".join(f"{split} {len(part):,}" for split, part in dataset.items())
    print(f"Fashion-MNIST ({sizes} images) saved to {output_dir}: train with --dataset_name {output_dir}")
    return str(output_dir)


def run(argv: list[str] | None = None) -> None:
    """Console entry point: missing or damaged files end with their message, not a traceback."""
    try:
        main(argv)
    except (IdxError, FileExistsError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    run()
