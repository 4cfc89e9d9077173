# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Where a forward's time goes, from torch.profiler: the share spent outside matrix multiplies and attention.

Matrix multiplies run at the same speed in every implementation holding the same weights; what an implementation
can change is everything else (element-wise work, copies, softmax over a materialised attention matrix, Python).
"""

from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from pvt_tools.benchmark.plan import BUILTIN, OURS, BenchmarkPlan, build_models, make_inputs, progress
from pvt_tools.benchmark.timing import inference_step, synchronized_clock

PROFILE_RANGE = "pvt_benchmark_forward"
GEMM_OPERATORS = {
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::addbmm",
    "aten::_addmm_activation",
    "aten::addmv",
    "aten::mv",
}
OPERATOR_KINDS = ("gemm", "attention", "convolution", "other")


def classify_operator(name: str) -> str:
    """ "gemm", "attention" (fused attention kernels), "convolution" or "other", for aten operators and CUDA kernels.

    Composite wrappers (aten::linear, aten::matmul, aten::scaled_dot_product_attention) count as "other": their
    self time is dispatch overhead, the arithmetic is in the kernels they call."""
    lowered = name.lower()
    if name.startswith("aten::"):
        if name.startswith(("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")):
            return "attention"
        if name in GEMM_OPERATORS:
            return "gemm"
        if "conv" in lowered:
            return "convolution"
        return "other"
    if any(word in lowered for word in ("flash", "fmha", "attention")):
        return "attention"
    if any(word in lowered for word in ("conv", "fprop", "dgrad", "wgrad")):
        return "convolution"
    if any(word in lowered for word in ("gemm", "cublas", "cutlass", "matmul")):
        return "gemm"
    return "other"


def profiled_times(
    model: nn.Module, pixel_values: torch.Tensor, repeats: int
) -> tuple[list[tuple[str, float]], float, str]:
    """(operator or kernel, self time in µs) over `repeats` forwards, their total, and what the time is: self CPU
    time on a CPU (the forward's range is the total; its own self time is Python between operators), self CUDA
    time of the kernels on a GPU."""
    on_cuda = pixel_values.device.type == "cuda"
    run = inference_step(model, pixel_values)
    run()  # warm-up: one-time allocations and kernel selection stay out of the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as profiler:
        for _ in range(repeats):
            with record_function(PROFILE_RANGE):
                run()
        synchronized_clock()
    events = profiler.key_averages()
    if on_cuda:
        timed = [(event.key, event.self_device_time_total) for event in events if event.self_device_time_total > 0]
        timed = [(key, time) for key, time in timed if not key.startswith(("aten::", PROFILE_RANGE))]
        return timed, sum(time for _, time in timed), "self CUDA time of the kernels"
    forward_range = next(event for event in events if event.key == PROFILE_RANGE)
    timed = [(event.key, event.self_cpu_time_total) for event in events if event.key != PROFILE_RANGE]
    timed.append(("(Python between operators)", forward_range.self_cpu_time_total))
    return timed, forward_range.cpu_time_total, "self CPU time"


def profile_outside_matmul(model: nn.Module, pixel_values: torch.Tensor, repeats: int = 2) -> dict:
    """Share of a forward's time by kind of work (`classify_operator`), and the "other" operators, largest first.

    `outside_matmul_percent` is strict (everything but GEMMs and fused attention kernels, so convolutions count as
    outside); `outside_matmul_conv_attention_percent` leaves convolutions out too (PVT's patch embeddings and
    spatial reductions are non-overlapping strided convolutions: matrix multiplies in disguise)."""
    timed, total, basis = profiled_times(model, pixel_values, repeats)
    by_kind = dict.fromkeys(OPERATOR_KINDS, 0.0)
    others = []
    for key, time in timed:
        kind = classify_operator(key)
        by_kind[kind] += time
        if kind == "other":
            others.append((key, time))
    percent = {kind: 100.0 * time / total for kind, time in by_kind.items()}
    return {
        "time_basis": basis,
        "forward_ms": total / repeats / 1000.0,
        "percent": percent,
        "percent_sum": sum(percent.values()),
        "outside_matmul_percent": percent["convolution"] + percent["other"],
        "outside_matmul_conv_attention_percent": percent["other"],
        "other_operators": [
            {"name": key, "percent": 100.0 * time / total}
            for key, time in sorted(others, key=lambda item: item[1], reverse=True)
        ],
    }


def benchmark_profiles(variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device) -> list[dict]:
    """profile_outside_matmul at the native size, float32, for ours and the built-in (same weights)."""
    models = build_models(variant, (OURS, BUILTIN), device=device, checkpoint_dir=checkpoint_dir)
    size, batch_size = plan.image_size, plan.profile_batch_size
    pixel_values, _ = make_inputs(models[OURS].config, batch_size, size, size, device)
    profiles = []
    for name, model in models.items():
        setting = {"implementation": name, "variant": variant, "batch_size": batch_size, "height": size, "width": size}
        progress(f"profiling {profile_label(setting)}")
        profiles.append(setting | profile_outside_matmul(model, pixel_values))
    return profiles


def profile_label(profile: dict) -> str:
    """What was profiled, e.g. "ours pvt-tiny 4x224x224 float32"."""
    return (
        f"{profile['implementation']} {profile['variant']} {profile['batch_size']}x{profile['height']}x"
        f"{profile['width']} float32"
    )


__all__ = ["benchmark_profiles", "classify_operator", "profile_label", "profile_outside_matmul"]
