# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of PVT: one graph for every batch size and image size, checked in ONNX Runtime before it is kept.

    from pvt_tools.export import export_onnx
    export_onnx("runs/fashion", "exports/fashion-onnx", task="image-classification", quantize="int8")

An image classifier becomes a repository folder that Transformers.js loads as it is (and `pvt-push` publishes):

- `onnx/model.onnx`            float32 graph, input `pixel_values` (batch_size, channels, height, width), dynamic
                               batch size, height and width (each side at least `minimum_input_size`, 32 pixels for
                               the paper's models), output `logits`; GELU, LayerNorm and residual additions fused
                               into ONNX Runtime's contrib operators (`optimize_for_onnxruntime`);
- `onnx/model_quantized.onnx`  with quantize="int8": int8 weights (`quantize_int8`); Transformers.js's dtype "q8";
- `config.json`                Transformers' built-in `PvtConfig` (model_type "pvt", which Transformers.js maps to its
                               PvtForImageClassification) with the model's architecture and id2label;
- `preprocessor_config.json`   the model's image processor (PvtImageProcessor);
- `README.md`                  a model card (library transformers.js, pipeline image-classification) saying what
                               each loader sees: this folder holds no PyTorch weights; the PyTorch model is the
                               `trust_remote_code` repository (model_type "pvt_v1") it was exported from.

A backbone (task="backbone") gives `onnx/model.onnx` (the exporter's graph, without the fusions: see
`write_verified_onnx_files`) with one output per stage, named after the stage (`stage1` ... `stage4`, Transformers'
backbone `out_features` names; strides 4, 8, 16, 32), beside the model's own config.json (model_type "pvt_v1"), for
ONNX Runtime users; Transformers.js has no backbone pipeline.

The graph comes from Transformers' own exporter, `transformers.exporters.OnnxExporter` (Transformers 5.23+, marked
experimental; see `write_onnx`), which replaced this module's torch.export + torch.onnx code: it exports PVT with
dynamic batch, height and width and its graphs verify. Before the folder is moved into place, every file is run in
ONNX Runtime at several batch sizes and image sizes (including odd, non-square and larger ones than the export saw)
and compared with PyTorch, and with check_transformers_js=True the folder is loaded and run by Transformers.js
under Node; a failure leaves nothing behind.
"""

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pvt_tools.export_options import DEFAULT_INT8, DEFAULT_OPSET, QUANTIZATIONS, TASKS

ONNX_SUBFOLDER = "onnx"
MODEL_FILE = "model.onnx"
QUANTIZED_MODEL_FILE = "model_quantized.onnx"
# Largest difference from PyTorch float32 accepted for the float32 graph, relative to the output's largest magnitude.
FLOAT32_TOLERANCE = 1e-4
# int8 dynamic quantization changes every output a little: the quantized graph must keep the float32 graph's top-1
# class on most verification images (classifier) and stay close in relative L2 distance (every task). Dynamic
# quantization of a healthy network stays well inside these bounds (about 1-5% relative error); a broken graph
# (wrong weights, wrong layout) gives errors near 100%.
INT8_MIN_TOP1_AGREEMENT = 0.75
INT8_MAX_RELATIVE_ERROR = 0.25
BATCH_DIM, HEIGHT_DIM, WIDTH_DIM = "batch_size", "height", "width"


class OnnxExportError(ValueError):
    """An export that cannot be made (bad input) or that failed its check in ONNX Runtime; nothing was written."""


def supported_opsets() -> range:
    """The opsets that the installed torch.onnx writes natively."""
    from torch.onnx import _constants

    return range(18, _constants.ONNX_MAX_OPSET + 1)


def stage_output_names(config) -> list[str]:
    """Backbone output names: the stage names (`stage1` ... `stage4`) that Transformers' `out_features` use."""
    return [f"stage{index + 1}" for index in range(config.num_encoder_blocks)]


def output_names_for(task: str, config) -> list[str]:
    return ["logits"] if task == "image-classification" else stage_output_names(config)


