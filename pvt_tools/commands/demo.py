# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`make demo`: train a small PVT on the embedded handwritten digits, save it, reload it, show what it predicts.

    pvt-demo [--output_dir outputs/demo] [--num_train_epochs N]
"""

import argparse
import sys

from pvt_tools.training.demo import run_demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/demo", help="Where the run and its export go (replaced).")
    parser.add_argument("--num_train_epochs", type=int, default=20, help="Epochs over the 1,527 training digits.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    return run_demo(args.output_dir, args.num_train_epochs)


def run() -> None:
    """Console entry point."""
    main()


if __name__ == "__main__":
    run()
