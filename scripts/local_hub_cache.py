# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Place an export in the local Hugging Face cache as "org/name" (the `pvt-local-cache` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.local_cache`.
"""

from pvt_tools.commands.local_cache import run

if __name__ == "__main__":
    run()
