# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-stats`: parameters and multiply-adds of the paper's PVT models, counted with torch's own FLOP counter.

pvt-stats [--image_size 224] [--variants pvt-tiny pvt-small] [--device meta] [--json]
"""

import argparse
import json
import sys
from dataclasses import asdict

from configuration_pvt import PVT_VARIANTS
from pvt_tools.stats import format_table, variant_stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--variants", nargs="+", choices=list(PVT_VARIANTS), default=list(PVT_VARIANTS))
    parser.add_argument("--device", default="meta", help='"meta" (shapes only, fast) or a real device, e.g. cpu.')
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a markdown table.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = [variant_stats(variant, args.image_size, args.device) for variant in args.variants]
    if args.json:
        print(json.dumps([{**asdict(row), "gflops": row.gflops} for row in rows], indent=2))
    else:
        print(format_table(rows, with_paper=args.image_size == 224))
    return 0


def run() -> None:
    """Console entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
