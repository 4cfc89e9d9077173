# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of PVT: one graph for every batch size and image size, checked in ONNX Runtime before it is kept.

    from pvt_tools.export import export_onnx
    export_onnx("exports/pvt-small", "exports/pvt-small-onnx", task="image-classification", quantize="int8")

writes, in the layout Transformers.js and Optimum read (`from_pretrained(..., subfolder="onnx")`):

- `onnx/model.onnx`            float32 graph, input `pixel_values` (batch_size, channels, height, width), dynamic
                               batch size, height and width (each side at least `minimum_input_size`, 32 pixels for
                               the paper's models); outputs named as in PyTorch: `logits` for image-classification,
                               and for backbone one map per stage named after the stage (`stage1` ... `stage4`,
                               Transformers' backbone `out_features` names; strides 4, 8, 16, 32);
- `onnx/model_quantized.onnx`  with quantize="int8": ONNX Runtime dynamic quantization (int8 weights, activations
                               quantized per batch at run time);
- `config.json`, `preprocessor_config.json` of the model, so the folder serves Transformers.js as it is.

Why our own exporter: Optimum's exporter needs Transformers < 4.58. The model graph is captured with
`torch.export` (dynamic batch, height, width; see `export_program`) and translated by `torch.onnx`. Before the
folder is moved into place, every file is run in ONNX Runtime at several batch sizes and image sizes (including
odd, non-square and larger ones than the export saw) and compared with PyTorch; a failure leaves nothing behind.
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

TASKS = ("image-classification", "backbone")
ONNX_SUBFOLDER = "onnx"
MODEL_FILE = "model.onnx"
QUANTIZED_MODEL_FILE = "model_quantized.onnx"
QUANTIZATIONS = ("int8",)
# torch.onnx translates with its own library at opset 18 and newer (older opsets would be converted afterwards,
# with no guarantee); opset 18 is read by every ONNX Runtime since 1.14 and by onnxruntime-web (Transformers.js).
DEFAULT_OPSET = 18
# Largest difference from PyTorch float32 accepted for the float32 graph, relative to the output's largest magnitude.
FLOAT32_TOLERANCE = 1e-4
# int8 dynamic quantization changes every output a little: the quantized graph must keep the float32 graph's top-1
# class on most verification images (classifier) and stay close in relative L2 distance (every task). Dynamic
# quantization of a healthy network stays well inside these bounds (about 1-5% relative error); a broken graph
# (wrong weights, wrong layout) gives errors near 100%.
INT8_MIN_TOP1_AGREEMENT = 0.75
INT8_MAX_RELATIVE_ERROR = 0.25
BATCH_DIM, HEIGHT_DIM, WIDTH_DIM = "batch_size", "height", "width"
MAX_DIM = 8192


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
        raise OnnxExportError(f"Unknown quantization {quantize!r}: choose one of {', '.join(QUANTIZATIONS)}.")
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


@contextlib.contextmanager
def contiguous_convolution_inputs(model: nn.Module) -> Iterator[None]:
    """While exporting, feed every convolution a contiguous input.

    The model turns tokens back into maps with transpose + reshape views (channels-last strides). A convolution
    picks its memory layout from those strides, and whether they are "channels-last" depends on whether a side is
    1, so an export would fix the graph to maps wider than one token. A contiguous copy has one layout at every size;
    the numbers are the same.
    """
    handles = [
        module.register_forward_pre_hook(lambda _, args: (args[0].contiguous(), *args[1:]))
        for module in model.modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def example_input(config, batch_size: int = 2) -> torch.Tensor:
    """The tracing example: a batch of 2 at the native size (batch 1 and equal sides would be specialised)."""
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, config.num_channels, size, size, generator=generator)


def dynamic_shapes_for(config) -> dict:
    from modeling_pvt import minimum_input_size

    minimum = minimum_input_size(config)
    return {
        "pixel_values": {
            0: torch.export.Dim(BATCH_DIM, min=1, max=MAX_DIM),
            2: torch.export.Dim(HEIGHT_DIM, min=minimum, max=MAX_DIM),
            3: torch.export.Dim(WIDTH_DIM, min=minimum, max=MAX_DIM),
        }
    }


def export_program(model: nn.Module, task: str) -> torch.export.ExportedProgram:
    """`torch.export` of the task's outputs with dynamic batch size, height and width: one graph for every size.

    - size-oblivious reasoning about sizes of 1 (as torch.onnx itself exports), so a side of one token (32-pixel
      images) is not carved out of the graph;
    - gradients enabled while tracing: under `no_grad` the MLP runs in token chunks whose count depends on the
      image size (see `INFERENCE_MLP_CHUNK_TOKENS` in modeling_pvt.py), which would fix the size; the exported graph
      computes no gradients either way;
    - `contiguous_convolution_inputs`, and position-embedding resampling at every size (`interpolate_pos_encoding`
      under `torch.compiler.is_exporting()`).
    """
    import torch.fx.experimental._config as fx_config

    was_training = model.training
    wrapper = OnnxExportWrapper(model.eval(), task)
    try:
        with (
            contiguous_convolution_inputs(model),
            fx_config.patch(backed_size_oblivious=True),
            torch.enable_grad(),
        ):
            return torch.export.export(
                wrapper, (example_input(model.config),), dynamic_shapes=dynamic_shapes_for(model.config)
            )
    finally:
        model.train(was_training)


def name_dynamic_axes(model_proto, names: dict[str, str]) -> None:
    """Give the graph's symbolic dimensions readable names (batch_size, height, width)."""
    for value in [*model_proto.graph.input, *model_proto.graph.output]:
        for dimension in value.type.tensor_type.shape.dim:
            if dimension.dim_param in names:
                dimension.dim_param = names[dimension.dim_param]


def write_onnx(model: nn.Module, task: str, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export `model` (PvtForImageClassification or PvtBackbone) for `task` to the ONNX file `path`."""
    import onnx

    check_task(task)
    check_opset(opset)
    program = export_program(model, task)
    (input_name,) = program.graph_signature.user_inputs
    input_node = next(node for node in program.graph.nodes if node.name == input_name)
    batch_size, _, height, width = input_node.meta["val"].shape
    symbols = {str(batch_size): BATCH_DIM, str(height): HEIGHT_DIM, str(width): WIDTH_DIM}
    onnx_program = torch.onnx.export(
        program,
        (example_input(model.config),),
        input_names=["pixel_values"],
        output_names=output_names_for(task, model.config),
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    model_proto = onnx_program.model_proto
    written_opset = next(entry.version for entry in model_proto.opset_import if entry.domain in ("", "ai.onnx"))
    if written_opset != opset:
        raise OnnxExportError(
            f"torch.onnx wrote opset {written_opset} instead of the requested {opset}; pass --opset {written_opset} "
            "or another opset the installed exporter writes natively."
        )
    name_dynamic_axes(model_proto, symbols)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(path))
    return path


def quantize_int8(source: Path, destination: Path) -> Path:
    """ONNX Runtime dynamic int8 quantization: int8 weights, activations quantized at run time, no calibration."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(destination), weight_type=QuantType.QInt8)
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


def save_model_files(model: nn.Module, source: str | os.PathLike, folder: Path) -> None:
    """config.json and preprocessor_config.json beside onnx/ (Transformers.js reads both)."""
    from transformers import AutoImageProcessor

    model.config.save_pretrained(folder)
    try:
        image_processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        from pvt_tools.hub import official_eval_image_processor

        size = model.config.image_size if isinstance(model.config.image_size, int) else min(model.config.image_size)
        image_processor = official_eval_image_processor(size)
    image_processor.save_pretrained(folder)


def write_verified_onnx_files(
    model: nn.Module, task: str, onnx_dir: Path, *, opset: int = DEFAULT_OPSET, quantize: str | None = None
) -> list[VerificationReport]:
    """Write onnx_dir/model.onnx (and model_quantized.onnx) and verify them; the caller owns the atomic move."""
    was_training = model.training
    try:
        float_path = write_onnx(model, task, onnx_dir / MODEL_FILE, opset=opset)
        reports = [verify_onnx(float_path, model, task)]
        if quantize == "int8":
            quantized_path = quantize_int8(float_path, onnx_dir / QUANTIZED_MODEL_FILE)
            reports.append(verify_onnx(quantized_path, model, task, quantized=True))
    finally:
        model.train(was_training)
    return reports


def export_onnx(
    model_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    task: str = "image-classification",
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
) -> tuple[Path, list[VerificationReport]]:
    """Export the PVT in `model_name_or_path` to `output_dir` (see the module docstring); return the folder and what
    was verified. All checks happen before anything is written; the folder appears only when complete and verified."""
    check_task(task)
    check_opset(opset)
    check_quantize(quantize)
    output_dir = Path(output_dir).resolve()
    check_output_dir(output_dir)
    model = load_model_for_task(model_name_or_path, task)

    from pvt_tools.hub import set_shared_file_modes, staging_folder

    with staging_folder(output_dir.parent, output_dir.name) as staging:
        reports = write_verified_onnx_files(model, task, staging / ONNX_SUBFOLDER, opset=opset, quantize=quantize)
        save_model_files(model, model_name_or_path, staging)
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
    "DEFAULT_OPSET",
    "TASKS",
    "OnnxExportError",
    "score_exported_classifier",
    "export_onnx",
    "export_program",
    "quantize_int8",
    "verify_onnx",
    "write_onnx",
    "write_verified_onnx_files",
]
