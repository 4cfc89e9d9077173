"""PVT as the backbone of Transformers' DETR, Deformable DETR, Mask2Former and UperNet.

Transformers 5 builds a detector's backbone from `config.backbone_config` with random weights and no longer loads
pretrained backbone weights for you. This module does the two things that leaves to us:

- `detector_config_with_pvt` builds the detector's config around a `PvtConfig` and refuses backbone outputs
  (`out_features`) the detector cannot use, naming the stages it needs;
- `load_pvt_backbone_weights` copies a PVT checkpoint (a folder or a Hub repo id, in this project's layout or in
  Transformers' built-in "pvt" layout, or the backbone of a trained detector or segmenter) into the detector's
  backbone and checks that every backbone tensor came from the checkpoint, refusing a checkpoint of another
  architecture or variant with the offending tensors named.

`pvt_detector_from_checkpoint` does both in one call:

    model = pvt_detector_from_checkpoint("deformable_detr", "path/to/pvt-small", num_labels=10)
"""

import re
from contextlib import contextmanager

import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import (
    DeformableDetrConfig,
    DeformableDetrForObjectDetection,
    DetrConfig,
    DetrForObjectDetection,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    PreTrainedConfig,
    PreTrainedModel,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)
from transformers import __version__ as transformers_version
from transformers.utils import logging

from configuration_pvt import PvtConfig
from modeling_pvt import BUILTIN_PVT_KEY_MAPPING, PvtBackbone

ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]

# The backbone outputs each detector is built with by default: DETR reads the last map only (the authors' DETR
# config uses the last stage); Deformable DETR takes strides 8-32 and adds a fourth, coarser level itself (the
# authors' C3-C5 setting); Mask2Former's pixel decoder and UperNet's FPN take the whole pyramid.
DEFAULT_OUT_FEATURES: dict[str, list[str]] = {
    "detr": ["stage4"],
    "deformable_detr": ["stage2", "stage3", "stage4"],
    "mask2former": ALL_STAGES,
    "upernet": ALL_STAGES,
}

DETECTOR_CONFIG_CLASSES: dict[str, type[PreTrainedConfig]] = {
    "detr": DetrConfig,
    "deformable_detr": DeformableDetrConfig,
    "mask2former": Mask2FormerConfig,
    "upernet": UperNetConfig,
}

DETECTOR_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "detr": DetrForObjectDetection,
    "deformable_detr": DeformableDetrForObjectDetection,
    "mask2former": Mask2FormerForUniversalSegmentation,
    "upernet": UperNetForSemanticSegmentation,
}

# Tensors of a classification checkpoint that the dense-prediction backbone does not have.
CLASSIFICATION_ONLY_KEY = re.compile(
    r"(^|\.)(classifier\.(weight|bias)|layernorm\.(weight|bias)|stages\.\d+\.cls_token)$"
)

# Settings that change what the backbone computes without changing any tensor's shape.
NUMERIC_FIELDS = (
    "hidden_act",
    "layer_norm_eps",
    "patch_embedding_layer_norm_eps",
    "sequence_reduction_layer_norm_eps",
)

MAX_NAMES_SHOWN = 20


def stage_strides(pvt_config: PvtConfig) -> list[int]:
    """Pixels per feature-map cell of each stage: the running product of the patch strides (4, 8, 16, 32)."""
    strides, total = [], 1
    for stride in pvt_config.strides:
        total *= stride
        strides.append(total)
    return strides


def _out_features_problem(detector: str, out_features: list[str], detector_kwargs: dict) -> str | None:
    """Why `out_features` cannot feed `detector`, or None if they can."""
    if detector == "detr":
        if out_features != ["stage4"]:
            return "DETR reads only the last feature map: it needs out_features=['stage4']"
    elif detector == "deformable_detr":
        levels = detector_kwargs.get("num_feature_levels", DeformableDetrConfig.num_feature_levels)
        if out_features[-1] != "stage4":
            return (
                "Deformable DETR builds its extra levels from the last map, so it needs out_features ending with "
                "'stage4' (the authors' setting is ['stage2', 'stage3', 'stage4'])"
            )
        if levels == 1 and len(out_features) != 1:
            return "Deformable DETR with num_feature_levels=1 takes one map: it needs out_features=['stage4']"
        if len(out_features) > levels:
            return (
                f"Deformable DETR with num_feature_levels={levels} takes at most {levels} maps: use at most {levels} "
                f"stages ending with 'stage4', e.g. ['stage2', 'stage3', 'stage4'], or raise num_feature_levels"
            )
    elif out_features != ALL_STAGES:
        name = "Mask2Former's pixel decoder" if detector == "mask2former" else "UperNet's FPN and auxiliary head"
        return f"{name} takes the whole pyramid: it needs out_features={ALL_STAGES}"
    return None


