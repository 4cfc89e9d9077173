# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Turn Fashion-MNIST's idx files into parquet for --dataset_name (the `pvt-prepare-fashion-mnist` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.prepare_fashion_mnist`.
"""

from pvt_tools.commands.prepare_fashion_mnist import run

if __name__ == "__main__":
    run()