class OnnxExportWrapper(nn.Module):
    """`pixel_values` -> a flat tuple of tensors (the ONNX graph's outputs), without Transformers' output classes."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.task == "image-classification":
            return (self.model(pixel_values, return_dict=True).logits,)
        return tuple(self.model(pixel_values, return_dict=True).feature_maps)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise OnnxExportError(f"Unknown task {task!r}: choose one of {', '.join(TASKS)}.")
    return task


def check_opset(opset: int) -> int:
    opsets = supported_opsets()
    if opset not in opsets:
        raise OnnxExportError(
            f"The installed torch {torch.__version__} cannot write ONNX opset {opset}: it writes opsets "
            f"{opsets.start} to {opsets.stop - 1}. Pass --opset within that range (default {DEFAULT_OPSET})."
        )
    return opset


def check_quantize(quantize: str | None) -> str | None:
    if quantize is not None and quantize not in QUANTIZATIONS:
        choices = "; ".join(f"{name} ({meaning})" for name, meaning in QUANTIZATIONS.items())
        raise OnnxExportError(f"Unknown quantization {quantize!r}: choose one of {choices}.")
    return quantize


def check_output_dir(output_dir: Path) -> None:
    """The output folder must be new or empty: an export never mixes with or replaces other files."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise OnnxExportError(
            f"{output_dir} exists and is not an empty folder; nothing was written. Choose a new output folder "
            "(or remove this one)."
        )


def load_model_for_task(model_name_or_path: str | os.PathLike, task: str) -> nn.Module:
    """The PVT in `model_name_or_path` (a folder or a Hub repo id) as the task's model, in evaluation mode."""
    from transformers import PretrainedConfig

    from modeling_pvt import PvtBackbone, PvtForImageClassification

    check_task(task)
    looks_like_a_path = os.sep in str(model_name_or_path) or str(model_name_or_path).startswith(".")
    if looks_like_a_path and not Path(model_name_or_path).is_dir():
        raise OnnxExportError(
            f"No folder at {model_name_or_path}: give a folder written by save_pretrained / export_model (e.g. a "
            "training run's --output_dir), or a Hub repo id such as org/pvt-small."
        )
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(str(model_name_or_path))
    except (OSError, ValueError) as error:
        raise OnnxExportError(
            f"Cannot read a model config from {model_name_or_path}: {error}. Give a folder written by "
            "save_pretrained / export_model, or a Hub repo id."
        ) from error
    model_type = config_dict.get("model_type")
    if model_type not in ("pvt_v1", "pvt"):
        raise OnnxExportError(
            f"{model_name_or_path} holds a {model_type!r} model, not a PVT (model_type 'pvt_v1', or Transformers' "
            "built-in 'pvt'): this exporter handles PVT v1 only."
        )
    if task == "image-classification":
        model = PvtForImageClassification.from_pretrained(model_name_or_path)
    else:
        num_stages = config_dict.get("num_encoder_blocks", 4)
        out_features = [f"stage{index + 1}" for index in range(num_stages)]
        model = PvtBackbone.from_pretrained(model_name_or_path, out_features=out_features)
    return model.eval()


def example_input(config, batch_size: int = 2) -> torch.Tensor:
    """The tracing example: a batch of 2 at the native size (batch 1 and equal sides would be specialised)."""
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, config.num_channels, size, size, generator=generator)


@contextlib.contextmanager
def mlp_in_one_piece(model: nn.Module) -> Iterator[None]:
    """While exporting, every layer runs its MLP in one piece. The exporter traces under `no_grad`, where PVT layers
    run the MLP over token chunks (`inference_mlp_chunk_size`) whose count depends on the image size: traced, that
    loop becomes a fixed sequence of chunks, and pvt-small at 224x224 (3,136 tokens in stage 1) failed in ONNX
    Runtime at batch 8 ("Shape mismatch ... SequenceAt"). The numbers are the same either way."""
    layers = [module for module in model.modules() if hasattr(module, "inference_mlp_chunk_size")]
    saved = [(layer.inference_mlp_chunk_size, layer.chunk_size_feed_forward) for layer in layers]
    for layer in layers:
        layer.inference_mlp_chunk_size, layer.chunk_size_feed_forward = 0, 0
    try:
        yield
    finally:
        for layer, (inference_chunk_size, chunk_size) in zip(layers, saved):
            layer.inference_mlp_chunk_size, layer.chunk_size_feed_forward = inference_chunk_size, chunk_size


