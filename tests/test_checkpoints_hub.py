"""Checkpoints and the Hub: the export folder, official-checkpoint conversion, model cards, pushing, loading by repo
id from a local Hub cache, and the paper's parameter and FLOP table. Nothing here touches the network."""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import numpy as np
import onnxruntime
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from PIL import Image
from torchvision import transforms
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, PvtImageProcessor

from configuration_pvt import PvtConfig
from modeling_pvt import PvtBackbone, PvtForImageClassification, PvtModel
from pvt_tools import hub as hub_export
from pvt_tools import official
from pvt_tools import stats as model_stats
from pvt_tools.commands import convert as convert_official_checkpoint
from pvt_tools.commands import local_cache as local_hub_cache
from pvt_tools.commands import push as push_to_hub
from pvt_tools.commands import stats as stats_command
from pvt_tools.hub import EXPORT_FILES, ExportError, export_model, validate_export_dir
from pvt_tools.official import (
    ConversionMismatchError,
    OfficialCheckpointError,
    infer_config_from_official,
    load_official_checkpoint,
    official_classifier_forward,
    official_key_shapes,
    parity_failures,
)
from pvt_tools.variants import VARIANT_FACTS
from tests.conftest import tiny_config


def pixels(batch_size=2, height=64, width=64, seed=0) -> torch.Tensor:
    return torch.randn(batch_size, 3, height, width, generator=torch.Generator().manual_seed(seed))


def tiny_classifier(seed=0, **overrides) -> PvtForImageClassification:
    torch.manual_seed(seed)
    return PvtForImageClassification(tiny_config(**overrides)).eval()


