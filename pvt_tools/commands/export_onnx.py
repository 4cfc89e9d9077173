# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-export-onnx`: a PVT model folder (or Hub repo id) -> ONNX files checked in ONNX Runtime.

    pvt-export-onnx --model exports/pvt-small --output exports/pvt-small-onnx \\
        [--task image-classification|backbone] [--opset 18] [--quantize int8] [--evaluate]

Writes <output>/onnx/model.onnx (and onnx/model_quantized.onnx with --quantize int8), config.json and
preprocessor_config.json: the layout Transformers.js and Optimum read. One graph serves every batch size and image
size (each side at least 32 pixels for the paper's models). Each file is run in ONNX Runtime against PyTorch before
the folder appears; a failed check, or bad input, leaves nothing written. --evaluate then prints the top-1 accuracy
of each file on the demo's 270 validation digits (for a model trained with `pvt-demo`).
"""

import argparse
import sys

from pvt_tools.export import DEFAULT_OPSET, QUANTIZATIONS, TASKS, OnnxExportError, evaluate_onnx_classifier, export_onnx


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A PVT model folder (save_pretrained / an export) or repo id.")
    parser.add_argument("--output", required=True, help="A new (or empty) folder for the ONNX export.")
    parser.add_argument("--task", default="image-classification", help=f"One of {', '.join(TASKS)}.")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}).")
    parser.add_argument("--quantize", default=None, help=f"Also write an int8 file ({', '.join(QUANTIZATIONS)}).")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="Print each file's accuracy on the demo's validation digits (image-classification).",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Export; return {"output": folder, "verified": [...], "accuracy": {file: top-1}} (accuracy with --evaluate)."""
    args = parse_args(argv)
    folder, reports = export_onnx(args.model, args.output, task=args.task, opset=args.opset, quantize=args.quantize)
    result = {"output": folder, "verified": reports, "accuracy": {}}
    for report in reports:
        agreement = "" if report.top1_agreement is None else f", top-1 agreement {report.top1_agreement:.0%}"
        size = (folder / "onnx" / report.file).stat().st_size
        print(
            f"wrote {folder / 'onnx' / report.file} ({size / 1e6:.2f} MB): checked in ONNX Runtime at "
            f"{report.shapes}, largest relative difference {report.max_relative_difference:.2g}{agreement}"
        )
        if args.evaluate and args.task == "image-classification":
            accuracy = evaluate_onnx_classifier(folder / "onnx" / report.file, folder)
            result["accuracy"][report.file] = accuracy
            print(f"  validation accuracy ({report.file}): {accuracy:.4f}")
    return result


def run() -> None:
    """Console entry point."""
    try:
        main()
    except OnnxExportError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
