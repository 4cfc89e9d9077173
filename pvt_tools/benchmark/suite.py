# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Speed and memory of this PVT against Transformers' built-in Pvt and against our own eager attention path.

    python scripts/benchmark.py                      # every case, pvt-tiny and pvt-small (long on a CPU)
    python scripts/benchmark.py --quick              # pvt-tiny, small batches, few rounds: under two minutes
    python scripts/benchmark.py --cases inference profile --variants pvt-small --rounds 7

Three implementations hold the SAME weights: "ours" (attn_implementation="sdpa", the default), "ours-eager"
(attn_implementation="eager": materialises the attention matrix as the official code does) and "built-in"
(`transformers.PvtForImageClassification`, model_type "pvt"; it only runs at its configured 224x224). The built-in
model is created with the architecture of the variant, saved, and loaded into our classes through their built-in
key mapping; outputs are checked to agree (max |diff| < 1e-4 in float32) before anything is timed.

Cases (--cases):
  inference      images/s at 224x224, batch 1, 8 and 32, float32 and bfloat16 autocast
  training       one step (forward + backward + AdamW), batch 16, float32 and bfloat16 autocast
  checkpointing  the same step with gradient checkpointing (ours and ours-eager; the built-in has none)
  backbone       PvtBackbone forward (all four stages) at 512x512 and 800x1216, batch 1: time and peak memory
  resolutions    classifier images/s against the input side (the built-in at 224 only): the PNG plot
  compile        torch.compile(ours) against ours in eager PyTorch mode, pvt-small 224 batch 8, same outputs
  profile        share of a 224x224 float32 forward spent outside matrix multiplies (torch.profiler)

Timing alternates: every round calls each implementation once in turn (the starting one rotates), so a noisy,
shared machine slows all of them alike; medians and minima over rounds are reported, and ratios are medians of
the per-round ratios. Peak memory is measured for every case and implementation in a fresh process
(`--worker`): on a CPU the peak resident set size (VmHWM on Linux, ru_maxrss elsewhere), on CUDA
max_memory_allocated; both the peak and its increase over the baseline after set-up (model, inputs) are
reported, and memory ratios use the increase: what the case itself needs.