def detector_config_with_pvt(detector: str, pvt_config: PvtConfig, **detector_kwargs) -> PreTrainedConfig:
    """The config of `detector` ("detr", "deformable_detr", "mask2former" or "upernet") with `pvt_config` as its
    backbone; keyword arguments go to the detector's config class. Raises ValueError when the PVT's `out_features`
    do not fit the detector, naming the stages it needs."""
    if detector not in DETECTOR_CONFIG_CLASSES:
        raise ValueError(f"Unknown detector {detector!r}; choose one of {list(DETECTOR_CONFIG_CLASSES)}.")
    if not isinstance(pvt_config, PvtConfig):
        raise TypeError(f"pvt_config must be a PvtConfig, got {type(pvt_config).__name__}.")
    problem = _out_features_problem(detector, list(pvt_config.out_features), detector_kwargs)
    if problem:
        raise ValueError(
            f"{problem}; the PvtConfig has out_features={pvt_config.out_features}. Build it with "
            f"PvtConfig(..., out_features={DEFAULT_OUT_FEATURES[detector]}) (DEFAULT_OUT_FEATURES[{detector!r}])."
        )
    if detector == "mask2former":
        strides = stage_strides(pvt_config)
        given = detector_kwargs.setdefault("feature_strides", strides)
        if list(given) != strides:
            raise ValueError(
                f"feature_strides={list(given)} does not match the PVT's stage strides {strides}: leave "
                f"feature_strides out and it is taken from the PVT config."
            )
    return DETECTOR_CONFIG_CLASSES[detector](backbone_config=pvt_config, **detector_kwargs)


def check_detector_buildable(detector: str, **detector_kwargs) -> None:
    """Build `detector` on the meta device (no memory, no time) with a small PVT and `detector_kwargs`, so that a
    configuration Transformers cannot build is refused before any data is read or anything written. Raises
    ValueError naming the settings and, where Transformers' own message is about its internals, what to change."""
    pvt_config = PvtConfig(hidden_sizes=[8, 8, 8, 8], num_attention_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1])
    pvt_config.out_features = DEFAULT_OUT_FEATURES[detector]
    try:
        with torch.device("meta"), _quiet_transformers():
            DETECTOR_MODEL_CLASSES[detector](detector_config_with_pvt(detector, pvt_config, **detector_kwargs))
    except (ValueError, TypeError, AssertionError, RuntimeError, StrictDataclassClassValidationError) as error:
        cause = error.__cause__ if isinstance(error, StrictDataclassClassValidationError) else error
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        decoder_layers = detector_kwargs.get("decoder_layers", DeformableDetrConfig.decoder_layers)
        if detector == "deformable_detr" and decoder_layers < 2 and not detector_kwargs.get("two_stage", False):
            reason = (
                "the box heads of its decoder layers 2 and up are tied to layer 1's, so it needs "
                "decoder_layers >= 2 (or two_stage true)"
            )
        settings = ", ".join(f"{name}={value!r}" for name, value in detector_kwargs.items()) or "its defaults"
        raise ValueError(
            f"Transformers {transformers_version} cannot build {DETECTOR_MODEL_CLASSES[detector].__name__} with "
            f"{settings}: {reason}. Change --detector_config_overrides."
        ) from error


def find_pvt_backbone(model: torch.nn.Module) -> PvtBackbone:
    """The one `PvtBackbone` inside a detector (DETR keeps it at `model.model.backbone.model`)."""
    backbones = [module for module in model.modules() if isinstance(module, PvtBackbone)]
    if len(backbones) != 1:
        raise ValueError(
            f"{type(model).__name__} holds {len(backbones)} PVT backbones, expected exactly one: build it from a "
            f"config whose backbone_config is a PvtConfig (see detector_config_with_pvt)."
        )
    return backbones[0]