def name_axes_and_outputs(model_proto, output_names: list[str], num_channels: int) -> None:
    """Name the graph's outputs as in PyTorch (`logits`; the backbone's `stage1` ...) and its symbolic dimensions
    after what they are (batch_size, height, width); the channels, which `dynamic=True` leaves symbolic (named
    "3"), are the model's fixed number."""
    input_dims = model_proto.graph.input[0].type.tensor_type.shape.dim
    symbols = [dimension.dim_param for dimension in input_dims]
    names = {symbols[0]: BATCH_DIM, symbols[2]: HEIGHT_DIM, symbols[3]: WIDTH_DIM}
    input_dims[1].dim_value = num_channels
    renamed = {output.name: name for output, name in zip(model_proto.graph.output, output_names, strict=True)}
    for node in model_proto.graph.node:  # a backbone's stage map is an output and the next stage's input
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for output in model_proto.graph.output:
        output.name = renamed[output.name]
    for value in [*model_proto.graph.input, *model_proto.graph.output]:
        for dimension in value.type.tensor_type.shape.dim:
            if dimension.dim_param in names:
                dimension.dim_param = names[dimension.dim_param]


def write_onnx(model: nn.Module, task: str, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export `model` (PvtForImageClassification or PvtBackbone) for `task` to the ONNX file `path`, with
    Transformers' own exporter: `transformers.exporters.OnnxExporter` with `dynamic=True` (every axis of
    pixel_values symbolic: one graph for every batch size, height and width). Measured on PVT (tiny classifier and
    backbone, Transformers 5.25, torch 2.14.1): its graphs match eager within 2e-6 at 1x32x32 ... 2x320x256; with
    explicit `dynamic_shapes` (height, width >= 32) torch.export refuses the export instead (it derives a
    height >= 64 guard). Saved as one self-contained file, which Transformers.js and onnxruntime-web read."""
    import onnx
    import onnx_ir
    from transformers.exporters import OnnxConfig, OnnxExporter

    check_task(task)
    check_opset(opset)
    was_training = model.training
    try:
        with mlp_in_one_piece(model):
            exported = OnnxExporter().export(
                model.eval(),
                {"pixel_values": example_input(model.config)},
                OnnxConfig(dynamic=True, opset_version=opset),
            )
    finally:
        model.train(was_training)
    model_proto = onnx_ir.serde.serialize_model(exported.program)
    written_opset = next(entry.version for entry in model_proto.opset_import if entry.domain in ("", "ai.onnx"))
    if written_opset != opset:
        raise OnnxExportError(
            f"The exporter wrote opset {written_opset} instead of the requested {opset}; pass --opset "
            f"{written_opset} or another opset the installed torch.onnx writes natively."
        )
    name_axes_and_outputs(model_proto, output_names_for(task, model.config), model.config.num_channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(path))
    return path


def optimize_for_onnxruntime(source: Path, destination: Path) -> Path:
    """ONNX Runtime's transformer optimizer (`onnxruntime.transformers`, no session-level rewrites saved): the exact
    GELU (Div, Erf, Add, Mul, Mul) with its bias becomes `BiasGelu`, each residual addition with the LayerNorm after
    it `SkipLayerNormalization`. The spatial-reduction attention (keys and values from a coarser grid than the
    queries) matches none of its attention patterns and stays MatMul / Softmax. Numbers: benchmarks/deployment.md."""
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    optimizer_logger = logging.getLogger("onnxruntime.transformers")  # it asks for num_heads, which PVT varies
    level = optimizer_logger.level
    optimizer_logger.setLevel(logging.ERROR)
    try:
        optimized = optimize_model(str(source), model_type="vit", num_heads=0, hidden_size=0, opt_level=0)
    finally:
        optimizer_logger.setLevel(level)
    optimized.save_model_to_file(str(destination))
    return destination


def quantize_int8(source: Path, destination: Path, mode: str = DEFAULT_INT8) -> Path:
    """ONNX Runtime dynamic int8 quantization (signed int8 weights, activations quantized per batch at run time, no
    calibration): of the MatMuls only ("int8-matmul", the default) or of the MatMuls and convolutions
    ("int8-dynamic")."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    mode = DEFAULT_INT8 if mode == "int8" else check_quantize(mode)
    op_types = ["MatMul"] if mode == "int8-matmul" else None
    quantize_dynamic(
        str(source),
        str(destination),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=op_types,
        # ONNX's shape inference cannot type the outputs of ONNX Runtime's fused operators; they are all float32.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return destination


def verification_inputs(config) -> list[torch.Tensor]:
    """Batches the export never saw: batch 1 and 3; the native size, the smallest, odd and non-square, larger."""
    from modeling_pvt import minimum_input_size

    native = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    minimum = minimum_input_size(config)
    sizes = [
        (1, native, native),
        (3, minimum, minimum),
        (1, native + 13, native // 2 + 37),
        (3, native * 3 // 2 + 1, native + 5),
    ]
    generator = torch.Generator().manual_seed(1)
    return [
        torch.randn(batch, config.num_channels, height, width, generator=generator) for batch, height, width in sizes
    ]


def onnx_session(path: Path, threads: int | None = None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class VerificationReport:
    """What `verify_onnx` compared: per input shape, the largest difference (float32) or agreement (int8)."""

    file: str
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    max_relative_difference: float = 0.0
    top1_agreement: float | None = None


def verify_onnx(
    path: Path, model: nn.Module, task: str, *, quantized: bool = False, inputs: Sequence[torch.Tensor] | None = None
) -> VerificationReport:
    """Run the ONNX file in ONNX Runtime and compare with PyTorch; raise OnnxExportError naming what differs."""
    inputs = list(inputs) if inputs is not None else verification_inputs(model.config)
    session = onnx_session(path)
    names = output_names_for(task, model.config)
    found = [output.name for output in session.get_outputs()]
    if found != names or [item.name for item in session.get_inputs()] != ["pixel_values"]:
        raise OnnxExportError(f"{path.name} has inputs/outputs {found}, expected pixel_values -> {names}.")
    wrapper = OnnxExportWrapper(model.eval(), task)
    report = VerificationReport(file=path.name)
    agreements = []
    for pixel_values in inputs:
        with torch.no_grad():
            expected = [tensor.numpy() for tensor in wrapper(pixel_values)]
        try:
            actual = session.run(names, {"pixel_values": pixel_values.numpy()})
        except Exception as error:  # ONNX Runtime raises its own exception types
            raise OnnxExportError(
                f"{path.name} fails in ONNX Runtime at input {tuple(pixel_values.shape)}: {error}"
            ) from error
        report.shapes.append(tuple(pixel_values.shape))
        for name, want, got in zip(names, expected, actual):
            if want.shape != got.shape:
                raise OnnxExportError(
                    f"{path.name}: output {name} has shape {got.shape} at input {tuple(pixel_values.shape)}, "
                    f"PyTorch gives {want.shape}."
                )
            if quantized:
                difference = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12))
            else:
                difference = float(np.abs(got - want).max() / max(np.abs(want).max(), 1.0))
            report.max_relative_difference = max(report.max_relative_difference, difference)
        if quantized and task == "image-classification":
            agreements.append(expected[0].argmax(-1) == actual[0].argmax(-1))
    limit = INT8_MAX_RELATIVE_ERROR if quantized else FLOAT32_TOLERANCE
    if not report.max_relative_difference <= limit:
        kind = "relative L2 error" if quantized else "difference (relative to the largest output)"
        raise OnnxExportError(
            f"{path.name} disagrees with PyTorch: largest {kind} {report.max_relative_difference:.3g} > {limit:g} "
            f"over inputs {report.shapes}. The file was not kept."
        )
    if agreements:
        report.top1_agreement = float(np.concatenate(agreements).mean())
        if report.top1_agreement < INT8_MIN_TOP1_AGREEMENT:
            raise OnnxExportError(
                f"{path.name} keeps PyTorch's top-1 class on only {report.top1_agreement:.0%} of the verification "
                f"images (at least {INT8_MIN_TOP1_AGREEMENT:.0%} needed). The file was not kept."
            )
    return report


def transformers_js_config(config):
    """config.json of a classifier's ONNX folder: Transformers' built-in `PvtConfig` (model_type "pvt", which
    Transformers.js maps to its PvtForImageClassification) with the model's architecture and class names. It
    describes the graph; nothing in the folder is PyTorch weights for it."""
    import transformers

    from pvt_tools.benchmark.plan import BUILTIN_CONFIG_FIELDS
    from pvt_tools.hub import exported_label_names

    labels = exported_label_names(config)
    fields = {name: getattr(config, name) for name in BUILTIN_CONFIG_FIELDS if name != "num_labels"}
    return transformers.PvtConfig(
        **fields,
        id2label=labels,
        label2id={name: index for index, name in labels.items()},
        architectures=["PvtForImageClassification"],
    )


ONNX_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}: PVT v1 image classifier in ONNX

The ONNX export of the Pyramid Vision Transformer (PVT v1) image classifier {{ source }}, for Transformers.js
(browser and Node) and ONNX Runtime: {{ num_labels }} classes, {{ resolution }} input (any batch size and image size
of at least {{ minimum_size }} pixels a side run). Written by `pvt-export-onnx`; every file was run in ONNX Runtime
and compared with PyTorch before it was kept.

| file | what | Transformers.js `dtype` |
|---|---|---|
| `onnx/model.onnx` | float32, ONNX Runtime's GELU / LayerNorm fusions | `"fp32"` |
{%- if quantized %}
| `onnx/model_quantized.onnx` | int8 weights ({{ quantization }}) | `"q8"` |
{%- endif %}

## Transformers.js

```js
import { pipeline } from "@huggingface/transformers";

const dtype = "{{ 'q8' if quantized else 'fp32' }}";
const classify = await pipeline("image-classification", "{{ repo_id }}", { dtype });
console.log(await classify("image.jpg"));
```

## ONNX Runtime (Python)

```python
import onnxruntime
from huggingface_hub import snapshot_download
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor

folder = snapshot_download("{{ repo_id }}")
processor, config = AutoImageProcessor.from_pretrained(folder), AutoConfig.from_pretrained(folder)
session = onnxruntime.InferenceSession(f"{folder}/onnx/model.onnx")
(logits,) = session.run(["logits"], dict(processor(Image.open("image.jpg"), return_tensors="np")))
print(config.id2label[int(logits.argmax(-1)[0])])
```

## What each loader sees

- Transformers.js reads `config.json` (model_type `pvt`, which it maps to its `PvtForImageClassification`;
  `id2label` holds the class names), `preprocessor_config.json` and `onnx/`.
- Python's `AutoConfig` reads the same `config.json` as Transformers' built-in `PvtConfig`: the architecture and
  labels of the graph. This repository holds **no PyTorch weights**: `from_pretrained` of a model class fails here
  (no model.safetensors). The PyTorch model is {{ pytorch_source }}, loaded with `trust_remote_code=True`
  (model_type `pvt_v1`).
"""


def render_onnx_card(
    config, *, source: str, repo_id: str | None = None, quantize: str | None = None, base_model: str | None = None
) -> str:
    """README.md of a classifier's ONNX folder: metadata naming the library (transformers.js) and the pipeline."""
    from huggingface_hub import ModelCard, ModelCardData

    from modeling_pvt import minimum_input_size
    from pvt_tools.hub import architecture_facts

    repo_id = repo_id or "ORG/pvt-onnx"
    card_data = ModelCardData(
        license="apache-2.0",
        library_name="transformers.js",
        pipeline_tag="image-classification",
        tags=["onnx", "image-classification", "vision", "pvt"],
        base_model=base_model,
        model_name=repo_id.split("/")[-1],
    )
    card = ModelCard.from_template(
        card_data,
        template_str=ONNX_CARD_TEMPLATE,
        source=f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"`{source}`",
        pytorch_source=f"[{base_model}](https://huggingface.co/{base_model})"
        if base_model
        else "the model folder this was exported from",
        repo_id=repo_id,
        num_labels=config.num_labels,
        minimum_size=minimum_input_size(config),
        quantized=quantize is not None,
        quantization=QUANTIZATIONS.get(DEFAULT_INT8 if quantize == "int8" else quantize, ""),
        resolution=architecture_facts(config)["resolution"],
    )
    return str(card).rstrip("\n") + "\n"


def load_image_processor(model: nn.Module, source: str | os.PathLike):
    """The model's own image processor, else the official evaluation transform at its resolution."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        from pvt_tools.hub import official_eval_image_processor

        size = model.config.image_size if isinstance(model.config.image_size, int) else min(model.config.image_size)
        return official_eval_image_processor(size)


def save_model_files(
    model: nn.Module,
    source: str | os.PathLike,
    folder: Path,
    task: str,
    *,
    repo_id: str | None = None,
    quantize: str | None = None,
) -> None:
    """Beside onnx/: for a classifier Transformers.js's config.json, preprocessor_config.json and README.md (see the
    module docstring); for a backbone the model's own config.json and preprocessor_config.json."""
    if task == "image-classification":
        transformers_js_config(model.config).save_pretrained(folder)
        base_model = None if os.path.isdir(source) else str(source)  # a Hub repo id
        card = render_onnx_card(
            model.config, source=Path(source).name, repo_id=repo_id, quantize=quantize, base_model=base_model
        )
        (folder / "README.md").write_text(card, encoding="utf-8")
    else:
        model.config.save_pretrained(folder)
    load_image_processor(model, source).save_pretrained(folder)