Writes to --output_dir (default outputs/benchmark): benchmark.json (every number) and
throughput_vs_resolution.png; prints a table and the issue's targets with PASS / MISS.
"""

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import timeit
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import transformers
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from configuration_pvt import PVT_VARIANTS, PvtConfig
from modeling_pvt import PvtBackbone, PvtForImageClassification

OURS = "ours"
EAGER = "ours-eager"
BUILTIN = "built-in"
COMPILED = "ours-compiled"
IMPLEMENTATIONS = (OURS, EAGER, BUILTIN)
CASES = ("inference", "training", "checkpointing", "backbone", "resolutions", "compile", "profile")
MEMORY_CASES = ("inference", "training", "checkpointing", "backbone")
DTYPES = ("float32", "bfloat16")
OUTPUT_TOLERANCE = 1e-4  # max |diff| in float32 between implementations holding the same weights
WORKER_RESULT_PREFIX = "BENCHMARK_MEMORY_RESULT "
PROFILE_RANGE = "pvt_benchmark_forward"
MIB = 1024 * 1024
TOP_OPERATORS = 8  # non-matmul operators listed per profile in the table

# A random configuration small enough for the tests (`--tiny`); its numbers mean nothing.
TEST_VARIANT = "test-tiny"
TEST_TINY_SETTINGS = dict(
    image_size=64,
    hidden_sizes=[16, 32, 40, 64],
    depths=[1, 1, 2, 1],
    num_attention_heads=[1, 2, 2, 4],
    mlp_ratios=[2, 2, 2, 2],
    sequence_reduction_ratios=[4, 2, 2, 1],
    num_labels=10,
)

# Fields of our PvtConfig that Transformers' built-in PvtConfig shares (same names, same meaning).
BUILTIN_CONFIG_FIELDS = (
    "image_size",
    "num_channels",
    "num_encoder_blocks",
    "depths",
    "sequence_reduction_ratios",
    "hidden_sizes",
    "patch_sizes",
    "strides",
    "num_attention_heads",
    "mlp_ratios",
    "hidden_act",
    "layer_norm_eps",
    "qkv_bias",
    "num_labels",
)


# --- what to run ----------------------------------------------------------------------------------------------


@dataclass
class BenchmarkPlan:
    """Every size, batch and repetition of one run; `--quick` and `--tiny` are smaller plans."""

    variants: list[str] = field(default_factory=lambda: ["pvt-tiny", "pvt-small"])
    cases: list[str] = field(default_factory=lambda: list(CASES))
    memory_cases: list[str] = field(default_factory=lambda: list(MEMORY_CASES))
    rounds: int = 5
    image_size: int = 224
    inference_batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    inference_dtypes: list[str] = field(default_factory=lambda: list(DTYPES))
    training_batch_size: int = 16
    training_dtypes: list[str] = field(default_factory=lambda: list(DTYPES))
    backbone_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(512, 512), (800, 1216)])
    resolutions: list[int] = field(default_factory=lambda: [224, 320, 448, 512])
    resolution_batch_size: int = 1
    compile_variant: str = "pvt-small"
    compile_batch_size: int = 8
    profile_variant: str = "pvt-small"
    profile_batch_size: int = 8
    min_block_seconds: float = 0.2  # each timed block repeats a call until it lasts about this long
    memory_processes: int = 2  # fresh memory-measuring processes run side by side


def quick_plan() -> BenchmarkPlan:
    """Under two minutes on a 2-core CPU: pvt-tiny, small batches, three rounds, memory of the backbone only."""
    return BenchmarkPlan(
        variants=["pvt-tiny"],
        cases=["inference", "training", "backbone", "resolutions", "profile"],
        memory_cases=["backbone"],
        rounds=3,
        inference_batch_sizes=[1, 4],
        inference_dtypes=["float32"],
        training_batch_size=2,
        training_dtypes=["float32"],
        backbone_sizes=[(800, 1216)],
        resolutions=[224, 320],
        compile_variant="pvt-tiny",
        compile_batch_size=4,
        profile_variant="pvt-tiny",
        profile_batch_size=4,
        min_block_seconds=0.05,
    )


def tiny_plan() -> BenchmarkPlan:
    """Seconds, for the tests: the TEST_TINY_SETTINGS model at 64-pixel inputs."""
    return BenchmarkPlan(
        variants=[TEST_VARIANT],
        rounds=2,
        image_size=TEST_TINY_SETTINGS["image_size"],
        inference_batch_sizes=[1, 2],
        training_batch_size=2,
        backbone_sizes=[(64, 64), (96, 128)],
        resolutions=[64, 96],
        compile_variant=TEST_VARIANT,
        compile_batch_size=2,
        profile_variant=TEST_VARIANT,
        profile_batch_size=2,
        min_block_seconds=0.005,
    )


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- models with the same weights -----------------------------------------------------------------------------


def benchmark_config(variant: str) -> PvtConfig:
    """Our configuration of a paper variant (or of the tests' tiny model)."""
    if variant == TEST_VARIANT:
        return PvtConfig(**TEST_TINY_SETTINGS)
    return PvtConfig.from_variant(variant)


def builtin_config(config: PvtConfig) -> transformers.PvtConfig:
    """Transformers' built-in PvtConfig with the same architecture."""
    return transformers.PvtConfig(**{name: getattr(config, name) for name in BUILTIN_CONFIG_FIELDS})


def save_builtin_checkpoint(variant: str, directory: str | Path, seed: int = 0) -> Path:
    """A randomly initialised built-in PvtForImageClassification of `variant`, saved: the weights all share."""
    torch.manual_seed(seed)
    model = transformers.PvtForImageClassification(builtin_config(benchmark_config(variant)))
    model.save_pretrained(directory)
    return Path(directory)


def load_implementation(checkpoint_dir: str | Path, implementation: str, task: str = "classification") -> nn.Module:
    """One implementation from a built-in checkpoint: ours load it through their built-in key mapping (the config,
    read from a built-in config.json, keeps the built-in's 1e-6 LayerNorm epsilon everywhere)."""
    if implementation == BUILTIN:
        if task == "backbone":
            raise ValueError(
                "Transformers' built-in Pvt has no backbone class: compare backbones as ours vs ours-eager."
            )
        return transformers.PvtForImageClassification.from_pretrained(checkpoint_dir)
    if implementation not in (OURS, EAGER):
        raise ValueError(f"Unknown implementation {implementation!r}; choose from {list(IMPLEMENTATIONS)}.")
    attn_implementation = "eager" if implementation == EAGER else "sdpa"
    if task == "backbone":
        stage_names = PvtConfig.from_pretrained(checkpoint_dir).stage_names
        return PvtBackbone.from_pretrained(
            checkpoint_dir, out_features=stage_names, attn_implementation=attn_implementation
        )
    return PvtForImageClassification.from_pretrained(checkpoint_dir, attn_implementation=attn_implementation)


def build_models(
    variant: str,
    implementations: tuple[str, ...] = IMPLEMENTATIONS,
    task: str = "classification",
    device: torch.device | str = "cpu",
    checkpoint_dir: str | Path | None = None,
) -> dict[str, nn.Module]:
    """The implementations of `variant` in eval mode on `device`, all holding one checkpoint's weights
    (`checkpoint_dir` from `save_builtin_checkpoint`; a temporary one when not given)."""
    with contextlib.ExitStack() as stack:
        if checkpoint_dir is None:
            checkpoint_dir = save_builtin_checkpoint(variant, stack.enter_context(tempfile.TemporaryDirectory()))
        return {name: load_implementation(checkpoint_dir, name, task).to(device).eval() for name in implementations}


def main_output(outputs) -> torch.Tensor:
    """The tensor to compare: logits of a classifier, all feature maps (flattened) of a backbone."""
    if getattr(outputs, "logits", None) is not None:
        return outputs.logits
    if getattr(outputs, "feature_maps", None) is not None:
        return torch.cat([feature_map.flatten() for feature_map in outputs.feature_maps])
    return outputs.last_hidden_state


def max_abs_differences(
    models: dict[str, nn.Module], pixel_values: torch.Tensor, reference: str
) -> dict[str, float]:
    """Max |output - reference output| of every other model, in float32 inference."""
    with torch.inference_mode():
        outputs = {name: main_output(model(pixel_values)).float() for name, model in models.items()}
    return {
        name: (output - outputs[reference]).abs().max().item() for name, output in outputs.items() if name != reference
    }


def check_same_outputs(
    models: dict[str, nn.Module], pixel_values: torch.Tensor, reference: str, atol: float = OUTPUT_TOLERANCE
) -> dict[str, float]:
    """Fail unless every model's output equals the reference's to `atol`: the timings compare like with like."""
    differences = max_abs_differences(models, pixel_values, reference)
    disagreeing = {name: difference for name, difference in differences.items() if not difference < atol}
    if disagreeing:
        raise AssertionError(
            f"outputs differ from {reference} by {disagreeing} (tolerance {atol}): the implementations do not hold "
            f"the same weights or compute different functions, so their timings would not be comparable."
        )
    return differences


def make_inputs(
    config: PvtConfig, batch_size: int, height: int, width: int, device: torch.device | str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pixel values and labels (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, config.num_channels, height, width, generator=generator)
    labels = torch.randint(0, max(config.num_labels, 1), (batch_size,), generator=generator)
    return pixel_values.to(device), labels.to(device)


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
    numbers = {
        name: max(1, round(min_block_seconds / warmup_seconds[name])) if warmup else 1 for name in names
    }
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
    """One case at one setting: every implementation's timing (and, later, memory) and ours' ratios."""

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
        checkpointing = " +checkpointing" if self.gradient_checkpointing else ""
        return (
            f"{self.case} {self.variant} {self.batch_size}x{self.height}x{self.width} {self.dtype}{checkpointing}"
        )

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
        """Ours (the subject) against every other implementation: speed-up (their time / ours, per round),
        time ratio (ours / theirs) and memory ratios (ours / theirs)."""
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
    timings = time_alternating(callables, plan.rounds, plan.min_block_seconds, warmup)
    comparison.record_timings(timings)
    return comparison


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def benchmark_inference(
    variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device
) -> list[Comparison]:
    """Classifier images/s at the native size for every batch size and dtype: ours, ours-eager, built-in."""
    models = build_models(variant, IMPLEMENTATIONS, device=device, checkpoint_dir=checkpoint_dir)
    config = models[OURS].config
    comparisons = []
    for dtype in plan.inference_dtypes:
        for batch_size in plan.inference_batch_sizes:
            size = plan.image_size
            comparison = Comparison("inference", variant, "classification", "inference", batch_size, size, size, dtype)
            progress(f"timing {comparison.label}")
            pixel_values, _ = make_inputs(config, batch_size, size, size, device)
            callables = {name: inference_step(model, pixel_values, dtype) for name, model in models.items()}
            comparisons.append(run_comparison(comparison, callables, plan))
    return comparisons


def benchmark_training(
    variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device, gradient_checkpointing: bool
) -> list[Comparison]:
    """One AdamW training step per call; with checkpointing only ours and ours-eager (the built-in lacks it)."""
    implementations = (OURS, EAGER) if gradient_checkpointing else IMPLEMENTATIONS
    dtypes = ["float32"] if gradient_checkpointing else plan.training_dtypes
    comparisons = []
    for dtype in dtypes:
        size, batch_size = plan.image_size, plan.training_batch_size
        case = "checkpointing" if gradient_checkpointing else "training"
        comparison = Comparison(
            case, variant, "classification", "training", batch_size, size, size, dtype, gradient_checkpointing
        )
        if gradient_checkpointing:
            comparison.notes.append("built-in: no gradient checkpointing (supports_gradient_checkpointing=False)")
        progress(f"timing {comparison.label}")
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
        progress(f"timing {comparison.label}")
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
    comparisons = []
    for size in plan.resolutions:
        batch_size = plan.resolution_batch_size
        comparison = Comparison("resolutions", variant, "classification", "inference", batch_size, size, size)
        progress(f"timing {comparison.label}")
        pixel_values, _ = make_inputs(models[OURS].config, batch_size, size, size, device)
        names = IMPLEMENTATIONS if size == plan.image_size else (OURS, EAGER)
        if size != plan.image_size:
            comparison.notes.append(f"built-in: runs only at its configured {plan.image_size}x{plan.image_size}")
        callables = {name: inference_step(models[name], pixel_values) for name in names}
        comparisons.append(run_comparison(comparison, callables, plan))
    return comparisons


def benchmark_compile(
    variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device, backend: str = "inductor"
) -> Comparison:
    """torch.compile(ours) against the same module in eager PyTorch mode, float32 inference, same outputs."""
    size, batch_size = plan.image_size, plan.compile_batch_size
    comparison = Comparison("compile", variant, "classification", "inference", batch_size, size, size, subject=COMPILED)
    progress(f"timing {comparison.label} (compiling first, backend {backend})")
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
        return comparison
    callables = {COMPILED: inference_step(compiled, pixel_values), OURS: inference_step(model, pixel_values)}
    return run_comparison(comparison, callables, plan)


# --- where the time goes --------------------------------------------------------------------------------------

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


def classify_operator(name: str) -> str:
    """"gemm", "attention" (fused attention kernels), "convolution" or "other", for aten operators and CUDA kernels.

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


def profile_outside_matmul(model: nn.Module, pixel_values: torch.Tensor, repeats: int = 2) -> dict:
    """Share of a forward's time by kind of work, from torch.profiler's key_averages: self CPU time on a CPU
    (the forward's range total is the 100%; its own self time is Python between operators), self CUDA time of
    the kernels on a GPU.

    `outside_matmul_percent` is strict (everything but GEMMs and fused attention kernels, so convolutions count as
    outside); `outside_matmul_conv_attention_percent` leaves convolutions out too (PVT's patch embeddings and
    spatial reductions are non-overlapping strided convolutions: matrix multiplies in disguise)."""
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
        total = sum(time for _, time in timed)
        basis = "self CUDA time of the kernels"
    else:
        forward_range = next(event for event in events if event.key == PROFILE_RANGE)
        total = forward_range.cpu_time_total
        timed = [(event.key, event.self_cpu_time_total) for event in events if event.key != PROFILE_RANGE]
        timed.append(("(Python between operators)", forward_range.self_cpu_time_total))
        basis = "self CPU time"
    by_kind = {"gemm": 0.0, "attention": 0.0, "convolution": 0.0, "other": 0.0}
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
        "other_operators": [  # the largest first
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
        progress(f"profiling {name} {variant} {batch_size}x{size}x{size} float32")
        profiles.append(
            {"implementation": name, "variant": variant, "batch_size": batch_size, "height": size, "width": size}
            | profile_outside_matmul(model, pixel_values)
        )
    return profiles


# --- peak memory, each case in a fresh process ----------------------------------------------------------------


def memory_case(comparison: Comparison, implementation: str) -> dict:
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
    }


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
    set-up (model, inputs, optimizer). Meant for a fresh process. Random weights: memory does not depend on them."""
    device = torch.device(case.get("device") or device or default_device())
    config = benchmark_config(case["variant"])
    implementation = case["implementation"]
    if implementation == BUILTIN:
        model = transformers.PvtForImageClassification(builtin_config(config))
    else:
        settings = {**config.to_dict(), "attn_implementation": "eager" if implementation == EAGER else "sdpa"}
        if case["task"] == "backbone":
            settings |= {"out_features": config.stage_names, "out_indices": None}
            model = PvtBackbone(PvtConfig.from_dict(settings))
        else:
            model = PvtForImageClassification(PvtConfig.from_dict(settings))
    model.to(device)
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


def measure_peak_memory_in_fresh_process(case: dict, timeout: float = 1800) -> dict:
    """`run_memory_case(case)` in a new Python process (`benchmark.py --worker`), so no earlier case's peak counts."""
    command = [sys.executable, "-m", "pvt_tools.commands.benchmark", "--worker", json.dumps(case)]
    command += ["--threads", str(torch.get_num_threads())]
    environment = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(WORKER_RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"memory worker for {case} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(WORKER_RESULT_PREFIX) :])


def measure_memory(comparisons: list[Comparison], plan: BenchmarkPlan, device: torch.device) -> None:
    """Fresh-process peak memory for every implementation of the comparisons whose case asks for it, a few
    processes at a time (each measures only its own peak, so running side by side changes no figure)."""
    jobs = [
        (comparison, implementation)
        for comparison in comparisons
        if comparison.case in plan.memory_cases and not comparison.error
        for implementation in comparison.results
    ]

    def measure(job: tuple[Comparison, str]) -> dict:
        comparison, implementation = job
        progress(f"peak memory {comparison.label} {implementation} (fresh process)")
        return measure_peak_memory_in_fresh_process(memory_case(comparison, implementation) | {"device": str(device)})

    with ThreadPoolExecutor(max_workers=plan.memory_processes) as executor:
        for (comparison, implementation), memory in zip(jobs, executor.map(measure, jobs)):
            comparison.results[implementation].update(memory)
    for comparison, _ in jobs:
        comparison.update_ratios()


# --- targets, table, files ------------------------------------------------------------------------------------


def pick_comparison(
    comparisons: list[Comparison], case: str, dtype: str, variant: str, batch_size: int, size: tuple[int, int]
) -> Comparison | None:
    """The comparison a target names, or the closest measured one (same case and dtype; then variant, batch
    size and input size as close as available)."""
    candidates = [c for c in comparisons if c.case == case and c.dtype == dtype and not c.error]
    if not candidates:
        return None

    def distance(comparison: Comparison) -> tuple:
        return (
            comparison.variant != variant,
            abs(comparison.batch_size - batch_size),
            abs(comparison.height * comparison.width - size[0] * size[1]),
        )

    return min(candidates, key=distance)


def target_row(
    name: str, measured: float | None, threshold: str, measured_on: str, failure: str | None = None
) -> dict:
    """PASS / MISS of `measured` against `threshold` (">= 1.4", "<= 0.5", "> 1"); MISS with the reason when the
    case failed; NOT MEASURED when it did not run."""
    comparisons = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__, "<": float.__lt__}
    operator, value = threshold.split()
    if failure is not None:
        status, measured_on = "MISS", failure
    elif measured is None:
        status = "NOT MEASURED"
    else:
        status = "PASS" if comparisons[operator](float(measured), float(value)) else "MISS"
    return {
        "target": name,
        "measured": measured,
        "threshold": threshold,
        "status": status,
        "measured_on": measured_on,
    }


def evaluate_targets(
    comparisons: list[Comparison], profiles: list[dict], plan: BenchmarkPlan, failures: list[dict] = ()
) -> list[dict]:
    """The issue's targets, each with the measured figure and PASS / MISS (on the closest measured setting)."""
    native = (plan.image_size, plan.image_size)
    rows = []

    def ratio(comparison: Comparison | None, other: str, key: str) -> float | None:
        return None if comparison is None else comparison.ratios.get(other, {}).get(key)

    def where(comparison: Comparison | None) -> str:
        return "" if comparison is None else comparison.label

    for dtype, threshold in (("float32", ">= 1.4"), ("bfloat16", ">= 2")):
        picked = pick_comparison(comparisons, "inference", dtype, "pvt-small", 8, native)
        name = f"{dtype} inference pvt-small 224 batch 8: images/s ours / built-in"
        rows.append(target_row(name, ratio(picked, BUILTIN, "speedup"), threshold, where(picked)))
    picked = pick_comparison(comparisons, "training", "float32", "pvt-small", 16, native)
    name = "float32 training step batch 16: steps/s ours / built-in"
    rows.append(target_row(name, ratio(picked, BUILTIN, "speedup"), ">= 1.2", where(picked)))
    picked = pick_comparison(comparisons, "backbone", "float32", "pvt-small", 1, (800, 1216))
    name = "backbone 800x1216: peak memory (increase over set-up) ours / ours-eager"
    rows.append(target_row(name, ratio(picked, EAGER, "memory_ratio"), "<= 0.5", where(picked)))
    name = "backbone 800x1216: time ours / ours-eager"
    rows.append(target_row(name, ratio(picked, EAGER, "time_ratio"), "<= 0.8", where(picked)))
    profiled = next((profile for profile in profiles if profile["implementation"] == OURS), None)
    profiled_on = "" if profiled is None else (
        f"profile {profiled['variant']} {profiled['batch_size']}x{profiled['height']}x{profiled['width']} float32"
    )
    for key, name in (
        ("outside_matmul_percent", "time outside matmul (strict: GEMM + attention kernels only) % of forward"),
        ("outside_matmul_conv_attention_percent", "time outside matmul+conv+attention kernels % of forward"),
    ):
        rows.append(target_row(name, None if profiled is None else profiled[key], "<= 25", profiled_on))
    picked = next((c for c in comparisons if c.case == "compile"), None)
    failure = picked.error if picked is not None else next(
        (failure["error"] for failure in failures if failure["case"] == "compile"), None
    )
    name = "torch.compile: images/s compiled / eager mode, outputs equal to 1e-4"
    rows.append(target_row(name, ratio(picked, OURS, "speedup"), "> 1", where(picked), failure))
    return rows


def format_number(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def format_table(results: dict) -> str:
    """Fixed-width text: one line per implementation of each comparison, ratios on ours' line; then the
    profiles, failures and targets of `run_benchmark`'s results."""
    comparisons, profiles, targets = results["comparisons"], results["profiles"], results["targets"]
    header = (
        f"{'case':<56} {'impl':<14} {'median ms':>10} {'min ms':>9} {'img/s':>9} {'peak MiB':>9} {'+MiB':>8}  ratios"
    )
    lines = [header, "-" * len(header)]
    for comparison in comparisons:
        if comparison.error:
            lines.append(f"{comparison.label:<56} ERROR: {comparison.error}")
        for name, result in comparison.results.items():
            ratio_text = ""
            if name == comparison.subject:
                parts = []
                for other, ratios in comparison.ratios.items():
                    text = f"x{ratios['speedup']:.2f} speed vs {other}" if "speedup" in ratios else ""
                    if "memory_ratio" in ratios:
                        text += f", {ratios['memory_ratio']:.2f} mem vs {other}"
                    parts.append(text)
                ratio_text = "; ".join(parts)
            lines.append(
                f"{comparison.label:<56} {name:<14} {result['median_s'] * 1000:>10.1f} {result['min_s'] * 1000:>9.1f} "
                f"{result['images_per_s']:>9.2f} {format_number(result.get('peak_memory_mib'), '{:.0f}'):>9} "
                f"{format_number(result.get('memory_increase_mib'), '{:.0f}'):>8}  {ratio_text}"
            )
        for note in comparison.notes:
            lines.append(f"{'':<56} note: {note}")
        for check, value in comparison.checks.items():
            lines.append(f"{'':<56} check: {check} = {value:.3g}")
    if profiles:
        lines += ["", "Profile (share of a float32 forward):"]
        for entry in profiles:
            percent = entry["percent"]
            lines.append(
                f"  {entry['implementation']:<10} {entry['variant']} {entry['batch_size']}x{entry['height']}x"
                f"{entry['width']}: {entry['forward_ms']:.1f} ms/forward ({entry['time_basis']}); "
                f"GEMM {percent['gemm']:.1f}%, attention {percent['attention']:.1f}%, "
                f"conv {percent['convolution']:.1f}%, other {percent['other']:.1f}% -> outside matmul (strict) "
                f"{entry['outside_matmul_percent']:.1f}%, outside matmul+conv+attention "
                f"{entry['outside_matmul_conv_attention_percent']:.1f}%"
            )
            top = ", ".join(f"{op['name']} {op['percent']:.1f}%" for op in entry["other_operators"][:TOP_OPERATORS])
            lines.append(f"             top non-matmul: {top}")
    if results.get("failures"):
        lines += ["", "Failures:"] + [f"  {f['case']} {f['variant']}: {f['error']}" for f in results["failures"]]
    if targets:
        lines += ["", "Targets:"]
        for row in targets:
            measured = format_number(row["measured"], "{:.3g}")
            on = f"  [{row['measured_on']}]" if row["measured_on"] else ""
            lines.append(f"  {row['status']:<12} {row['target']}: {measured} (target {row['threshold']}){on}")
    return "\n".join(lines)


def plot_throughput_vs_resolution(comparisons: list[Comparison], path: Path, title: str) -> None:
    """Images/s against the input side, one line per implementation and variant: the resolutions case (or, when
    it did not run, the float32 inference case at its smallest batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [c for c in comparisons if c.case == "resolutions" and not c.error]
    if not measured:
        inference = [c for c in comparisons if c.case == "inference" and c.dtype == "float32" and not c.error]
        smallest = min((c.batch_size for c in inference), default=None)
        measured = [c for c in inference if c.batch_size == smallest]
    lines: dict[tuple[str, str], dict[int, float]] = {}
    for comparison in measured:
        for name, result in comparison.results.items():
            lines.setdefault((comparison.variant, name), {})[comparison.height] = result["images_per_s"]
    colors = {OURS: "tab:blue", EAGER: "tab:orange", BUILTIN: "tab:green"}
    markers = {OURS: "o", EAGER: "s", BUILTIN: "D"}
    variants = sorted({variant for variant, _ in lines})
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (variant, name), line in sorted(lines.items()):
        sides = sorted(line)
        linestyle = ("-", "--", ":", "-.")[variants.index(variant) % 4]
        axes.plot(sides, [line[side] for side in sides], linestyle=linestyle, marker=markers.get(name, "x"),
                  color=colors.get(name), markersize=8, label=f"{name} ({variant})")
    batch_sizes = sorted({comparison.batch_size for comparison in measured})
    axes.set_xlabel("input side (pixels, square images)")
    axes.set_ylabel(f"images / s (float32, median, batch {', '.join(map(str, batch_sizes))})")
    axes.set_yscale("log")
    axes.set_title(f"PVT throughput vs resolution; built-in runs at its configured size only\n{title}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    if lines:
        axes.legend(fontsize=8)
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.partial.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    temporary.replace(path)


def write_json_atomically(data: dict, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


def write_report(results: dict, output_dir: str | Path) -> dict[str, Path]:
    """benchmark.json (everything in `results`) and throughput_vs_resolution.png, each written whole or not at
    all. `results` holds "comparisons" (Comparison objects), "profiles", "targets" and "environment"."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "benchmark.json"
    plot_path = output_dir / "throughput_vs_resolution.png"
    serialisable = {**results, "comparisons": [asdict(comparison) for comparison in results["comparisons"]]}
    write_json_atomically(serialisable, json_path)
    environment = results["environment"]
    title = f"{environment['device']}, {environment['torch_threads']} threads, torch {environment['torch']}"
    plot_throughput_vs_resolution(results["comparisons"], plot_path, title)
    return {"json": json_path, "plot": plot_path}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_summary(device: torch.device, plan: BenchmarkPlan, argv: list[str]) -> dict:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_name()})",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "command": ["scripts/benchmark.py", *argv],
        "plan": asdict(plan),
    }


# --- command line ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/benchmark")
    parser.add_argument("--quick", action="store_true", help="pvt-tiny, small batches, 3 rounds: under two minutes.")
    parser.add_argument("--cases", nargs="+", choices=CASES, help="Cases to run (default: all; --quick: fewer).")
    parser.add_argument("--variants", nargs="+", choices=list(PVT_VARIANTS), help="Default: pvt-tiny pvt-small.")
    parser.add_argument("--rounds", type=int, help="Alternating rounds per comparison (default 5; --quick 3).")
    parser.add_argument(
        "--memory_cases", nargs="*", choices=MEMORY_CASES,
        help="Cases whose peak memory is measured in fresh processes (default: all; --quick: backbone). "
        "Give none to skip.",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available).")
    parser.add_argument(
        "--threads", type=int,
        help="torch.set_num_threads for every process (default: torch's own choice). On a shared, busy CPU, 1 "
        "thread avoids OpenMP threads waiting for each other and gives steadier figures.",
    )
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend of the compile case.")
    parser.add_argument("--tiny", action="store_true", help="For the tests: a tiny random model at 64x64 (seconds).")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)  # one memory case, fresh process
    return parser.parse_args(argv)


