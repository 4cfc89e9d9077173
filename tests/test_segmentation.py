"""Segmentation fine-tuning (Mask2Former semantic / instance, UperNet) with a PVT backbone, its embedded data and
metrics, and the conversion of the authors' mmdetection / mmsegmentation checkpoints. References: scikit-learn's
metrics, Transformers' own model classes and image processors, the digits' ink and the official fixture."""

import json
import pickle

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, jaccard_score, recall_score
from transformers import (
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    AutoModelForUniversalSegmentation,
    Mask2FormerForUniversalSegmentation,
    UperNetForSemanticSegmentation,
)

from modeling_pvt import PvtBackbone
from pvt_tools.backbones import (
    DEFAULT_OUT_FEATURES,
    detector_config_with_pvt,
    find_pvt_backbone,
)
from pvt_tools.commands import convert as convert_command
from pvt_tools.commands import train_segmentation as train_segmentation_command
from pvt_tools.official import OfficialCheckpointError, convert_any_official_checkpoint
from pvt_tools.training.detection_data import (
    INK_THRESHOLD,
    make_digits_detection_dataset,
)
from pvt_tools.training.segmentation import (
    freeze_backbone_stages,
    majority_class_confusion,
    scores_from_confusion,
)
from pvt_tools.training.segmentation_data import (
    IGNORE_INDEX,
    make_digits_segmentation_dataset,
)
from tests.conftest import REPO_ROOT, tiny_config

TINY_PVT = {
    "hidden_sizes": [16, 32, 40, 64],
    "depths": [1, 1, 1, 1],
    "num_attention_heads": [1, 2, 2, 4],
    "mlp_ratios": [2, 2, 2, 2],
}
TINY_HEADS = {
    "mask2former": {
        "feature_size": 32,
        "mask_feature_size": 32,
        "hidden_dim": 32,
        "encoder_feedforward_dim": 32,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "num_attention_heads": 2,
        "dim_feedforward": 32,
        "num_queries": 8,
        "train_num_points": 256,
    },
    "upernet": {"hidden_size": 32, "auxiliary_channels": 16},
}
MODEL_CLASSES = {"mask2former": Mask2FormerForUniversalSegmentation, "upernet": UperNetForSemanticSegmentation}
AUTO_CLASSES = {"mask2former": AutoModelForUniversalSegmentation, "upernet": AutoModelForSemanticSegmentation}