def write_verified_onnx_files(
    model: nn.Module, task: str, onnx_dir: Path, *, opset: int = DEFAULT_OPSET, quantize: str | None = None
) -> list[VerificationReport]:
    """Write onnx_dir/model.onnx (a classifier's optimized for ONNX Runtime) and model_quantized.onnx, and verify
    them; the caller owns the atomic move."""
    check_quantize(quantize)
    was_training = model.training
    try:
        float_path = onnx_dir / MODEL_FILE
        if task == "image-classification":
            plain_path = write_onnx(model, task, onnx_dir / f".plain-{MODEL_FILE}", opset=opset)
            optimize_for_onnxruntime(plain_path, float_path)
            plain_path.unlink()
        else:
            # ONNX Runtime 1.32's optimizer breaks the backbone's graph, whose stage maps are outputs and feed the
            # next stage ("Graph is not a DAG ... at node Gelu_AddBias_3"): the backbone keeps the plain graph.
            write_onnx(model, task, float_path, opset=opset)
        reports = [verify_onnx(float_path, model, task)]
        if quantize is not None:
            quantized_path = quantize_int8(float_path, onnx_dir / QUANTIZED_MODEL_FILE, quantize)
            reports.append(verify_onnx(quantized_path, model, task, quantized=True))
    finally:
        model.train(was_training)
    return reports


