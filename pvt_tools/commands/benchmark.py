# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-benchmark`: speed and memory of this PVT against Transformers' built-in Pvt and against our own eager path.

    pvt-benchmark                       # every case, pvt-tiny and pvt-small (long on a CPU)
    pvt-benchmark --quick               # pvt-tiny, small batches, few rounds: under two minutes
    pvt-benchmark --cases inference profile --variants pvt-small --rounds 7

Three implementations hold the SAME weights: "ours" (attn_implementation="sdpa", the default), "ours-eager"
(attn_implementation="eager": materialises the attention matrix as the official code does) and "built-in"
(`transformers.PvtForImageClassification`, model_type "pvt"; it only runs at its configured 224x224). Their outputs
are checked to agree (max |diff| < 1e-4 in float32) before anything is timed.

Cases (--cases; sizes of the default plan, --quick measures smaller ones and its report says which):
  inference      images/s at 224x224, batch 1, 8 and 32, float32 and bfloat16 autocast
  training       one step (forward + backward + AdamW), batch 16, float32 and bfloat16 autocast
  checkpointing  the same step with gradient checkpointing (ours and ours-eager; the built-in has none)
  backbone       PvtBackbone forward (all four stages) at 512x512 and 800x1216, batch 1: time and peak memory
  resolutions    classifier images/s against the input side (the built-in at 224 only): the PNG plot
  compile        torch.compile(ours) against ours in eager PyTorch mode, batch 8, same outputs
  profile        share of a 224x224 float32 forward spent outside matrix multiplies (torch.profiler)

Timing alternates: every round calls each implementation once in turn, so a noisy, shared machine slows all of
them alike; ratios are medians of the per-round ratios. Peak memory is measured for every case and implementation
in a fresh process (peak RSS on a CPU, max_memory_allocated on CUDA), as the increase over the set-up.

Writes to --output_dir (default outputs/benchmark): benchmark.json (every number) and
throughput_vs_resolution.png; prints a table and the key ratios against the built-in (and, for the backbone,
against ours-eager), each labelled with the variant, batch, input size and dtype it was measured at.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pvt_tools.usage import PVT_VARIANT_NAMES

if TYPE_CHECKING:
    from pvt_tools.benchmark.plan import BenchmarkPlan

# pvt_tools.benchmark.plan's CASES and MEMORY_CASES (which imports torch), named here so that `--help` answers at
# once; tests/test_usage.py keeps them equal.
CASES = ("inference", "training", "checkpointing", "backbone", "resolutions", "compile", "profile")
MEMORY_CASES = ("inference", "training", "checkpointing", "backbone")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/benchmark")
    parser.add_argument("--quick", action="store_true", help="pvt-tiny, small batches, 3 rounds: under two minutes.")
    parser.add_argument("--cases", nargs="+", choices=CASES, help="Cases to run (default: all; --quick: fewer).")
    parser.add_argument("--variants", nargs="+", choices=PVT_VARIANT_NAMES, help="Default: pvt-tiny pvt-small.")
    parser.add_argument("--rounds", type=int, help="Alternating rounds per comparison (default 5; --quick 3).")
    parser.add_argument(
        "--memory_cases",
        nargs="*",
        choices=MEMORY_CASES,
        help="Cases whose peak memory is measured in fresh processes (default: all; --quick: backbone). "
        "Give none to skip.",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available).")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch.set_num_threads for every process (default: torch's own choice). On a shared, busy CPU, 1 "
        "thread avoids OpenMP threads waiting for each other and gives steadier figures.",
    )
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend of the compile case.")
    parser.add_argument(
        "--tiny", action="store_true", help="For the tests: a tiny random model at 64x64 (about half a minute)."
    )
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)  # one memory case, in a fresh process
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}.")
    return args


def plan_from_args(args: argparse.Namespace) -> BenchmarkPlan:
    """The default, --quick or --tiny plan with the cases, variants, rounds and memory cases asked for (--tiny
    keeps its own model whatever --variants says)."""
    from pvt_tools.benchmark.plan import BenchmarkPlan, adjusted_plan, quick_plan, tiny_plan

    plan = tiny_plan() if args.tiny else quick_plan() if args.quick else BenchmarkPlan()
    variants = None if args.tiny else args.variants
    return adjusted_plan(plan, args.cases, variants, args.rounds, args.memory_cases)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with --worker, one memory case); the process-wide settings it changes (log
    verbosity, threads) are restored after. Returns the exit status: 1 when a case failed."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import torch
    import transformers

    from pvt_tools.benchmark.memory import run_worker
    from pvt_tools.benchmark.plan import default_device
    from pvt_tools.benchmark.runner import benchmark_and_report

    verbosity, threads = transformers.logging.get_verbosity(), torch.get_num_threads()
    try:
        transformers.logging.set_verbosity_error()
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.worker:
            run_worker(args.worker)
            return 0
        device = torch.device(args.device) if args.device else default_device()
        return benchmark_and_report(plan_from_args(args), device, args.output_dir, args.compile_backend, argv)
    finally:
        transformers.logging.set_verbosity(verbosity)
        torch.set_num_threads(threads)


def run() -> None:
    """Console entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
