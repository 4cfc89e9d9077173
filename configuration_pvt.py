# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the Pyramid Vision Transformer v1 (Wang et al., 2021, arXiv:2102.12122)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

# The paper's four models (Table 1 of arXiv:2102.12122); everything not listed is shared by all four.
PVT_VARIANTS: dict[str, dict] = {
    "pvt-tiny": {"depths": [2, 2, 2, 2]},
    "pvt-small": {"depths": [3, 4, 6, 3]},
    "pvt-medium": {"depths": [3, 4, 18, 3]},
    "pvt-large": {"depths": [3, 8, 27, 3]},
}

SEQUENCE_REDUCTION_TYPES = ("conv", "avg_pool", "max_pool")

# Written into config.json by `save_pretrained`, so that one saved folder serves every Auto class with
# `trust_remote_code=True` on a machine where this project is not installed.
AUTO_MAP: dict[str, str] = {
    "AutoConfig": "configuration_pvt.PvtConfig",
    "AutoModel": "modeling_pvt.PvtModel",
    "AutoModelForImageClassification": "modeling_pvt.PvtForImageClassification",
    "AutoBackbone": "modeling_pvt.PvtBackbone",
}

PER_STAGE_FIELDS = (
    "depths",
    "sequence_reduction_ratios",
    "hidden_sizes",
    "patch_sizes",
    "strides",
    "num_attention_heads",
    "mlp_ratios",
)