def decisive_check_images(model: nn.Module, image_processor, folder: Path, count: int = 8) -> list[Path]:
    """PNG images for comparing clients: at the processor's resize size (so that no client resamples them), smooth
    random colours, and only those where PyTorch's top logit leads the runner-up by DECISIVE_MARGIN of the logits'
    range (a near tie can flip on float rounding or int8 noise alone, which says nothing about the export)."""
    from PIL import Image

    size = image_processor.size
    side = size.get("shortest_edge") or size.get("height")
    generator = np.random.default_rng(0)
    kept: list[Path] = []
    for attempt in range(20 * count):
        coarse = generator.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((side, side), Image.Resampling.BILINEAR)
        pixel_values = image_processor(image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            logits = model(pixel_values).logits[0]
        top2 = logits.topk(2).values
        if top2[0] - top2[1] >= DECISIVE_MARGIN * (logits.max() - logits.min()):
            kept.append(folder / f"check-{attempt}.png")
            image.save(kept[-1])
        if len(kept) == count:
            break
    return kept


DECISIVE_MARGIN = 0.2


@dataclass
class ClientCheck:
    """How a JavaScript client's top-1 classes compared with PyTorch's on the same images."""

    client: str
    images: int
    top1_agreement: float
    max_score_difference: float


def check_in_transformers_js(model: nn.Module, export_dir: Path, image_processor) -> list[ClientCheck]:
    """Load `export_dir` in Transformers.js (Node, offline) and classify decisive images with each ONNX file; raise
    OnnxExportError unless every top-1 class is PyTorch's."""
    import tempfile

    from PIL import Image

    from pvt_tools.node_clients import NodeClientError, classify_with_transformers_js

    names = model.config.id2label
    checks = []
    with tempfile.TemporaryDirectory() as folder:
        images = decisive_check_images(model, image_processor, Path(folder))
        if not images:
            raise OnnxExportError(
                "No check image gave PyTorch a clear top class, so Transformers.js could not be compared with it."
            )
        pixel_values = image_processor([Image.open(path) for path in images], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            probabilities = model(pixel_values).logits.softmax(-1)
        expected = [names[int(index)] for index in probabilities.argmax(-1)]
        dtypes = ["fp32"] + (["q8"] if (export_dir / ONNX_SUBFOLDER / QUANTIZED_MODEL_FILE).is_file() else [])
        for dtype in dtypes:
            try:
                results = classify_with_transformers_js(export_dir, images, dtype)
            except NodeClientError as error:
                raise OnnxExportError(f"Transformers.js could not run the export ({dtype}): {error}") from error
            labels = [result[0]["label"] for result in results]
            agreement = float(np.mean([got == want for got, want in zip(labels, expected)]))
            difference = max(abs(result[0]["score"] - float(row.max())) for result, row in zip(results, probabilities))
            checks.append(ClientCheck(f"Transformers.js {dtype}", len(images), agreement, difference))
            if agreement < 1:
                raise OnnxExportError(
                    f"Transformers.js ({dtype}) gives PyTorch's top-1 class on only {agreement:.0%} of "
                    f"{len(images)} check images ({labels} vs {expected}). The folder was not kept."
                )
    return checks


def export_onnx(
    model_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    task: str = "image-classification",
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    repo_id: str | None = None,
    check_transformers_js: bool = False,
) -> tuple[Path, list[VerificationReport]]:
    """Export the PVT in `model_name_or_path` to `output_dir` (see the module docstring); return the folder and what
    was verified (with check_transformers_js, also Transformers.js's `ClientCheck`s). All checks of the input happen
    before anything is written; the folder appears only when complete and verified."""
    check_task(task)
    check_opset(opset)
    check_quantize(quantize)
    output_dir = Path(output_dir).resolve()
    check_output_dir(output_dir)
    if check_transformers_js:
        if task != "image-classification":
            raise OnnxExportError(
                "Transformers.js has no backbone pipeline: --check_transformers_js is for --task image-classification."
            )
        from pvt_tools.node_clients import NodeClientError, check_node_clients

        try:
            check_node_clients()
        except NodeClientError as error:
            raise OnnxExportError(
                f"{str(error).rstrip('.')}; or leave out --check_transformers_js. Nothing was written."
            ) from error
    model = load_model_for_task(model_name_or_path, task)

    from pvt_tools.hub import set_shared_file_modes, staging_folder

    with staging_folder(output_dir.parent, output_dir.name) as staging:
        reports = write_verified_onnx_files(model, task, staging / ONNX_SUBFOLDER, opset=opset, quantize=quantize)
        save_model_files(model, model_name_or_path, staging, task, repo_id=repo_id, quantize=quantize)
        if check_transformers_js:
            reports += check_in_transformers_js(model, staging, load_image_processor(model, model_name_or_path))
        set_shared_file_modes(staging)
        check_output_dir(output_dir)  # nothing appeared there meanwhile
        if output_dir.exists():
            output_dir.rmdir()  # empty, checked just above
        staging.rename(output_dir)
    return output_dir, reports


@dataclass
class ScoredFile:
    """One file's top-1 accuracy on the evaluation images, and how fast it ran there (model time only)."""

    name: str
    accuracy: float
    images_per_second: float
    size_bytes: int | None = None


def evaluation_split(data_args) -> tuple:
    """The split an export is scored on: the data's test split when it has one, else its validation split."""
    from pvt_tools.training.data import load_image_classification_dataset

    dataset = load_image_classification_dataset(data_args)[0]
    split_name = "test" if "test" in dataset else "validation"
    return split_name, dataset[split_name]


def score_exported_classifier(
    model_name_or_path: str | os.PathLike,
    export_dir: str | os.PathLike,
    data_args,
    *,
    batch_size: int = 64,
    threads: int | None = None,
) -> tuple[str, int, list[ScoredFile]]:
    """Top-1 accuracy and images/s of the PyTorch model and of every ONNX file in `export_dir`/onnx, side by side
    on the same images (the test split of `data_args`' data, else its validation split), preprocessed once by the
    export's image processor. Returns the split's name, its size and one row per model."""
    from transformers import AutoImageProcessor

    from pvt_tools.training.data import to_rgb

    export_dir = Path(export_dir)
    split_name, split = evaluation_split(data_args)
    image_processor = AutoImageProcessor.from_pretrained(export_dir)
    labels = np.asarray(split[data_args.label_column_name])
    batches = [
        image_processor(
            [to_rgb(image) for image in split[start : start + batch_size][data_args.image_column_name]],
            return_tensors="np",
        )["pixel_values"].astype(np.float32)
        for start in range(0, len(split), batch_size)
    ]

    def score(name: str, predict, size_bytes: int | None = None) -> ScoredFile:
        predict(batches[0])  # warm-up
        started = time.perf_counter()
        predictions = np.concatenate([predict(batch).argmax(-1) for batch in batches])
        elapsed = time.perf_counter() - started
        return ScoredFile(name, float((predictions == labels).mean()), len(labels) / elapsed, size_bytes)

    model = load_model_for_task(model_name_or_path, "image-classification").eval()

    def predict_pytorch(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(pixel_values=torch.from_numpy(batch)).logits.numpy()

    rows = [score("PyTorch (float32)", predict_pytorch)]
    for path in sorted((export_dir / ONNX_SUBFOLDER).glob("*.onnx"), key=lambda path: path.name != MODEL_FILE):
        session = onnx_session(path, threads)

        def predict_onnx(batch: np.ndarray, session=session) -> np.ndarray:
            return session.run(["logits"], {"pixel_values": batch})[0]

        rows.append(score(path.name, predict_onnx, path.stat().st_size))
    return split_name, len(labels), rows


__all__ = [
    "DEFAULT_INT8",
    "DEFAULT_OPSET",
    "QUANTIZATIONS",
    "TASKS",
    "ClientCheck",
    "OnnxExportError",
    "check_in_transformers_js",
    "export_onnx",
    "optimize_for_onnxruntime",
    "quantize_int8",
    "render_onnx_card",
    "score_exported_classifier",
    "transformers_js_config",
    "verify_onnx",
    "write_onnx",
    "write_verified_onnx_files",
]
