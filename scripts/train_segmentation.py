# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune Mask2Former / UperNet with a PVT backbone (the `pvt-train-segmentation` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.train_segmentation`.
"""

from pvt_tools.commands.train_segmentation import run

if __name__ == "__main__":
    run()
