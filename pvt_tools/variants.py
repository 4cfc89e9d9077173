# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""The paper's four models: their published figures, and whether a configuration is one of them."""

from dataclasses import dataclass

from configuration_pvt import PVT_VARIANTS, PvtConfig

# The paper (arXiv:2102.12122) and the authors' model zoo: parameters (millions, 1000-class head), GFLOPs
# (multiply-adds) at 224x224 and ImageNet-1k top-1 accuracy (%).
PAPER_TABLE: dict[str, dict[str, float]] = {
    "pvt-tiny": {"params_millions": 13.2, "gflops": 1.9, "top1": 75.1},
    "pvt-small": {"params_millions": 24.5, "gflops": 3.8, "top1": 79.8},
    "pvt-medium": {"params_millions": 44.2, "gflops": 6.7, "top1": 81.2},
    "pvt-large": {"params_millions": 61.4, "gflops": 9.8, "top1": 81.7},
}


@dataclass(frozen=True)
class VariantFacts:
    """What a model card says about one of the paper's models, beyond its configuration (PvtConfig.from_variant)."""

    name: str  # "pvt-small"
    title: str  # "PVT-Small"
    size: str  # where it sits among the four: "smallest", "small", "medium", "largest"
    parameters: int  # counted by `pvt-stats` (pvt_tools.stats), 1000-class head
    macs: int  # multiply-adds of one 224x224 image, counted by `pvt-stats`
    drop_path_rate: float  # the authors' training config
    official_checkpoint: str  # the authors' file in whai362/PVT's model zoo

    @property
    def paper(self) -> dict[str, float]:
        """Parameters (M), GFLOPs and ImageNet-1k top-1 (%) as the paper reports them."""
        return PAPER_TABLE[self.name]

    @property
    def config(self) -> PvtConfig:
        return PvtConfig.from_variant(self.name)


VARIANT_FACTS: dict[str, VariantFacts] = {
    "pvt-tiny": VariantFacts("pvt-tiny", "PVT-Tiny", "smallest", 13_229_288, 1_932_911_616, 0.1, "pvt_tiny.pth"),
    "pvt-small": VariantFacts("pvt-small", "PVT-Small", "small", 24_485_864, 3_815_701_504, 0.1, "pvt_small.pth"),
    "pvt-medium": VariantFacts("pvt-medium", "PVT-Medium", "medium", 44_208_104, 6_659_175_424, 0.3, "pvt_medium.pth"),
    "pvt-large": VariantFacts("pvt-large", "PVT-Large", "largest", 61_369_320, 9_813_765_632, 0.3, "pvt_large.pth"),
}


def matching_variant_differences(config: PvtConfig, variant: str) -> list[str]:
    """How `config` differs from the paper's `variant` (with its 1000-class head); empty if it is that model."""
    reference = PvtConfig.from_variant(variant)
    fields = (
        "image_size",
        "hidden_sizes",
        "depths",
        "mlp_ratios",
        "sequence_reduction_ratios",
        "patch_sizes",
        "num_attention_heads",
        "qkv_bias",
        "num_labels",
    )
    return [
        f"{field} {getattr(config, field)} (the paper's {variant}: {getattr(reference, field)})"
        for field in fields
        if getattr(config, field) != getattr(reference, field)
    ]


def matching_variant(config: PvtConfig) -> str | None:
    """The paper's model that `config` is, if any."""
    return next((name for name in PVT_VARIANTS if not matching_variant_differences(config, name)), None)
