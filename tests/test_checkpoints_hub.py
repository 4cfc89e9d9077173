"""Checkpoints and the Hub: the export folder, official-checkpoint conversion, model cards, pushing, loading by repo
id from a local Hub cache, and the paper's parameter and FLOP table. Nothing here touches the network."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from tests.conftest import tiny_config
from torchvision import transforms
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, PvtImageProcessor

import hub_export
from hub_export import EXPORT_FILES, ExportError, export_model, validate_export_dir
from modeling_pvt import PvtForImageClassification, PvtModel


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
    model = tiny_classifier(num_labels=3, id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2})
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
        model, tmp_path / "export", repo_id="org/pvt-digits", dataset="digits", metrics={"eval_accuracy": 0.975}
    )
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "image-classification"
    assert "custom_code" in card.data.tags
    assert card.data.datasets == ["digits"]
    assert card.data.eval_results[0].metric_value == 0.975
    assert card.data.model_name == "pvt-digits"
    assert f"{sum(p.numel() for p in model.parameters()):,}" in card.text
    assert 'pipeline("image-classification", model="org/pvt-digits", trust_remote_code=True)' in card.text


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
