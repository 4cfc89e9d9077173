# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""The paper's four models: their published figures, and whether a configuration is one of them."""

from configuration_pvt import PVT_VARIANTS, PvtConfig

# The paper (arXiv:2102.12122) and the authors' model zoo: parameters (millions, 1000-class head), GFLOPs
# (multiply-adds) at 224x224 and ImageNet-1k top-1 accuracy (%).
PAPER_TABLE: dict[str, dict[str, float]] = {
    "pvt-tiny": {"params_millions": 13.2, "gflops": 1.9, "top1": 75.1},
    "pvt-small": {"params_millions": 24.5, "gflops": 3.8, "top1": 79.8},
    "pvt-medium": {"params_millions": 44.2, "gflops": 6.7, "top1": 81.2},
    "pvt-large": {"params_millions": 61.4, "gflops": 9.8, "top1": 81.7},
}



def matching_variant_differences(config: PvtConfig, variant: str) -> list[str]:
    """How `config` differs from the paper's `variant` (with its 1000-class head); empty if it is that model."""
    reference = PvtConfig.from_variant(variant)
    fields = ("image_size", "hidden_sizes", "depths", "mlp_ratios", "sequence_reduction_ratios", "patch_sizes",
              "num_attention_heads", "qkv_bias", "num_labels")
    return [
        f"{field} {getattr(config, field)} (the paper's {variant}: {getattr(reference, field)})"
        for field in fields
        if getattr(config, field) != getattr(reference, field)
    ]


def matching_variant(config: PvtConfig) -> str | None:
    """The paper's model that `config` is, if any."""
    return next((name for name in PVT_VARIANTS if not matching_variant_differences(config, name)), None)
