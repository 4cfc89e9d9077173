# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""One benchmark run: for each variant, the weight check, then the plan's cases; then fresh-process memory, the
key ratios and the report."""

import gc
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from pvt_tools.benchmark.memory import measure_memory
from pvt_tools.benchmark.plan import BenchmarkPlan, check_weights, progress, save_builtin_checkpoint
from pvt_tools.benchmark.profile import benchmark_profiles
from pvt_tools.benchmark.report import (
    environment_line,
    environment_summary,
    format_table,
    format_weight_check,
    key_ratios,
    write_report,
)
from pvt_tools.benchmark.timing import (
    Comparison,
    benchmark_backbone,
    benchmark_compile,
    benchmark_inference,
    benchmark_resolutions,
    benchmark_training,
)


def case_runners(
    variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device, compile_backend: str
) -> dict[str, Callable[[], list]]:
    """The plan's cases that run for `variant` (compile and profile only for their own variant), in CASES order."""
    runners = {
        "inference": lambda: benchmark_inference(variant, checkpoint_dir, plan, device),
        "training": lambda: benchmark_training(variant, checkpoint_dir, plan, device, gradient_checkpointing=False),
        "checkpointing": lambda: benchmark_training(variant, checkpoint_dir, plan, device, gradient_checkpointing=True),
        "backbone": lambda: benchmark_backbone(variant, checkpoint_dir, plan, device),
        "resolutions": lambda: benchmark_resolutions(variant, checkpoint_dir, plan, device),
        "compile": lambda: benchmark_compile(variant, checkpoint_dir, plan, device, compile_backend),
        "profile": lambda: benchmark_profiles(variant, checkpoint_dir, plan, device),
    }
    only_for = {"compile": plan.compile_variant, "profile": plan.profile_variant}
    return {
        case: runner
        for case, runner in runners.items()
        if case in plan.cases and only_for.get(case, variant) == variant
    }


def run_benchmark(plan: BenchmarkPlan, device: torch.device, compile_backend: str = "inductor") -> dict:
    """Every case of the plan: weight checks, alternating timings, fresh-process memory, profiles, key ratios.
    A case that raises (a compiler error, running out of memory) is reported under "failures"; the others run.
    A weight check that fails stops the run: nothing measured after it would compare like with like."""
    comparisons: list[Comparison] = []
    profiles: list[dict] = []
    weight_checks, failures = [], []
    with tempfile.TemporaryDirectory() as temporary:
        for variant in plan.variants:
            checkpoint_dir = save_builtin_checkpoint(variant, Path(temporary) / variant)
            weight_checks.append(check_weights(variant, checkpoint_dir, plan, device))
            print(format_weight_check(weight_checks[-1]), flush=True)
            for case, runner in case_runners(variant, checkpoint_dir, plan, device, compile_backend).items():
                try:
                    measured = runner()
                except Exception as error:  # noqa: BLE001 -- reported with the results; the other cases still run
                    progress(traceback.format_exc())
                    failures.append({"case": case, "variant": variant, "error": f"{type(error).__name__}: {error}"})
                    continue
                if case == "profile":
                    profiles += measured
                else:
                    comparisons += measured
                gc.collect()
    measure_memory(comparisons, plan, device)
    return {
        "weight_checks": weight_checks,
        "comparisons": comparisons,
        "profiles": profiles,
        "failures": failures,
        "summary": key_ratios(comparisons),
    }


def benchmark_and_report(
    plan: BenchmarkPlan, device: torch.device, output_dir: str | Path, compile_backend: str, argv: list[str]
) -> int:
    """Run the plan, print the table, write the report; 1 when a case failed, else 0."""
    environment = environment_summary(device, plan, argv)
    print(f"PVT benchmark on {environment_line(environment)}, transformers {environment['transformers']}", flush=True)
    results = run_benchmark(plan, device, compile_backend) | {"environment": environment}
    print(format_table(results))
    paths = write_report(results, output_dir)
    print(f"\nwrote {paths['json']} and {paths['plot']}")
    failed = results["failures"] or any(comparison.error for comparison in results["comparisons"])
    return 1 if failed else 0


__all__ = ["benchmark_and_report", "run_benchmark"]
