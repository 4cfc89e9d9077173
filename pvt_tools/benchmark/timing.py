# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Alternating timing of the implementations, and the cases that use it.

Every round calls each implementation once in turn (the first of the round rotates), so a noisy, shared machine
slows all of them alike; medians and minima over rounds are reported, and ratios are medians of the per-round
ratios. A `Comparison` holds one case at one setting: every implementation's figures and ours' ratios.
"""

import contextlib
import gc
import statistics
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pvt_tools.benchmark.plan import (
    COMPILED,
    DTYPES,
    EAGER,
    IMPLEMENTATIONS,
    OURS,
    OUTPUT_TOLERANCE,
    BenchmarkPlan,
    build_models,
    check_same_outputs,
    make_inputs,
    max_abs_differences,
    progress,
)

# --- the step each case times ---------------------------------------------------------------------------------


def autocast_context(device: torch.device | str, dtype: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast, or nothing for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "bfloat16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}.")


def inference_step(model: nn.Module, pixel_values: torch.Tensor, dtype: str = "float32") -> Callable[[], object]:
    """One forward pass without autograd."""
    model.eval()

    def run():
        with torch.inference_mode(), autocast_context(pixel_values.device, dtype):
            return model(pixel_values)

    return run


def training_step(
    model: nn.Module, pixel_values: torch.Tensor, labels: torch.Tensor, dtype: str = "float32"
) -> Callable[[], object]:
    """Forward with the classification loss, backward, AdamW step (the optimizer's state appears on the first)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run():
        with autocast_context(pixel_values.device, dtype):
            loss = model(pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return run


# --- timing ---------------------------------------------------------------------------------------------------


def synchronized_clock() -> float:
    """Wall clock after the accelerator has finished its queued work (as torch.utils.benchmark's timer)."""
    if torch.accelerator.is_available():
        torch.accelerator.synchronize()
    return timeit.default_timer()


@dataclass
class Timing:
    seconds_per_call: list[float]  # one per round

    @property
    def median(self) -> float:
        return statistics.median(self.seconds_per_call)

    @property
    def minimum(self) -> float:
        return min(self.seconds_per_call)


def time_alternating(
    callables: dict[str, Callable[[], object]],
    rounds: int,
    min_block_seconds: float = 0.0,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Seconds per call of every callable, measured in `rounds` rounds that each time every callable once in turn
    (the first of the round rotates), after `warmup` calls each.

    A block repeats a call until it lasts about `min_block_seconds` (the count comes from the warm-up call; one
    call per block without warm-up). The stdlib's timeit.Timer times with an accelerator-synchronising clock:
    torch.utils.benchmark's Timer.timeit would add two warm-up calls before every block, tripling the cost of
    second-long training steps.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}.")
    names = list(callables)
    warmup_seconds = {name: 0.0 for name in names}
    for name in names:
        for _ in range(warmup):
            warmup_seconds[name] = timeit.Timer(callables[name], timer=synchronized_clock).timeit(1)
    numbers = {name: max(1, round(min_block_seconds / warmup_seconds[name])) if warmup else 1 for name in names}
    seconds = {name: [] for name in names}
    for round_index in range(rounds):
        start = round_index % len(names)
        for name in names[start:] + names[:start]:
            timer = timeit.Timer(callables[name], timer=synchronized_clock)
            seconds[name].append(timer.timeit(numbers[name]) / numbers[name])
    return {name: Timing(seconds[name]) for name in names}


def paired_median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator[r] / denominator[r]: robust to load that changes between rounds."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


# --- comparisons ----------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """One case at one setting: every implementation's timing (and, once measured, memory) and the ratios of the
    subject (ours, or ours compiled) against each of the others."""

    case: str
    variant: str
    task: str  # "classification" or "backbone"
    mode: str  # "inference" or "training"
    batch_size: int
    height: int
    width: int
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    subject: str = OURS
    results: dict[str, dict] = field(default_factory=dict)
    ratios: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        """What was measured, e.g. "inference pvt-tiny 4x224x224 float32": every row of the report says this."""
        checkpointing = " +checkpointing" if self.gradient_checkpointing else ""
        return f"{self.case} {self.variant} {self.batch_size}x{self.height}x{self.width} {self.dtype}{checkpointing}"

    def record_timings(self, timings: dict[str, Timing]) -> None:
        for name, timing in timings.items():
            self.results.setdefault(name, {}).update(
                seconds_per_call=timing.seconds_per_call,
                median_s=timing.median,
                min_s=timing.minimum,
                images_per_s=self.batch_size / timing.median,
                best_images_per_s=self.batch_size / timing.minimum,
            )
        self.update_ratios()

    def update_ratios(self) -> None:
        """The subject against every other implementation: speed-up (their time / the subject's, per round), time
        ratio (the subject's / theirs) and memory ratios (the subject's / theirs)."""
        subject = self.results.get(self.subject, {})
        for name, other in self.results.items():
            if name == self.subject:
                continue
            ratios = {}
            if "seconds_per_call" in subject and "seconds_per_call" in other:
                ratios["speedup"] = paired_median_ratio(other["seconds_per_call"], subject["seconds_per_call"])
                ratios["time_ratio"] = paired_median_ratio(subject["seconds_per_call"], other["seconds_per_call"])
            if "memory_increase_mib" in subject and "memory_increase_mib" in other:
                ratios["memory_ratio"] = subject["memory_increase_mib"] / max(other["memory_increase_mib"], 1e-9)
                ratios["peak_memory_ratio"] = subject["peak_memory_mib"] / other["peak_memory_mib"]
            self.ratios[name] = ratios


def run_comparison(
    comparison: Comparison, callables: dict[str, Callable[[], object]], plan: BenchmarkPlan, warmup: int = 1
) -> Comparison:
    """Time the callables alternately with the plan's rounds and record the timings in `comparison`."""
    progress(f"timing {comparison.label}")
    timings = time_alternating(callables, plan.rounds, plan.min_block_seconds, warmup)
    comparison.record_timings(timings)
    return comparison


# --- the timed cases ------------------------------------------------------------------------------------------


def benchmark_inference(
    variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device
) -> list[Comparison]:
    """Classifier images/s at the native size for every batch size and dtype: ours, ours-eager, built-in."""
    models = build_models(variant, IMPLEMENTATIONS, device=device, checkpoint_dir=checkpoint_dir)
    size = plan.image_size
    comparisons = []
    for dtype in plan.inference_dtypes:
        for batch_size in plan.inference_batch_sizes:
            comparison = Comparison("inference", variant, "classification", "inference", batch_size, size, size, dtype)
            pixel_values, _ = make_inputs(models[OURS].config, batch_size, size, size, device)
            callables = {name: inference_step(model, pixel_values, dtype) for name, model in models.items()}
            comparisons.append(run_comparison(comparison, callables, plan))
    return comparisons


def benchmark_training(
    variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device, gradient_checkpointing: bool
) -> list[Comparison]:
    """One AdamW training step per call, fresh models for each dtype; with gradient checkpointing float32 only,
    ours and ours-eager (the built-in lacks it)."""
    implementations = (OURS, EAGER) if gradient_checkpointing else IMPLEMENTATIONS
    dtypes = ["float32"] if gradient_checkpointing else plan.training_dtypes
    case = "checkpointing" if gradient_checkpointing else "training"
    size, batch_size = plan.image_size, plan.training_batch_size
    comparisons = []
    for dtype in dtypes:
        comparison = Comparison(
            case, variant, "classification", "training", batch_size, size, size, dtype, gradient_checkpointing
        )
        if gradient_checkpointing:
            comparison.notes.append("built-in: no gradient checkpointing (supports_gradient_checkpointing=False)")
        models = build_models(variant, implementations, device=device, checkpoint_dir=checkpoint_dir)
        if gradient_checkpointing:
            for model in models.values():
                model.activation_checkpointing_enable()
        pixel_values, labels = make_inputs(models[OURS].config, batch_size, size, size, device)
        callables = {name: training_step(model, pixel_values, labels, dtype) for name, model in models.items()}
        comparisons.append(run_comparison(comparison, callables, plan))
        del models, callables
        gc.collect()
    return comparisons


def benchmark_backbone(
    variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device
) -> list[Comparison]:
    """PvtBackbone forward (all stages) at each backbone size, batch 1: ours vs ours-eager, outputs checked."""
    models = build_models(variant, (OURS, EAGER), task="backbone", device=device, checkpoint_dir=checkpoint_dir)
    comparisons = []
    for height, width in plan.backbone_sizes:
        comparison = Comparison("backbone", variant, "backbone", "inference", 1, height, width)
        pixel_values, _ = make_inputs(models[OURS].config, 1, height, width, device)
        differences = check_same_outputs(models, pixel_values, reference=EAGER)  # also the warm-up
        comparison.checks["max_abs_diff_vs_eager"] = differences[OURS]
        callables = {name: inference_step(model, pixel_values) for name, model in models.items()}
        comparisons.append(run_comparison(comparison, callables, plan, warmup=0))
    return comparisons


def benchmark_resolutions(
    variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device
) -> list[Comparison]:
    """Classifier images/s against the input side, float32; the built-in joins only at its native size."""
    models = build_models(variant, IMPLEMENTATIONS, device=device, checkpoint_dir=checkpoint_dir)
    batch_size = plan.resolution_batch_size
    comparisons = []
    for size in plan.resolutions:
        comparison = Comparison("resolutions", variant, "classification", "inference", batch_size, size, size)
        pixel_values, _ = make_inputs(models[OURS].config, batch_size, size, size, device)
        names = IMPLEMENTATIONS if size == plan.image_size else (OURS, EAGER)
        if size != plan.image_size:
            comparison.notes.append(f"built-in: runs only at its configured {plan.image_size}x{plan.image_size}")
        callables = {name: inference_step(models[name], pixel_values) for name in names}
        comparisons.append(run_comparison(comparison, callables, plan))
    return comparisons


def benchmark_compile(
    variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device, backend: str = "inductor"
) -> list[Comparison]:
    """torch.compile(ours) against the same module in eager PyTorch mode, float32 inference; timed only when the
    compiled outputs equal the uncompiled ones to OUTPUT_TOLERANCE (else the comparison carries the error)."""
    size, batch_size = plan.image_size, plan.compile_batch_size
    comparison = Comparison("compile", variant, "classification", "inference", batch_size, size, size, subject=COMPILED)
    progress(f"compiling ours for {comparison.label} (backend {backend})")
    model = build_models(variant, (OURS,), device=device, checkpoint_dir=checkpoint_dir)[OURS]
    compiled = torch.compile(model, backend=backend)
    pixel_values, _ = make_inputs(model.config, batch_size, size, size, device)
    comparison.checks["compilation_and_first_call_s"] = timeit.Timer(
        inference_step(compiled, pixel_values), timer=synchronized_clock
    ).timeit(1)
    difference = max_abs_differences({OURS: model, COMPILED: compiled}, pixel_values, reference=OURS)[COMPILED]
    comparison.checks["max_abs_diff_vs_uncompiled"] = difference
    if not difference < OUTPUT_TOLERANCE:
        comparison.error = f"torch.compile changed the outputs by {difference:.3g} (tolerance {OUTPUT_TOLERANCE:g})"
        return [comparison]
    callables = {COMPILED: inference_step(compiled, pixel_values), OURS: inference_step(model, pixel_values)}
    return [run_comparison(comparison, callables, plan)]


__all__ = [
    "Comparison",
    "Timing",
    "benchmark_backbone",
    "benchmark_compile",
    "benchmark_inference",
    "benchmark_resolutions",
    "benchmark_training",
    "inference_step",
    "time_alternating",
    "training_step",
]
