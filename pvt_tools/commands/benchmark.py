# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-benchmark`: speed and memory of this PVT against Transformers' built-in Pvt and our eager path."""

import sys

from pvt_tools.benchmark.suite import main


def run() -> None:
    """Console entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