def smooth_image(height: int, width: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: coarse random colour blocks, smoothed."""
    blocks = np.random.default_rng(seed).random((height // 8 + 1, width // 8 + 1, 3))
    array = (np.kron(blocks, np.ones((8, 8, 1)))[:height, :width] * 255).astype(np.uint8)
    return Image.fromarray(array).resize((width, height), Image.BILINEAR)


def official_eval_transform(image_size: int = 224) -> transforms.Compose:
    """The authors' (DeiT's) evaluation transform, written with torchvision as their code does."""
    return transforms.Compose(
        [
            transforms.Resize(int(image_size * 256 / 224), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )


# --- the export folder --------------------------------------------------------------------------------------------


def test_export_folder_holds_exactly_the_hub_files_and_reloads(tmp_path):
    model = tiny_classifier(num_labels=1000)
    folder = export_model(model, tmp_path / "export", repo_id="org/pvt-tiny-test")
    assert sorted(path.name for path in folder.iterdir()) == sorted(EXPORT_FILES)
    assert not [path for path in folder.rglob("*") if path.suffix in (".bin", ".pt", ".pth", ".pkl")]

    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_pvt.PvtConfig",
        "AutoModel": "modeling_pvt.PvtModel",
        "AutoModelForImageClassification": "modeling_pvt.PvtForImageClassification",
        "AutoBackbone": "modeling_pvt.PvtBackbone",
    }
    # ImageNet-1k names in torchvision's (the standard synset) order
    assert len(config["id2label"]) == 1000
    assert (config["id2label"]["0"], config["id2label"]["1"], config["id2label"]["999"]) == (
        "tench",
        "goldfish",
        "toilet tissue",
    )
    assert config["label2id"]["goldfish"] == 1
    assert model.config.id2label[1] == "LABEL_1"  # the caller's model is left as it was

    reloaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels()).logits, model(pixels()).logits)
    processor = AutoImageProcessor.from_pretrained(folder)
    assert type(processor) is PvtImageProcessor
    assert (folder / "configuration_pvt.py").read_text() == (hub_export.REPO_ROOT / "configuration_pvt.py").read_text()
    validate_export_dir(folder)


def test_export_keeps_a_models_own_label_names(tmp_path):
    model = tiny_classifier(
        num_labels=3, id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2}
    )
    folder = export_model(model, tmp_path / "export")
    config = AutoConfig.from_pretrained(folder)
    assert config.id2label == {0: "cat", 1: "dog", 2: "fox"}


@pytest.mark.parametrize("height, width", [(375, 500), (480, 640), (256, 256), (500, 333)])
def test_default_processor_is_the_official_eval_transform(height, width):
    """Where the crop offset is a whole number both backends agree with torchvision; the PIL backend exactly."""
    image = smooth_image(height, width)
    expected = official_eval_transform()(image)
    processor = hub_export.official_eval_image_processor(224)
    fast = processor(image, return_tensors="pt").pixel_values[0]
    torch.testing.assert_close(fast, expected, atol=0.05, rtol=0)  # antialiased tensor bicubic vs PIL bicubic
    assert (fast - expected).abs().mean() < 1e-3
    from transformers.models.pvt.image_processing_pil_pvt import PvtImageProcessorPil

    pil_backend = PvtImageProcessorPil(**processor.to_dict())
    torch.testing.assert_close(pil_backend(image, return_tensors="pt").pixel_values[0], expected, atol=1e-6, rtol=0)


def test_processor_crop_may_sit_one_pixel_from_torchvisions():
    """torchvision centres the crop with round(), Transformers with int(): for a 600x401 photo (resized to 383x256)
    the crop starts at row 79 instead of 80 (the cards state this)."""
    image = smooth_image(600, 401)
    processor = hub_export.official_eval_image_processor(224)
    ours = processor(image, return_tensors="pt").pixel_values[0]
    resized = transforms.functional.resize(
        transforms.functional.pil_to_tensor(image), 256, interpolation=transforms.InterpolationMode.BICUBIC
    )
    assert resized.shape[-2:] == (383, 256)
    normalise = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    row_79 = normalise(resized[:, 79 : 79 + 224, 16 : 16 + 224].float() / 255)
    row_80 = normalise(resized[:, 80 : 80 + 224, 16 : 16 + 224].float() / 255)
    assert (ours - row_79).abs().mean() < 0.01  # uint8 rounding of the resize only
    assert (ours - row_80).abs().mean() > 0.1
    assert (official_eval_transform()(image) - row_80).abs().mean() < 0.01


def test_trained_model_card_carries_the_metadata(tmp_path):
    model = tiny_classifier()
    folder = export_model(
        model,
        tmp_path / "export",
        repo_id="org/pvt-digits",
        dataset="digits",
        metrics={"eval_accuracy": 0.975, "eval_top5_accuracy": 1.0, "eval_samples": 360, "eval_note": None},
    )
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "image-classification"
    assert "custom_code" in card.data.tags
    assert card.data.datasets == ["digits"]
    results = {(r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {
        ("accuracy", "eval_accuracy"): 0.975,
        ("top5_accuracy", "eval_top5_accuracy"): 1.0,
        ("samples", "eval_samples"): 360.0,
    }
    assert card.data.model_name == "pvt-digits"
    assert f"{sum(p.numel() for p in model.parameters()):,}" in card.text
    assert "| eval_accuracy | 0.9750 |" in card.text and "eval_note" not in card.text
    expected_pipeline = (
        'pipeline("image-classification", model="org/pvt-digits", trust_remote_code=True, revision=revision)'
    )
    assert expected_pipeline in card.text
    assert 'HfApi().list_repo_commits("org/pvt-digits")' in card.text
    assert 'get_class_from_dynamic_module("modeling_pvt.PvtBackbone", "org/pvt-digits", revision=' in card.text
    assert "{{" not in card.text and "{%" not in card.text and "\n\n\n" not in card.text


def test_trained_model_card_without_facts_still_parses(tmp_path):
    labels = {0: "cat", 1: "dog", 2: "fox", 3: "owl", 4: "yak"}
    model = tiny_classifier(id2label=labels, label2id={name: index for index, name in labels.items()})
    text = hub_export.render_model_card(model, base_model="org/pvt-small")
    card = ModelCard(text)
    assert card.data.model_name == "pvt-model" and card.data.base_model == "org/pvt-small"
    assert card.data.eval_results is None and "## Evaluation" not in text
    assert "| Classes | 5 (cat, dog, fox, owl, yak) |" in text
    assert "| Resolution | 64x64 " in text and "| Hidden sizes / depths / heads | 16, 32, 40, 64 / 1, 1, 2, 1 /" in text
    assert "fine-tuned from [`org/pvt-small`](https://huggingface.co/org/pvt-small)" in text
    assert "\n\n\n" not in text and text.endswith("```\n")


def test_export_refuses_to_clobber_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    model = tiny_classifier()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "step_10").mkdir()
    with pytest.raises(ExportError, match="not part of an export.*step_10"):
        export_model(model, run_dir)
    assert sorted(path.name for path in run_dir.iterdir()) == ["step_10"]

    first = export_model(model, tmp_path / "export")
    with pytest.raises(ExportError, match="overwrite=True"):
        export_model(model, tmp_path / "export")

    # A failure while writing leaves the previous export untouched and no temporary folder behind.
    before = {path.name: path.read_bytes() for path in first.iterdir()}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    other = tiny_classifier(seed=1)
    monkeypatch.setattr(PvtImageProcessor, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_model(other, tmp_path / "export", overwrite=True)
    assert {path.name: path.read_bytes() for path in first.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export", "run"]
    monkeypatch.undo()

    export_model(other, tmp_path / "export", overwrite=True)
    reloaded = PvtForImageClassification.from_pretrained(tmp_path / "export")
    torch.testing.assert_close(reloaded.classifier.weight, other.classifier.weight)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export", "run"]


def test_export_rejects_what_is_not_a_classifier(tmp_path):
    with pytest.raises(TypeError, match="PvtForImageClassification, got PvtModel"):
        export_model(PvtModel(tiny_config()), tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_validate_export_dir_lists_every_problem(tmp_path):
    model = tiny_classifier()
    model.save_pretrained(tmp_path / "plain")
    torch.save({}, tmp_path / "plain" / "training_args.bin")
    with pytest.raises(ExportError) as error:
        validate_export_dir(tmp_path / "plain")
    message = str(error.value)
    assert "missing README.md" in message and "missing preprocessor_config.json" in message
    assert "pickle file training_args.bin" in message


# --- official checkpoints -------------------------------------------------------------------------------------


VARIANTS = ("pvt-tiny", "pvt-small", "pvt-medium", "pvt-large")
# The paper's figures (arXiv:2102.12122): parameters (M), GFLOPs as multiply-adds at 224x224, ImageNet top-1.
PAPER = {
    "pvt-tiny": (13.2, 1.9, 75.1),
    "pvt-small": (24.5, 3.8, 79.8),
    "pvt-medium": (44.2, 6.7, 81.2),
    "pvt-large": (61.4, 9.8, 81.7),
}


def convert(checkpoint, output_dir, *extra) -> int:
    return convert_official_checkpoint.main(
        ["--checkpoint", str(checkpoint), "--output_dir", str(output_dir), *map(str, extra)]
    )


def assert_nothing_written(output_dir):
    assert not output_dir.exists()
    assert [p.name for p in output_dir.parent.iterdir() if p.name.startswith(f".{output_dir.name}")] == []


def test_official_maths_reference_reproduces_the_authors_logits(official_fixture):
    """The reference the converter verifies against is itself checked against the authors' own outputs."""
    state_dict = official_fixture["state_dict"]
    config = infer_config_from_official(state_dict)
    with torch.no_grad():
        logits = official_classifier_forward(state_dict, config, official_fixture["expected"]["pixel_values_224"])
    assert parity_failures({"logits_224": logits}, {"logits_224": official_fixture["expected"]["logits_224"]}) == []