def plan_from_args(args: argparse.Namespace) -> BenchmarkPlan:
    plan = tiny_plan() if args.tiny else quick_plan() if args.quick else BenchmarkPlan()
    if args.cases:
        plan = replace(plan, cases=list(args.cases))
    if args.variants and not args.tiny:
        plan = replace(plan, variants=list(args.variants))
    if args.rounds is not None:
        plan = replace(plan, rounds=args.rounds)
    if args.memory_cases is not None:
        plan = replace(plan, memory_cases=list(args.memory_cases))
    for attribute in ("compile_variant", "profile_variant"):
        if getattr(plan, attribute) not in plan.variants:
            plan = replace(plan, **{attribute: plan.variants[-1]})
    return plan


def check_weights(variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device) -> dict:
    """Ours and ours-eager against the built-in on one native-size batch, float32: equal to 1e-4 or stop."""
    models = build_models(variant, IMPLEMENTATIONS, device=device, checkpoint_dir=checkpoint_dir)
    pixel_values, _ = make_inputs(models[OURS].config, 2, plan.image_size, plan.image_size, device)
    differences = check_same_outputs(models, pixel_values, reference=BUILTIN)
    print(
        f"weight check {variant} @{plan.image_size}: "
        + ", ".join(f"{name} vs built-in max |diff| {value:.2e}" for name, value in differences.items())
        + f" (< {OUTPUT_TOLERANCE:g}) OK",
        flush=True,
    )
    return {"variant": variant, "max_abs_diff_vs_builtin": differences}


