# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""The choices `pvt-export-onnx` offers, without importing torch: the command's `--help` lists them at once, and
pvt_tools.export (which imports torch) checks its arguments against the same names."""

TASKS = ("image-classification", "backbone")
# --quantize modes (see `pvt_tools.export.quantize_int8`, and benchmarks/deployment.md for the measurements behind
# the default). The default quantizes the MatMuls only: measured (benchmarks/deployment.md) it is the fastest option
# on CPU (ONNX Runtime's ConvInteger kernel is slower than its float32 Conv) and it loses the least accuracy
# (Fashion-MNIST test set: -0.01 points, against -0.10 for int8-dynamic and -0.11 for static calibrated int8).
QUANTIZATIONS = {
    "int8": "the default: int8-matmul",
    "int8-matmul": "dynamic int8 (signed weights) of the MatMuls; convolutions stay float32; no calibration data",
    "int8-dynamic": "dynamic int8 of the MatMuls and convolutions (smaller file, slower on CPU)",
}
DEFAULT_INT8 = "int8-matmul"
# torch.onnx translates with its own library at opset 18 and newer (older opsets would be converted afterwards,
# with no guarantee); opset 18 is read by every ONNX Runtime since 1.14 and by onnxruntime-web (Transformers.js).
DEFAULT_OPSET = 18

__all__ = ["DEFAULT_INT8", "DEFAULT_OPSET", "QUANTIZATIONS", "TASKS"]
