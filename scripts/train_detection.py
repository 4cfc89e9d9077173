# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune DETR / Deformable DETR with a PVT backbone (the `pvt-train-detection` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.train_detection`.
"""

from pvt_tools.commands.train_detection import run

if __name__ == "__main__":
    run()
