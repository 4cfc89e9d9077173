# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-export-onnx`: a PVT model folder (or Hub repo id) -> ONNX files checked in ONNX Runtime.

    pvt-export-onnx --model runs/fashion --output exports/fashion-onnx --quantize int8 \\
        [--repo_id my-org/fashion-pvt-onnx] [--check_transformers_js]
    pvt-export-onnx --model runs/fashion --output exports/fashion-onnx --quantize int8 \\
        --evaluate --dataset_name data/fashion-mnist          # score on the data's test split
    pvt-export-onnx --model exports/pvt-small --output exports/pvt-small-backbone --task backbone

For an image classifier, writes the folder of an ONNX repository that Transformers.js loads as it is and pvt-push
publishes: onnx/model.onnx (float32), onnx/model_quantized.onnx (--quantize; Transformers.js's dtype "q8"),
config.json (model_type "pvt", Transformers' built-in PvtConfig, the labels), preprocessor_config.json and README.md
(library transformers.js; no PyTorch weights: the PyTorch model stays the pvt_v1 folder it came from). A backbone
gives onnx/model.onnx with one output per stage and the model's own config.json. One graph serves every batch size
and image size (each side at least 32 pixels for the paper's models). Each file is run in ONNX Runtime against
PyTorch (and with --check_transformers_js in Transformers.js under Node) before the folder appears; a failed check,
or bad input, leaves nothing written. --evaluate then scores PyTorch and each
file side by side (top-1 accuracy, images/s) on the data named by pvt-train's data flags (--dataset_name,
--train_dir / --validation_dir, ...): its test split when it has one, else its validation split. Without data flags
only a model of the ten digits (`make demo`) is scored, on the demo's 270 validation digits.
"""

from dataclasses import dataclass, field

from transformers.hf_argparser import HfArgumentParser

from pvt_tools.export_options import DEFAULT_OPSET, QUANTIZATIONS, TASKS
from pvt_tools.training.arguments import DIGIT_NAMES, DataArguments, DataError
from pvt_tools.usage import check_model_reference, run_console_command


@dataclass
class ExportArguments:
    model: str = field(metadata={"help": "A PVT model folder (save_pretrained / an export) or repo id."})
    output: str = field(metadata={"help": "A new (or empty) folder for the ONNX export."})
    task: str = field(default="image-classification", metadata={"help": f"One of {', '.join(TASKS)}."})
    opset: int = field(default=DEFAULT_OPSET, metadata={"help": f"ONNX opset (default {DEFAULT_OPSET})."})
    quantize: str | None = field(
        default=None,
        metadata={
            "help": "Also write onnx/model_quantized.onnx: "
            + "; ".join(f"{name} ({meaning})" for name, meaning in QUANTIZATIONS.items())
        },
    )
    repo_id: str | None = field(
        default=None, metadata={"help": "The org/name the model card's examples load (the ONNX repository)."}
    )
    check_transformers_js: bool = field(
        default=False,
        metadata={
            "help": "Also load the folder in Transformers.js (Node, offline) and require PyTorch's top-1 class "
            "from each file (needs Node and `make node-packages`)."
        },
    )
    evaluate: bool = field(
        default=False,
        metadata={
            "help": "Score PyTorch and each file (accuracy, images/s) on the data of the data flags: its test split, "
            "else its validation split (image-classification)."
        },
    )
    evaluation_batch_size: int = field(default=64, metadata={"help": "Images per batch when scoring."})


def parse_args(argv: list[str] | None = None) -> tuple[ExportArguments, DataArguments]:
    parser = HfArgumentParser((ExportArguments, DataArguments), description=__doc__.split("\n\n")[0])
    return parser.parse_args_into_dataclasses(args=argv)


def data_to_score_on(args: ExportArguments, data_args: DataArguments) -> DataArguments:
    """The data flags as given; without any, the demo's digits, but only for a model of the ten digits."""
    if data_args.dataset_name or data_args.train_dir:
        return data_args
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(args.model)  # the raw config.json: any model type
    except (OSError, ValueError):
        return data_args  # not a model folder: export_onnx names the problem
    if sorted((config_dict.get("id2label") or {}).values()) == DIGIT_NAMES:
        return data_args
    raise DataError(
        f"--evaluate needs the images to score {args.model} on: give the data flags of pvt-train (--dataset_name "
        "<Hub name or folder>, or --train_dir with --validation_dir). Without them only a model of the ten digits "
        "(make demo) is scored, on the demo's validation digits."
    )


def main(argv: list[str] | None = None) -> dict:
    """Export; return {"output": folder, "verified": [...], "scores": [ScoredFile, ...]} (scores with --evaluate)."""
    args, data_args = parse_args(argv)
    check_model_reference("--model", args.model)
    from pvt_tools.export import (  # torch: after the flags
        ClientCheck,
        OnnxExportError,
        export_onnx,
        score_exported_classifier,
    )

    if args.evaluate and args.task != "image-classification":
        raise OnnxExportError(f"--evaluate scores classifiers; --task {args.task} has no accuracy to score.")
    if args.evaluate:
        data_args = data_to_score_on(args, data_args)  # before the export: a missing flag costs nothing
    folder, reports = export_onnx(
        args.model,
        args.output,
        task=args.task,
        opset=args.opset,
        quantize=args.quantize,
        repo_id=args.repo_id,
        check_transformers_js=args.check_transformers_js,
    )
    result = {"output": folder, "verified": reports, "scores": []}
    for report in reports:
        if isinstance(report, ClientCheck):
            print(
                f"{report.client}: PyTorch's top-1 class on {report.top1_agreement:.0%} of {report.images} check "
                f"images, largest top-1 score difference {report.max_score_difference:.3f}"
            )
            continue
        agreement = "" if report.top1_agreement is None else f", top-1 agreement {report.top1_agreement:.0%}"
        size = (folder / "onnx" / report.file).stat().st_size
        print(
            f"wrote {folder / 'onnx' / report.file} ({size / 1e6:.2f} MB): checked in ONNX Runtime at "
            f"{report.shapes}, largest relative difference {report.max_relative_difference:.2g}{agreement}"
        )
    if args.evaluate:
        split_name, num_images, rows = score_exported_classifier(
            args.model, folder, data_args, batch_size=args.evaluation_batch_size
        )
        result["scores"] = rows
        print(f"Scored on the {split_name} split ({num_images:,} images, batch {args.evaluation_batch_size}):")
        for row in rows:
            change = "" if row is rows[0] else f" ({100 * (row.accuracy - rows[0].accuracy):+.2f} points)"
            size = "" if row.size_bytes is None else f", {row.size_bytes / 1e6:.2f} MB"
            print(f"  {row.name:<24} accuracy {row.accuracy:.4f}{change}, {row.images_per_second:,.0f} images/s{size}")
    return result


def run() -> None:
    """Console entry point: bad input ends with its message, not a traceback."""
    run_console_command(main)


if __name__ == "__main__":
    run()
