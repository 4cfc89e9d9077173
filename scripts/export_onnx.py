# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""A PVT model folder -> ONNX files (float32, optionally int8) checked in ONNX Runtime (the `pvt-export-onnx` command).

Run with --help for the flags; the work is done by `pvt_tools.commands.export_onnx`.
"""

from pvt_tools.commands.export_onnx import run

if __name__ == "__main__":
    run()
