# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Speed and memory of this PVT against Transformers' built-in Pvt and against our own eager attention path.

plan (what to run, the implementations with the same weights), timing (alternating rounds, the timed cases),
memory (peak memory in fresh processes), profile (time outside matrix multiplies), report (table, key ratios,
JSON, plot), runner (one run). The command line is `pvt-benchmark` (pvt_tools.commands.benchmark).
"""

from pvt_tools.benchmark.plan import BenchmarkPlan, quick_plan, tiny_plan
from pvt_tools.benchmark.runner import run_benchmark

__all__ = ["BenchmarkPlan", "quick_plan", "run_benchmark", "tiny_plan"]
