# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Train or fine-tune a PVT image classifier with Accelerate (the `pvt-train` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.train`.
"""

from pvt_tools.commands.train import run

if __name__ == "__main__":
    run()