def run_benchmark(plan: BenchmarkPlan, device: torch.device, compile_backend: str = "inductor") -> dict:
    """Every case of the plan: weight checks, alternating timings, fresh-process memory, profiles, targets.
    A case that raises (a compiler error, running out of memory) is reported under "failures"; the others run."""
    comparisons: list[Comparison] = []
    profiles: list[dict] = []
    weight_checks, failures = [], []
    with tempfile.TemporaryDirectory() as temporary:
        for variant in plan.variants:
            checkpoint_dir = save_builtin_checkpoint(variant, Path(temporary) / variant)
            weight_checks.append(check_weights(variant, checkpoint_dir, plan, device))
            runners = {
                "inference": lambda: benchmark_inference(variant, checkpoint_dir, plan, device),
                "training": lambda: benchmark_training(variant, checkpoint_dir, plan, device, False),
                "checkpointing": lambda: benchmark_training(variant, checkpoint_dir, plan, device, True),
                "backbone": lambda: benchmark_backbone(variant, checkpoint_dir, plan, device),
                "resolutions": lambda: benchmark_resolutions(variant, checkpoint_dir, plan, device),
                "compile": lambda: [benchmark_compile(variant, checkpoint_dir, plan, device, compile_backend)],
                "profile": lambda: benchmark_profiles(variant, checkpoint_dir, plan, device),
            }
            for case, runner in runners.items():
                only_for = {"compile": plan.compile_variant, "profile": plan.profile_variant}.get(case, variant)
                if case not in plan.cases or variant != only_for:
                    continue
                try:
                    measured = runner()
                except Exception as error:  # reported with the results; the other cases still run
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
        "targets": evaluate_targets(comparisons, profiles, plan, failures),
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; the process-wide settings it changes (log verbosity, threads) are restored after."""
    verbosity, threads = transformers.logging.get_verbosity(), torch.get_num_threads()
    try:
        return run_command(sys.argv[1:] if argv is None else argv)
    finally:
        transformers.logging.set_verbosity(verbosity)
        torch.set_num_threads(threads)


def run_command(argv: list[str]) -> int:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(WORKER_RESULT_PREFIX + json.dumps(run_memory_case(json.loads(args.worker))), flush=True)
        return 0
    plan = plan_from_args(args)
    device = torch.device(args.device) if args.device else default_device()
    environment = environment_summary(device, plan, argv)
    print(f"PVT benchmark on {environment['device']}, {environment['torch_threads']} threads, "
          f"torch {environment['torch']}, transformers {environment['transformers']}", flush=True)
    results = run_benchmark(plan, device, args.compile_backend) | {"environment": environment}
    print(format_table(results))
    paths = write_report(results, args.output_dir)
    print(f"\nwrote {paths['json']} and {paths['plot']}")
    failed = results["failures"] or any(comparison.error for comparison in results["comparisons"])
    return 1 if failed else 0
