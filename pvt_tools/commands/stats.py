# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-stats`: parameters and multiply-adds of PVT models, counted with torch's own FLOP counter.

pvt-stats [--image_size 224] [--variants pvt-tiny pvt-small] [--device meta] [--json]
pvt-stats --model outputs/demo [--image_size 32]     # a trained or converted model: a folder or a Hub repo id
"""

import argparse
import json
from dataclasses import asdict

from pvt_tools.usage import PVT_VARIANT_NAMES, UsageError, check_model_reference, check_positive, run_console_command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_size", type=int, default=None, help="Default: 224, or the --model's own size.")
    parser.add_argument("--variants", nargs="+", choices=PVT_VARIANT_NAMES, default=None)
    parser.add_argument(
        "--model",
        nargs="+",
        default=None,
        help="PVT model folders (save_pretrained / an export / a training run's --output_dir) or Hub repo ids, "
        "counted instead of the paper's variants.",
    )
    parser.add_argument("--device", default="meta", help='"meta" (shapes only, fast) or a real device, e.g. cpu.')
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a markdown table.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model and args.variants:
        raise UsageError("Give --model or --variants, not both.")
    check_positive(image_size=args.image_size)
    for model in args.model or []:
        check_model_reference("--model", model)

    from pvt_tools.stats import format_table, pretrained_model_stats, variant_stats

    if args.model:
        rows = [pretrained_model_stats(model, args.image_size, args.device) for model in args.model]
    else:
        rows = [
            variant_stats(variant, args.image_size or 224, args.device)
            for variant in args.variants or PVT_VARIANT_NAMES
        ]
    if args.json:
        print(json.dumps([{**asdict(row), "gflops": row.gflops} for row in rows], indent=2))
    else:
        print(format_table(rows, with_paper=not args.model and (args.image_size or 224) == 224))
    return 0


def run() -> None:
    """Console entry point: a mistake in the flags ends with its message, not a traceback."""
    run_console_command(main)


if __name__ == "__main__":
    run()
