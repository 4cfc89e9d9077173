# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Peak memory of each case and implementation, each measured once in a fresh process.

A fresh process sees only its own peak: on a CPU the peak resident set size (VmHWM on Linux, ru_maxrss elsewhere),
on CUDA max_memory_allocated. Both the peak and its increase over the baseline after set-up (model, inputs,
optimizer) are reported; memory ratios use the increase, which is what the case itself needs.

The worker is `python -m pvt_tools.commands.benchmark --worker JSON`; it prints one line, WORKER_RESULT_PREFIX
followed by the JSON of `run_memory_case`, which `measure_peak_memory_in_fresh_process` reads back.
"""

import gc
import json
import os
import resource
import site
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import pvt_tools
from pvt_tools.benchmark.plan import (
    BenchmarkPlan,
    benchmark_config,
    default_device,
    make_inputs,
    new_implementation,
    progress,
)
from pvt_tools.benchmark.timing import Comparison, inference_step, synchronized_clock, training_step

WORKER_MODULE = "pvt_tools.commands.benchmark"
WORKER_RESULT_PREFIX = "BENCHMARK_MEMORY_RESULT "
MIB = 1024 * 1024

# --- inside the fresh process ---------------------------------------------------------------------------------


def process_status_kib(field_name: str) -> int | None:
    """A memory field of /proc/self/status (Linux), in KiB; None elsewhere."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    return None


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: max_memory_allocated. CPU: this process's peak RSS. On Linux that is VmHWM, not ru_maxrss: a process
    started by fork + exec inherits in ru_maxrss the parent's RSS at the fork (the kernel keeps the larger of the
    pre-exec peak and the new one), which would hide the case's own peak behind the parent's size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    high_water_mark = process_status_kib("VmHWM")
    if high_water_mark is not None:
        return high_water_mark * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def memory_measure_name(device: torch.device) -> str:
    if device.type == "cuda":
        return "max_memory_allocated"
    return "peak RSS (VmHWM)" if process_status_kib("VmHWM") is not None else "peak RSS (ru_maxrss)"


def reset_peak_memory(device: torch.device) -> tuple[int, bool]:
    """Start a new peak at the current usage; returns (baseline bytes, whether the peak could be reset).

    CUDA: reset_peak_memory_stats, baseline = memory_allocated. CPU on Linux: writing 5 to /proc/self/clear_refs
    resets the peak RSS to the current RSS, so import and set-up transients do not mask the case's own peak;
    where that is unavailable the baseline is the set-up's peak."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device), True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    return peak_memory_bytes(device), reset


def run_memory_case(case: dict, device: torch.device | None = None) -> dict:
    """Run one case once in this process and report its peak memory and the increase over the baseline after
    set-up. Meant for a fresh process. `case` is `memory_case`'s dictionary."""
    device = torch.device(case.get("device") or device or default_device())
    config = benchmark_config(case["variant"])
    model = new_implementation(config, case["implementation"], case["task"]).to(device)
    pixel_values, labels = make_inputs(config, case["batch_size"], case["height"], case["width"], device)
    if case["mode"] == "training":
        if case["gradient_checkpointing"]:
            model.activation_checkpointing_enable()
        step = training_step(model, pixel_values, labels, case["dtype"])
    else:
        step = inference_step(model, pixel_values, case["dtype"])
    gc.collect()
    setup_peak = peak_memory_bytes(device)
    baseline, peak_was_reset = reset_peak_memory(device)
    step()
    synchronized_clock()
    peak = peak_memory_bytes(device)
    return {
        "measure": memory_measure_name(device),
        "peak_was_reset": peak_was_reset,
        "setup_peak_mib": setup_peak / MIB,
        "baseline_mib": baseline / MIB,
        "peak_memory_mib": peak / MIB,
        "memory_increase_mib": (peak - baseline) / MIB,
    }


def run_worker(case_json: str) -> None:
    """The worker's whole job: run the case given as JSON and print its result line for the parent."""
    print(WORKER_RESULT_PREFIX + json.dumps(run_memory_case(json.loads(case_json))), flush=True)


# --- in the benchmark's process -------------------------------------------------------------------------------


def memory_case(comparison: Comparison, implementation: str, device: torch.device) -> dict:
    """What a fresh process needs to rerun one implementation of a comparison (JSON-serialisable)."""
    return {
        "variant": comparison.variant,
        "implementation": implementation,
        "task": comparison.task,
        "mode": comparison.mode,
        "batch_size": comparison.batch_size,
        "height": comparison.height,
        "width": comparison.width,
        "dtype": comparison.dtype,
        "gradient_checkpointing": comparison.gradient_checkpointing,
        "device": str(device),
    }


def worker_environment() -> dict[str, str]:
    """This environment, offline for the Hub unless told otherwise. When this process imported pvt_tools (and the
    model files beside it) from a checkout rather than from site-packages, that checkout goes first on PYTHONPATH:
    the worker runs the same code as this process, from any working directory."""
    environment = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    source_root = Path(pvt_tools.__file__).resolve().parent.parent
    site_directories = {Path(path).resolve() for path in [*site.getsitepackages(), site.getusersitepackages()]}
    if source_root not in site_directories:
        python_path = [str(source_root), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        environment["PYTHONPATH"] = os.pathsep.join(python_path)
    return environment


def measure_peak_memory_in_fresh_process(case: dict, timeout: float = 1800) -> dict:
    """`run_memory_case(case)` in a new Python process with this process's thread count, so no earlier case's
    peak counts."""
    command = [sys.executable, "-m", WORKER_MODULE, "--worker", json.dumps(case)]
    command += ["--threads", str(torch.get_num_threads())]
    completed = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=timeout, env=worker_environment()
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(WORKER_RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"memory worker for {case} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(WORKER_RESULT_PREFIX) :])


def measure_memory(comparisons: list[Comparison], plan: BenchmarkPlan, device: torch.device) -> None:
    """Fresh-process peak memory for every implementation of the comparisons whose case the plan lists in
    `memory_cases`, a few processes at a time (each measures only its own peak, so running side by side changes
    no figure); the figures and the memory ratios go into the comparisons."""
    jobs = [
        (comparison, implementation)
        for comparison in comparisons
        if comparison.case in plan.memory_cases and not comparison.error
        for implementation in comparison.results
    ]

    def measure(job: tuple[Comparison, str]) -> dict:
        comparison, implementation = job
        progress(f"peak memory {comparison.label} {implementation} (fresh process)")
        return measure_peak_memory_in_fresh_process(memory_case(comparison, implementation, device))

    with ThreadPoolExecutor(max_workers=plan.memory_processes) as executor:
        for (comparison, implementation), memory in zip(jobs, executor.map(measure, jobs)):
            comparison.results[implementation].update(memory)
    for comparison, _ in jobs:
        comparison.update_ratios()


__all__ = [
    "measure_memory",
    "measure_peak_memory_in_fresh_process",
    "memory_case",
    "peak_memory_bytes",
    "run_memory_case",
    "run_worker",
]