@contextmanager
def _quiet_transformers():
    """Silence Transformers' load report while we load: we check the result ourselves and report what matters."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def _list_names(names) -> str:
    names = sorted(names)
    shown = ", ".join(names[:MAX_NAMES_SHOWN])
    return shown + (f", ... ({len(names) - MAX_NAMES_SHOWN} more)" if len(names) > MAX_NAMES_SHOWN else "")


def _dense_model_type(config_dict: dict) -> str | None:
    """The detector or segmenter a checkpoint's config.json describes (DETR, Deformable DETR, Mask2Former, UperNet:
    its PVT is in `backbone_config`), or None for a PVT checkpoint."""
    model_type = config_dict.get("model_type")
    return model_type if model_type in DETECTOR_MODEL_CLASSES else None


def _read_pvt_checkpoint(checkpoint: str, backbone: PvtBackbone, **from_pretrained_kwargs) -> tuple[dict, dict, list]:
    """(PVT config dict, backbone weights, problems) of `checkpoint`, read to fit `backbone`: a PVT checkpoint
    (ours or Transformers' built-in), or the PVT backbone inside a trained detector or segmenter."""
    checkpoint_config, _ = PvtConfig.get_config_dict(checkpoint, **from_pretrained_kwargs)
    dense_type = _dense_model_type(checkpoint_config)
    if dense_type is not None:
        pvt_config = checkpoint_config.get("backbone_config") or {}
        if pvt_config.get("model_type") not in ("pvt_v1", "pvt"):
            return pvt_config, {}, [f"it is a {dense_type} whose backbone is not a PVT v1"]
        with _quiet_transformers():
            source = DETECTOR_MODEL_CLASSES[dense_type].from_pretrained(checkpoint, **from_pretrained_kwargs)
        weights = find_pvt_backbone(source).state_dict()
        ours = backbone.state_dict()
        missing = set(ours) - set(weights)
        unexpected = set(weights) - set(ours)
        mismatched = [
            (name, weights[name].shape, ours[name].shape)
            for name in set(ours) & set(weights)
            if weights[name].shape != ours[name].shape
        ]
        loading_info = {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched}
        checkpoint_type = pvt_config["model_type"]
    else:
        pvt_config = checkpoint_config
        checkpoint_type = checkpoint_config.get("model_type")
        key_mapping = BUILTIN_PVT_KEY_MAPPING if checkpoint_type == "pvt" else None
        with _quiet_transformers():
            # Built with the model's own backbone config, so every shape disagreement shows up as a mismatch.
            source, loading_info = PvtBackbone.from_pretrained(
                checkpoint,
                config=backbone.config,
                key_mapping=key_mapping,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
                **from_pretrained_kwargs,
            )
        weights = source.state_dict()

    problems = []
    if checkpoint_type not in ("pvt_v1", "pvt"):
        problems.append(f"its config.json says model_type={checkpoint_type!r}, not a PVT v1 ('pvt_v1' or 'pvt')")
    if loading_info["missing_keys"]:
        problems.append(f"backbone tensors absent from it: {_list_names(loading_info['missing_keys'])}")
    if loading_info["mismatched_keys"]:
        mismatched = [
            f"{name} {tuple(theirs)} vs {tuple(ours)}" for name, theirs, ours in loading_info["mismatched_keys"]
        ]
        problems.append(f"tensors of another shape (checkpoint vs model): {_list_names(mismatched)}")
    foreign = [name for name in loading_info["unexpected_keys"] if not CLASSIFICATION_ONLY_KEY.search(name)]
    if foreign:
        problems.append(f"tensors the backbone does not have: {_list_names(foreign)}")
    return pvt_config, weights, problems


def load_pvt_backbone_weights(model: torch.nn.Module, checkpoint: str, **from_pretrained_kwargs) -> list[str]:
    """Copy the PVT weights of `checkpoint` (folder or Hub repo id: a PvtModel, PvtForImageClassification or
    PvtBackbone checkpoint of this project, one of Transformers' built-in Pvt, or a trained DETR, Deformable DETR,
    Mask2Former or UperNet with a PVT backbone, whose backbone is taken) into `model`'s PVT backbone.

    Every backbone tensor must come from the checkpoint with its shape, and the checkpoint may hold nothing else
    than the backbone and the classification-only tensors (class token, final norm, classifier). Otherwise the
    model is left untouched and a ValueError names the mismatching tensors. Keyword arguments (revision,
    cache_dir, token, ...) go to `from_pretrained`. Returns the names of the loaded tensors.
    """
    backbone = find_pvt_backbone(model)
    checkpoint_config, weights, problems = _read_pvt_checkpoint(checkpoint, backbone, **from_pretrained_kwargs)
    if not problems:
        saved = PvtConfig.from_dict(checkpoint_config)
        differing = [
            f"{field}={getattr(saved, field)!r} (checkpoint) vs {getattr(backbone.config, field)!r} (model)"
            for field in NUMERIC_FIELDS
            if getattr(saved, field) != getattr(backbone.config, field)
        ]
        if differing:
            problems.append(f"settings that change its outputs differ: {'; '.join(differing)}")
    if problems:
        raise ValueError(
            f"{checkpoint} does not fit the {type(model).__name__}'s PVT backbone (another architecture or "
            f"variant): " + "; ".join(problems) + ". Build the backbone config from the checkpoint, e.g. "
            "PvtConfig.from_pretrained(checkpoint, out_features=...), or use pvt_detector_from_checkpoint."
        )

    backbone.load_state_dict(weights, strict=True)
    for name, tensor in backbone.state_dict().items():  # every tensor now equals the checkpoint's
        if not torch.equal(tensor, weights[name].to(tensor.device, tensor.dtype)):
            raise RuntimeError(f"backbone tensor {name} differs from the checkpoint after loading.")
    return sorted(weights)


def pvt_backbone_config(checkpoint: str, out_features: list[str], **from_pretrained_kwargs) -> PvtConfig:
    """The checkpoint's PVT architecture (a PVT checkpoint's, or the backbone's of a trained detector or
    segmenter) as a backbone config: its shape and numeric settings, the given `out_features`, and none of a
    classifier's label names."""
    config_dict, _ = PvtConfig.get_config_dict(checkpoint, **from_pretrained_kwargs)
    if _dense_model_type(config_dict) is not None:
        saved = PvtConfig.from_dict(config_dict.get("backbone_config") or {})
    else:
        saved = PvtConfig.from_pretrained(checkpoint, **from_pretrained_kwargs)
    architecture = {name: getattr(saved, name) for name in PvtConfig.__annotations__ if not name.startswith("_")}
    return PvtConfig(**architecture, out_features=out_features)


def pvt_detector_from_checkpoint(
    detector: str,
    checkpoint: str,
    out_features: list[str] | None = None,
    from_pretrained_kwargs: dict | None = None,
    **detector_kwargs,
) -> PreTrainedModel:
    """`detector` with a PVT backbone shaped like `checkpoint` and holding its weights (the head is new).
    `out_features` defaults to `DEFAULT_OUT_FEATURES[detector]`; keyword arguments go to the detector's config."""
    from_pretrained_kwargs = from_pretrained_kwargs or {}
    out_features = out_features or DEFAULT_OUT_FEATURES.get(detector, ALL_STAGES)
    backbone_config = pvt_backbone_config(checkpoint, out_features, **from_pretrained_kwargs)
    config = detector_config_with_pvt(detector, backbone_config, **detector_kwargs)
    model = DETECTOR_MODEL_CLASSES[detector](config)
    load_pvt_backbone_weights(model, checkpoint, **from_pretrained_kwargs)
    return model


__all__ = [
    "ALL_STAGES",
    "DEFAULT_OUT_FEATURES",
    "check_detector_buildable",
    "detector_config_with_pvt",
    "find_pvt_backbone",
    "load_pvt_backbone_weights",
    "pvt_backbone_config",
    "pvt_detector_from_checkpoint",
    "stage_strides",
]
