# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Parameters and multiply-adds of the paper's models (the `pvt-stats` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.stats`.
"""

from pvt_tools.commands.stats import run

if __name__ == "__main__":
    run()
