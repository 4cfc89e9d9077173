# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-convert`: the authors' PVT v1 classifier checkpoint (pvt_tiny.pth ... pvt_large.pth) -> a Hub-ready export.

    pvt-convert --checkpoint pvt_small.pth --output_dir exports/pvt-small [--variant pvt-small] \\
        [--num_attention_heads 1 2 5 8 [--allow_custom_heads]] [--push_to_hub --repo_id my-org/pvt-small]

The weights determine the architecture (hidden sizes, depths, MLP and reduction ratios, patch sizes, native image
size, classes, qkv bias); head counts come from --variant or --num_attention_heads (default 1 2 5 8, shared by the
paper's four models). Other head counts are refused without --allow_custom_heads: a wrong count gives a model that
runs and passes the check below, which uses the same counts. The file is read with torch.load(weights_only=True)
only. Before anything is written the converted model is checked against the official network's maths on a sample
input; a failure at any step leaves --output_dir untouched.

An mmdetection / mmsegmentation checkpoint of the authors' dense-prediction models (RetinaNet, Mask R-CNN, Semantic
FPN: {"state_dict": {"backbone.*": ...}, "meta": ...}) is recognised by its layout and becomes a PvtBackbone export
(config.json, model.safetensors, the two code files): the backbone's tensors only, checked against the official
backbone's four feature maps; the neck's and heads' tensors are listed as skipped.
"""

import argparse
import sys
from pathlib import Path

from pvt_tools.usage import CommandError, check_model_reference, check_output_folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="The official .pth file.")
    parser.add_argument("--output_dir", required=True, type=Path, help="Where the export folder is written.")
    parser.add_argument(
        "--variant",
        choices=["pvt-tiny", "pvt-small", "pvt-medium", "pvt-large"],
        default=None,
        help="The paper's model these weights are (checked against the weights; picks the card).",
    )
    parser.add_argument(
        "--num_attention_heads",
        type=int,
        nargs="+",
        default=None,
        help="Heads per stage (the weights cannot tell); default 1 2 5 8, the paper's for all four "
        "models. Other counts need --allow_custom_heads.",
    )
    parser.add_argument(
        "--allow_custom_heads",
        action="store_true",
        help="Accept --num_attention_heads that differ from the paper's for these weights' shapes "
        "(only for checkpoints trained with other head counts: the weights cannot tell).",
    )
    parser.add_argument(
        "--overwrite_output_dir",
        "--overwrite",
        dest="overwrite",
        action="store_true",
        help="Replace an existing export in --output_dir.",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="Also write onnx/model.onnx (any batch and image size), checked in ONNX Runtime.",
    )
    parser.add_argument("--push_to_hub", action="store_true", help="Upload the export (needs --repo_id).")
    parser.add_argument("--repo_id", default=None, help='"org/name": shown in the card, and the push target.')
    parser.add_argument("--private", action="store_true", help="With --push_to_hub: create a private repository.")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.repo_id:
        parser.error("--push_to_hub needs --repo_id ORG/NAME")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_model_reference("--checkpoint", args.checkpoint, kind="file")
        check_output_folder(args.output_dir, overwrite=args.overwrite, resumable=False)  # as every command
        from pvt_tools.hub import check_repo_id, push_export  # torch: only once the flags are read
        from pvt_tools.official import convert_any_official_checkpoint

        if args.push_to_hub:
            check_repo_id(args.repo_id)  # fail before converting, not after
        folder = convert_any_official_checkpoint(
            args.checkpoint,
            args.output_dir,
            variant=args.variant,
            num_attention_heads=args.num_attention_heads,
            allow_custom_heads=args.allow_custom_heads,
            repo_id=args.repo_id,
            overwrite=args.overwrite,
            onnx=args.onnx,
        )
        print(f"wrote {folder}")
        if args.push_to_hub:
            commit = push_export(folder, args.repo_id, private=args.private)
            print(f"uploaded: {commit.commit_url}")
    except (ValueError, CommandError, FileNotFoundError) as error:  # OfficialCheckpointError, ExportError, ...
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """Console entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
