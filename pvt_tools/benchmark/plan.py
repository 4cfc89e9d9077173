# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""What a benchmark run measures, and the three implementations it compares, holding the same weights.

"ours" (attn_implementation="sdpa", the default), "ours-eager" (attn_implementation="eager": materialises the
attention matrix as the official code does) and "built-in" (`transformers.PvtForImageClassification`, model_type
"pvt"; it only runs at its configured size). The built-in model is created with the architecture of the variant,
saved, and loaded into our classes through their built-in key mapping; `check_weights` confirms that all of them
compute the same outputs before anything is timed.
"""

import contextlib
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import transformers
from torch import nn

from configuration_pvt import PvtConfig
from modeling_pvt import PvtBackbone, PvtForImageClassification

OURS = "ours"
EAGER = "ours-eager"
BUILTIN = "built-in"
COMPILED = "ours-compiled"
IMPLEMENTATIONS = (OURS, EAGER, BUILTIN)
ATTENTION_OF = {OURS: "sdpa", EAGER: "eager"}  # attn_implementation of each of our implementations
TASKS = ("classification", "backbone")
CASES = ("inference", "training", "checkpointing", "backbone", "resolutions", "compile", "profile")
MEMORY_CASES = ("inference", "training", "checkpointing", "backbone")
DTYPES = ("float32", "bfloat16")
OUTPUT_TOLERANCE = 1e-4  # max |diff| in float32 between implementations holding the same weights

# A random configuration small enough for the tests (`--tiny`); its numbers mean nothing.
TEST_VARIANT = "test-tiny"
TEST_TINY_SETTINGS = {
    "image_size": 64,
    "hidden_sizes": [16, 32, 40, 64],
    "depths": [1, 1, 2, 1],
    "num_attention_heads": [1, 2, 2, 4],
    "mlp_ratios": [2, 2, 2, 2],
    "sequence_reduction_ratios": [4, 2, 2, 1],
    "num_labels": 10,
}

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


def progress(message: str) -> None:
    """A progress line on stderr, so stdout carries only the results."""
    print(message, file=sys.stderr, flush=True)


# --- what to run ----------------------------------------------------------------------------------------------


@dataclass
class BenchmarkPlan:
    """Every size, batch and repetition of one run; `quick_plan` and `tiny_plan` are smaller ones."""

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
    """About half a minute, for the tests: the TEST_TINY_SETTINGS model at 64-pixel inputs, peak memory (a fresh
    process per measurement, about 5 s each for its imports) only for the backbone, as in --quick."""
    return BenchmarkPlan(
        variants=[TEST_VARIANT],
        memory_cases=["backbone"],
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


def adjusted_plan(
    plan: BenchmarkPlan,
    cases: list[str] | None = None,
    variants: list[str] | None = None,
    rounds: int | None = None,
    memory_cases: list[str] | None = None,
) -> BenchmarkPlan:
    """`plan` with the given choices (None keeps the plan's); the compile and profile cases move to the last
    variant when theirs is not measured."""
    if cases is not None:
        plan = replace(plan, cases=list(cases))
    if variants is not None:
        plan = replace(plan, variants=list(variants))
    if rounds is not None:
        plan = replace(plan, rounds=rounds)
    if memory_cases is not None:
        plan = replace(plan, memory_cases=list(memory_cases))
    for attribute in ("compile_variant", "profile_variant"):
        if getattr(plan, attribute) not in plan.variants:
            plan = replace(plan, **{attribute: plan.variants[-1]})
    return plan


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


def check_implementation(implementation: str, task: str) -> None:
    """Fail with the choices unless `implementation` exists for `task`."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose from {list(TASKS)}.")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"Unknown implementation {implementation!r}; choose from {list(IMPLEMENTATIONS)}.")
    if implementation == BUILTIN and task == "backbone":
        raise ValueError("Transformers' built-in Pvt has no backbone class: compare backbones as ours vs ours-eager.")