def test_convert_script_reproduces_the_authors_outputs(official_fixture, tmp_path, capsys):
    output_dir = tmp_path / "pvt-fixture"
    assert convert(official_fixture["checkpoint"], output_dir, "--repo_id", "org/pvt-fixture") == 0
    printed = capsys.readouterr().out
    assert "verification: max |logit difference| vs the official maths" in printed and ": OK" in printed

    validate_export_dir(output_dir)
    architecture = official_fixture["architecture"]
    config = AutoConfig.from_pretrained(output_dir)
    assert config.hidden_sizes == architecture["embed_dims"]
    assert config.depths == architecture["depths"]
    assert config.mlp_ratios == architecture["mlp_ratios"]
    assert config.sequence_reduction_ratios == architecture["sr_ratios"]
    assert config.num_attention_heads == architecture["num_heads"]
    assert config.patch_sizes[0] == architecture["patch_size"] and config.image_size == architecture["img_size"]
    assert config.num_labels == architecture["num_classes"] and config.qkv_bias == architecture["qkv_bias"]

    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    expected = official_fixture["expected"]
    with torch.no_grad():
        logits = model(expected["pixel_values_224"]).logits
    assert parity_failures({"logits_224": logits}, {"logits_224": expected["logits_224"]}) == []


def test_convert_unwraps_a_model_dict(official_fixture, tmp_path):
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"model": official_fixture["state_dict"], "epoch": 299, "max_accuracy": 79.8}, wrapped)
    assert convert(wrapped, tmp_path / "out") == 0
    model = PvtForImageClassification.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        logits = model(official_fixture["expected"]["pixel_values_224"]).logits
    assert parity_failures({"logits_224": logits}, {"logits_224": official_fixture["expected"]["logits_224"]}) == []


