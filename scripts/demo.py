# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`make demo`: train a small PVT on the embedded digits, save, reload, predict (the `pvt-demo` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.demo`.
"""

from pvt_tools.commands.demo import run

if __name__ == "__main__":
    run()
