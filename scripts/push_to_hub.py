# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Publish an export folder to the Hugging Face Hub (the `pvt-push` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.push`.
"""

from pvt_tools.commands.push import run

if __name__ == "__main__":
    run()