def test_convert_refuses_a_file_with_python_objects(official_fixture, tmp_path, capsys):
    checkpoint = tmp_path / "deit_style.pth"
    torch.save({"model": official_fixture["state_dict"], "args": argparse.Namespace(lr=5e-4)}, checkpoint)
    assert convert(checkpoint, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "refused" in error and "argparse.Namespace" in error and "weights_only" in error
    assert_nothing_written(tmp_path / "out")


def test_convert_refuses_non_tensor_entries(official_fixture, tmp_path, capsys):
    checkpoint = tmp_path / "mixed.pth"
    torch.save({**official_fixture["state_dict"], "epoch": 299}, checkpoint)
    assert convert(checkpoint, tmp_path / "out") == 2
    assert "not tensors: [\"'epoch' (int)\"]" in capsys.readouterr().err
    assert_nothing_written(tmp_path / "out")


def test_convert_lists_every_missing_extra_and_misshaped_key(official_fixture, tmp_path, capsys):
    state_dict = dict(official_fixture["state_dict"])
    del state_dict["block1.1.mlp.fc2.weight"], state_dict["head.bias"]
    state_dict["block2.0.attn.extra.weight"] = torch.zeros(4)
    state_dict["pos_embed2"] = torch.zeros(1, 99, 64)
    state_dict["block3.1.attn.kv.weight"] = torch.zeros(160, 160)
    checkpoint = tmp_path / "damaged.pth"
    torch.save(state_dict, checkpoint)
    assert convert(checkpoint, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "2 missing keys: ['block1.1.mlp.fc2.weight', 'head.bias']" in error
    assert "1 extra keys: ['block2.0.attn.extra.weight']" in error
    assert "pos_embed2: (1, 99, 64), expected (1, 784, 64)" in error
    assert "block3.1.attn.kv.weight: (160, 160), expected (320, 160)" in error
    assert_nothing_written(tmp_path / "out")


def test_convert_rejects_a_checkpoint_of_another_model(tmp_path, capsys):
    torch.manual_seed(0)
    vit_like = {"patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}
    checkpoint = tmp_path / "vit.pth"
    torch.save(vit_like, checkpoint)
    assert convert(checkpoint, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "Not an official PVT v1 classifier checkpoint: missing ['patch_embed1.proj.weight'" in error
    assert "'blocks.0.attn.qkv.weight'" in error
    assert_nothing_written(tmp_path / "out")


def test_convert_says_a_cut_file_is_truncated(official_fixture, tmp_path, capsys):
    data = official_fixture["checkpoint"].read_bytes()
    truncated = tmp_path / "partial.pth"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    assert convert(truncated, tmp_path / "out") == 2
    assert f"{truncated} is truncated" in capsys.readouterr().err
    assert_nothing_written(tmp_path / "out")

    legacy = tmp_path / "legacy.pth"  # the authors' "PyTorch<=1.5" downloads use the pre-zip format
    torch.save(official_fixture["state_dict"], legacy, _use_new_zipfile_serialization=False)
    assert len(load_official_checkpoint(legacy)) == len(official_fixture["state_dict"])
    legacy_data = legacy.read_bytes()
    inside_a_name = legacy_data.index(b"_rebuild_tensor_v2") + 12  # the unpickler then sees "..._rebuild_tens"
    for cut in (100, 5000, inside_a_name, len(legacy_data) // 2):
        legacy.write_bytes(legacy_data[:cut])
        with pytest.raises(OfficialCheckpointError, match="truncated or damaged"):
            load_official_checkpoint(legacy)
    legacy.write_bytes(b"")
    with pytest.raises(OfficialCheckpointError, match="is empty"):
        load_official_checkpoint(legacy)


def test_convert_checks_heads_and_variant(official_fixture, tmp_path, capsys):
    checkpoint, architecture = official_fixture["checkpoint"], official_fixture["architecture"]
    assert architecture["num_heads"] == [1, 2, 5, 8]  # the default, since the shapes are none of the paper's models
    # 1 1 5 8 runs and would pass a verification built from the same heads: refused, naming both head lists
    assert convert(checkpoint, tmp_path / "out", "--num_attention_heads", 1, 1, 5, 8) == 2
    error = capsys.readouterr().err
    assert "--num_attention_heads 1 1 5 8 differs from the head counts 1 2 5 8" in error
    assert "--allow_custom_heads" in error
    assert convert(checkpoint, tmp_path / "out", "--num_attention_heads", 1, 2, 3, 8, "--allow_custom_heads") == 2
    assert "not divisible by num_attention_heads" in capsys.readouterr().err
    assert convert(checkpoint, tmp_path / "out", "--variant", "pvt-small") == 2
    error = capsys.readouterr().err
    assert "not the paper's pvt-small" in error and "depths [2, 1, 2, 1] (the paper's pvt-small: [3, 4, 6, 3])" in error
    assert_nothing_written(tmp_path / "out")
    assert convert(checkpoint, tmp_path / "out", "--num_attention_heads", 1, 2, 5, 8) == 0
    # explicitly allowed, other heads convert (and give other logits than the authors')
    assert convert(checkpoint, tmp_path / "custom", "--num_attention_heads", 1, 1, 5, 8, "--allow_custom_heads") == 0
    model = PvtForImageClassification.from_pretrained(tmp_path / "custom").eval()
    assert model.config.num_attention_heads == [1, 1, 5, 8]
    expected = official_fixture["expected"]
    with torch.no_grad():
        logits = model(expected["pixel_values_224"]).logits
    assert parity_failures({"logits_224": logits}, {"logits_224": expected["logits_224"]}) != []


def test_convert_refuses_heads_other_than_the_paper_variants(tmp_path, capsys):
    """Shapes of the paper's PVT-Tiny (with a 10-class head) and other heads: refused, naming the variant."""
    shapes = official_key_shapes(PvtConfig.from_variant("pvt-tiny", num_labels=10))
    generator = torch.Generator().manual_seed(0)
    state_dict = {key: torch.randn(shape, generator=generator) * 0.02 for key, shape in shapes.items()}
    with pytest.raises(OfficialCheckpointError, match="differs from the head counts 1 2 5 8 of the paper's pvt-tiny"):
        infer_config_from_official(state_dict, num_attention_heads=[2, 2, 5, 8])
    config = infer_config_from_official(state_dict, num_attention_heads=[2, 2, 5, 8], allow_custom_heads=True)
    assert config.num_attention_heads == [2, 2, 5, 8]
    assert infer_config_from_official(state_dict).num_attention_heads == [1, 2, 5, 8]


@pytest.mark.parametrize("tamper", ["weights", "forward"])
def test_convert_stops_when_the_converted_model_differs(official_fixture, tmp_path, monkeypatch, capsys, tamper):
    """The verification bites: a converted model 1% off in one weight matrix, or with a forward that is not the
    official one, raises ConversionMismatchError and leaves nothing behind."""
    if tamper == "weights":
        convert_weights = official.convert_official_state_dict

        def tampered_conversion(state_dict, num_stages=4):
            converted = convert_weights(state_dict, num_stages)
            key = "pvt.stages.1.layers.0.mlp.fc1.weight"
            converted[key] = converted[key] * 1.01  # a new tensor: the official weights stay as they are
            return converted

        monkeypatch.setattr(official, "convert_official_state_dict", tampered_conversion)
    else:
        monkeypatch.setattr(PvtForImageClassification, "forward", _wrong_forward)
    output_dir = tmp_path / "out"
    with pytest.raises(ConversionMismatchError, match="differs from the official network"):
        official.convert_official_checkpoint(official_fixture["checkpoint"], output_dir)
    assert "FAILED" in capsys.readouterr().out
    assert_nothing_written(output_dir)
    assert convert(official_fixture["checkpoint"], output_dir) == 2
    assert "nothing was written" in capsys.readouterr().err
    assert_nothing_written(output_dir)


def _wrong_forward(model, pixel_values):
    """A plausible slip: the classifier reads the mean of the patch tokens instead of the class token."""
    from transformers.modeling_outputs import ImageClassifierOutput

    outputs = model.pvt(pixel_values)
    return ImageClassifierOutput(logits=model.classifier(outputs.last_hidden_state[:, 1:].mean(dim=1)))


def test_convert_a_paper_variant_gets_its_card_and_imagenet_labels(tmp_path):
    """A pvt-tiny-shaped checkpoint in the official layout is recognised as PVT-Tiny: its export carries the
    PVT-Tiny card and the ImageNet-1k label names."""
    generator = torch.Generator().manual_seed(0)
    shapes = official_key_shapes(PvtConfig.from_variant("pvt-tiny"))
    state_dict = {key: torch.randn(shape, generator=generator) * 0.02 for key, shape in shapes.items()}
    checkpoint = tmp_path / "pvt_tiny.pth"
    torch.save(state_dict, checkpoint)
    assert convert(checkpoint, tmp_path / "pvt-tiny", "--repo_id", "org/pvt-tiny") == 0
    card = ModelCard.load(tmp_path / "pvt-tiny" / "README.md")
    assert card.data.eval_results[0].metric_value == 75.1
    assert 'model="org/pvt-tiny"' in card.text and "{{" not in card.text
    config = json.loads((tmp_path / "pvt-tiny" / "config.json").read_text())
    assert config["id2label"]["0"] == "tench" and config["depths"] == [2, 2, 2, 2]


def test_convert_with_push_uploads_the_export(official_fixture, tmp_path, monkeypatch):
    calls = record_hub_calls(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    output_dir = tmp_path / "out"
    assert convert(official_fixture["checkpoint"], output_dir, "--push_to_hub", "--repo_id", "org/pvt-fixture") == 0
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[1][1]["folder_path"] == str(output_dir.resolve())


def test_convert_with_push_checks_the_repo_id_first(official_fixture, tmp_path, capsys):
    assert convert(official_fixture["checkpoint"], tmp_path / "out", "--push_to_hub", "--repo_id", "no-org") == 2
    assert "Malformed repo id 'no-org'" in capsys.readouterr().err
    assert_nothing_written(tmp_path / "out")


# --- model cards ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_cards_carry_the_metadata_and_the_measured_figures(variant):
    path = hub_export.MODEL_CARDS_DIR / f"{variant}.md"
    card = ModelCard.load(path)
    data = card.data
    assert data.license == "apache-2.0"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-classification"
    assert "custom_code" in data.tags
    assert data.datasets == ["imagenet-1k"]
    (result,) = data.eval_results
    assert (result.dataset_type, result.metric_type) == ("imagenet-1k", "accuracy")
    assert result.metric_value == PAPER[variant][2]
    assert (result.dataset_split, result.source_url) == ("validation", "https://arxiv.org/abs/2102.12122")
    assert data.model_name == variant

    facts = VARIANT_FACTS[variant]  # equal to what torch's counter measures: test_variant_facts_are_what_...
    params_millions, gflops, _ = PAPER[variant]
    config = PvtConfig.from_variant(variant)
    assert f"{facts.parameters / 1e6:.2f} M ({facts.parameters:,}; paper: {params_millions} M)" in card.text
    assert f"{facts.macs / 1e9:.2f} (paper: {gflops})" in card.text
    assert f"/ {', '.join(map(str, config.depths))} /" in card.text
    assert f"`{variant.replace('-', '_')}.pth` of whai362/PVT" in card.text
    for needed in (
        "trust_remote_code=True",
        'revision="<commit hash>"',
        '"Files and versions"',
        f'HfApi().list_repo_commits("ORG/{variant}")',
        "import modeling_pvt",
        "AutoBackbone",
        "get_class_from_dynamic_module",
        "one pixel",
        'backend="pil"',
        "Intended uses",
        "Apache License 2.0",
        "@inproceedings{wang2021pyramid",
    ):
        assert needed in card.text, needed
    assert "{{" not in card.text and "{%" not in card.text


def test_committed_variant_cards_are_the_rendered_template():
    """model_cards/ is generated: each file equals what the template makes now, byte for byte."""
    stale = [
        variant
        for variant in VARIANTS
        if not (hub_export.MODEL_CARDS_DIR / f"{variant}.md").is_file()
        or (hub_export.MODEL_CARDS_DIR / f"{variant}.md").read_bytes()
        != hub_export.render_variant_card(variant).encode("utf-8")
    ]
    assert stale == [], (
        f"model_cards/ is out of date for {stale}: regenerate it from the repository root with "
        f"{hub_export.REGENERATE_CARDS_COMMAND}"
    )
    assert sorted(path.name for path in hub_export.MODEL_CARDS_DIR.iterdir()) == sorted(f"{v}.md" for v in VARIANTS)


def test_write_variant_cards_writes_every_card_and_only_cards(tmp_path):
    written = hub_export.write_variant_cards(tmp_path / "cards")
    assert [path.name for path in written] == [f"{variant}.md" for variant in VARIANTS]
    assert sorted(path.name for path in (tmp_path / "cards").iterdir()) == sorted(path.name for path in written)
    for path in written:
        assert ModelCard.load(path).data.model_name == path.stem


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_facts_are_what_the_counter_measures(variant):
    """The card's exact figures come from the facts table; they must be what torch's counter finds on the model."""
    facts = VARIANT_FACTS[variant]
    stats = model_stats.variant_stats(variant)
    assert (facts.parameters, facts.macs) == (stats.parameters, stats.macs)
    assert facts.paper == dict(zip(("params_millions", "gflops", "top1"), PAPER[variant]))
    assert facts.config.depths == PvtConfig.from_variant(variant).depths


def test_export_renders_the_variant_card_and_refuses_a_mismatched_one(tmp_path):
    with torch.device("meta"):
        paper_model = PvtForImageClassification(PvtConfig.from_variant("pvt-tiny"))
    model = tiny_classifier()
    with pytest.raises(ExportError, match="variant='pvt-tiny' is for the paper's ImageNet-1k weights.*depths"):
        export_model(model, tmp_path / "export", variant="pvt-tiny")
    assert not (tmp_path / "export").exists()
    text = hub_export.render_model_card(paper_model, variant="pvt-tiny", repo_id="me/tiny")
    assert ModelCard(text).data.eval_results[0].metric_value == 75.1
    assert 'pipeline("image-classification", model="me/tiny", trust_remote_code=True, revision=revision)' in text
    assert text == hub_export.render_variant_card("pvt-tiny", "me/tiny")
    with pytest.raises(ExportError, match="No model card for variant 'pvt-huge'.*pvt-tiny"):
        hub_export.render_variant_card("pvt-huge")


def test_card_template_is_package_data():
    """Installed copies have no model_cards/ folder: the template must travel inside pvt_tools."""
    template = hub_export.model_card_template()
    assert template.startswith("---\n{{ card_data }}\n---\n")
    assert "{% if variant" in template


# --- parameters and FLOPs -------------------------------------------------------------------------------------


def analytic_macs(config: PvtConfig, height: int, width: int) -> int:
    """Multiply-adds of PVT's convolutions and matrix products, from the architecture alone."""
    macs, in_channels = 0, config.num_channels
    last = config.num_encoder_blocks - 1
    for stage in range(config.num_encoder_blocks):
        channels, patch = config.hidden_sizes[stage], config.patch_sizes[stage]
        ratio, reduction = config.mlp_ratios[stage], config.sequence_reduction_ratios[stage]
        height, width = height // patch, width // patch
        macs += height * width * channels * in_channels * patch * patch  # patch embedding
        queries = height * width + (stage == last)  # + class token
        keys = (height // reduction) * (width // reduction) + (stage == last) if reduction > 1 else queries
        per_layer = queries * channels * channels * 2  # q and output projections
        per_layer += keys * channels * channels * 2  # k and v projections
        if reduction > 1:
            per_layer += (height // reduction) * (width // reduction) * channels * channels * reduction * reduction
        per_layer += 2 * queries * keys * channels  # scores and weighted sum
        per_layer += 2 * queries * channels * int(channels * ratio)  # MLP
        macs += per_layer * config.depths[stage]
        in_channels = channels
    return macs + config.hidden_sizes[-1] * config.num_labels


@pytest.mark.parametrize("variant", VARIANTS)
def test_stats_table_reproduces_the_paper(variant):
    stats = model_stats.variant_stats(variant, 224)
    params_millions, gflops, _ = PAPER[variant]
    assert round(stats.parameters / 1e6, 1) == params_millions
    assert round(stats.macs / 1e9, 1) == gflops
    assert stats.macs == analytic_macs(PvtConfig.from_variant(variant), 224, 224)
    assert model_stats.PAPER_TABLE[variant] == dict(zip(("params_millions", "gflops", "top1"), PAPER[variant]))


def test_flop_count_on_meta_equals_a_real_forward_and_needs_eager_attention():
    config = tiny_config()
    meta = model_stats.model_stats(config, "tiny", image_size=96, device="meta")
    real = model_stats.model_stats(config, "tiny", image_size=96, device="cpu")
    assert meta.macs == real.macs == analytic_macs(config, 96, 96)
    assert meta.parameters == sum(p.numel() for p in PvtForImageClassification(config).parameters())
    # The reason the counter runs eager attention: PyTorch's fused CPU SDPA kernel is invisible to it.
    sdpa_model = PvtForImageClassification(tiny_config(attn_implementation="sdpa")).eval()
    sdpa_macs, by_operator = model_stats.count_macs(sdpa_model, torch.zeros(1, 3, 96, 96))
    assert "aten.bmm" not in by_operator and sdpa_macs < real.macs


def test_model_stats_command_prints_the_table(capsys):
    assert stats_command.main(["--variants", "pvt-tiny", "pvt-large"]) == 0
    table = capsys.readouterr().out
    assert "| pvt-tiny @224 | 13.23 | 1.933 | 13.2 | 1.9 |" in table
    assert "| pvt-large @224 | 61.37 | 9.814 | 61.4 | 9.8 |" in table


# --- pushing to the Hub ---------------------------------------------------------------------------------------


def record_hub_calls(monkeypatch) -> list:
    """Replace the HfApi methods that reach the network with recorders."""
    calls = []

    def recorder(name):
        def method(self, **kwargs):
            calls.append((name, kwargs))
            return (
                huggingface_hub.CommitInfo(
                    commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/0",
                    commit_message="",
                    commit_description="",
                    oid="0" * 40,
                )
                if name == "upload_folder"
                else None
            )

        return method

    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(HfApi, name, recorder(name))
    return calls


@pytest.fixture
def export_dir(tmp_path):
    return export_model(tiny_classifier(), tmp_path / "export", repo_id="org/pvt-test")


def test_dry_run_lists_every_file_and_the_commit_without_network(export_dir, monkeypatch, capsys):
    calls = record_hub_calls(monkeypatch)
    assert (
        push_to_hub.main(
            ["--model_dir", str(export_dir), "--repo_id", "org/pvt-test", "--private", "--revision", "v1", "--dry-run"]
        )
        == 0
    )
    output = capsys.readouterr().out
    assert calls == []
    assert "private model repository org/pvt-test" in output and "commit 6 files" in output and "branch v1" in output
    for name in EXPORT_FILES:
        data = (export_dir / name).read_bytes()
        assert f"{len(data):,}  {hashlib.sha256(data).hexdigest()}  {name}" in output


def test_push_uploads_the_folder_as_one_commit(export_dir, monkeypatch):
    calls = record_hub_calls(monkeypatch)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    commit = hub_export.push_export(export_dir, "org/pvt-test", private=True, revision="v1", token="hf_test")
    assert commit.commit_url == "https://huggingface.co/org/pvt-test/commit/0"
    assert calls == [
        ("create_repo", {"repo_id": "org/pvt-test", "repo_type": "model", "private": True, "exist_ok": True}),
        ("create_branch", {"repo_id": "org/pvt-test", "repo_type": "model", "branch": "v1", "exist_ok": True}),
        (
            "upload_folder",
            {
                "repo_id": "org/pvt-test",
                "repo_type": "model",
                "folder_path": str(export_dir),
                "revision": "v1",
                "commit_message": "Upload PVT export (6 files)",
                "allow_patterns": sorted(EXPORT_FILES),
            },
        ),
    ]


def test_push_without_a_token_says_how_to_log_in(export_dir, monkeypatch, tmp_path, capsys):
    calls = record_hub_calls(monkeypatch)
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token_here"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert huggingface_hub.get_token() is None
    assert push_to_hub.main(["--model_dir", str(export_dir), "--repo_id", "org/pvt-test"]) == 2
    assert "No Hugging Face token found: run `hf auth login` or set HF_TOKEN" in capsys.readouterr().err
    assert calls == []


def test_push_in_offline_mode_says_so(export_dir, monkeypatch):
    record_hub_calls(monkeypatch)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub_export.PushError, match="HF_HUB_OFFLINE is set"):
        hub_export.push_export(export_dir, "org/pvt-test", token="hf_test")


@pytest.mark.parametrize("repo_id", ["pvt-small", "org/pvt/small", "org/pvt small", "org/", "/pvt", "org/pvt--small"])
def test_push_rejects_malformed_repo_ids(export_dir, repo_id, capsys):
    assert push_to_hub.main(["--model_dir", str(export_dir), "--repo_id", repo_id, "--dry-run"]) == 2
    assert f"Malformed repo id {repo_id!r}" in capsys.readouterr().err


def test_push_rejects_a_folder_that_is_not_an_export(tmp_path, capsys):
    tiny_classifier().save_pretrained(tmp_path / "plain")
    assert push_to_hub.main(["--model_dir", str(tmp_path / "plain"), "--repo_id", "org/pvt", "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "is not a Hub-ready PVT export: missing README.md; missing preprocessor_config.json" in error
    assert push_to_hub.main(["--model_dir", str(tmp_path / "nowhere"), "--repo_id", "org/pvt", "--dry-run"]) == 2
    assert f"--model_dir {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err


# --- loading by repo id from a local Hub cache ----------------------------------------------------------------


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_local_cache_has_huggingface_hubs_layout(export_dir, tmp_path):
    cache = tmp_path / "hub"
    assert (
        local_hub_cache.main(["--model_dir", str(export_dir), "--repo_id", "org/pvt-test", "--cache_dir", str(cache)])
        == 0
    )
    storage = cache / "models--org--pvt-test"
    snapshot = storage / "snapshots" / (storage / "refs" / "main").read_text()
    commit = (storage / "refs" / "main").read_text()
    assert snapshot == storage / "snapshots" / commit
    weights = (export_dir / "model.safetensors").read_bytes()
    assert (snapshot / "model.safetensors").resolve() == storage / "blobs" / hashlib.sha256(weights).hexdigest()
    config_bytes = (export_dir / "config.json").read_bytes()
    assert (snapshot / "config.json").resolve() == storage / "blobs" / git_blob_sha1(config_bytes)

    # huggingface_hub itself reads it as a downloaded repository
    report = huggingface_hub.scan_cache_dir(cache)
    assert report.warnings == []
    (repo,) = report.repos
    assert (repo.repo_id, repo.repo_type) == ("org/pvt-test", "model")
    (revision,) = repo.revisions
    assert revision.commit_hash == commit and revision.refs == frozenset({"main"})
    assert sorted(file.file_name for file in revision.files) == sorted(EXPORT_FILES)
    path = huggingface_hub.hf_hub_download("org/pvt-test", "config.json", cache_dir=cache, local_files_only=True)
    assert Path(path).read_bytes() == config_bytes
    assert huggingface_hub.snapshot_download("org/pvt-test", cache_dir=cache, local_files_only=True) == str(snapshot)

    # placing the same export again changes nothing; a new export becomes a new snapshot that main points to
    assert hub_export.place_in_hub_cache(export_dir, "org/pvt-test", cache_dir=cache) == snapshot
    retrained_model = tiny_classifier(seed=1).eval()
    retrained = export_model(retrained_model, tmp_path / "export2", onnx=True)
    new_snapshot = hub_export.place_in_hub_cache(retrained, "org/pvt-test", cache_dir=cache)
    assert new_snapshot != snapshot and snapshot.is_dir()
    assert (storage / "refs" / "main").read_text() == new_snapshot.name

    # the ONNX graph of an export made with onnx=True arrives too, under onnx/, and runs as downloaded
    onnx_path = huggingface_hub.hf_hub_download(
        "org/pvt-test", "onnx/model.onnx", cache_dir=cache, local_files_only=True
    )
    assert Path(onnx_path) == new_snapshot / "onnx" / "model.onnx"
    assert Path(onnx_path).read_bytes() == (retrained / "onnx" / "model.onnx").read_bytes()
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    pixel_values = pixels(2)
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: pixel_values.numpy()})
    with torch.no_grad():
        expected_logits = retrained_model(pixel_values).logits
    torch.testing.assert_close(torch.from_numpy(onnx_logits), expected_logits, atol=1e-4, rtol=1e-4)
    assert [p.name for p in (storage / "snapshots").iterdir() if p.name.startswith(".")] == []
    with pytest.raises(ValueError, match="--"):
        hub_export.place_in_hub_cache(export_dir, "org/pvt--test", cache_dir=cache)


LOAD_BY_REPO_ID_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    # Hide the editable install of this project: this process plays a user who only has transformers.
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder).lower()]
    import torch
    from PIL import Image
    from huggingface_hub.errors import OfflineModeIsEnabled
    from transformers import AutoBackbone, AutoImageProcessor, AutoModelForImageClassification, pipeline
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    repo_id, image_path, out = sys.argv[1:4]
    try:
        import modeling_pvt
    except ImportError:
        pass
    else:
        raise SystemExit("the project is importable here; the test would prove nothing")
    results = {}
    model = AutoModelForImageClassification.from_pretrained(repo_id, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(repo_id)
    results["model_module"] = type(model).__module__
    results["processor"] = type(processor).__name__
    image = Image.open(image_path)
    with torch.no_grad():
        torch.save(model(**processor(image, return_tensors="pt")).logits, out + "/logits.pt")
    classifier = pipeline("image-classification", model=repo_id, trust_remote_code=True)
    results["pipeline"] = classifier(image, top_k=3)
    results["pipeline_model_module"] = type(classifier.model).__module__
    try:
        AutoBackbone.from_pretrained(repo_id, trust_remote_code=True)
        results["auto_backbone"] = "loaded"
    except OfflineModeIsEnabled as error:
        results["auto_backbone"] = type(error).__name__
    backbone_class = get_class_from_dynamic_module("modeling_pvt.PvtBackbone", repo_id)
    backbone = backbone_class.from_pretrained(repo_id, out_features=["stage1", "stage4"]).eval()
    results["backbone_module"] = type(backbone).__module__
    with torch.no_grad():
        torch.save(backbone(torch.load(out + "/pixels.pt", weights_only=True)).feature_maps, out + "/features.pt")
    print(json.dumps(results))
    """
)


def test_local_cache_says_when_it_replaces_an_entry(export_dir, tmp_path, capsys):
    """Placing another export under a repo id the cache holds says which snapshot it replaced; placing the same
    export again says nothing of the kind; the old snapshot stays, and the repo id loads the new files."""
    cache = tmp_path / "hub"
    arguments = ["--repo_id", "org/pvt-test", "--cache_dir", str(cache)]
    assert local_hub_cache.main(["--model_dir", str(export_dir), *arguments]) == 0
    assert local_hub_cache.main(["--model_dir", str(export_dir), *arguments]) == 0
    assert "Replaced" not in capsys.readouterr().out
    storage = cache / "models--org--pvt-test"
    first = (storage / "refs" / "main").read_text()
    other = export_model(tiny_classifier(num_labels=4), tmp_path / "other", repo_id="org/pvt-test")
    assert local_hub_cache.main(["--model_dir", str(other), *arguments]) == 0
    second = (storage / "refs" / "main").read_text()
    assert second != first and (storage / "snapshots" / first).is_dir()
    output = capsys.readouterr().out
    assert f"Replaced the cache entry org/pvt-test@main: it pointed to snapshot {first}" in output, output
    assert f"now to {second}" in output
    path = huggingface_hub.hf_hub_download("org/pvt-test", "config.json", cache_dir=cache, local_files_only=True)
    assert Path(path).read_bytes() == (other / "config.json").read_bytes()


def test_load_by_repo_id_offline_from_the_local_cache(tmp_path, monkeypatch):
    """AutoModelForImageClassification, AutoImageProcessor and pipeline load "org/pvt-small" from the cache as from
    the Hub, in a process without this project and with HF_HUB_OFFLINE=1. AutoBackbone.from_pretrained does not:
    Transformers 5.24 asks the Hub whether the repo exists first; the documented workaround is checked instead."""
    labels = {0: "cat", 1: "dog", 2: "fox", 3: "owl", 4: "yak"}
    model = tiny_classifier(id2label=labels, label2id={name: index for index, name in labels.items()})
    folder = export_model(model, tmp_path / "export", repo_id="org/pvt-small")
    home = tmp_path / "hf_home"
    hub_export.place_in_hub_cache(folder, "org/pvt-small", cache_dir=home / "hub")
    smooth_image(90, 120).save(tmp_path / "image.png")
    pixel_values = pixels(1, 64, 96)
    torch.save(pixel_values, tmp_path / "pixels.pt")
    (tmp_path / "load.py").write_text(LOAD_BY_REPO_ID_SCRIPT)
    # huggingface_hub reads HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE once, at import: set them for a fresh process.
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONNOUSERSITE", "1")
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "load.py"), "org/pvt-small", str(tmp_path / "image.png"), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])

    for key in ("model_module", "pipeline_model_module", "backbone_module"):
        assert results[key].startswith("transformers_modules.org.pvt_hyphen_small."), results[key]
    assert results["processor"] == "PvtImageProcessor"
    assert results["auto_backbone"] == "OfflineModeIsEnabled"

    # the same numbers as the model in this process, through the official evaluation transform
    inputs = hub_export.official_eval_image_processor(64)(Image.open(tmp_path / "image.png"), return_tensors="pt")
    with torch.no_grad():
        expected_logits = model(**inputs).logits
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), expected_logits)
    probabilities = expected_logits.softmax(-1)[0]
    top = probabilities.topk(3)
    expected_pipeline = [{"label": labels[i], "score": s} for s, i in zip(top.values.tolist(), top.indices.tolist())]
    assert [r["label"] for r in results["pipeline"]] == [r["label"] for r in expected_pipeline]
    for ours, reference in zip(results["pipeline"], expected_pipeline):
        assert abs(ours["score"] - reference["score"]) < 1e-5

    backbone = PvtBackbone.from_pretrained(folder, out_features=["stage1", "stage4"]).eval()
    with torch.no_grad():
        expected_features = backbone(pixel_values).feature_maps
    for ours, reference in zip(torch.load(tmp_path / "features.pt", weights_only=True), expected_features):
        torch.testing.assert_close(ours, reference)