@pytest.fixture(autouse=True)
def one_thread():
    """These small models run fastest on one thread; on a busy machine two threads per process made a training
    step ten times slower (measured: 2.6 s vs 28 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the embedded digits label maps -------------------------------------------------------------------------------


def test_digits_label_maps_are_the_strokes_of_the_pasted_digits():
    detection = make_digits_detection_dataset(6, canvas_size=64, digit_sizes=(16, 32), seed=4)
    semantic = make_digits_segmentation_dataset(6, canvas_size=64, task="semantic", seed=4)
    instance = make_digits_segmentation_dataset(6, canvas_size=64, task="instance", seed=4)
    assert semantic.column_names == instance.column_names == ["image", "annotation"]
    for boxes, sem, inst in zip(detection, semantic, instance):
        ink = np.asarray(boxes["image"].convert("L")) >= INK_THRESHOLD
        label_map = np.asarray(sem["annotation"])
        red, green = np.asarray(inst["annotation"])[..., 0], np.asarray(inst["annotation"])[..., 1]
        assert np.array_equal(np.asarray(sem["image"]), np.asarray(boxes["image"]))
        assert np.array_equal(label_map > 0, ink)  # every stroke pixel labelled, nothing else
        assert np.array_equal(red, label_map) and np.array_equal(green > 0, ink)
        assert green.max() == len(boxes["objects"]["bbox"])  # one instance per pasted digit
        for instance_id, ((x, y, width, height), category) in enumerate(
            zip(boxes["objects"]["bbox"], boxes["objects"]["category"]), start=1
        ):
            inside = np.zeros_like(ink)
            inside[int(y) : int(y + height), int(x) : int(x + width)] = True
            assert np.array_equal(green == instance_id, ink & inside)
            assert set(np.unique(label_map[green == instance_id])) == {category + 1}


# --- metrics ------------------------------------------------------------------------------------------------------


def test_scores_follow_the_mean_iou_definitions_of_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=500)  # classes 0-3 present; class 4 absent from ground truth, predicted once
    predictions = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 4, size=500))
    predictions[100] = 4
    labels[:20] = IGNORE_INDEX
    from torchmetrics.classification import MulticlassConfusionMatrix

    confusion = MulticlassConfusionMatrix(num_classes=6, ignore_index=IGNORE_INDEX)(
        torch.from_numpy(predictions), torch.from_numpy(labels)
    )
    scores = scores_from_confusion(confusion)
    kept = labels != IGNORE_INDEX
    truth, guess = labels[kept], predictions[kept]
    iou = jaccard_score(truth, guess, labels=[0, 1, 2, 3, 4], average=None, zero_division=0)
    recall = recall_score(truth, guess, labels=[0, 1, 2, 3], average=None)
    np.testing.assert_allclose(scores["per_category_iou"][:5], iou)
    assert np.isnan(scores["per_category_iou"][5])  # class 5: neither predicted nor present
    assert scores["mean_iou"] == pytest.approx(iou.mean())  # class 4 (predicted, absent) counts with IoU 0
    assert scores["mean_accuracy"] == pytest.approx(recall.mean())  # classes without ground truth left out
    assert scores["overall_accuracy"] == pytest.approx(accuracy_score(truth, guess))


def test_majority_class_baseline_is_scoring_a_constant_prediction():
    rng = np.random.default_rng(1)
    labels = rng.choice(4, size=400, p=[0.7, 0.1, 0.15, 0.05])  # class 0 most frequent, as the digits' background
    predictions = rng.integers(0, 4, size=400)
    from torchmetrics.classification import MulticlassConfusionMatrix

    confusion = MulticlassConfusionMatrix(num_classes=5)(torch.from_numpy(predictions), torch.from_numpy(labels))
    baseline = scores_from_confusion(majority_class_confusion(confusion))
    constant = np.zeros_like(labels)
    iou = jaccard_score(labels, constant, labels=[0, 1, 2, 3], average=None, zero_division=0)
    assert baseline["mean_iou"] == pytest.approx(iou.mean())  # class 4: absent from both, left out
    assert (
        baseline["overall_accuracy"]
        == pytest.approx(accuracy_score(labels, constant))
        == pytest.approx(np.mean(labels == 0))
    )
    assert baseline["mean_accuracy"] == pytest.approx(
        recall_score(labels, constant, labels=[0, 1, 2, 3], average=None).mean()
    )


# --- freezing ---------------------------------------------------------------------------------------------------


def test_freeze_backbone_stages_keeps_those_stages_and_trains_the_rest():
    torch.manual_seed(0)
    pvt_config = tiny_config(out_features=DEFAULT_OUT_FEATURES["upernet"])
    model = UperNetForSemanticSegmentation(
        detector_config_with_pvt("upernet", pvt_config, num_labels=3, **TINY_HEADS["upernet"])
    ).train()
    freeze_backbone_stages(model, 2)
    backbone = find_pvt_backbone(model)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 16:40, 8:30] = 1
    labels[:, 40:, 40:] = 2
    model(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)), labels=labels).loss.backward()
    optimizer.step()
    prefix = next(name for name, module in model.named_modules() if module is backbone)
    changed = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    frozen = {name for name in before if name.startswith((f"{prefix}.stages.0.", f"{prefix}.stages.1."))}
    assert frozen and not changed & frozen, sorted(changed & frozen)[:5]
    for stage in (2, 3):  # later stages and the head move
        assert any(name.startswith(f"{prefix}.stages.{stage}.") for name in changed), stage
    assert any(not name.startswith(prefix) for name in changed)
    with pytest.raises(ValueError, match="between 0 and 4"):
        freeze_backbone_stages(model, 5)


# --- the training command -----------------------------------------------------------------------------------------


def run_arguments(output_dir, architecture="mask2former", **overrides) -> list[str]:
    settings = {
        "output_dir": str(output_dir),
        "architecture": architecture,
        "num_train_images": 4,
        "num_validation_images": 2,
        "canvas_size": 64,  # --image_size left to its default: the canvas size (check_run_folder checks it)
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 2,
        "max_train_steps": 4,
        "learning_rate": 2e-3,
        "lr_scheduler_type": "constant",
        "pvt_config_overrides": json.dumps(TINY_PVT),
        "detector_config_overrides": json.dumps(TINY_HEADS[architecture]),
        **overrides,
    }
    return [f"--{name}" if value is True else f"--{name}={value}" for name, value in settings.items()]


def check_run_folder(run, results: dict, architecture: str, task: str = "semantic") -> list[float]:
    """Metrics, curves, the prediction picture, and a model folder that reloads with its image processor."""
    assert json.loads((run / "all_results.json").read_text()) == results
    for name in ("eval_mean_iou", "eval_mean_accuracy", "eval_overall_accuracy"):
        assert 0.0 <= results[name] <= 1.0, name
        assert 0.0 <= results[name.replace("eval_", "majority_class_baseline_")] <= 1.0, name
    assert len(results["eval_per_category_iou"]) == (11 if task == "semantic" else 10)
    for picture in ("training_curves.png", "validation_predictions.png"):
        assert (run / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((run / "training_history.json").read_text())
    assert history["evaluations"][-1]["mean_iou"] == results["eval_mean_iou"]
    for name in ("configuration_pvt.py", "modeling_pvt.py"):  # the backbone's code travels with the model
        assert (run / name).read_bytes() == (REPO_ROOT / name).read_bytes()
    assert f"{AUTO_CLASSES[architecture].__name__}.from_pretrained" in (run / "README.md").read_text()
    model = AUTO_CLASSES[architecture].from_pretrained(run).eval()
    processor = AutoImageProcessor.from_pretrained(run)
    assert isinstance(model, MODEL_CLASSES[architecture]) and isinstance(find_pvt_backbone(model), PvtBackbone)
    assert model.config.id2label[1] == ("0" if task == "semantic" else "1")
    assert processor.size == {"height": 64, "width": 64}
    saved = load_file(run / "model.safetensors")
    assert all(torch.equal(saved[name], tensor) for name, tensor in model.state_dict().items() if name in saved)
    pixel_values = processor(images=[Image.new("RGB", (40, 56))], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        label_map = processor.post_process_semantic_segmentation(model(pixel_values), target_sizes=[(40, 56)])[0]
    assert label_map.shape == (40, 56)
    return [step["loss"] for step in history["steps"]]


@pytest.mark.parametrize(
    "architecture, task", [("mask2former", "semantic"), ("upernet", "semantic"), ("mask2former", "instance")]
)
def test_training_learns_saves_and_resumes_exactly(tmp_path, architecture, task):
    # One batch of the same four canvases every step: the loss must fall.
    run = tmp_path / "run"
    results = train_segmentation_command.main(run_arguments(run, architecture, task=task, checkpointing_steps=2))
    assert results["completed_steps"] == 4 and results["architecture"] == architecture and results["task"] == task
    losses = check_run_folder(run, results, architecture, task)
    assert len(losses) == 4 and all(np.isfinite(losses))
    if task == "instance":  # COCO mask mAP of the predicted instances (torchmetrics, pycocotools)
        assert 0.0 <= results["eval_mask_map"] <= results["eval_mask_map_50"] <= 1.0
    assert np.mean(losses[-2:]) < losses[0], losses

    # Killed after step 2: resuming from step_2 gives the same steps 3-4 and the same weights.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "step_2").symlink_to(run / "step_2", target_is_directory=True)
    again = train_segmentation_command.main(
        run_arguments(resumed, architecture, task=task, checkpointing_steps=2, resume_from_checkpoint="latest")
    )
    resumed_history = json.loads((resumed / "training_history.json").read_text())
    assert [step["step"] for step in resumed_history["steps"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([step["loss"] for step in resumed_history["steps"]], losses, rtol=1e-5)
    straight, continued = load_file(run / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert straight.keys() == continued.keys()
    for name in straight:
        torch.testing.assert_close(continued[name], straight[name], atol=1e-6, rtol=1e-5)
    assert again["eval_mean_iou"] == pytest.approx(results["eval_mean_iou"], abs=1e-4)


def write_image_folder(root, num_train=6, num_validation=3) -> None:
    """An imagefolder data set: images/ and annotations/ PNGs tied by metadata.jsonl (annotation_file_name).
    Classes: 0 background, 1 a bright square, 2 a mid-grey disc."""
    rng = np.random.default_rng(0)
    for split, count in (("train", num_train), ("validation", num_validation)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "annotations").mkdir()
        rows = []
        for index in range(count):
            height, width = 48, 72
            image = rng.integers(0, 30, size=(height, width, 3), dtype=np.uint8)
            label_map = np.zeros((height, width), dtype=np.uint8)
            top, left = rng.integers(0, 24), rng.integers(0, 30)
            label_map[top : top + 20, left : left + 20] = 1
            rows_, columns = np.ogrid[:height, :width]
            centre_y, centre_x = rng.integers(10, 38), rng.integers(45, 62)
            label_map[(rows_ - centre_y) ** 2 + (columns - centre_x) ** 2 <= 81] = 2
            image[label_map == 1] = 230
            image[label_map == 2] = 120
            Image.fromarray(image).save(root / split / "images" / f"{index}.png")
            Image.fromarray(label_map).save(root / split / "annotations" / f"{index}.png")
            rows.append({"file_name": f"images/{index}.png", "annotation_file_name": f"annotations/{index}.png"})
        (root / split / "metadata.jsonl").write_text("\n".join(map(json.dumps, rows)))


@pytest.mark.parametrize("architecture", ["mask2former", "upernet"])
def test_training_on_an_image_folder_dataset(tmp_path, architecture):
    write_image_folder(tmp_path / "data")
    loaded = datasets.load_dataset(str(tmp_path / "data"))
    assert loaded["train"].column_names == ["image", "annotation"]  # the layout the command reads
    (tmp_path / "id2label.json").write_text(json.dumps({"0": "background", "1": "square", "2": "disc"}))
    run = tmp_path / "run"
    results = train_segmentation_command.main(
        run_arguments(
            run,
            architecture,
            dataset_name=tmp_path / "data",
            id2label=tmp_path / "id2label.json",
            image_size=64,
            per_device_train_batch_size=3,
            max_train_steps=4,
        )
    )
    assert results["completed_steps"] == 4
    assert list(results["eval_per_category_iou"]) == ["background", "square", "disc"]
    model = AUTO_CLASSES[architecture].from_pretrained(run)
    assert model.config.id2label == {0: "background", 1: "square", 2: "disc"}
    history = json.loads((run / "training_history.json").read_text())
    losses = [step["loss"] for step in history["steps"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    # Without --id2label the classes are the ids found in the annotations; with --reduce_labels 0 is ignored.
    results = train_segmentation_command.main(
        run_arguments(
            tmp_path / "reduced",
            architecture,
            dataset_name=tmp_path / "data",
            image_size=64,
            reduce_labels=True,
            max_train_steps=1,
            per_device_train_batch_size=3,
        )
    )
    assert list(results["eval_per_category_iou"]) == ["0", "1"]


def test_mask2former_starts_from_the_frozen_backbone_of_a_trained_upernet(tmp_path):
    # The README's two runs in small: UperNet trains a PVT, Mask2Former takes it (frozen) from UperNet's folder.
    upernet_run, mask2former_run = tmp_path / "upernet", tmp_path / "mask2former"
    train_segmentation_command.main(run_arguments(upernet_run, "upernet"))
    arguments = run_arguments(mask2former_run, pvt_config_overrides="{}", freeze_backbone_stages=4)
    train_segmentation_command.main(arguments + [f"--pvt_checkpoint={upernet_run}"])
    trained = find_pvt_backbone(AutoModelForSemanticSegmentation.from_pretrained(upernet_run)).state_dict()
    reused = find_pvt_backbone(AutoModelForUniversalSegmentation.from_pretrained(mask2former_run)).state_dict()
    assert sorted(reused) == sorted(trained)
    assert all(torch.equal(tensor, trained[name]) for name, tensor in reused.items())

    with pytest.raises(ValueError, match="--pvt_checkpoint org/no-such-pvt is not a folder here"):
        train_segmentation_command.main(
            run_arguments(tmp_path / "missing", pvt_config_overrides="{}") + ["--pvt_checkpoint=org/no-such-pvt"]
        )


def test_instance_task_needs_mask2former_and_bad_labels_are_named(tmp_path):
    with pytest.raises(ValueError, match="UperNet predicts semantic label maps only"):
        train_segmentation_command.main(run_arguments(tmp_path / "a", "upernet", task="instance"))
    (tmp_path / "labels.json").write_text(json.dumps({"0": "a", "2": "b"}))
    with pytest.raises(ValueError, match=r"without gaps; --id2label gives \[0, 2\]"):
        train_segmentation_command.main(run_arguments(tmp_path / "b", id2label=tmp_path / "labels.json"))


# --- the authors' mmdetection / mmsegmentation checkpoints --------------------------------------------------------

CLASSIFIER_ONLY = ("cls_token", "norm.weight", "norm.bias", "head.weight", "head.bias")


def mmdet_checkpoint(official_fixture, path, meta=None, drop_class_slot=False):
    """The fixture's weights as mmdetection saves a RetinaNet with the authors' PVT: backbone.* keys, no class
    token, final norm or classifier, a neck and a head, and a meta dict."""
    state_dict = {
        f"backbone.{key}": tensor
        for key, tensor in official_fixture["state_dict"].items()
        if key not in CLASSIFIER_ONLY
    }
    if drop_class_slot:
        state_dict["backbone.pos_embed4"] = state_dict["backbone.pos_embed4"][:, 1:]
    generator = torch.Generator().manual_seed(0)
    state_dict["neck.lateral_convs.0.conv.weight"] = torch.randn(16, 32, 1, 1, generator=generator)
    state_dict["neck.fpn_convs.0.conv.bias"] = torch.randn(16, generator=generator)
    state_dict["bbox_head.retina_cls.weight"] = torch.randn(9, 16, 3, 3, generator=generator)
    meta = meta if meta is not None else {"mmdet_version": "2.13.0", "epoch": 12, "CLASSES": ["person", "car"]}
    torch.save({"state_dict": state_dict, "meta": meta}, path)
    return state_dict


@pytest.mark.parametrize("drop_class_slot", [False, True])
def test_mmdet_checkpoint_converts_to_a_backbone_with_the_official_feature_maps(
    official_fixture, tmp_path, capsys, drop_class_slot
):
    mmdet_checkpoint(official_fixture, tmp_path / "retinanet_pvt.pth", drop_class_slot=drop_class_slot)
    status = convert_command.main(
        ["--checkpoint", str(tmp_path / "retinanet_pvt.pth"), "--output_dir", str(tmp_path / "export")]
    )
    output = capsys.readouterr()
    assert status == 0, output.err
    for skipped in ("neck.lateral_convs.0.conv.weight", "neck.fpn_convs.0.conv.bias", "bbox_head.retina_cls.weight"):
        assert skipped in output.out
    assert "skipped 3 tensor(s)" in output.out
    export = tmp_path / "export"
    assert sorted(path.name for path in export.iterdir()) == [
        "config.json",
        "configuration_pvt.py",
        "model.safetensors",
        "modeling_pvt.py",
    ]
    saved = load_file(export / "model.safetensors")
    assert not any("cls_token" in name or "classifier" in name or "layernorm" in name for name in saved)
    grid = official_fixture["architecture"]["img_size"] // 4
    assert saved["stages.0.position_embeddings"].shape == (1, grid * grid, 32)  # the trained grid
    backbone = PvtBackbone.from_pretrained(export).eval()
    assert backbone.config.out_features == ["stage1", "stage2", "stage3", "stage4"]
    expected = official_fixture["expected"]
    with torch.no_grad():
        feature_maps = backbone(expected["pixel_values_225x301"]).feature_maps
    assert len(feature_maps) == 4
    for index, feature_map in enumerate(feature_maps, start=1):
        reference = expected[f"feature_map_{index}_225x301"]
        assert feature_map.shape == reference.shape
        difference = (feature_map - reference).abs().max().item()
        assert difference <= 1e-5 * reference.abs().max().item() + 1e-6, (index, difference)


UNPICKLED = []


def record_unpickling(note: str) -> str:
    """Runs only if someone unpickles the object below: what a malicious file could run instead."""
    UNPICKLED.append(note)
    return note


class CustomMeta:
    """An object in "meta" that torch.load(weights_only=True) refuses to rebuild; rebuilding it would call
    record_unpickling."""

    def __reduce__(self):
        return record_unpickling, ("the converter unpickled meta",)


def test_mmdet_checkpoint_with_a_pickled_object_in_meta_is_refused_and_nothing_written(official_fixture, tmp_path):
    mmdet_checkpoint(official_fixture, tmp_path / "model.pth", meta={"config": CustomMeta()})
    with pytest.raises(OfficialCheckpointError) as error:
        convert_any_official_checkpoint(tmp_path / "model.pth", tmp_path / "export")
    message = str(error.value)
    assert "record_unpickling" in message and "'meta'" in message and "weights_only.pth" in message
    assert isinstance(error.value.__cause__, pickle.UnpicklingError)
    assert UNPICKLED == []
    assert not (tmp_path / "export").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pth"]  # no staging folder left behind
    # The way around it that the message gives works (the test trusts its own file).
    with torch.serialization.safe_globals([record_unpickling]):
        trusted = torch.load(tmp_path / "model.pth", weights_only=True)
    assert UNPICKLED == ["the converter unpickled meta"]
    torch.save({"state_dict": trusted["state_dict"]}, tmp_path / "weights_only.pth")
    assert convert_any_official_checkpoint(tmp_path / "weights_only.pth", tmp_path / "export").is_dir()
