# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-profile-detection`: where a `pvt-train-detection` step's time goes (data, backbone, encoder, decoder,
matching, loss, backward, optimizer), for the detector, data and batch that the same flags would train.

    pvt-profile-detection --steps 20 --architecture deformable_detr --pvt_checkpoint out/upernet-digits ...
"""

import json
from pathlib import Path

from pvt_tools.commands.dense_arguments import positive_int, run_console_command
from pvt_tools.commands.train_detection import build_parser, parse_args


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser(__doc__.split("\n\n")[0], output_dir_required=False)
    profiling = parser.add_argument_group("profiling")
    profiling.add_argument("--steps", type=positive_int, default=20, help="Training steps timed (after 2 untimed).")
    profiling.add_argument("--output_json", type=Path, help="Also write the profile here.")
    args = parse_args(argv, parser)

    import torch

    from pvt_tools.benchmark.detection_step import profile_from_arguments, profile_table

    torch.manual_seed(args.seed)
    profile = profile_from_arguments(args, args.steps)
    profile["threads"] = torch.get_num_threads()
    print(profile_table(profile))
    if args.output_json:
        args.output_json.write_text(json.dumps(profile, indent=2) + "\n", encoding="utf-8")
    return profile


def run() -> None:
    run_console_command(main)


if __name__ == "__main__":
    run()
