"""ONNX export: one graph for every batch and image size, equal to PyTorch eager; int8; the folder Transformers.js
(Node) and onnxruntime-web run and pvt-push publishes; nothing written on failure."""

import json
import os
import shutil

import numpy as np
import onnx
import pytest
import torch

from modeling_pvt import PvtBackbone, PvtForImageClassification
from pvt_tools import export
from pvt_tools.commands import export_onnx as export_command
from pvt_tools.export import OnnxExportError, export_onnx, onnx_session
from pvt_tools.training.data import DataError
from tests.conftest import tiny_config

# Sizes no export below traces with (it traces 2x3x64x64): the smallest, odd, non-square, larger.
UNSEEN_INPUTS = [(1, 32, 32), (3, 97, 161), (2, 320, 256), (5, 33, 250)]


def small_config(**overrides):
    """One layer a stage (the fastest export that has it all); the paper's reduction ratios keep large inputs cheap;
    MLPs that run in chunks of 64 tokens without gradients (as pvt-small's 3,136 tokens do in chunks of 2,048), which
    an export must not trace as a fixed number of chunks."""
    settings = dict(depths=[1, 1, 1, 1], sequence_reduction_ratios=[8, 4, 2, 1], inference_mlp_chunk_size=64)
    return tiny_config(**{**settings, **overrides})


def random_pixels(batch_size: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = PvtForImageClassification(small_config()).eval()
    folder = tmp_path_factory.mktemp("classifier") / "model"
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def classifier_export(classifier_folder, tmp_path_factory):
    """float32 + int8 export of the tiny classifier (exports take tens of seconds: once)."""
    folder, _ = classifier_folder
    return export_onnx(folder, tmp_path_factory.mktemp("classifier_onnx") / "out", quantize="int8")


@pytest.fixture(scope="module")
def backbone_export(classifier_folder, tmp_path_factory):
    folder, _ = classifier_folder
    return export_onnx(folder, tmp_path_factory.mktemp("backbone_onnx") / "out", task="backbone")


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_eager_keeps_the_native_grid_shortcut():
    """Outside an export the stored table is used as it is at the native grid (no resampling)."""
    model = PvtForImageClassification(small_config()).eval()
    for stage in model.pvt.stages:
        stored = stage.position_embeddings[:, stage.num_prefix_positions :]
        assert stage.interpolate_pos_encoding(*stage.grid_size).data_ptr() == stored.data_ptr()


def test_write_onnx_leaves_the_model_as_it_was(monkeypatch, tmp_path):
    """The exporter traces in evaluation mode; the model's mode is restored, also when the export fails."""
    from transformers.exporters import OnnxExporter

    model = PvtForImageClassification(small_config()).train()
    seen = {}

    def failing_export(self, module, sample_inputs, config):
        seen.update(training=module.training, dynamic=config.dynamic, shape=tuple(sample_inputs["pixel_values"].shape))
        seen["chunk_sizes"] = {layer.inference_mlp_chunk_size for layer in module.pvt.stages[0].layers}
        raise RuntimeError("tracing failed")

    monkeypatch.setattr(OnnxExporter, "export", failing_export)
    with pytest.raises(RuntimeError, match="tracing failed"):
        export.write_onnx(model, "image-classification", tmp_path / "model.onnx")
    assert seen == {"training": False, "dynamic": True, "shape": (2, 3, 64, 64), "chunk_sizes": {0}}
    assert all(module.training for module in model.modules())
    assert {layer.inference_mlp_chunk_size for layer in model.pvt.stages[0].layers} == {64}
    assert list(tmp_path.iterdir()) == []


def test_onnx_classifier_runs_at_unseen_sizes(classifier_folder, classifier_export):
    _, model = classifier_folder
    folder, reports = classifier_export
    assert listing(folder) == [
        "README.md",
        "config.json",
        "onnx",
        "onnx/model.onnx",
        "onnx/model_quantized.onnx",
        "preprocessor_config.json",
    ]
    graph = onnx.load(str(folder / "onnx" / "model.onnx")).graph
    assert [value.name for value in graph.input] == ["pixel_values"]
    assert [dim.dim_param for dim in graph.input[0].type.tensor_type.shape.dim] == ["batch_size", "", "height", "width"]
    assert [value.name for value in graph.output] == ["logits"]
    session = onnx_session(folder / "onnx" / "model.onnx")
    for batch_size, height, width in [(4, 45, 129), (1, 200, 48), (7, 64, 64)]:
        pixel_values = random_pixels(batch_size, height, width, seed=3)
        with torch.no_grad():
            expected = model(pixel_values).logits.numpy()
        (actual,) = session.run(["logits"], {"pixel_values": pixel_values.numpy()})
        np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4)
    assert reports[0].max_relative_difference <= export.FLOAT32_TOLERANCE
    # ONNX Runtime's transformer fusions: each exact GELU (Erf ...) is one BiasGelu, each residual addition with the
    # LayerNorm after it one SkipLayerNormalization (4 layers: 4 MLPs, 8 residual additions).
    op_types = [node.op_type for node in graph.node]
    assert "Erf" not in op_types and op_types.count("BiasGelu") == 4
    assert op_types.count("SkipLayerNormalization") == 8


