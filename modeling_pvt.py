# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Pyramid Vision Transformer v1 (Wang et al., 2021, arXiv:2102.12122) for Transformers.

Four stages; each embeds non-overlapping patches, adds learned position embeddings and runs pre-norm layers of
spatial-reduction attention (keys and values from a grid R times coarser) and an MLP. The last stage carries a
class token for classification; `PvtBackbone` returns the four stage maps for dense prediction.
"""

import math
from collections.abc import Callable

import torch
from torch import nn
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

try:  # a Hub repo's code, loaded as a package by `trust_remote_code`
    from .configuration_pvt import PvtConfig
except ImportError:  # installed with pip as top-level modules
    from configuration_pvt import PvtConfig


# Checkpoints of Transformers' built-in Pvt (model_type "pvt") load by renaming their keys to ours. Transformers
# applies these in turn to every key (after its own handling of the "pvt." prefix); each may capture one group.
BUILTIN_PVT_KEY_MAPPING: dict[str, str] = {
    r"encoder\.patch_embeddings\.(\d+)\.(?=projection|layer_norm)": r"stages.\1.patch_embeddings.",
    r"encoder\.patch_embeddings\.(\d+)\.(?=position_embeddings|cls_token)": r"stages.\1.",
    r"encoder\.block\.(\d+)\.": r"stages.\1.layers.",
    r"\.attention\.self\.query\.": ".attention.q_proj.",
    r"\.attention\.self\.key\.": ".attention.k_proj.",
    r"\.attention\.self\.value\.": ".attention.v_proj.",
    r"\.attention\.self\.sequence_reduction\.": ".attention.sequence_reduction.projection.",
    r"\.attention\.self\.layer_norm\.": ".attention.sequence_reduction.layer_norm.",
    r"\.attention\.output\.dense\.": ".attention.o_proj.",
    r"\.mlp\.dense1\.": ".mlp.fc1.",
    r"\.mlp\.dense2\.": ".mlp.fc2.",
    r"encoder\.layer_norm\.": "layernorm.",
}


def native_grid_sizes(config: PvtConfig) -> list[tuple[int, int]]:
    """Token grid (height, width) of every stage at `config.image_size`, where position embeddings are stored."""
    height, width = (config.image_size, config.image_size) if isinstance(config.image_size, int) else config.image_size
    grids = []
    for patch_size, stride in zip(config.patch_sizes, config.strides):
        height, width = (height - patch_size) // stride + 1, (width - patch_size) // stride + 1
        grids.append((height, width))
    return grids


def minimum_input_size(config: PvtConfig) -> int:
    """Smallest image side that still leaves one token in the last stage (32 pixels for the paper's models)."""
    size = 1
    for patch_size, stride in zip(reversed(config.patch_sizes), reversed(config.strides)):
        size = (size - 1) * stride + patch_size
    return size


def autocast_enabled(device_type: str) -> bool:
    """Whether torch.autocast may change the input's dtype on this device (devices without autocast, such as "meta",
    count as enabled: the check below then stays out of the way)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return True


def check_pixel_values(pixel_values: torch.Tensor, config: PvtConfig, dtype: torch.dtype | None = None) -> None:
    """Fail early, with the fix, on inputs the network cannot take (`dtype`: that of the weights)."""
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values holds {pixel_values.dtype} values; the network takes normalised floating-point images: "
            "prepare them with the model's image processor (or convert with .float() and normalise)."
        )
    if dtype is not None and pixel_values.dtype != dtype and not autocast_enabled(pixel_values.device.type):
        raise ValueError(
            f"pixel_values is {pixel_values.dtype} but the model's weights are {dtype}: convert the input with "
            ".to(model.dtype) (or run under torch.autocast)."
        )
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must have shape (batch_size, num_channels, height, width), got {tuple(pixel_values.shape)}."
        )
    _, num_channels, height, width = pixel_values.shape
    if num_channels != config.num_channels:
        raise ValueError(
            f"pixel_values has {num_channels} channels but the model expects {config.num_channels} "
            f"(config.num_channels): convert the images (e.g. to RGB) or change num_channels."
        )
    minimum = minimum_input_size(config)
    if height < minimum or width < minimum:
        raise ValueError(
            f"pixel_values of {height}x{width} pixels is too small: PVT needs at least {minimum}x{minimum} "
            f"(the product of the patch strides) to leave one token in the last stage. Resize the images."
        )


class PvtPatchEmbeddings(nn.Module):
    """Non-overlapping patches -> tokens: a strided convolution, then LayerNorm."""

    def __init__(self, config: PvtConfig, stage_index: int):
        super().__init__()
        in_channels = config.num_channels if stage_index == 0 else config.hidden_sizes[stage_index - 1]
        hidden_size = config.hidden_sizes[stage_index]
        self.projection = nn.Conv2d(
            in_channels,
            hidden_size,
            kernel_size=config.patch_sizes[stage_index],
            stride=config.strides[stage_index],
        )
        self.layer_norm = nn.LayerNorm(hidden_size, eps=config.patch_embedding_layer_norm_eps)

    def forward(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        feature_map = self.projection(feature_map)  # (B, C, H, W)
        height, width = feature_map.shape[-2:]
        tokens = self.layer_norm(feature_map.flatten(2).transpose(1, 2))  # (B, H*W, C)
        return tokens, height, width


class PvtSequenceReduction(nn.Module):
    """Shrinks the token grid R times in each direction: the source of keys and values."""

    def __init__(self, config: PvtConfig, stage_index: int):
        super().__init__()
        hidden_size = config.hidden_sizes[stage_index]
        ratio = config.sequence_reduction_ratios[stage_index]
        if config.sequence_reduction_type == "conv":
            self.pool = None
            self.projection = nn.Conv2d(hidden_size, hidden_size, kernel_size=ratio, stride=ratio)
        else:
            pool_class = nn.AvgPool2d if config.sequence_reduction_type == "avg_pool" else nn.MaxPool2d
            self.pool = pool_class(kernel_size=ratio, stride=ratio)
            self.projection = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=config.sequence_reduction_layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch_size, _, hidden_size = hidden_states.shape
        feature_map = hidden_states.transpose(1, 2).reshape(batch_size, hidden_size, height, width)
        if self.pool is None:
            reduced = self.projection(feature_map).flatten(2).transpose(1, 2)  # (B, N / R^2, C)
        else:
            reduced = self.projection(self.pool(feature_map).flatten(2).transpose(1, 2))
        return self.layer_norm(reduced)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class PvtAttention(nn.Module):
    """Spatial-reduction attention: queries from every token, keys and values from the reduced grid."""

    def __init__(self, config: PvtConfig, stage_index: int):
        super().__init__()
        self.config = config
        hidden_size = config.hidden_sizes[stage_index]
        self.head_dim = hidden_size // config.num_attention_heads[stage_index]
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False

        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=config.qkv_bias)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=config.qkv_bias)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        has_reduction = config.sequence_reduction_ratios[stage_index] > 1
        self.sequence_reduction = PvtSequenceReduction(config, stage_index) if has_reduction else None

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, num_tokens, _ = hidden_states.shape
        key_value_states = hidden_states
        if self.sequence_reduction is not None:
            key_value_states = self.sequence_reduction(hidden_states, height, width)

        # (B, N, C) -> (B, heads, N, head_dim)
        query = self.q_proj(hidden_states).view(batch_size, num_tokens, -1, self.head_dim).transpose(1, 2)
        key = self.k_proj(key_value_states).view(batch_size, -1, query.shape[1], self.head_dim).transpose(1, 2)
        value = self.v_proj(key_value_states).view(batch_size, -1, query.shape[1], self.head_dim).transpose(1, 2)

        implementation = self.config._attn_implementation
        if kwargs.get("output_attentions", self.config.output_attentions):
            implementation = "eager"  # only eager materialises the attention weights
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = self.dropout(self.o_proj(attn_output.reshape(batch_size, num_tokens, -1)))
        return attn_output, attn_weights


class PvtMLP(nn.Module):
    def __init__(self, config: PvtConfig, stage_index: int):
        super().__init__()
        hidden_size = config.hidden_sizes[stage_index]
        intermediate_size = int(hidden_size * config.mlp_ratios[stage_index])
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.activation_fn(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class PvtDropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample while training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = torch.empty(shape, dtype=hidden_states.dtype, device=hidden_states.device).bernoulli_(keep_prob)
        return hidden_states * keep / keep_prob

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


def feed_forward_in_chunks(
    feed_forward: Callable[[torch.Tensor], torch.Tensor], hidden_states: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """`feed_forward` over chunks of `chunk_size` tokens along the sequence (dim 1) of each image, or in one piece
    when `chunk_size` is 0. The MLP is token-wise, so the result is the same; only the peak memory differs.

    Transformers' `apply_chunking_to_forward` does this too, but only for sequence lengths that are a multiple of
    the chunk size; PVT's lengths follow the image size (any size from 32 pixels, plus the class token), so the
    last chunk here may be shorter."""
    if chunk_size <= 0 or hidden_states.shape[1] <= chunk_size:
        return feed_forward(hidden_states)
    return torch.cat([feed_forward(chunk) for chunk in hidden_states.split(chunk_size, dim=1)], dim=1)


class PvtLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: PvtConfig, stage_index: int, drop_path: float):
        super().__init__()
        hidden_size = config.hidden_sizes[stage_index]
        self.layer_norm_1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = PvtAttention(config, stage_index)
        self.layer_norm_2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = PvtMLP(config, stage_index)
        self.drop_path = PvtDropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.chunk_size_feed_forward = config.chunk_size_feed_forward
        self.inference_mlp_chunk_size = config.inference_mlp_chunk_size

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, **kwargs: Unpack[TransformersKwargs]
    ) -> torch.Tensor:
        attention_output, _ = self.attention(self.layer_norm_1(hidden_states), height, width, **kwargs)
        hidden_states = hidden_states + self.drop_path(attention_output)
        # chunk_size_feed_forward (Transformers' setting) wins; otherwise chunk only without gradients, where the
        # whole MLP activation need not be kept for a backward pass
        chunk_size = self.chunk_size_feed_forward or (0 if torch.is_grad_enabled() else self.inference_mlp_chunk_size)
        mlp_output = feed_forward_in_chunks(self.feed_forward, hidden_states, chunk_size)
        return hidden_states + self.drop_path(mlp_output)

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.layer_norm_2(hidden_states))


class PvtStage(nn.Module):
    """Patch embedding + position embedding (+ class token) -> `depths[stage_index]` layers."""

    def __init__(self, config: PvtConfig, stage_index: int, add_class_token: bool = False):
        super().__init__()
        hidden_size = config.hidden_sizes[stage_index]
        first_layer = sum(config.depths[:stage_index])
        # stochastic depth grows linearly over all layers, 0 to drop_path_rate (plain floats: works on meta devices)
        num_layers = sum(config.depths)
        drop_path_rates = [config.drop_path_rate * index / max(num_layers - 1, 1) for index in range(num_layers)]
        self.grid_size = native_grid_sizes(config)[stage_index]
        # The last stage stores a slot for the class token in front, with or without the token (as the official code).
        has_class_slot = stage_index == config.num_encoder_blocks - 1
        self.num_prefix_positions = int(has_class_slot)

        self.patch_embeddings = PvtPatchEmbeddings(config, stage_index)
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, self.num_prefix_positions + self.grid_size[0] * self.grid_size[1], hidden_size)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size)) if add_class_token else None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(
            PvtLayer(config, stage_index, drop_path_rates[first_layer + index])
            for index in range(config.depths[stage_index])
        )

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings of the patch tokens for a (height, width) grid: bilinear from the stored grid.

        Eager skips the resampling at the stored grid. An export (torch.export, torch.onnx, tracing) always
        resamples, because comparing a symbolic size with the stored grid would fix the graph to that one size;
        bilinear resampling to the same grid is the identity, so the numbers are the same either way.
        """
        patch_positions = self.position_embeddings[:, self.num_prefix_positions :]
        exporting = torch.jit.is_tracing() or torch.compiler.is_exporting()
        if not exporting and (height, width) == self.grid_size:
            return patch_positions
        hidden_size = patch_positions.shape[-1]
        # (1, H0*W0, C) -> (1, C, H0, W0) -> (1, C, H, W) -> (1, H*W, C)
        grid = patch_positions.transpose(1, 2).reshape(1, hidden_size, *self.grid_size)
        grid = nn.functional.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def forward(self, feature_map: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> tuple[torch.Tensor, int, int]:
        hidden_states, height, width = self.patch_embeddings(feature_map)
        hidden_states = hidden_states + self.interpolate_pos_encoding(height, width)
        if self.cls_token is not None:
            class_token = self.cls_token + self.position_embeddings[:, :1]
            hidden_states = torch.cat((class_token.expand(hidden_states.shape[0], -1, -1), hidden_states), dim=1)
        hidden_states = self.dropout(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states, height, width, **kwargs)
        return hidden_states, height, width


def tokens_to_feature_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)


class PvtPreTrainedModel(PreTrainedModel):
    config_class = PvtConfig
    config: PvtConfig
    base_model_prefix = "pvt"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["PvtStage"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": [
            OutputRecorder(PvtLayer, capture_initial_hidden_state=False),
            OutputRecorder(nn.LayerNorm, layer_name="layernorm", capture_initial_hidden_state=False),
        ],
        "attentions": OutputRecorder(PvtAttention, index=1),
    }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, key_mapping: dict[str, str] | None = None, **kwargs):
        """Also loads checkpoints of Transformers' built-in Pvt (model_type "pvt"): without a `key_mapping` of your
        own, Transformers renames their keys with `BUILTIN_PVT_KEY_MAPPING` while it reads them (the patterns match
        only built-in names, so this project's checkpoints load unchanged). Saving afterwards writes this project's
        layout; a `key_mapping` of your own replaces the built-in one and is reverted on saving, as Transformers
        does."""
        if key_mapping is not None:
            return super().from_pretrained(pretrained_model_name_or_path, *args, key_mapping=key_mapping, **kwargs)
        loaded = super().from_pretrained(
            pretrained_model_name_or_path, *args, key_mapping=BUILTIN_PVT_KEY_MAPPING, **kwargs
        )
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # a tuple with output_loading_info=True
        model._weight_conversions = []  # the renamings that were used are not reverted on saving
        return loaded

    def _init_weights(self, module: nn.Module) -> None:
        """The official initialisation: truncated normal for linear layers, position embeddings and the class
        token; PyTorch's default for convolutions; LayerNorm 1 / 0."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, PvtStage):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            if module.cls_token is not None:
                init.trunc_normal_(module.cls_token, mean=0.0, std=std)


class PvtModel(PvtPreTrainedModel):
    """The PVT encoder: four stages, class token in the last, final LayerNorm."""

    def __init__(self, config: PvtConfig):
        super().__init__(config)
        last = config.num_encoder_blocks - 1
        self.stages = nn.ModuleList(
            PvtStage(config, index, add_class_token=index == last) for index in range(config.num_encoder_blocks)
        )
        self.layernorm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.stages[0].patch_embeddings

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutputWithPooling:
        r"""
        Returns the final normalised tokens (class token first) as `last_hidden_state`, the class token as
        `pooler_output`; `hidden_states` holds every layer's output, then the final normalised output.
        """
        check_pixel_values(pixel_values, self.config, self.dtype)
        feature_map = pixel_values
        for stage in self.stages[:-1]:
            feature_map = tokens_to_feature_map(*stage(feature_map, **kwargs))
        hidden_states, _, _ = self.stages[-1](feature_map, **kwargs)
        sequence_output = self.layernorm(hidden_states)
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=sequence_output[:, 0])


class PvtForImageClassification(PvtPreTrainedModel):
    """PVT with a linear classifier on the final class token (the paper's ImageNet model)."""

    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pvt = PvtModel(config)
        self.classifier = (
            nn.Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class indices for a single-label loss (cross-entropy), multi-hot floats for a multi-label loss, or
            targets for regression when `config.num_labels == 1`; `config.problem_type` picks as everywhere in
            Transformers.
        """
        outputs: BaseModelOutputWithPooling = self.pvt(pixel_values, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class PvtBackbone(BackboneMixin, PvtPreTrainedModel):
    """The official dense-prediction PVT: four NCHW maps at strides 4, 8, 16, 32; no class token, no final norm."""

    # What a classifier checkpoint (ours or the built-in Pvt's, with or without the "pvt." prefix) holds beyond the
    # backbone: dropped on purpose when a backbone loads it, so not reported; any other stray key still is.
    _keys_to_ignore_on_load_unexpected = [
        r"^(pvt\.)?stages\.\d+\.cls_token$",
        r"^(pvt\.)?layernorm\.(weight|bias)$",
        r"^classifier\.(weight|bias)$",
    ]

    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.stages = nn.ModuleList(PvtStage(config, index) for index in range(config.num_encoder_blocks))
        self.num_features = list(config.hidden_sizes)
        self.num_frozen_stages = 0
        self.post_init()

    def freeze_stages(self, num_stages: int) -> None:
        """Freeze the first `num_stages` stages (patch embedding, position embeddings and layers), as mmdet's
        `frozen_stages` (fine-tuning a detector with the early, generic stages fixed): their parameters stop
        requiring gradients and they stay in eval mode (no dropout, no stochastic depth) even after `train()`.
        0 freezes nothing; stages frozen by an earlier call stay frozen."""
        total = len(self.stages)
        if isinstance(num_stages, bool) or not isinstance(num_stages, int) or not 0 <= num_stages <= total:
            raise ValueError(
                f"num_stages must be a whole number from 0 to {total} (the number of stages), got {num_stages!r}."
            )
        self.num_frozen_stages = max(self.num_frozen_stages, num_stages)
        for stage in self.stages[:num_stages]:
            stage.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "PvtBackbone":
        super().train(mode)
        for stage in self.stages[: self.num_frozen_stages]:
            stage.eval()
        return self

    @can_return_tuple
    @filter_output_hidden_states
    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput:
        check_pixel_values(pixel_values, self.config, self.dtype)
        feature_maps = ()
        feature_map = pixel_values
        for stage_name, stage in zip(self.stage_names, self.stages):
            feature_map = tokens_to_feature_map(*stage(feature_map, **kwargs))
            if stage_name in self.out_features:
                feature_maps += (feature_map,)
        return BackboneOutput(feature_maps=feature_maps)


def register_auto_classes() -> None:
    """Make the Auto classes know "pvt_v1", both in this process and in what `save_pretrained` writes."""
    AutoConfig.register(PvtConfig.model_type, PvtConfig, exist_ok=True)
    AutoModel.register(PvtConfig, PvtModel, exist_ok=True)
    AutoModelForImageClassification.register(PvtConfig, PvtForImageClassification, exist_ok=True)
    AutoBackbone.register(PvtConfig, PvtBackbone, exist_ok=True)
    PvtConfig.register_for_auto_class()
    PvtModel.register_for_auto_class("AutoModel")
    PvtForImageClassification.register_for_auto_class("AutoModelForImageClassification")
    PvtBackbone.register_for_auto_class("AutoBackbone")


register_auto_classes()


__all__ = ["PvtPreTrainedModel", "PvtModel", "PvtForImageClassification", "PvtBackbone"]
