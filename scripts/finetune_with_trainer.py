# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune a PVT classifier with transformers.Trainer (the `pvt-finetune-trainer` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.finetune_with_trainer`.
"""

from pvt_tools.commands.finetune_with_trainer import run

if __name__ == "__main__":
    run()