def test_int8_file_is_quantized_and_verified(classifier_folder, classifier_export):
    _, model = classifier_folder
    folder, reports = classifier_export
    float_path, quantized_path = folder / "onnx" / "model.onnx", folder / "onnx" / "model_quantized.onnx"
    op_types = {node.op_type for node in onnx.load(str(quantized_path)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= op_types
    assert "ConvInteger" not in op_types and "Conv" in op_types  # the default quantizes the MatMuls only
    assert quantized_path.stat().st_size < float_path.stat().st_size
    assert reports[1].file == "model_quantized.onnx" and reports[1].top1_agreement >= export.INT8_MIN_TOP1_AGREEMENT
    pixel_values = random_pixels(6, 70, 90, seed=4)
    (actual,) = onnx_session(quantized_path).run(["logits"], {"pixel_values": pixel_values.numpy()})
    with torch.no_grad():
        expected = model(pixel_values).logits.numpy()
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < export.INT8_MAX_RELATIVE_ERROR
    assert not np.allclose(actual, expected, atol=1e-6)  # it is a different (quantized) computation


def test_backbone_export_gives_every_stage_at_unseen_sizes(classifier_folder, backbone_export):
    """The ONNX file of PvtBackbone against eager, up to detection sizes."""
    folder, _ = classifier_folder
    output, _ = backbone_export
    assert json.loads((output / "config.json").read_text())["model_type"] == "pvt_v1"  # not a Transformers.js folder
    backbone = PvtBackbone.from_pretrained(folder, out_features=["stage1", "stage2", "stage3", "stage4"]).eval()
    session = onnx_session(output / "onnx" / "model.onnx")
    assert [value.name for value in session.get_outputs()] == ["stage1", "stage2", "stage3", "stage4"]
    for batch_size, height, width in [(1, 512, 640), (1, 800, 1216), (2, 41, 75)]:
        pixel_values = random_pixels(batch_size, height, width, seed=5)
        with torch.no_grad():
            expected = [feature_map.numpy() for feature_map in backbone(pixel_values).feature_maps]
        from_onnx = session.run(None, {"pixel_values": pixel_values.numpy()})
        for want, got_onnx in zip(expected, from_onnx, strict=True):
            np.testing.assert_allclose(got_onnx, want, atol=1e-4, rtol=1e-4)
        assert [got.shape[-2:] for got in from_onnx] == [(height // 4 >> i, width // 4 >> i) for i in range(4)]


def test_bad_inputs_are_refused_and_nothing_is_written(classifier_folder, tmp_path):
    folder, _ = classifier_folder
    other = tmp_path / "vit"
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(other)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    before = listing(tmp_path)
    cases = [
        ({"model_name_or_path": other, "output_dir": tmp_path / "a"}, "'vit' model, not a PVT"),
        ({"model_name_or_path": tmp_path / "missing", "output_dir": tmp_path / "b"}, "No folder at"),
        (
            {"model_name_or_path": folder, "output_dir": tmp_path / "c", "task": "segmentation"},
            "Unknown task 'segmentation'",
        ),
        ({"model_name_or_path": folder, "output_dir": tmp_path / "d", "opset": 11}, "cannot write ONNX opset 11"),
        ({"model_name_or_path": folder, "output_dir": tmp_path / "e", "opset": 99}, "cannot write ONNX opset 99"),
        (
            {"model_name_or_path": folder, "output_dir": tmp_path / "f", "quantize": "int4"},
            "Unknown quantization 'int4': choose one of int8 ",
        ),
        ({"model_name_or_path": folder, "output_dir": occupied}, "is not an empty folder"),
    ]
    for kwargs, message in cases:
        with pytest.raises(OnnxExportError, match=message):
            export_onnx(kwargs.pop("model_name_or_path"), kwargs.pop("output_dir"), **kwargs)
        assert listing(tmp_path) == before, message
    assert (occupied / "notes.txt").read_text() == "keep me"


def test_command_reports_errors_without_traceback(classifier_folder, tmp_path, monkeypatch, capsys):
    folder, _ = classifier_folder
    monkeypatch.setattr(
        "sys.argv", ["pvt-export-onnx", "--model", str(folder), "--output", str(tmp_path / "o"), "--task", "depth"]
    )
    with pytest.raises(SystemExit) as exit_info:
        export_command.run()
    assert exit_info.value.code == 2
    assert "Unknown task 'depth'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def copy_existing_export(source):
    """A stand-in for write_onnx that copies an already exported file (the failure tests need no new export)."""

    def write(model, task, path, opset=export.DEFAULT_OPSET):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        return path

    return write


def test_failed_verification_leaves_nothing(classifier_folder, classifier_export, tmp_path, monkeypatch):
    folder, _ = classifier_folder
    exported, _ = classifier_export
    monkeypatch.setattr(export, "write_onnx", copy_existing_export(exported / "onnx" / "model.onnx"))
    real_session = export.onnx_session

    class OffByOneSession:
        def __init__(self, path, threads=None):
            self.session = real_session(path, threads)
            self.get_inputs, self.get_outputs = self.session.get_inputs, self.session.get_outputs

        def run(self, names, feeds):
            return [output + 0.01 for output in self.session.run(names, feeds)]

    monkeypatch.setattr(export, "onnx_session", OffByOneSession)
    with pytest.raises(OnnxExportError, match="disagrees with PyTorch"):
        export_onnx(folder, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(export, "onnx_session", real_session)  # the verification itself passes with the real file
    output, reports = export_onnx(folder, tmp_path / "out")
    assert reports[0].max_relative_difference <= export.FLOAT32_TOLERANCE and (output / "onnx" / "model.onnx").is_file()


def test_hub_export_model_includes_onnx(classifier_folder, classifier_export, tmp_path, monkeypatch):
    from pvt_tools.hub import export_model, plan_upload, validate_export_dir

    _, model = classifier_folder
    exported, _ = classifier_export
    monkeypatch.setattr(export, "write_onnx", copy_existing_export(exported / "onnx" / "model.onnx"))
    output = export_model(model, tmp_path / "export", onnx=True)
    assert (output / "onnx" / "model.onnx").is_file() and (output / "onnx").stat().st_mode & 0o777 == 0o755
    validate_export_dir(output)
    assert "onnx/model.onnx" in [file.name for file in plan_upload(output)]
    output = export_model(model, tmp_path / "export", overwrite=True)  # a previous export with onnx/ is replaceable
    assert not (output / "onnx").exists()

    def broken_write(model, task, path, opset=export.DEFAULT_OPSET):
        raise OnnxExportError("broken")

    monkeypatch.setattr(export, "write_onnx", broken_write)
    with pytest.raises(OnnxExportError):
        export_model(model, tmp_path / "export2", onnx=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]


def test_convert_command_passes_onnx_through(tmp_path, monkeypatch, capsys):
    from pvt_tools.commands import convert

    calls = []

    def fake_convert(checkpoint, output_dir, **kwargs):
        calls.append(kwargs)
        raise OnnxExportError("model.onnx disagrees with PyTorch")  # an OnnxExportError is reported like the others

    monkeypatch.setattr("pvt_tools.official.convert_any_official_checkpoint", fake_convert)  # imported by main()
    checkpoint = tmp_path / "x.pth"
    checkpoint.write_bytes(b"read by the fake only")
    assert convert.main(["--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "o"), "--onnx"]) == 2
    assert calls[0]["onnx"] is True and "disagrees with PyTorch" in capsys.readouterr().err
    convert.main(["--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "o")])
    assert calls[1]["onnx"] is False


def two_class_parquet_folder(folder, num_train: int = 12, num_test: int = 10):
    """Random 64x64 images of two classes, with train and test splits, as a parquet folder (--dataset_name)."""
    import datasets
    from PIL import Image

    from pvt_tools.training.fashion_mnist import write_parquet_folder

    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    splits = {
        name: datasets.Dataset.from_dict(
            {
                "image": [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(count)],
                "label": [index % 2 for index in range(count)],
            },
            features=features,
        )
        for name, count in (("train", num_train), ("test", num_test))
    }
    return write_parquet_folder(datasets.DatasetDict(splits), folder)


def test_evaluate_scores_pytorch_and_each_file_on_the_test_split(classifier_folder, classifier_export, tmp_path):
    from transformers import pipeline

    from pvt_tools.training.data import DataArguments

    folder, _ = classifier_folder
    data = two_class_parquet_folder(tmp_path / "data")
    output = classifier_export[0]
    split_name, num_images, rows = export.score_exported_classifier(
        folder, output, DataArguments(dataset_name=str(data)), batch_size=4
    )
    assert (split_name, num_images) == ("test", 10)
    assert [row.name for row in rows] == ["PyTorch (float32)", "model.onnx", "model_quantized.onnx"]
    # The reference: Transformers' own pipeline on the export's processor and the PyTorch model.
    classify = pipeline("image-classification", model=str(folder), image_processor=str(output))
    test = __import__("datasets").load_dataset(str(data), split="test")
    names = classify.model.config.id2label
    predicted = [classify(image, top_k=1)[0]["label"] for image in test["image"]]
    expected_accuracy = np.mean([guess == names[label] for guess, label in zip(predicted, test["label"])])
    assert rows[0].accuracy == pytest.approx(expected_accuracy)
    assert rows[1].accuracy == pytest.approx(expected_accuracy)  # float32 ONNX: the same predictions
    assert rows[1].size_bytes == (output / "onnx" / "model.onnx").stat().st_size
    assert all(row.images_per_second > 0 for row in rows)


def test_evaluate_without_data_flags_names_them_before_exporting(classifier_folder, tmp_path):
    folder, _ = classifier_folder
    with pytest.raises(DataError, match=r"--evaluate needs the images to score .* \(--dataset_name"):
        export_command.main(["--model", str(folder), "--output", str(tmp_path / "out"), "--evaluate"])
    assert not (tmp_path / "out").exists()


# --- The folder's clients: Transformers.js and onnxruntime-web (Node), pvt-push, Python's loaders ---------------

REQUIRE_NODE_ENV = "PVT_REQUIRE_NODE"


def node_clients():
    """Node with the pinned packages (`make node-packages`); fails where they must be there (CI sets
    PVT_REQUIRE_NODE=1), else skips saying how to get them."""
    from pvt_tools.node_clients import NodeClientError, check_node_clients

    try:
        check_node_clients()
    except NodeClientError as error:
        if os.environ.get(REQUIRE_NODE_ENV) == "1":
            pytest.fail(str(error), pytrace=False)
        pytest.skip(str(error))


def clear_cut_images(model, image_processor, folder, count: int = 6):
    """PNG images at the processor's resize size (no client resamples them) on which the tiny random model's top
    logit leads the runner-up by a fifth of the logits' range: its top-1 class is a fact about the network, not a
    near tie that float rounding or int8 noise could flip. Returns the paths and PyTorch's probabilities."""
    from PIL import Image

    side = image_processor.size["shortest_edge"]
    rng = np.random.default_rng(7)
    paths, probabilities = [], []
    while len(paths) < count:
        image = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)).resize((side, side))
        with torch.no_grad():
            logits = model(image_processor(image, return_tensors="pt")["pixel_values"]).logits[0]
        top2 = logits.topk(2).values
        if top2[0] - top2[1] >= 0.2 * (logits.max() - logits.min()):
            paths.append(folder / f"{len(paths)}.png")
            image.save(paths[-1])
            probabilities.append(logits.softmax(-1).numpy())
    return paths, np.stack(probabilities)


def test_transformers_js_runs_the_export_offline_with_pytorchs_top1(classifier_folder, classifier_export, tmp_path):
    """Transformers.js's image-classification pipeline (Node, env.allowRemoteModels = false) loads the folder as it
    is, fp32 (onnx/model.onnx) and q8 (onnx/model_quantized.onnx), and names PyTorch's top-1 class every time."""
    from pvt_tools.hub import official_eval_image_processor
    from pvt_tools.node_clients import classify_with_transformers_js

    node_clients()
    _, model = classifier_folder
    output, _ = classifier_export
    images, expected = clear_cut_images(model, official_eval_image_processor(64), tmp_path)
    names = [model.config.id2label[index] for index in expected.argmax(-1)]
    for dtype, tolerance in (("fp32", 1e-4), ("q8", 0.02)):
        results = classify_with_transformers_js(output, images, dtype)
        assert [result[0]["label"] for result in results] == names, dtype
        scores = np.array([result[0]["score"] for result in results])
        np.testing.assert_allclose(scores, expected.max(-1), atol=tolerance, err_msg=dtype)


def test_onnxruntime_web_runs_both_files(classifier_folder, classifier_export):
    """The browser runtime (onnxruntime-web, WebAssembly backend, under Node) runs the quantized file with ONNX
    Runtime's own results, and the float32 file (with its fused contrib operators) with PyTorch's."""
    from pvt_tools.node_clients import run_with_onnxruntime_web

    node_clients()
    _, model = classifier_folder
    output, _ = classifier_export
    pixel_values = random_pixels(3, 64, 80, seed=8)
    with torch.no_grad():
        expected = model(pixel_values).logits.numpy()
    quantized = output / "onnx" / "model_quantized.onnx"
    from_web = run_with_onnxruntime_web(quantized, pixel_values.numpy())
    (from_python,) = onnx_session(quantized).run(["logits"], {"pixel_values": pixel_values.numpy()})
    np.testing.assert_allclose(from_web, from_python, atol=1e-4)
    assert np.linalg.norm(from_web - expected) / np.linalg.norm(expected) < export.INT8_MAX_RELATIVE_ERROR
    np.testing.assert_allclose(
        run_with_onnxruntime_web(output / "onnx" / "model.onnx", pixel_values.numpy()), expected, atol=1e-4
    )


def test_the_onnx_folder_is_publishable_and_python_sees_what_it_is(classifier_folder, classifier_export, capsys):
    """pvt-push --dry-run accepts it (exactly its five files); the card names the library and the pipeline;
    Python's AutoConfig reads Transformers' built-in PvtConfig with the model's labels, and no PyTorch model
    loads from it (it has no weights) instead of a silently random one."""
    import transformers
    from huggingface_hub import ModelCard

    from pvt_tools.commands import push

    _, model = classifier_folder
    output, _ = classifier_export
    assert push.main(["--model_dir", str(output), "--repo_id", "me/tiny-pvt-onnx", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    *file_lines, card_line = printed.strip().splitlines()[1:]
    assert card_line == "README.md would first be made to name me/tiny-pvt-onnx"  # the card's placeholder repo id
    listed = [line.split()[-1] for line in file_lines]
    assert listed == [
        "README.md",
        "config.json",
        "preprocessor_config.json",
        "onnx/model.onnx",
        "onnx/model_quantized.onnx",
    ]
    card = ModelCard.load(output / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers.js", "image-classification")
    config = transformers.AutoConfig.from_pretrained(output)
    assert type(config) is transformers.PvtConfig and config.model_type == "pvt"
    assert config.id2label == model.config.id2label
    assert (config.hidden_sizes, config.depths) == (model.config.hidden_sizes, model.config.depths)
    with pytest.raises(OSError, match="model.safetensors|pytorch_model.bin|does not appear to have"):
        transformers.AutoModelForImageClassification.from_pretrained(output)


def test_check_transformers_js_in_the_command(classifier_folder, classifier_export, tmp_path, monkeypatch, capsys):
    """--check_transformers_js runs the new folder in Transformers.js before it is moved into place."""
    node_clients()
    folder, _ = classifier_folder
    exported, _ = classifier_export
    monkeypatch.setattr(export, "write_onnx", copy_existing_export(exported / "onnx" / "model.onnx"))
    result = export_command.main(
        ["--model", str(folder), "--output", str(tmp_path / "out"), "--quantize", "int8", "--check_transformers_js"]
    )
    checks = [report for report in result["verified"] if isinstance(report, export.ClientCheck)]
    assert [(check.client, check.top1_agreement) for check in checks] == [
        ("Transformers.js fp32", 1.0),
        ("Transformers.js q8", 1.0),
    ]
    assert "Transformers.js q8: PyTorch's top-1 class on 100% of" in capsys.readouterr().out


def test_missing_node_is_one_error_before_anything_is_written(classifier_folder, tmp_path, monkeypatch):
    from pvt_tools import node_clients

    folder, _ = classifier_folder
    monkeypatch.setattr(node_clients.shutil, "which", lambda name: None)
    with pytest.raises(OnnxExportError, match=r"Node.js is not installed .*`make node-packages`.*Nothing was written"):
        export_onnx(folder, tmp_path / "out", check_transformers_js=True)
    monkeypatch.setenv(node_clients.PACKAGES_ENV, str(tmp_path / "no-packages"))
    monkeypatch.setattr(node_clients.shutil, "which", lambda name: "/usr/bin/node")
    with pytest.raises(OnnxExportError, match=r"@huggingface/transformers, onnxruntime-web not installed"):
        export_onnx(folder, tmp_path / "out", check_transformers_js=True)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_pvt_classifier_is_refused_by_push(tmp_path, capsys):
    """The refusal names what exists: pvt_tools.hub.export_model and pvt-export-onnx."""
    from transformers import ViTConfig

    from pvt_tools.commands import push

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "vit")
    assert push.main(["--model_dir", str(tmp_path / "vit"), "--repo_id", "me/x", "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "model_type 'vit', not 'pvt_v1'" in error
    assert "pvt_tools.hub.export_model" in error and "pvt-export-onnx --model" in error
    from pvt_tools import hub

    assert callable(hub.export_model)
