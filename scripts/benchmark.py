# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Speed and memory of this PVT against Transformers' built-in Pvt (the `pvt-benchmark` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.benchmark`.
"""

from pvt_tools.commands.benchmark import run

if __name__ == "__main__":
    run()