def save_builtin_checkpoint(variant: str, directory: str | Path, seed: int = 0) -> Path:
    """A randomly initialised built-in PvtForImageClassification of `variant`, saved: the weights all share."""
    torch.manual_seed(seed)
    model = transformers.PvtForImageClassification(builtin_config(benchmark_config(variant)))
    model.save_pretrained(directory)
    return Path(directory)


def load_implementation(checkpoint_dir: str | Path, implementation: str, task: str = "classification") -> nn.Module:
    """One implementation from a built-in checkpoint: ours load it through their built-in key mapping (the config,
    read from a built-in config.json, keeps the built-in's 1e-6 LayerNorm epsilon everywhere)."""
    check_implementation(implementation, task)
    if implementation == BUILTIN:
        return transformers.PvtForImageClassification.from_pretrained(checkpoint_dir)
    attn_implementation = ATTENTION_OF[implementation]
    if task == "backbone":
        stage_names = PvtConfig.from_pretrained(checkpoint_dir).stage_names
        return PvtBackbone.from_pretrained(
            checkpoint_dir, out_features=stage_names, attn_implementation=attn_implementation
        )
    return PvtForImageClassification.from_pretrained(checkpoint_dir, attn_implementation=attn_implementation)


def new_implementation(config: PvtConfig, implementation: str, task: str = "classification") -> nn.Module:
    """One implementation with random weights, no checkpoint involved: for measuring memory, which the weights'
    values do not change. A backbone returns all four stages, as `load_implementation`'s does."""
    check_implementation(implementation, task)
    if implementation == BUILTIN:
        return transformers.PvtForImageClassification(builtin_config(config))
    settings = {**config.to_dict(), "attn_implementation": ATTENTION_OF[implementation]}
    if task == "backbone":
        return PvtBackbone(PvtConfig.from_dict(settings | {"out_features": config.stage_names, "out_indices": None}))
    return PvtForImageClassification(PvtConfig.from_dict(settings))


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


def make_inputs(
    config: PvtConfig, batch_size: int, height: int, width: int, device: torch.device | str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pixel values and labels (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, config.num_channels, height, width, generator=generator)
    labels = torch.randint(0, max(config.num_labels, 1), (batch_size,), generator=generator)
    return pixel_values.to(device), labels.to(device)


# --- the weight check -----------------------------------------------------------------------------------------


def main_output(outputs) -> torch.Tensor:
    """The tensor to compare: logits of a classifier, all feature maps (flattened) of a backbone."""
    if getattr(outputs, "logits", None) is not None:
        return outputs.logits
    if getattr(outputs, "feature_maps", None) is not None:
        return torch.cat([feature_map.flatten() for feature_map in outputs.feature_maps])
    return outputs.last_hidden_state


def max_abs_differences(models: dict[str, nn.Module], pixel_values: torch.Tensor, reference: str) -> dict[str, float]:
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


def check_weights(variant: str, checkpoint_dir: Path, plan: BenchmarkPlan, device: torch.device) -> dict:
    """Ours and ours-eager against the built-in on one native-size batch of 2, float32: equal to
    OUTPUT_TOLERANCE, or an AssertionError that stops the run."""
    models = build_models(variant, IMPLEMENTATIONS, device=device, checkpoint_dir=checkpoint_dir)
    pixel_values, _ = make_inputs(models[OURS].config, 2, plan.image_size, plan.image_size, device)
    differences = check_same_outputs(models, pixel_values, reference=BUILTIN)
    return {"variant": variant, "image_size": plan.image_size, "max_abs_diff_vs_builtin": differences}


__all__ = [
    "BUILTIN",
    "COMPILED",
    "EAGER",
    "IMPLEMENTATIONS",
    "OURS",
    "BenchmarkPlan",
    "adjusted_plan",
    "build_models",
    "check_weights",
    "load_implementation",
    "make_inputs",
    "new_implementation",
    "quick_plan",
    "save_builtin_checkpoint",
    "tiny_plan",
]