@strict
class PvtConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a [`PvtModel`], [`PvtForImageClassification`] or [`PvtBackbone`]. The defaults are PVT-Tiny;
    [`PvtConfig.from_variant`] gives the paper's other models. Field names are those of Transformers' built-in
    `PvtConfig`, so a config.json written for it loads unchanged.

    Args:
        image_size (`int` or `(int, int)`, defaults to 224):
            The resolution the position embeddings are laid out for; other resolutions interpolate them.
        num_channels (`int`, defaults to 3): Channels of the input images.
        num_encoder_blocks (`int`, defaults to 4): Number of stages.
        depths (`list[int]`): Number of transformer layers in each stage.
        sequence_reduction_ratios (`list[int]`): Spatial-reduction ratio R of each stage's attention: keys and
            values come from a grid R times coarser in each direction. The last stage (class token) must use 1.
        hidden_sizes (`list[int]`): Channels of each stage.
        patch_sizes (`list[int]`): Patch (kernel) size of each stage's patch embedding.
        strides (`list[int]`): Stride of each stage's patch embedding.
        num_attention_heads (`list[int]`): Attention heads of each stage.
        mlp_ratios (`list[int]`): MLP hidden size as a multiple of the stage's hidden size.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (exact GELU, as the official code).
        hidden_dropout_prob (`float`): Dropout after position embeddings, attention output and MLP.
        attention_probs_dropout_prob (`float`): Dropout on the attention probabilities.
        initializer_range (`float`, defaults to 0.02): Std of the truncated normal for linear layers, position
            embeddings and the class token.
        drop_path_rate (`float`): Stochastic-depth rate, increasing linearly over all layers up to this value.
        layer_norm_eps (`float`, defaults to 1e-6): Epsilon of the layers' and the final LayerNorms.
        patch_embedding_layer_norm_eps (`float`, defaults to 1e-5): Epsilon of the LayerNorm after each patch
            embedding (PyTorch's default in the official code; the built-in Transformers Pvt uses `layer_norm_eps`).
        sequence_reduction_layer_norm_eps (`float`, defaults to 1e-5): Epsilon of the LayerNorm after each
            spatial reduction (same remark).
        qkv_bias (`bool`, defaults to `True`): Bias in the query, key and value projections.
        sequence_reduction_type (`str`, defaults to `"conv"`): `"conv"`: the official strided projection of each
            RxR patch; `"avg_pool"` / `"max_pool"`: pool each RxR cell, then a learned CxC linear projection (the
            paper's description). Both are followed by a LayerNorm.
        inference_mlp_chunk_size (`int`, defaults to 2048): Without gradients (inference), each layer runs its MLP
            over chunks of this many tokens along each image's sequence: the same outputs, a fraction of the peak
            memory at detection resolutions (the MLP's hidden activations are 4-8 times the tokens' size). 0 runs
            the MLP in one piece. `chunk_size_feed_forward` (Transformers' setting, 0 = off), when set, applies
            with and without gradients and takes precedence.
        out_features / out_indices: Which of `stage1`..`stage4` a [`PvtBackbone`] returns.
    """

    model_type = "pvt_v1"

    image_size: int | list[int] | tuple[int, int] = 224
    num_channels: int = 3
    num_encoder_blocks: int = 4
    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    sequence_reduction_ratios: list[int] | tuple[int, ...] = (8, 4, 2, 1)
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 320, 512)
    patch_sizes: list[int] | tuple[int, ...] = (4, 2, 2, 2)
    strides: list[int] | tuple[int, ...] = (4, 2, 2, 2)
    num_attention_heads: list[int] | tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: list[int] | list[float] | tuple[int | float, ...] = (8, 8, 4, 4)
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02
    drop_path_rate: float | int = 0.0
    layer_norm_eps: float = 1e-6
    patch_embedding_layer_norm_eps: float = 1e-5
    sequence_reduction_layer_norm_eps: float = 1e-5
    qkv_bias: bool = True
    sequence_reduction_type: str = "conv"
    inference_mlp_chunk_size: int = 2048
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        if kwargs.pop("model_type", None) == "pvt":
            # Transformers' built-in Pvt normalises with `layer_norm_eps` everywhere: keep its outputs.
            self.patch_embedding_layer_norm_eps = self.layer_norm_eps
            self.sequence_reduction_layer_norm_eps = self.layer_norm_eps
        for field in PER_STAGE_FIELDS:
            setattr(self, field, list(getattr(self, field)))
        if isinstance(self.image_size, (list, tuple)):
            self.image_size = list(self.image_size)
        self._validate_stages()
        self.stage_names = [f"stage{index}" for index in range(1, self.num_encoder_blocks + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)
        # Every Auto class, set once here: saving (which adds the saved class's entry) leaves the config as it was.
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}

    def _validate_stages(self) -> None:
        stages = self.num_encoder_blocks
        if stages < 1:
            raise ValueError(f"num_encoder_blocks must be at least 1, got {stages}.")
        for field in PER_STAGE_FIELDS:
            values = getattr(self, field)
            if len(values) != stages:
                raise ValueError(
                    f"{field} has {len(values)} entries but num_encoder_blocks is {stages}: give one value per "
                    f"stage, e.g. {field}={values[:1] * stages}."
                )
            if any(value <= 0 for value in values):
                raise ValueError(f"{field} must hold positive numbers, got {values}.")
        for stage, (hidden_size, heads) in enumerate(zip(self.hidden_sizes, self.num_attention_heads), start=1):
            if hidden_size % heads != 0:
                raise ValueError(
                    f"hidden_sizes[{stage - 1}]={hidden_size} is not divisible by num_attention_heads[{stage - 1}]="
                    f"{heads} (stage {stage}): choose a head count that divides the hidden size."
                )
        if self.sequence_reduction_ratios[-1] != 1:
            raise ValueError(
                f"sequence_reduction_ratios[-1] must be 1 (the last stage carries the class token, which has no "
                f"place on a reduced grid), got {self.sequence_reduction_ratios[-1]}."
            )
        if self.sequence_reduction_type not in SEQUENCE_REDUCTION_TYPES:
            raise ValueError(
                f"sequence_reduction_type must be one of {list(SEQUENCE_REDUCTION_TYPES)}, "
                f"got {self.sequence_reduction_type!r}."
            )
        if isinstance(self.inference_mlp_chunk_size, bool) or self.inference_mlp_chunk_size < 0:
            raise ValueError(
                f"inference_mlp_chunk_size must be a whole number of tokens >= 0 (0 runs the MLP in one piece), got "
                f"{self.inference_mlp_chunk_size!r}."
            )
        image_size = self.image_size if isinstance(self.image_size, list) else [self.image_size]
        if len(image_size) not in (1, 2) or any(side <= 0 for side in image_size):
            raise ValueError(f"image_size must be a positive int or [height, width], got {self.image_size}.")

    @property
    def num_hidden_layers(self) -> int:
        """Number of transformer layers over all stages (what `output_hidden_states` indices count)."""
        return sum(self.depths)

    @classmethod
    def from_variant(cls, name: str, **overrides) -> "PvtConfig":
        """The paper's configuration `name` ("pvt-tiny", "pvt-small", "pvt-medium", "pvt-large") with a
        1000-class ImageNet head; keyword arguments override any field."""
        if name not in PVT_VARIANTS:
            raise ValueError(f"Unknown PVT variant {name!r}; choose one of {list(PVT_VARIANTS)}.")
        settings = {"num_labels": 1000, **PVT_VARIANTS[name], **overrides}
        return cls(**settings)


__all__ = ["PvtConfig", "PVT_VARIANTS", "AUTO_MAP"]
