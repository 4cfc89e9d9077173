# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Convert the authors' .pth checkpoint into a Hub-ready export (the `pvt-convert` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.convert`.
"""

from pvt_tools.commands.convert import run

if __name__ == "__main__":
    run()
