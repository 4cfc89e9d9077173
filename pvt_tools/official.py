"""The authors' checkpoint layout (whai362/PVT classification/pvt.py) and its translation to ours.

One mapping table serves the conversion script and the tests. The official `attn.kv` projection holds the key
then the value rows; ours keeps them apart (`k_proj`, `v_proj`), so that one tensor is split in two.

Besides the mapping: `load_official_checkpoint` (weights_only loading, truncation check, {"model": ...}
unwrapping), `infer_config_from_official` (every hyper-parameter the weights determine),
`check_official_state_dict` (every missing, extra and mis-shaped key at once) and `official_classifier_forward`
(the official network's maths written against the official keys, to verify a conversion before it is saved).
"""

import math
import pickle
import pickletools
import re
import sys
import zipfile
from pathlib import Path

import torch
from torch.nn import functional

from configuration_pvt import PVT_VARIANTS, PvtConfig
from modeling_pvt import PvtBackbone, PvtForImageClassification
from pvt_tools.hub import export_model, replace_directory, set_shared_file_modes, staging_folder
from pvt_tools.usage import CommandError
from pvt_tools.variants import matching_variant, matching_variant_differences

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


# --- reading the authors' .pth files --------------------------------------------------------------------------

ZIP_MAGIC = b"PK\x03\x04"  # torch.save has written zip archives since PyTorch 1.6
WRAPPER_KEYS = ("model", "state_dict")  # training checkpoints keep the weights under one of these


class OfficialCheckpointError(ValueError):
    """A file that is not a usable official PVT v1 checkpoint; the message says what is wrong and what to do."""


def check_not_truncated(path: Path) -> None:
    """A zip-format checkpoint ends with its directory: if that is missing or a member fails its CRC, the file
    was cut short (an interrupted download or copy) or damaged."""
    size = path.stat().st_size
    if size == 0:
        raise OfficialCheckpointError(
            f"{path} is empty (0 bytes): the download or copy did not finish. Fetch it again."
        )
    with path.open("rb") as file:
        if file.read(4) != ZIP_MAGIC:
            return  # the legacy (pre-1.6) format has no directory; torch.load reports damage there
    try:
        with zipfile.ZipFile(path) as archive:
            damaged_member = archive.testzip()
    except zipfile.BadZipFile as error:
        raise OfficialCheckpointError(
            f"{path} is truncated: it is a zip-format PyTorch checkpoint of {size:,} bytes without its closing "
            f"directory ({error}). The download or copy stopped early; fetch the file again."
        ) from None
    except (UnicodeDecodeError, ValueError, EOFError, OSError) as error:  # a garbled directory: bytes changed
        raise OfficialCheckpointError(
            f"{path} is damaged: its zip directory cannot be read ({type(error).__name__}: {error}). Fetch the file "
            "again."
        ) from None
    if damaged_member is not None:
        raise OfficialCheckpointError(
            f"{path} is damaged: the archive member {damaged_member} fails its CRC check. Fetch the file again."
        )


