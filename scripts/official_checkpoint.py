"""The authors' checkpoint layout (whai362/PVT classification/pvt.py) and its translation to ours.

One mapping table serves the conversion script and the tests. The official `attn.kv` projection holds the key
then the value rows; ours keeps them apart (`k_proj`, `v_proj`), so that one tensor is split in two.
"""

import re

import torch

# Official key -> our key (PvtForImageClassification); stage and layer numbers are rewritten by `_renumber`.
OFFICIAL_TO_PVT_KEY_PATTERNS: dict[str, str] = {
    r"^pos_embed(\d)$": r"pvt.stages.{stage}.position_embeddings",
    r"^cls_token$": r"pvt.stages.{last_stage}.cls_token",
    r"^patch_embed(\d)\.proj\.(weight|bias)$": r"pvt.stages.{stage}.patch_embeddings.projection.\2",
    r"^patch_embed(\d)\.norm\.(weight|bias)$": r"pvt.stages.{stage}.patch_embeddings.layer_norm.\2",
    r"^block(\d)\.(\d+)\.norm1\.(weight|bias)$": r"pvt.stages.{stage}.layers.\2.layer_norm_1.\3",
    r"^block(\d)\.(\d+)\.norm2\.(weight|bias)$": r"pvt.stages.{stage}.layers.\2.layer_norm_2.\3",
    r"^block(\d)\.(\d+)\.attn\.q\.(weight|bias)$": r"pvt.stages.{stage}.layers.\2.attention.q_proj.\3",
    r"^block(\d)\.(\d+)\.attn\.kv\.(weight|bias)$": r"pvt.stages.{stage}.layers.\2.attention.{{k,v}}_proj.\3",
    r"^block(\d)\.(\d+)\.attn\.proj\.(weight|bias)$": r"pvt.stages.{stage}.layers.\2.attention.o_proj.\3",
    r"^block(\d)\.(\d+)\.attn\.sr\.(weight|bias)$": (
        r"pvt.stages.{stage}.layers.\2.attention.sequence_reduction.projection.\3"
    ),
    r"^block(\d)\.(\d+)\.attn\.norm\.(weight|bias)$": (
        r"pvt.stages.{stage}.layers.\2.attention.sequence_reduction.layer_norm.\3"
    ),
    r"^block(\d)\.(\d+)\.mlp\.fc1\.(weight|bias)$": r"pvt.stages.{stage}.layers.\2.mlp.fc1.\3",
    r"^block(\d)\.(\d+)\.mlp\.fc2\.(weight|bias)$": r"pvt.stages.{stage}.layers.\2.mlp.fc2.\3",
    r"^norm\.(weight|bias)$": r"pvt.layernorm.\1",
    r"^head\.(weight|bias)$": r"classifier.\1",
}


def official_key_to_pvt_key(key: str, num_stages: int = 4) -> str | None:
    """Our name for an official key (with `{k,v}` left for the kv split), or None if the key is not PVT v1's."""
    for pattern, replacement in OFFICIAL_TO_PVT_KEY_PATTERNS.items():
        match = re.match(pattern, key)
        if match:
            stage = int(match.group(1)) - 1 if match.groups() and match.group(1).isdigit() else None
            template = match.expand(replacement)
            return template.format(stage=stage, last_stage=num_stages - 1)
    return None


def convert_official_state_dict(state_dict: dict[str, torch.Tensor], num_stages: int = 4) -> dict[str, torch.Tensor]:
    """Official classifier weights -> `PvtForImageClassification` weights. Raises KeyError on foreign keys."""
    converted = {}
    unknown = []
    for key, tensor in state_dict.items():
        new_key = official_key_to_pvt_key(key, num_stages)
        if new_key is None:
            unknown.append(key)
        elif "{k,v}" in new_key:
            key_rows, value_rows = tensor.chunk(2, dim=0)
            converted[new_key.replace("{k,v}", "k")] = key_rows.clone()
            converted[new_key.replace("{k,v}", "v")] = value_rows.clone()
        else:
            converted[new_key] = tensor
    if unknown:
        raise KeyError(f"Not keys of an official PVT v1 checkpoint: {unknown}")
    return converted