def unwrap_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The plain state dict inside what torch.load returned: as is, or under "model" / "state_dict"."""
    if isinstance(loaded, dict):
        for wrapper_key in WRAPPER_KEYS:
            if isinstance(loaded.get(wrapper_key), dict):
                loaded = loaded[wrapper_key]
                break
    if not isinstance(loaded, dict):
        raise OfficialCheckpointError(
            f"{path} holds a {type(loaded).__name__}, not a state dict (a dict of tensors, possibly under "
            f'"model"): it is not a PVT checkpoint.'
        )
    not_tensors = [f"{key!r} ({type(value).__name__})" for key, value in loaded.items() if not torch.is_tensor(value)]
    if not_tensors:
        raise OfficialCheckpointError(
            f"{path} is refused: its state dict holds entries that are not tensors: {not_tensors[:10]}"
            f"{' ...' if len(not_tensors) > 10 else ''}. A PVT checkpoint maps parameter names to tensors only."
        )
    return loaded


def refused_global(error: pickle.UnpicklingError) -> str | None:
    """The dotted name of the object that the weights_only unpickler refused, if that is why it failed."""
    match = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(error))
    return match.group(1) if match else None


# What a plain PyTorch checkpoint's pickle names: tensors, their storages and ordered dicts.
PLAIN_CHECKPOINT_GLOBALS = re.compile(r"^(torch\.|collections\.OrderedDict$)")
# Modules whose functions run commands or code: a pickle naming one is made to do that when loaded.
CODE_RUNNING_MODULES = ("os", "posix", "nt", "subprocess", "builtins", "sys", "shutil", "socket", "importlib", "runpy")


def pickled_globals(path: Path) -> list[str]:
    """The Python objects (module.name) that the pickle in a .pth file refers to, read with pickletools, which only
    lists the pickle's instructions (nothing is imported or run): the data.pkl of a zip-format file, or the legacy
    file's pickles. Names of plain checkpoints' own objects (torch.*, OrderedDict) are left out."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next(name for name in archive.namelist() if name.endswith("data.pkl"))
                stream = archive.read(member)
        else:
            stream = path.read_bytes()
    except (OSError, StopIteration, zipfile.BadZipFile, UnicodeDecodeError, ValueError, EOFError):
        return []
    names, strings = [], []
    try:
        for opcode, argument, _ in pickletools.genops(stream):
            if opcode.name == "GLOBAL":
                names.append(str(argument).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(argument, str):
                strings.append(argument)
            if opcode.name == "STOP":
                break
    except Exception:  # noqa: BLE001  (a damaged stream: the names read so far are what it holds)
        pass
    return list(dict.fromkeys(name for name in names if not PLAIN_CHECKPOINT_GLOBALS.match(name)))


def refused_objects_error(path: Path, refused: str) -> OfficialCheckpointError:
    """The message for a file that holds Python objects beyond tensors: what they are, that nothing ran, and the
    safe way around it (never loading it unsafely)."""
    names = pickled_globals(path) or [refused]
    listed = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    runs_code = [name for name in names if name.split(".")[0] in CODE_RUNNING_MODULES]
    if runs_code:
        return OfficialCheckpointError(
            f"{path} is refused: besides tensors its pickle calls {', '.join(runs_code[:4])}, which runs commands or "
            f"code when the file is loaded (all Python objects it names: {listed}). It was read with the safe "
            "weights-only loader, so nothing in it was executed. Do not load this file; get the checkpoint from its "
            "authors' release again."
        )
    return OfficialCheckpointError(
        f"{path} is refused: besides tensors it holds Python objects ({listed}; in mmdetection / mmsegmentation "
        "checkpoints usually inside 'meta'). It was read with the safe weights-only loader, so nothing in it was "
        "executed. Only if you trust the file, allow that object and re-save the weights alone, still with "
        f"weights_only=True: `with torch.serialization.safe_globals([{refused}]): checkpoint = torch.load(path, "
        'weights_only=True)`, then torch.save({"state_dict": checkpoint["state_dict"]}, "weights_only.pth") for an '
        'mmdetection / mmsegmentation checkpoint, or torch.save(checkpoint["model"], "weights_only.pth") for a '
        "classifier, and convert that file."
    )


def names_a_missing_object(dotted_name: str) -> bool:
    """Whether a refused global cannot exist: its module is loaded but lacks the attribute, as when the pickle
    stream was cut inside the name. Nothing is imported on the file's behalf."""
    module_name, _, attribute = dotted_name.rpartition(".")
    module = sys.modules.get(module_name)
    return module is not None and not hasattr(module, attribute)


def read_checkpoint_weights_only(path: str | Path) -> object:
    """Everything in a .pth file, read with `torch.load(weights_only=True)` only; a file holding other Python
    objects (for mmcv checkpoints, typically in "meta") is refused with the way around it, never unpickled.
    Zip-format files (PyTorch >= 1.6) are checked for truncation first; the legacy format (the authors'
    "PyTorch<=1.5" downloads) reports truncation while it is read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    check_not_truncated(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        name = refused_global(error)
        if name is None or names_a_missing_object(name):
            raise unreadable_checkpoint_error(path, error) from error
        raise refused_objects_error(path, name) from error
    except Exception as error:  # the legacy format fails with EOFError, RuntimeError, IndexError, struct.error
        raise unreadable_checkpoint_error(path, error) from error


def load_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an official .pth file (`read_checkpoint_weights_only`), as is or under "model" /
    "state_dict"."""
    return unwrap_state_dict(read_checkpoint_weights_only(path), Path(path))


def torch_error_detail(error: Exception) -> str:
    """The first line of what torch.load said that describes the file, without PyTorch's advice about weights_only
    (which would turn the protection off)."""
    lines = str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()
    described = [line for line in lines if line.strip() and "weights_only" not in line and "torch.load" not in line]
    return described[0].strip() if described else "no readable pickle"


def unreadable_checkpoint_error(path: Path, error: Exception) -> OfficialCheckpointError:
    detail = torch_error_detail(error)
    return OfficialCheckpointError(
        f"{path} cannot be read: it is truncated or damaged ({type(error).__name__}: {detail[:200]}), or it is "
        "not a PyTorch checkpoint at all. Fetch the file again."
    )


# --- what the weights say about the network -------------------------------------------------------------------

DEFAULT_NUM_ATTENTION_HEADS = (1, 2, 5, 8)  # shared by all four of the paper's models


def as_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def infer_config_from_official(
    state_dict: dict[str, torch.Tensor],
    *,
    num_attention_heads: list[int] | tuple[int, ...] | None = None,
    variant: str | None = None,
    allow_custom_heads: bool = False,
) -> PvtConfig:
    """PvtConfig from the official weights: hidden sizes, depths, MLP ratios, reduction ratios, patch sizes,
    native image size, classes and qkv bias come from the tensors; head counts (which the weights cannot tell)
    from `num_attention_heads`, else `variant`, else 1 2 5 8. With `variant`, the weights must be that model.

    Head counts other than the paper's for the model the shapes describe (1 2 5 8 when they describe none) are
    refused unless `allow_custom_heads`: a wrong head count gives a model that runs, and that the verification,
    built from the same config, cannot tell from the right one."""
    stages = sorted({int(m.group(1)) for key in state_dict if (m := re.match(r"^patch_embed(\d)\.proj\.weight$", key))})
    anchors = [f"patch_embed{stage}.proj.weight" for stage in range(1, 5)]
    anchors += [f"pos_embed{stage}" for stage in range(1, 5)] + ["block1.0.mlp.fc1.weight", "head.weight"]
    missing = [key for key in anchors if key not in state_dict]
    if stages != [1, 2, 3, 4] or missing:
        unknown = [key for key in state_dict if official_key_to_pvt_key(key) is None]
        raise OfficialCheckpointError(
            f"Not an official PVT v1 classifier checkpoint: missing {missing}"
            f"{f'; keys that PVT v1 does not have: {unknown[:20]}' if unknown else ''}."
        )

    hidden_sizes, patch_sizes, depths, mlp_ratios, reduction_ratios = [], [], [], [], []
    for stage in stages:
        projection = state_dict[f"patch_embed{stage}.proj.weight"]  # (C_out, C_in, P, P)
        hidden_sizes.append(projection.shape[0])
        patch_sizes.append(projection.shape[-1])
        layers = {int(m.group(1)) for key in state_dict if (m := re.match(rf"^block{stage}\.(\d+)\.", key))}
        depths.append(max(layers) + 1 if layers else 0)
        fc1 = state_dict.get(f"block{stage}.0.mlp.fc1.weight")
        mlp_ratios.append(as_number(fc1.shape[0] / projection.shape[0]) if fc1 is not None else 4)
        reduction = state_dict.get(f"block{stage}.0.attn.sr.weight")  # (C, C, R, R); absent when R = 1
        reduction_ratios.append(reduction.shape[-1] if reduction is not None else 1)

    grid_tokens = state_dict["pos_embed1"].shape[1]
    grid_side = math.isqrt(grid_tokens)
    if grid_side * grid_side != grid_tokens:
        raise OfficialCheckpointError(
            f"pos_embed1 has {grid_tokens} positions, not a square grid: cannot tell the native image size."
        )
    shapes = dict(
        image_size=grid_side * patch_sizes[0],
        num_channels=state_dict["patch_embed1.proj.weight"].shape[1],
        hidden_sizes=hidden_sizes,
        depths=depths,
        mlp_ratios=mlp_ratios,
        sequence_reduction_ratios=reduction_ratios,
        patch_sizes=patch_sizes,
        strides=patch_sizes,  # the official patch embedding is non-overlapping
        qkv_bias="block1.0.attn.q.bias" in state_dict,
        num_labels=state_dict["head.weight"].shape[0],
    )
    described_variant, paper_heads = paper_heads_for_shapes(shapes)
    if variant is not None and num_attention_heads is None:
        num_attention_heads = PvtConfig.from_variant(variant).num_attention_heads
    num_attention_heads = list(num_attention_heads or paper_heads)
    if num_attention_heads != paper_heads and not allow_custom_heads:
        described = (
            f"the paper's {described_variant}, which these weights' shapes describe"
            if described_variant
            else "the default: these weights' shapes are none of the paper's models"
        )
        raise OfficialCheckpointError(
            f"--num_attention_heads {' '.join(map(str, num_attention_heads))} differs from the head counts "
            f"{' '.join(map(str, paper_heads))} of {described}. The weights cannot tell the head count, and a wrong "
            "one gives a model that runs but computes something else. Leave --num_attention_heads out, or pass "
            "--allow_custom_heads if the checkpoint was trained with these heads."
        )
    config = PvtConfig(num_attention_heads=num_attention_heads, **shapes)
    if variant is not None:
        differences = matching_variant_differences(config, variant)
        if differences:
            raise OfficialCheckpointError(
                f"These weights are not the paper's {variant}: {'; '.join(differences)}. Leave --variant out "
                "(and give --num_attention_heads with --allow_custom_heads if the head counts differ from 1 2 5 8)."
            )
    return config


def paper_heads_for_shapes(shapes: dict) -> tuple[str | None, list[int]]:
    """The paper's model whose shapes (everything but heads and classes) these are, if any, and its head counts;
    else (None, the default 1 2 5 8)."""
    for name in PVT_VARIANTS:
        reference = PvtConfig.from_variant(name)
        if all(getattr(reference, field) == value for field, value in shapes.items() if field != "num_labels"):
            return name, list(reference.num_attention_heads)
    return None, list(DEFAULT_NUM_ATTENTION_HEADS)


def official_key_shapes(config: PvtConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the official classifier for `config`, with its shape: the layout written out in full."""
    shapes: dict[str, tuple[int, ...]] = {}
    grids = [config.image_size // config.patch_sizes[0]]
    for patch_size in config.patch_sizes[1:]:
        grids.append(grids[-1] // patch_size)
    in_channels = config.num_channels
    last = config.num_encoder_blocks
    for stage, (hidden, patch, depth, ratio, reduction, grid) in enumerate(
        zip(
            config.hidden_sizes,
            config.patch_sizes,
            config.depths,
            config.mlp_ratios,
            config.sequence_reduction_ratios,
            grids,
        ),
        start=1,
    ):
        mlp_hidden = int(hidden * ratio)
        shapes[f"patch_embed{stage}.proj.weight"] = (hidden, in_channels, patch, patch)
        shapes[f"patch_embed{stage}.proj.bias"] = (hidden,)
        shapes[f"patch_embed{stage}.norm.weight"] = shapes[f"patch_embed{stage}.norm.bias"] = (hidden,)
        shapes[f"pos_embed{stage}"] = (1, grid * grid + (stage == last), hidden)
        for layer in range(depth):
            prefix = f"block{stage}.{layer}"
            for norm in ("norm1", "norm2"):
                shapes[f"{prefix}.{norm}.weight"] = shapes[f"{prefix}.{norm}.bias"] = (hidden,)
            shapes[f"{prefix}.attn.q.weight"] = (hidden, hidden)
            shapes[f"{prefix}.attn.kv.weight"] = (2 * hidden, hidden)
            if config.qkv_bias:
                shapes[f"{prefix}.attn.q.bias"] = (hidden,)
                shapes[f"{prefix}.attn.kv.bias"] = (2 * hidden,)
            shapes[f"{prefix}.attn.proj.weight"] = (hidden, hidden)
            shapes[f"{prefix}.attn.proj.bias"] = (hidden,)
            if reduction > 1:
                shapes[f"{prefix}.attn.sr.weight"] = (hidden, hidden, reduction, reduction)
                shapes[f"{prefix}.attn.sr.bias"] = (hidden,)
                shapes[f"{prefix}.attn.norm.weight"] = shapes[f"{prefix}.attn.norm.bias"] = (hidden,)
            shapes[f"{prefix}.mlp.fc1.weight"] = (mlp_hidden, hidden)
            shapes[f"{prefix}.mlp.fc1.bias"] = (mlp_hidden,)
            shapes[f"{prefix}.mlp.fc2.weight"] = (hidden, mlp_hidden)
            shapes[f"{prefix}.mlp.fc2.bias"] = (hidden,)
        in_channels = hidden
    final = config.hidden_sizes[-1]
    shapes["cls_token"] = (1, 1, final)
    shapes["norm.weight"] = shapes["norm.bias"] = (final,)
    shapes["head.weight"] = (config.num_labels, final)
    shapes["head.bias"] = (config.num_labels,)
    return shapes


def key_problems(
    weights: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], name_prefix: str = ""
) -> list[str]:
    """One line per kind of mismatch (missing, extra, mis-shaped keys), each naming every key, so that a damaged
    checkpoint is described at once; keys are shown with `name_prefix` (as the checkpoint spells them)."""
    missing = [f"{name_prefix}{key}" for key in expected if key not in weights]
    extra = [f"{name_prefix}{key}" for key in weights if key not in expected]
    misshaped = [
        f"{name_prefix}{key}: {tuple(weights[key].shape)}, expected {shape}"
        for key, shape in expected.items()
        if key in weights and tuple(weights[key].shape) != shape
    ]
    return [
        f"{len(names)} {kind}: {names}"
        for kind, names in (("missing keys", missing), ("extra keys", extra), ("keys with the wrong shape", misshaped))
        if names
    ]


def check_official_state_dict(state_dict: dict[str, torch.Tensor], config: PvtConfig) -> None:
    """Raise OfficialCheckpointError listing every missing, extra and mis-shaped key, if there are any."""
    problems = key_problems(state_dict, official_key_shapes(config))
    if problems:
        raise OfficialCheckpointError(
            "Not an official PVT v1 classifier checkpoint for the architecture its weights describe "
            f"(hidden sizes {config.hidden_sizes}, depths {config.depths}):\n  " + "\n  ".join(problems)
        )


# --- the official network's maths, for verifying a conversion ----------------------------------------------------


def official_patch_embedding(
    weights: dict[str, torch.Tensor], config: PvtConfig, stage: int, feature_map: torch.Tensor
) -> tuple[torch.Tensor, int, int]:
    """Stage `stage` (1-based) of the official patch embedding: strided convolution, then LayerNorm over tokens."""
    index = stage - 1
    feature_map = functional.conv2d(
        feature_map,
        weights[f"patch_embed{stage}.proj.weight"],
        weights[f"patch_embed{stage}.proj.bias"],
        stride=config.strides[index],
    )
    height, width = feature_map.shape[-2:]
    tokens = functional.layer_norm(
        feature_map.flatten(2).transpose(1, 2),
        (config.hidden_sizes[index],),
        weights[f"patch_embed{stage}.norm.weight"],
        weights[f"patch_embed{stage}.norm.bias"],
        config.patch_embedding_layer_norm_eps,
    )
    return tokens, height, width


def official_layers(
    weights: dict[str, torch.Tensor], config: PvtConfig, stage: int, tokens: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """The layers of stage `stage` (1-based) as the official Block: pre-norm spatial-reduction attention (one `kv`
    projection: all key channels, then all value channels), then the MLP."""
    index = stage - 1
    hidden_size, heads = config.hidden_sizes[index], config.num_attention_heads[index]
    head_dim = hidden_size // heads
    reduction = config.sequence_reduction_ratios[index]
    batch_size = tokens.shape[0]
    for layer in range(config.depths[index]):
        prefix = f"block{stage}.{layer}"

        def linear(inputs, name, prefix=prefix):
            return functional.linear(inputs, weights[f"{prefix}.{name}.weight"], weights.get(f"{prefix}.{name}.bias"))

        def norm(inputs, name, eps, prefix=prefix):
            return functional.layer_norm(
                inputs, (hidden_size,), weights[f"{prefix}.{name}.weight"], weights[f"{prefix}.{name}.bias"], eps
            )

        normed = norm(tokens, "norm1", config.layer_norm_eps)
        num_tokens = normed.shape[1]
        query = linear(normed, "attn.q").reshape(batch_size, num_tokens, heads, head_dim).permute(0, 2, 1, 3)
        source = normed
        if reduction > 1:
            grid = normed.transpose(1, 2).reshape(batch_size, hidden_size, height, width)
            grid = functional.conv2d(
                grid, weights[f"{prefix}.attn.sr.weight"], weights[f"{prefix}.attn.sr.bias"], stride=reduction
            )
            source = norm(grid.flatten(2).transpose(1, 2), "attn.norm", config.sequence_reduction_layer_norm_eps)
        key_value = linear(source, "attn.kv").reshape(batch_size, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        scores = (query @ key_value[0].transpose(-2, -1)) * head_dim**-0.5
        attended = (scores.softmax(dim=-1) @ key_value[1]).transpose(1, 2).reshape(batch_size, num_tokens, -1)
        tokens = tokens + linear(attended, "attn.proj")
        hidden = functional.gelu(linear(norm(tokens, "norm2", config.layer_norm_eps), "mlp.fc1"))
        tokens = tokens + linear(hidden, "mlp.fc2")
    return tokens


def official_classifier_forward(
    state_dict: dict[str, torch.Tensor], config: PvtConfig, pixel_values: torch.Tensor
) -> torch.Tensor:
    """Logits of the official PVT v1 classifier at its native image size, computed straight from the official
    keys with torch.nn.functional (eval mode: no dropout, no drop path)."""
    weights = state_dict
    feature_map = pixel_values
    batch_size = pixel_values.shape[0]
    for stage in range(1, config.num_encoder_blocks + 1):
        tokens, height, width = official_patch_embedding(weights, config, stage, feature_map)
        if stage == config.num_encoder_blocks:
            tokens = torch.cat((weights["cls_token"].expand(batch_size, -1, -1), tokens), dim=1)
        tokens = official_layers(weights, config, stage, tokens + weights[f"pos_embed{stage}"], height, width)
        if stage < config.num_encoder_blocks:
            feature_map = tokens.transpose(1, 2).reshape(batch_size, -1, height, width)
    tokens = functional.layer_norm(
        tokens, (config.hidden_sizes[-1],), weights["norm.weight"], weights["norm.bias"], config.layer_norm_eps
    )
    return functional.linear(tokens[:, 0], weights["head.weight"], weights["head.bias"])


# Conversion: read, check, convert, verify, export.

# Agreement asked of every comparison with a reference output (the converter's check and the tests): the largest
# absolute difference may not exceed PARITY_RELATIVE_TOLERANCE times the reference's largest magnitude plus
# PARITY_ABSOLUTE_TOLERANCE. Float32 reordering leaves about 3e-6 of the scale; a 1% change of one weight matrix
# moves the fixture's logits by 1e-2 of theirs.
PARITY_RELATIVE_TOLERANCE = 1e-5
PARITY_ABSOLUTE_TOLERANCE = 1e-6


def parity_failures(outputs: dict[str, torch.Tensor], references: dict[str, torch.Tensor]) -> list[str]:
    """One line for every output that differs from its reference beyond the scaled tolerance (empty: all agree).
    `outputs` and `references` map the same names to tensors."""
    failures = []
    for name, reference in references.items():
        output = outputs.get(name)
        if output is None or tuple(output.shape) != tuple(reference.shape):
            shape = None if output is None else tuple(output.shape)
            failures.append(f"{name}: shape {shape}, reference {tuple(reference.shape)}")
            continue
        difference = (output.detach().float() - reference.float()).abs().max().item()
        scale = reference.abs().max().item()
        tolerance = PARITY_RELATIVE_TOLERANCE * scale + PARITY_ABSOLUTE_TOLERANCE
        if not difference <= tolerance:  # also catches NaN
            failures.append(
                f"{name}: max |difference| {difference:.2e} > {PARITY_RELATIVE_TOLERANCE:.0e} x max |reference| "
                f"{scale:.3g} + {PARITY_ABSOLUTE_TOLERANCE:.0e} = {tolerance:.2e}"
            )
    return failures


class ConversionMismatchError(CommandError, RuntimeError):
    """The converted model does not compute what the official network computes."""


def verify_conversion(model: PvtForImageClassification, state_dict: dict[str, torch.Tensor]) -> float:
    """Largest absolute logit difference between `model` and the official maths on a seeded sample image at the
    native size; raises ConversionMismatchError beyond the scaled tolerance (`parity_failures`)."""
    config = model.config
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    sample = torch.randn(2, config.num_channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = official_classifier_forward(state_dict, config, sample)
        logits = model.eval()(sample).logits
    difference = (logits - expected).abs().max().item()
    failures = parity_failures({"logits": logits}, {"logits": expected})
    tolerance = PARITY_RELATIVE_TOLERANCE * expected.abs().max().item() + PARITY_ABSOLUTE_TOLERANCE
    print(
        f"verification: max |logit difference| vs the official maths = {difference:.2e} on a "
        f"{tuple(sample.shape)} sample (tolerance {tolerance:.1e}): {'FAILED' if failures else 'OK'}"
    )
    if failures:
        raise ConversionMismatchError(
            f"The converted model differs from the official network ({failures[0]}); nothing was written."
        )
    return difference


def convert_official_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    variant: str | None = None,
    num_attention_heads: list[int] | None = None,
    allow_custom_heads: bool = False,
    repo_id: str | None = None,
    overwrite: bool = False,
    onnx: bool = False,
) -> Path:
    """Read, validate, convert, verify and export an official checkpoint; returns the export folder.

    onnx: also write onnx/model.onnx, checked in ONNX Runtime (pvt_tools.export).
    """
    state_dict = load_official_checkpoint(checkpoint)
    config = infer_config_from_official(
        state_dict, num_attention_heads=num_attention_heads, variant=variant, allow_custom_heads=allow_custom_heads
    )
    check_official_state_dict(state_dict, config)
    variant = variant or matching_variant(config)
    print(
        f"{checkpoint}: {variant or 'a custom PVT v1'} with hidden sizes {config.hidden_sizes}, depths "
        f"{config.depths}, heads {config.num_attention_heads}, {config.num_labels} classes, "
        f"{config.image_size}px native"
    )
    with torch.device("meta"):  # no random initialisation: every parameter comes from the checkpoint
        model = PvtForImageClassification(config).eval()
    model.load_state_dict(convert_official_state_dict(state_dict, config.num_encoder_blocks), strict=True, assign=True)
    verify_conversion(model, state_dict)
    return export_model(model, output_dir, variant=variant, repo_id=repo_id, overwrite=overwrite, onnx=onnx)


# --- the authors' dense-prediction checkpoints (mmdetection / mmsegmentation) --------------------------------------
#
# whai362/PVT detection/ and segmentation/ train RetinaNet, Mask R-CNN and Semantic FPN with the backbone of
# detection/pvt.py and save mmcv checkpoints: {"state_dict": {"backbone.<official key>": ..., "neck...": ...,
# "bbox_head...": ...}, "meta": {...}}. The backbone keys are the classifier's official keys without cls_token,
# norm and head; pos_embed4 may keep the class token's slot in front. What is converted: the backbone alone, as a
# PvtBackbone with the position embeddings of the grid it was trained on.

DENSE_BACKBONE_PREFIX = "backbone."
CLASSIFICATION_ONLY_OFFICIAL_KEY = re.compile(r"^(cls_token|norm\.(weight|bias)|head\.(weight|bias))$")
DENSE_EXPORT_FILES = ("config.json", "model.safetensors", "configuration_pvt.py", "modeling_pvt.py")
DENSE_VERIFICATION_RELATIVE_TOLERANCE = 1e-4  # of the largest reference activation, per feature map


def is_dense_prediction_checkpoint(loaded: object) -> bool:
    """Whether a loaded checkpoint has the mmdetection / mmsegmentation layout with a backbone: a "state_dict"
    whose keys include "backbone.*"."""
    state_dict = loaded.get("state_dict") if isinstance(loaded, dict) else None
    return isinstance(state_dict, dict) and any(str(key).startswith(DENSE_BACKBONE_PREFIX) for key in state_dict)


def split_dense_prediction_state_dict(loaded: dict, path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone's tensors under their official names, and the names of every other tensor (the neck and the
    heads, and any class token / final norm / classifier left in the backbone), which are skipped."""
    state_dict = unwrap_state_dict({"state_dict": loaded["state_dict"]}, path)
    backbone, skipped = {}, []
    for key, tensor in state_dict.items():
        official_key = key[len(DENSE_BACKBONE_PREFIX) :] if key.startswith(DENSE_BACKBONE_PREFIX) else None
        if official_key is None or CLASSIFICATION_ONLY_OFFICIAL_KEY.match(official_key):
            skipped.append(key)
        else:
            backbone[official_key] = tensor
    return backbone, skipped


def infer_dense_backbone_config(
    backbone: dict[str, torch.Tensor],
    *,
    num_attention_heads: list[int] | tuple[int, ...] | None = None,
    variant: str | None = None,
    allow_custom_heads: bool = False,
) -> PvtConfig:
    """PvtConfig of an official dense-prediction backbone (all four stages as outputs), from its weights as
    `infer_config_from_official` reads a classifier's: the classifier-only tensors are given placeholder shapes so
    that the same reading (and the same error messages) apply; the native image size is that of the trained grid."""
    if "pos_embed4" not in backbone or "patch_embed4.proj.weight" not in backbone:
        raise OfficialCheckpointError(
            "Not an official PVT v1 dense-prediction backbone: backbone.pos_embed4 / backbone.patch_embed4.proj.weight "
            f"missing; backbone keys found: {sorted(backbone)[:20]}."
        )
    final_width = backbone["patch_embed4.proj.weight"].shape[0]
    placeholders = {"head.weight": torch.empty(1, final_width, device="meta")}
    config = infer_config_from_official(
        {**backbone, **placeholders},
        num_attention_heads=num_attention_heads,
        variant=variant,
        allow_custom_heads=allow_custom_heads,
    )
    architecture = {name: getattr(config, name) for name in PvtConfig.__annotations__ if not name.startswith("_")}
    architecture.pop("num_labels", None)
    return PvtConfig(**architecture, out_features=["stage1", "stage2", "stage3", "stage4"])


def check_dense_backbone_state_dict(backbone: dict[str, torch.Tensor], config: PvtConfig) -> dict[str, torch.Tensor]:
    """Every missing, extra and mis-shaped backbone key at once (OfficialCheckpointError); returns the weights with
    pos_embed4 given its class-token slot (zeros, never read by the backbone) when it was saved without one."""
    expected = {
        key: shape
        for key, shape in official_key_shapes(config).items()
        if not CLASSIFICATION_ONLY_OFFICIAL_KEY.match(key)
    }
    with_slot = expected["pos_embed4"]
    backbone = dict(backbone)
    position_embeddings = backbone.get("pos_embed4")
    if position_embeddings is not None and tuple(position_embeddings.shape) == (1, with_slot[1] - 1, with_slot[2]):
        backbone["pos_embed4"] = torch.cat((position_embeddings.new_zeros(1, 1, with_slot[2]), position_embeddings), 1)
    problems = key_problems(backbone, expected, name_prefix=DENSE_BACKBONE_PREFIX)
    if problems:
        raise OfficialCheckpointError(
            "Not an official PVT v1 dense-prediction backbone for the architecture its weights describe (hidden "
            f"sizes {config.hidden_sizes}, depths {config.depths}):\n  " + "\n  ".join(problems)
        )
    return backbone


def official_dense_backbone_forward(
    backbone: dict[str, torch.Tensor], config: PvtConfig, pixel_values: torch.Tensor
) -> list[torch.Tensor]:
    """The four NCHW stage outputs of the authors' dense-prediction backbone (detection/pvt.py), computed straight
    from its official keys with torch.nn.functional (eval mode): non-overlapping patch embeddings (grids floored),
    position embeddings resized bilinearly from the trained grid (the class slot of pos_embed4 dropped), no class
    token, no final norm."""
    weights = backbone
    feature_map = pixel_values
    outputs = []
    for stage in range(1, config.num_encoder_blocks + 1):
        tokens, height, width = official_patch_embedding(weights, config, stage, feature_map)
        hidden_size = tokens.shape[-1]
        table = weights[f"pos_embed{stage}"]
        grid_side = math.isqrt(table.shape[1])
        table = table[:, table.shape[1] - grid_side * grid_side :]  # drops a class slot in front, if any
        if (height, width) != (grid_side, grid_side):
            grid = table.reshape(1, grid_side, grid_side, hidden_size).permute(0, 3, 1, 2)
            grid = functional.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
            table = grid.flatten(2).transpose(1, 2)
        tokens = official_layers(weights, config, stage, tokens + table, height, width)
        feature_map = tokens.transpose(1, 2).reshape(tokens.shape[0], hidden_size, height, width)
        outputs.append(feature_map)
    return outputs


def verify_dense_backbone(backbone_model, backbone: dict[str, torch.Tensor]) -> list[float]:
    """Largest absolute difference of each of the four maps between the converted PvtBackbone and the official
    maths, on a seeded sample of a size that is not a multiple of 32 (so the position embeddings are resized);
    raises ConversionMismatchError above DENSE_VERIFICATION_RELATIVE_TOLERANCE of the reference's scale."""
    config = backbone_model.config
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    height, width = size + 1, size + size // 3 + 13
    sample = torch.randn(1, config.num_channels, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = official_dense_backbone_forward(backbone, config, sample)
        feature_maps = backbone_model.eval()(sample).feature_maps
    differences, failed = [], []
    for stage, (ours, reference) in enumerate(zip(feature_maps, expected, strict=True), start=1):
        difference = (ours - reference).abs().max().item()
        differences.append(difference)
        if ours.shape != reference.shape or difference > DENSE_VERIFICATION_RELATIVE_TOLERANCE * reference.abs().max():
            failed.append(f"stage {stage}: {difference:.2e} (shape {tuple(ours.shape)} vs {tuple(reference.shape)})")
    print(
        f"verification: max |feature map difference| vs the official backbone's maths on a {tuple(sample.shape)} "
        f"sample = {', '.join(f'{value:.2e}' for value in differences)}: {'FAILED' if failed else 'OK'}"
    )
    if failed:
        raise ConversionMismatchError(
            f"The converted backbone differs from the official one ({'; '.join(failed)}); nothing was written. "
            "Check --num_attention_heads."
        )
    return differences


def describe_skipped(keys: list[str], shown: int = 12) -> str:
    """The tensors left out, grouped by their top-level module (neck, bbox_head, decode_head, ...)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(key.split(".")[0], []).append(key)
    lines = [
        f"  {group}: {len(names)} tensor(s): {', '.join(names[:shown])}{' ...' if len(names) > shown else ''}"
        for group, names in groups.items()
    ]
    return f"skipped {len(keys)} tensor(s) that are not the backbone's:\n" + "\n".join(lines)


def write_backbone_export(backbone_model, output_dir: Path, overwrite: bool) -> Path:
    """config.json, model.safetensors and both code files, written to a staging folder then moved into place."""
    output_dir = Path(output_dir).resolve()
    if output_dir.exists():
        entries = sorted(child.name for child in output_dir.iterdir()) if output_dir.is_dir() else None
        if entries is None or set(entries) - set(DENSE_EXPORT_FILES) or (entries and not overwrite):
            raise OfficialCheckpointError(
                f"{output_dir} is not empty ({(entries or ['a file'])[:10]}); nothing was written. Choose a new or "
                "empty directory, or pass --overwrite to replace an earlier backbone export."
            )
    with staging_folder(output_dir.parent, output_dir.name) as staging:
        backbone_model.save_pretrained(staging)
        written = sorted(path.name for path in staging.iterdir())
        if written != sorted(DENSE_EXPORT_FILES):
            raise RuntimeError(f"The backbone export holds {written}, expected {sorted(DENSE_EXPORT_FILES)}.")
        set_shared_file_modes(staging)
        replace_directory(staging, output_dir)
    return output_dir


def convert_dense_prediction_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    variant: str | None = None,
    num_attention_heads: list[int] | None = None,
    allow_custom_heads: bool = False,
    overwrite: bool = False,
    loaded: object | None = None,
) -> Path:
    """An mmdetection / mmsegmentation checkpoint with the authors' PVT backbone -> a PvtBackbone export (the
    backbone's tensors only); verified against the official backbone's maths before anything is written."""
    path = Path(checkpoint)
    loaded = read_checkpoint_weights_only(path) if loaded is None else loaded
    if not is_dense_prediction_checkpoint(loaded):
        raise OfficialCheckpointError(
            f"{path} is not an mmdetection / mmsegmentation checkpoint with a backbone: expected "
            '{"state_dict": {"backbone.patch_embed1.proj.weight": ..., ...}, "meta": ...}.'
        )
    backbone, skipped = split_dense_prediction_state_dict(loaded, path)
    config = infer_dense_backbone_config(
        backbone, num_attention_heads=num_attention_heads, variant=variant, allow_custom_heads=allow_custom_heads
    )
    backbone = check_dense_backbone_state_dict(backbone, config)
    print(
        f"{path}: the backbone of a dense-prediction model, {variant or matching_variant(config) or 'a custom PVT v1'} "
        f"with hidden sizes {config.hidden_sizes}, depths {config.depths}, heads {config.num_attention_heads}, "
        f"position embeddings for {config.image_size}px inputs"
    )
    print(describe_skipped(skipped))
    converted = convert_official_state_dict(backbone, config.num_encoder_blocks)
    converted = {key.removeprefix("pvt."): tensor for key, tensor in converted.items()}
    with torch.device("meta"):  # no random initialisation: every parameter comes from the checkpoint
        backbone_model = PvtBackbone(config).eval()
    backbone_model.load_state_dict(converted, strict=True, assign=True)
    verify_dense_backbone(backbone_model, backbone)
    return write_backbone_export(backbone_model, Path(output_dir), overwrite)


def convert_any_official_checkpoint(checkpoint: str | Path, output_dir: str | Path, **options) -> Path:
    """The convert command's entry: an mmdetection / mmsegmentation checkpoint (recognised by its
    "state_dict" of "backbone.*" keys) becomes a PvtBackbone export, anything else goes to
    `convert_official_checkpoint` (the classifier)."""
    loaded = read_checkpoint_weights_only(checkpoint)
    if is_dense_prediction_checkpoint(loaded):
        options.pop("repo_id", None)  # no model card for a bare backbone
        if options.pop("onnx", False):
            raise OfficialCheckpointError(
                f"{checkpoint} holds a dense-prediction backbone: --onnx adds a classifier's graph to a Hub export. "
                "Convert without --onnx, then run pvt-export-onnx --task backbone on the written folder."
            )
        return convert_dense_prediction_checkpoint(checkpoint, output_dir, loaded=loaded, **options)
    return convert_official_checkpoint(checkpoint, output_dir, **options)
