"""PVT inside Transformers' DETR, Deformable DETR, Mask2Former and UperNet, the backbone-weight helper, the
digits detection data set and the detection training script. References: Transformers' own detector classes,
Transformers' built-in Pvt, the checkpoint tensors themselves and plain PyTorch."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers import (
    DeformableDetrForObjectDetection,
    DetrForObjectDetection,
    DetrImageProcessor,
    Mask2FormerForUniversalSegmentation,
    UperNetForSemanticSegmentation,
)
from transformers.models.detr.modeling_detr import DetrObjectDetectionOutput

from modeling_pvt import PvtBackbone, PvtForImageClassification
from pvt_tools.backbones import (
    ALL_STAGES,
    DEFAULT_OUT_FEATURES,
    check_detector_buildable,
    detector_config_with_pvt,
    find_pvt_backbone,
    load_pvt_backbone_weights,
    pvt_detector_from_checkpoint,
)
from pvt_tools.commands import train_detection as train_detection_command
from pvt_tools.training import detection as train_detection
from pvt_tools.training.detection_data import (
    INK_THRESHOLD,
    category_names,
    check_boxes,
    detection_features,
    make_digits_detection_dataset,
)
from tests.conftest import REPO_ROOT, builtin_tiny_classifier, tiny_config

DETECTORS = ["detr", "deformable_detr", "mask2former", "upernet"]

MODEL_CLASSES = {
    "detr": DetrForObjectDetection,
    "deformable_detr": DeformableDetrForObjectDetection,
    "mask2former": Mask2FormerForUniversalSegmentation,
    "upernet": UperNetForSemanticSegmentation,
}

DETR_HEAD = dict(
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    num_queries=8,
    num_labels=3,
)
TINY_HEADS = {
    "detr": DETR_HEAD,
    # Deformable DETR ties its box heads across decoder layers, so it needs two of them.
    "deformable_detr": {**DETR_HEAD, "decoder_layers": 2, "encoder_n_points": 2, "decoder_n_points": 2},
    "mask2former": dict(
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        dim_feedforward=32,
        num_queries=8,
        num_labels=3,
        train_num_points=64,
    ),
    "upernet": dict(hidden_size=32, auxiliary_channels=16, num_labels=3),
}


def tiny_detector(detector: str, seed: int = 0, **pvt_overrides):
    torch.manual_seed(seed)
    pvt_config = tiny_config(out_features=DEFAULT_OUT_FEATURES[detector], **pvt_overrides)
    return MODEL_CLASSES[detector](detector_config_with_pvt(detector, pvt_config, **TINY_HEADS[detector]))


def pixels(batch_size=2, height=96, width=128, seed=0) -> torch.Tensor:
    return torch.randn(batch_size, 3, height, width, generator=torch.Generator().manual_seed(seed))


def real_labels(detector: str, batch_size: int, height: int, width: int) -> dict:
    """Targets as each model's docs ask for them: two objects per image, or a segmentation map."""
    if detector in ("detr", "deformable_detr"):
        boxes = torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])  # (cx, cy, w, h), normalised
        return {"labels": [{"class_labels": torch.tensor([0, 2]), "boxes": boxes.clone()} for _ in range(batch_size)]}
    segmentation = torch.zeros(batch_size, height, width, dtype=torch.long)
    segmentation[:, height // 4 : height // 2, width // 4 : width // 2] = 1
    segmentation[:, height // 2 :, width // 2 :] = 2
    if detector == "upernet":
        return {"labels": segmentation}
    masks = [torch.stack([(image == index).float() for index in range(3)]) for image in segmentation]
    return {"mask_labels": masks, "class_labels": [torch.arange(3) for _ in range(batch_size)]}


def model_outputs(detector: str, model, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        outputs = model(pixel_values)
    if detector in ("detr", "deformable_detr"):
        return {"logits": outputs.logits, "pred_boxes": outputs.pred_boxes}
    if detector == "mask2former":
        return {"class": outputs.class_queries_logits, "masks": outputs.masks_queries_logits}
    return {"logits": outputs.logits}


def backbone_weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in find_pvt_backbone(model).state_dict().items()}


# --- the four models with a PVT backbone ------------------------------------------------------------------------


@pytest.mark.parametrize("detector", DETECTORS)
def test_detector_config_embeds_the_pvt_and_the_model_builds_it(detector):
    model = tiny_detector(detector)
    backbone = find_pvt_backbone(model)
    assert type(model.config.backbone_config).__name__ == "PvtConfig"
    assert backbone.out_features == DEFAULT_OUT_FEATURES[detector]
    hidden_sizes = dict(zip(ALL_STAGES, tiny_config().hidden_sizes))
    assert backbone.channels == [hidden_sizes[stage] for stage in DEFAULT_OUT_FEATURES[detector]]
    # The detector's backbone is a plain PvtBackbone: the same weights give the same maps as a standalone one.
    standalone = PvtBackbone(backbone.config).eval()
    standalone.load_state_dict(backbone.state_dict())
    with torch.no_grad():
        for inside, alone in zip(backbone.eval()(pixels()).feature_maps, standalone(pixels()).feature_maps):
            torch.testing.assert_close(inside, alone, atol=0, rtol=0)


@pytest.mark.parametrize("detector", DETECTORS)
def test_train_step_gives_finite_loss_and_backbone_gradients(detector):
    model = tiny_detector(detector).train()
    pixel_values = pixels(2, 96, 128)
    loss = model(pixel_values, **real_labels(detector, 2, 96, 128)).loss
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for name, parameter in find_pvt_backbone(model).named_parameters():
        assert parameter.grad is not None, f"no gradient for backbone parameter {name}"
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"zero gradient for backbone parameter {name}"


@pytest.mark.parametrize("detector", ["detr", "deformable_detr"])
def test_freeze_backbone_keeps_backbone_weights_through_an_optimizer_step(detector):
    model = tiny_detector(detector).train()
    model.model.freeze_backbone()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    backbone_names = {name for name, parameter in model.named_parameters() if "backbone." in name}
    assert len(backbone_names) == len(list(find_pvt_backbone(model).parameters()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model(pixels(), **real_labels(detector, 2, 96, 128)).loss.backward()
    optimizer.step()
    changed = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    assert not changed & backbone_names, f"frozen backbone weights changed: {sorted(changed & backbone_names)[:5]}"
    assert changed, "the optimizer step did not train the head at all"


@pytest.mark.parametrize("detector", DETECTORS)
def test_detection_resolution_input_runs_forward(detector):
    model = tiny_detector(detector).eval()  # eval: UperNet's pooling BatchNorm cannot train on a batch of one
    outputs = model_outputs(detector, model, pixels(1, 800, 1333))
    num_queries = TINY_HEADS[detector].get("num_queries")
    if detector == "detr":
        assert outputs["logits"].shape == (1, num_queries, 3 + 1)  # + "no object"
    elif detector == "deformable_detr":
        assert outputs["logits"].shape == (1, num_queries, 3)  # sigmoid focal loss: no "no object" class
    if detector in ("detr", "deformable_detr"):
        assert outputs["pred_boxes"].shape == (1, num_queries, 4)
        assert ((outputs["pred_boxes"] >= 0) & (outputs["pred_boxes"] <= 1)).all()
    elif detector == "mask2former":
        assert outputs["masks"].shape == (1, num_queries, (800 - 4) // 4 + 1, (1333 - 4) // 4 + 1)  # stride-4 map
    else:
        assert outputs["logits"].shape == (1, 3, 800, 1333)
    assert all(torch.isfinite(tensor).all() for tensor in outputs.values())


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import transformers
    import modeling_pvt  # registers "pvt_v1"; nothing else of this project is imported
    from safetensors.torch import load_file, save_file

    auto_classes = {
        "detr": transformers.AutoModelForObjectDetection,
        "deformable_detr": transformers.AutoModelForObjectDetection,
        "mask2former": transformers.AutoModelForUniversalSegmentation,
        "upernet": transformers.AutoModelForSemanticSegmentation,
    }
    pixel_values = load_file(sys.argv[3])["pixel_values"]
    outputs, classes = {}, {}
    for detector in json.loads(sys.argv[4]):
        model = auto_classes[detector].from_pretrained(f"{sys.argv[2]}/{detector}").eval()
        classes[detector] = [type(model).__name__, type(model.config.backbone_config).__name__]
        with torch.no_grad():
            result = model(pixel_values)
        for name in ("logits", "pred_boxes", "class_queries_logits", "masks_queries_logits"):
            if getattr(result, name, None) is not None:
                outputs[f"{detector}.{name}"] = result[name].contiguous()
    project_folders = {sys.argv[1], os.path.join(sys.argv[1], "scripts")}
    ours = sorted(name for name, module in list(sys.modules.items())
                  if os.path.dirname(str(getattr(module, "__file__", None) or "")) in project_folders)
    save_file(outputs, f"{sys.argv[2]}/outputs.safetensors")
    print(json.dumps({"classes": classes, "our_modules": ours}))
    """
)


def test_save_and_load_in_a_fresh_process_rebuilds_the_same_models(tmp_path):
    from safetensors.torch import load_file, save_file

    pixel_values = pixels(1, 96, 128)
    save_file({"pixel_values": pixel_values}, tmp_path / "pixels.safetensors")
    expected = {}
    for detector in DETECTORS:
        model = tiny_detector(detector).eval()
        model.save_pretrained(tmp_path / detector)
        for name, tensor in model_outputs(detector, model, pixel_values).items():
            expected[detector, name] = tensor
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS_SCRIPT)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(REPO_ROOT),
            str(tmp_path),
            str(tmp_path / "pixels.safetensors"),
            json.dumps(DETECTORS),
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO_ROOT),  # this checkout's modeling_pvt, first
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf_home"),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["our_modules"] == ["configuration_pvt", "modeling_pvt"]
    for detector in DETECTORS:
        assert report["classes"][detector] == [MODEL_CLASSES[detector].__name__, "PvtConfig"]
    reloaded = load_file(tmp_path / "outputs.safetensors")
    renamed = {"class": "class_queries_logits", "masks": "masks_queries_logits"}
    for (detector, name), tensor in expected.items():
        torch.testing.assert_close(reloaded[f"{detector}.{renamed.get(name, name)}"], tensor, atol=1e-6, rtol=0)


# --- out_features that do not fit a detector --------------------------------------------------------------------


@pytest.mark.parametrize(
    "detector, out_features, needed",
    [
        ("detr", ["stage3", "stage4"], "['stage4']"),
        ("deformable_detr", ["stage2", "stage3"], "'stage4'"),
        ("deformable_detr", ALL_STAGES[:1] + ["stage4"], None),  # fits: two maps, four levels
        ("mask2former", ["stage4"], str(ALL_STAGES)),
        ("upernet", ["stage2", "stage3", "stage4"], str(ALL_STAGES)),
    ],
)
def test_out_features_that_do_not_fit_the_detector_are_refused(detector, out_features, needed):
    pvt_config = tiny_config(out_features=out_features)
    if needed is None:
        config = detector_config_with_pvt(detector, pvt_config, **TINY_HEADS[detector])
        assert config.backbone_config.out_features == out_features
        return
    with pytest.raises(ValueError, match="needs") as error:
        detector_config_with_pvt(detector, pvt_config, **TINY_HEADS[detector])
    assert needed in str(error.value) and str(out_features) in str(error.value)


def test_deformable_detr_with_fewer_levels_than_maps_is_refused():
    pvt_config = tiny_config(out_features=["stage2", "stage3", "stage4"])
    with pytest.raises(ValueError, match="num_feature_levels=2 takes at most 2 maps"):
        detector_config_with_pvt("deformable_detr", pvt_config, num_feature_levels=2)


def test_mask2former_feature_strides_come_from_the_pvt():
    pvt_config = tiny_config(out_features=ALL_STAGES)
    config = detector_config_with_pvt("mask2former", pvt_config, **TINY_HEADS["mask2former"])
    assert list(config.feature_strides) == [4, 8, 16, 32]
    with pytest.raises(ValueError, match=r"feature_strides=\[8, 16, 32, 64\] does not match"):
        detector_config_with_pvt("mask2former", pvt_config, feature_strides=[8, 16, 32, 64])


def test_unknown_detector_is_named():
    with pytest.raises(ValueError, match="Unknown detector 'yolo'"):
        detector_config_with_pvt("yolo", tiny_config())


# --- pretrained backbone weights --------------------------------------------------------------------------------


def saved_tiny_classifier(path, seed=1, **overrides) -> PvtForImageClassification:
    torch.manual_seed(seed)
    classifier = PvtForImageClassification(tiny_config(**overrides)).eval()
    classifier.save_pretrained(path)
    return classifier


@pytest.mark.parametrize("detector", DETECTORS)
def test_helper_loads_every_backbone_tensor_from_a_classifier_checkpoint(tmp_path, detector):
    classifier = saved_tiny_classifier(tmp_path / "pvt")
    model = tiny_detector(detector)
    head_before = {name: tensor.clone() for name, tensor in model.state_dict().items() if "stages." not in name}
    loaded = load_pvt_backbone_weights(model, str(tmp_path / "pvt"))
    backbone = find_pvt_backbone(model)
    assert loaded == sorted(backbone.state_dict())
    classifier_weights = classifier.state_dict()
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, classifier_weights[f"pvt.{name}"]), name
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in head_before.items())


def test_builtin_pvt_checkpoint_gives_the_builtin_models_features(tmp_path):
    builtin = builtin_tiny_classifier()
    builtin.save_pretrained(tmp_path / "builtin")
    model = pvt_detector_from_checkpoint("upernet", str(tmp_path / "builtin"), **TINY_HEADS["upernet"]).eval()
    pixel_values = pixels(1, 64, 64)
    with torch.no_grad():
        expected = builtin(pixel_values, output_hidden_states=True).hidden_states
        feature_maps = find_pvt_backbone(model)(pixel_values).feature_maps
    # hidden_states[i] is the output of layer i; stage 3 of the tiny config ends at layer 1 + 1 + 2 - 1 = 3.
    stage3_tokens = feature_maps[2].flatten(2).transpose(1, 2)
    torch.testing.assert_close(stage3_tokens, expected[3], atol=1e-5, rtol=0)
    # The backbone config keeps the built-in's numerics and drops the classifier's labels.
    backbone_config = model.config.backbone_config
    assert backbone_config.patch_embedding_layer_norm_eps == builtin.config.layer_norm_eps
    assert backbone_config.num_labels == 2 and backbone_config.out_features == ALL_STAGES


def test_helper_loads_a_repo_id_from_the_hub_cache(tmp_path):
    classifier = saved_tiny_classifier(tmp_path / "saved")
    snapshot = tmp_path / "hub" / "models--pvt-org--pvt-tiny-test" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in (tmp_path / "saved").iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    model = pvt_detector_from_checkpoint(
        "detr",
        "pvt-org/pvt-tiny-test",
        from_pretrained_kwargs={"cache_dir": str(tmp_path / "hub")},
        **TINY_HEADS["detr"],
    )
    weights = classifier.state_dict()
    assert all(torch.equal(tensor, weights[f"pvt.{name}"]) for name, tensor in backbone_weights(model).items())


@pytest.mark.parametrize("source, target", [("upernet", "mask2former"), ("detr", "upernet"), ("mask2former", "detr")])
def test_helper_takes_the_backbone_of_a_trained_detector_or_segmenter(tmp_path, source, target):
    # A saved DETR renames backbone tensors on disk (its conversion rules); the backbone must still arrive exactly.
    trained = tiny_detector(source, seed=3)
    trained.save_pretrained(tmp_path / source)
    model = pvt_detector_from_checkpoint(target, str(tmp_path / source), **TINY_HEADS[target])
    assert isinstance(model, MODEL_CLASSES[target])
    expected = backbone_weights(trained)
    assert sorted(backbone_weights(model)) == sorted(expected)
    assert all(torch.equal(tensor, expected[name]) for name, tensor in backbone_weights(model).items())


def test_helper_refuses_a_detector_with_another_pvt_naming_the_tensors(tmp_path):
    tiny_detector("upernet", hidden_sizes=[16, 32, 48, 64]).save_pretrained(tmp_path / "upernet")
    model = tiny_detector("mask2former")
    before = backbone_weights(model)
    with pytest.raises(ValueError, match=r"stages\.2\.layers\.0\.attention\.k_proj\.weight \(48, 48\) vs \(40, 40\)"):
        load_pvt_backbone_weights(model, str(tmp_path / "upernet"))
    assert all(torch.equal(before[name], tensor) for name, tensor in backbone_weights(model).items())


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"depths": [1, 1, 3, 1]}, r"tensors the backbone does not have: pvt\.stages\.2\.layers\.2\.attention"),
        ({"depths": [1, 1, 1, 1]}, r"backbone tensors absent from it: stages\.2\.layers\.1\.attention"),
        (
            {"hidden_sizes": [16, 32, 48, 64]},
            r"stages\.2\.layers\.0\.attention\.k_proj\.weight \(48, 48\) vs \(40, 40\)",
        ),
        ({"layer_norm_eps": 1e-5}, r"layer_norm_eps=1e-05 \(checkpoint\) vs 1e-06 \(model\)"),
    ],
)
def test_helper_refuses_another_variant_naming_the_tensors(tmp_path, overrides, named):
    saved_tiny_classifier(tmp_path / "other", **overrides)
    model = tiny_detector("deformable_detr")
    before = backbone_weights(model)
    with pytest.raises(ValueError, match=named):
        load_pvt_backbone_weights(model, str(tmp_path / "other"))
    after = backbone_weights(model)
    assert all(torch.equal(before[name], after[name]) for name in before), "a refused load changed the model"


def test_helper_refuses_another_architecture_naming_the_tensors(tmp_path):
    resnet = transformers.ResNetConfig(hidden_sizes=[8, 16, 24, 32], embedding_size=8, depths=[1, 1, 1, 1])
    transformers.ResNetBackbone(resnet).save_pretrained(tmp_path / "resnet")
    model = tiny_detector("detr")
    with pytest.raises(ValueError) as error:
        load_pvt_backbone_weights(model, str(tmp_path / "resnet"))
    message = str(error.value)
    assert "model_type='resnet'" in message
    assert "absent from it: stages.0.layers.0.attention.k_proj.bias" in message
    assert "embedder.embedder.convolution.weight" in message  # a ResNet tensor the backbone does not have


def test_helper_needs_a_model_with_a_pvt_backbone(tmp_path):
    saved_tiny_classifier(tmp_path / "pvt")
    resnet = transformers.ResNetConfig(
        hidden_sizes=[8, 16, 24, 32], embedding_size=8, depths=[1, 1, 1, 1], out_features=ALL_STAGES
    )
    model = UperNetForSemanticSegmentation(transformers.UperNetConfig(backbone_config=resnet, hidden_size=32))
    with pytest.raises(ValueError, match="holds 0 PVT backbones"):
        load_pvt_backbone_weights(model, str(tmp_path / "pvt"))


# --- the digits detection data set -------------------------------------------------------------------------------


def test_digits_canvases_have_the_example_layout_and_tight_boxes():
    dataset = make_digits_detection_dataset(12, canvas_size=96, digit_sizes=(16, 40), seed=3)
    assert set(dataset.column_names) == {"image_id", "image", "width", "height", "objects"}
    assert category_names(dataset) == [str(digit) for digit in range(10)]
    object_ids = [object_id for objects in dataset["objects"] for object_id in objects["id"]]
    assert object_ids == list(range(len(object_ids))) and len(object_ids) >= 12
    for example in dataset:
        pixels_ = np.asarray(example["image"].convert("L"))
        assert example["image"].size == (96, 96) == (example["width"], example["height"])
        ink = pixels_ >= INK_THRESHOLD  # the background noise stays below the threshold, the digits' ink above it
        covered = np.zeros_like(ink)
        for (x, y, width, height), area in zip(example["objects"]["bbox"], example["objects"]["area"]):
            x, y, width, height = int(x), int(y), int(width), int(height)
            assert area == width * height
            inside = ink[y : y + height, x : x + width]
            # tight: ink on every edge of the box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y : y + height, x : x + width] = True
        assert not (ink & ~covered).any(), "ink outside every box"
    again = make_digits_detection_dataset(12, canvas_size=96, digit_sizes=(16, 40), seed=3)
    assert again["objects"] == dataset["objects"]


def dataset_with_boxes(boxes_per_image: list[list[list[float]]]):
    import datasets
    from PIL import Image

    rows = [
        {
            "image_id": 7 + index,
            "image": Image.new("RGB", (64, 48)),
            "width": 64,
            "height": 48,
            "objects": {
                "id": list(range(len(boxes))),
                "area": [box[2] * box[3] for box in boxes],
                "bbox": boxes,
                "category": [1] * len(boxes),
            },
        }
        for index, boxes in enumerate(boxes_per_image)
    ]
    return datasets.Dataset.from_list(rows, features=detection_features(["a", "b"]))


def test_malformed_boxes_are_dropped_with_a_count_or_rejected_naming_the_example():
    good = [[1.0, 2.0, 10.0, 10.0], [50.0, 30.0, 14.0, 18.0]]  # the second one touches the corner
    bad = [[5.0, 5.0, -3.0, 4.0], [60.0, 40.0, 10.0, 10.0], [2.0, 2.0, 0.0, 5.0]]  # negative, outside, empty
    dataset = dataset_with_boxes([good, [good[0], bad[0]], bad[1:]])
    cleaned, dropped = check_boxes(dataset, on_invalid="drop")
    assert dropped == 3
    assert [objects["bbox"] for objects in cleaned["objects"]] == [good, [good[0]], []]
    assert [objects["id"] for objects in cleaned["objects"]] == [[0, 1], [0], []]
    with pytest.raises(ValueError, match=r"example 1 \(image_id 8\): box \[5.0, 5.0, -3.0, 4.0\] has a non-positive"):
        check_boxes(dataset, on_invalid="error")
    with pytest.raises(ValueError, match="outside the 64x48 image"):
        check_boxes(dataset_with_boxes([bad[1:2]]), on_invalid="error")
    assert check_boxes(dataset_with_boxes([good]), on_invalid="error")[1] == 0


# --- the detection training script --------------------------------------------------------------------------------

TINY_PVT_JSON = json.dumps(
    {
        "hidden_sizes": [16, 32, 40, 64],
        "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 2, 2, 4],
        "mlp_ratios": [2, 2, 2, 2],
    }
)


def tiny_run_arguments(output_dir, architecture="detr", **overrides) -> list[str]:
    head = {key: value for key, value in TINY_HEADS[architecture].items() if key != "num_labels"}
    settings = {
        "output_dir": str(output_dir),
        "architecture": architecture,
        "num_train_images": 16,
        "num_validation_images": 8,
        "canvas_size": 96,
        "image_square_size": 96,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "max_train_steps": 4,
        "learning_rate": 1e-3,
        "backbone_learning_rate": 1e-3,
        "pvt_config_overrides": TINY_PVT_JSON,
        "detector_config_overrides": json.dumps(head),
        **overrides,
    }
    return [f"--{name}={value}" for name, value in settings.items()]


def test_image_processor_turns_coco_boxes_into_normalised_centre_boxes():
    dataset = dataset_with_boxes([[[4.0, 8.0, 20.0, 10.0]]])
    processor = DetrImageProcessor(
        size={"max_height": 96, "max_width": 96}, do_pad=True, pad_size={"height": 96, "width": 96}
    )
    example = dataset.with_transform(train_detection.make_batch_transform(processor))[0]
    assert example["pixel_values"].shape == (3, 96, 96)
    # 64x48 -> 96x72, padded to 96x96 at the bottom: the box scales by 1.5, then is normalised by 96.
    x, y, width, height = (value * 1.5 for value in (4.0, 8.0, 20.0, 10.0))
    expected = torch.tensor([[x + width / 2, y + height / 2, width, height]]) / 96
    torch.testing.assert_close(example["labels"]["boxes"], expected)
    assert example["labels"]["class_labels"].tolist() == [1]
    assert example["pixel_mask"][:72].all() and not example["pixel_mask"][72:].any()


class OracleDetector(torch.nn.Module):
    """Answers with the ground truth of the batch it is given (optionally shifted): a known mAP to check against."""

    def __init__(self, labels, num_classes, shift=0.0):
        super().__init__()
        self.labels, self.num_classes, self.shift = labels, num_classes, shift

    def forward(self, pixel_values, pixel_mask):
        logits = torch.full((len(self.labels), 3, self.num_classes + 1), -10.0)
        boxes = torch.full((len(self.labels), 3, 4), 0.1)
        for index, label in enumerate(self.labels):
            count = len(label["class_labels"])
            logits[index, torch.arange(count), label["class_labels"]] = 10.0
            boxes[index, :count] = label["boxes"] + torch.tensor([self.shift, 0, 0, 0])
        return DetrObjectDetectionOutput(logits=logits, pred_boxes=boxes)


@pytest.mark.parametrize("shift, expected_map", [(0.0, 1.0), (0.6, 0.0)])
def test_evaluation_gives_coco_map_of_known_predictions(shift, expected_map):
    from accelerate import Accelerator

    dataset = dataset_with_boxes([[[4.0, 8.0, 20.0, 10.0], [30.0, 20.0, 12.0, 16.0]], [[10.0, 10.0, 30.0, 30.0]]])
    processor = DetrImageProcessor(
        size={"max_height": 96, "max_width": 96}, do_pad=True, pad_size={"height": 96, "width": 96}
    )
    batch = train_detection.collate_detection_batch(
        list(dataset.with_transform(train_detection.make_batch_transform(processor)))
    )
    model = OracleDetector(batch["labels"], num_classes=2, shift=shift)
    metrics = train_detection.evaluate_detection(model, [batch], processor, Accelerator(cpu=True))
    assert metrics["map"] == pytest.approx(expected_map) and metrics["map_50"] == pytest.approx(expected_map)
    assert "map_large" not in metrics  # no large objects: torchmetrics' -1 ("not applicable") is left out


def read_model_weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_training_script_trains_evaluates_saves_and_resumes_exactly(tmp_path):
    results = train_detection_command.main(tiny_run_arguments(tmp_path / "run", checkpointing_steps=2))
    run = tmp_path / "run"
    assert results["completed_steps"] == 4 and 0.0 <= results["eval_map"] <= 1.0
    assert json.loads((run / "all_results.json").read_text()) == results
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((run / "training_history.json").read_text())
    losses = [step["loss"] for step in history["steps"]]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert history["evaluations"][-1]["map"] == results["eval_map"]
    assert sorted(path.name for path in run.iterdir() if path.name.startswith("step_")) == ["step_2", "step_4"]

    # The saved detector is the output folder itself; it reloads (with only modeling_pvt registered), its processor
    # with it, and carries the PVT code its backbone needs.
    model = DetrForObjectDetection.from_pretrained(run).eval()
    processor = DetrImageProcessor.from_pretrained(run)
    assert model.config.id2label[3] == "3" and processor.size == {"max_height": 96, "max_width": 96}
    for name in ("configuration_pvt.py", "modeling_pvt.py"):
        assert (run / name).read_bytes() == (REPO_ROOT / name).read_bytes()
    assert not (run / "model").exists()

    # Killed after step 2: resuming from step_2 gives the same steps 3-4 and the same weights.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "step_2").symlink_to(run / "step_2", target_is_directory=True)
    train_detection_command.main(tiny_run_arguments(resumed, checkpointing_steps=2, resume_from_checkpoint="latest"))
    resumed_history = json.loads((resumed / "training_history.json").read_text())
    assert [step["step"] for step in resumed_history["steps"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([step["loss"] for step in resumed_history["steps"]], losses, rtol=1e-5)
    straight, again = read_model_weights(run), read_model_weights(resumed)
    assert straight.keys() == again.keys()
    for name in straight:
        torch.testing.assert_close(again[name], straight[name], atol=1e-6, rtol=1e-5)


def test_training_script_loss_falls_over_a_short_run(tmp_path, capsys):
    # One batch of 4 canvases, seen at every step: the loss must fall, not just wander with the batches' content.
    arguments = tiny_run_arguments(tmp_path / "run", num_train_images=4, num_validation_images=4, max_train_steps=16)
    results = train_detection_command.main(arguments)
    printed = capsys.readouterr().out
    assert (
        "images (detr (d_model 32, 1+1 layers, 8 queries), 10 classes, 4 for validation, total batch size 4, 1 "
        "process): 16 optimizer steps" in printed
    )
    assert f"Saved to {tmp_path / 'run'}; results {tmp_path / 'run' / 'all_results.json'}" in printed
    assert "Backbone: a randomly initialised" in printed and "--pvt_checkpoint" in printed  # the way to detect
    losses = [step["loss"] for step in json.loads((tmp_path / "run" / "training_history.json").read_text())["steps"]]
    assert len(losses) == results["completed_steps"] == 16
    # Measured: 8.194 8.196 8.162 8.166 ... 8.076 8.093 8.076 8.078 (43 s with the 2 cores shared 6 ways).
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05, losses
    assert min(losses[-4:]) < losses[0] - 0.05, losses


def test_training_script_runs_deformable_detr_from_a_pvt_checkpoint(tmp_path, capsys):
    classifier = saved_tiny_classifier(tmp_path / "pvt", depths=[1, 1, 1, 1])
    arguments = tiny_run_arguments(tmp_path / "run", "deformable_detr", max_train_steps=2, pvt_config_overrides="{}")
    results = train_detection_command.main(arguments + [f"--pvt_checkpoint={tmp_path / 'pvt'}", "--freeze_backbone"])
    assert "randomly initialised" not in capsys.readouterr().out
    assert results["architecture"] == "deformable_detr" and results["completed_steps"] == 2
    model = DeformableDetrForObjectDetection.from_pretrained(tmp_path / "run")
    # frozen: the backbone is still the checkpoint's
    weights = classifier.state_dict()
    assert all(torch.equal(tensor, weights[f"pvt.{name}"]) for name, tensor in backbone_weights(model).items())


def test_training_script_checks_boxes_of_a_local_dataset(tmp_path):
    dataset = make_digits_detection_dataset(6, canvas_size=96, seed=5)
    objects = dataset[4]["objects"]
    objects["bbox"][0] = [90.0, 90.0, 20.0, 20.0]  # outside the 96x96 canvas
    broken = dataset.select(range(4)).to_list() + [{**dataset[4], "objects": objects}] + dataset.select([5]).to_list()
    import datasets

    folder = tmp_path / "local"
    folder.mkdir()
    datasets.Dataset.from_list(broken, features=dataset.features).to_parquet(folder / "train.parquet")
    arguments = tiny_run_arguments(tmp_path / "run", dataset_name=folder, train_val_split=0.34, max_train_steps=1)
    with pytest.raises(ValueError, match=r"image_id 4\): box \[90.0, 90.0, 20.0, 20.0\] lies \(partly\) outside"):
        train_detection_command.main(arguments + ["--invalid_boxes=error"])
    results = train_detection_command.main(arguments + ["--invalid_boxes=drop"])
    assert results["completed_steps"] == 1


def test_training_script_refuses_config_overrides_for_a_pretrained_backbone(tmp_path):
    saved_tiny_classifier(tmp_path / "pvt")
    arguments = tiny_run_arguments(tmp_path / "run", num_train_images=4, num_validation_images=2)
    with pytest.raises(ValueError, match="with --pvt_checkpoint the checkpoint fixes the architecture"):
        train_detection_command.main(arguments + [f"--pvt_checkpoint={tmp_path / 'pvt'}"])


def test_detector_settings_transformers_cannot_build_are_named_before_any_work(tmp_path):
    # Transformers ties Deformable DETR's per-layer box heads to the first: one decoder layer cannot be built, and
    # its own message ("There is an issue with your definition of `tie_weights_keys` ...") names nothing to change.
    with pytest.raises(ValueError, match=r"tie_weights_keys"):
        DeformableDetrForObjectDetection(
            detector_config_with_pvt(
                "deformable_detr", tiny_config(out_features=["stage2", "stage3", "stage4"]), decoder_layers=1
            )
        )
    overrides = json.dumps({**TINY_HEADS["deformable_detr"], "decoder_layers": 1, "num_labels": 10})
    arguments = tiny_run_arguments(tmp_path / "run", "deformable_detr", detector_config_overrides=overrides)
    with pytest.raises(
        ValueError,
        match=r"cannot build DeformableDetrForObjectDetection with .*decoder_layers=1.*"
        r"needs decoder_layers >= 2 \(or two_stage true\)\. Change --detector_config_overrides",
    ):
        train_detection_command.main(arguments)
    assert not (tmp_path / "run").exists()
    check_detector_buildable("deformable_detr", decoder_layers=1, two_stage=True, with_box_refine=True)  # builds
    with pytest.raises(ValueError, match=r"two_stage=True: If two_stage is True, with_box_refine must be True\."):
        check_detector_buildable("deformable_detr", two_stage=True)
    check_detector_buildable("detr", decoder_layers=1)


def test_drawn_detections_put_boxes_on_the_pixels_of_the_boxes():
    image = Image.new("RGB", (40, 30), (10, 10, 10))
    panel = train_detection.draw_detections(
        image, [[2.0, 3.0, 12.0, 13.0]], ["7"], [[20.0, 5.0, 35.0, 25.0]], ["1"], [0.87], scale=4
    )
    pixels = np.asarray(panel)
    assert pixels.shape == (120, 160, 3)
    truth, predicted = train_detection.TRUTH_COLOUR, train_detection.PREDICTION_COLOUR
    # Box edges, at 4x: the truth's left edge x = 8 for y in 12..52, the prediction's top edge y = 20 for x 80..140.
    assert (pixels[14:50, 8] == truth).all() and (pixels[14:50, 48] == truth).all()
    assert (pixels[20, 82:138] == predicted).all() and (pixels[100, 82:138] == predicted).all()
    inside = pixels[30:40, 90:130]  # the inside of the predicted box is the image, untouched
    assert (inside == 10).all()
    # Captions (anti-aliased text): the truth's name below its box, the prediction's name and score above it.
    green_text = (pixels[53:66, 8:40, 1] > 100) & (pixels[53:66, 8:40, 0] < 60)
    red_text = (pixels[6:19, 80:140, 0] > 100) & (pixels[6:19, 80:140, 1] < 60)
    assert green_text.sum() >= 5 and red_text.sum() >= 20  # "7"; "1 0.87"


def squares_dataset(num_images: int, seed: int, size: int = 64):
    """Canvases with one bright square each, of one class: a detector that learns finds them in a few hundred steps."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(num_images):
        canvas = rng.integers(0, 40, size=(size, size), dtype=np.uint8)
        side = int(rng.integers(14, 30))
        left, top = (int(value) for value in rng.integers(0, size - side, size=2))
        canvas[top : top + side, left : left + side] = 220
        box = [float(left), float(top), float(side), float(side)]
        rows.append(
            {
                "image_id": index,
                "image": Image.fromarray(canvas).convert("RGB"),
                "width": size,
                "height": size,
                "objects": {"id": [index], "area": [box[2] * box[3]], "bbox": [box], "category": [0]},
            }
        )
    import datasets

    return datasets.Dataset.from_list(rows, features=detection_features(["square"]))


def test_a_short_run_from_a_pvt_checkpoint_finds_boxes_and_draws_them(tmp_path):
    data = tmp_path / "squares"
    data.mkdir()
    squares_dataset(64, seed=0).to_parquet(data / "train.parquet")
    validation = squares_dataset(16, seed=1)
    validation.to_parquet(data / "validation.parquet")
    saved_tiny_classifier(tmp_path / "pvt", depths=[1, 1, 1, 1])
    head = {key: value for key, value in TINY_HEADS["deformable_detr"].items() if key != "num_labels"}
    arguments = tiny_run_arguments(
        tmp_path / "run",
        "deformable_detr",
        dataset_name=data,
        image_square_size=64,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        max_train_steps=200,
        learning_rate=3e-3,
        backbone_learning_rate=3e-3,
        num_warmup_steps=5,
        pvt_checkpoint=tmp_path / "pvt",
        pvt_config_overrides="{}",
        detector_config_overrides=json.dumps(head),
    )
    results = train_detection_command.main(arguments)
    # The untrained detector (random heads) finds nothing; 200 steps find most squares. Measured: mAP@50 0.000 ->
    # 0.80, mAP 0.000 -> 0.38 (37 s on 2 shared cores).
    assert results["untrained_map_50"] < 0.05 and results["untrained_map"] < 0.02
    assert results["eval_map_50"] >= 0.5 and results["eval_map"] >= 0.2, results
    assert (
        json.loads((tmp_path / "run" / "all_results.json").read_text())["untrained_map_50"]
        == results["untrained_map_50"]
    )

    # The picture: the first validation canvases, 4x enlarged, side by side, 8 white pixels apart below a 16-pixel
    # legend, each with its ground-truth square outlined in green exactly where the annotation puts it.
    picture = np.asarray(Image.open(tmp_path / "run" / train_detection.PREDICTIONS_PICTURE).convert("RGB"))
    assert picture.shape == (16 + 256, 4 * 256 + 3 * 8, 3)
    picture = picture[16:]
    for panel, example in enumerate(validation.select(range(4))):
        left, top, width, height = (round(4 * value) for value in example["objects"]["bbox"][0])
        offset = panel * (256 + 8)
        is_green = (picture == train_detection.TRUTH_COLOUR).all(axis=-1)
        # (a red prediction drawn over it may hide part of the edge)
        assert is_green[top + 2 : top + height - 2, offset + left].mean() > 0.6, (panel, example["objects"])
        assert not is_green[top + 2 : top + height - 2, offset + left - 4].any()
        inside = picture[top + 6 : top + height - 6, offset + left + 6 : offset + left + width - 6]
        assert (inside == 220).all(axis=-1).mean() > 0.5  # the square itself, not painted over
    # Predictions scoring >= the picture's threshold are drawn in red.
    red = (picture == train_detection.PREDICTION_COLOUR).all(axis=-1)
    assert red.sum() > 100


def test_step_profile_accounts_for_the_whole_step(tmp_path):
    from pvt_tools.commands import profile_detection

    arguments = tiny_run_arguments(tmp_path / "unused", "deformable_detr", num_train_images=8, max_train_steps=1)
    arguments = [argument for argument in arguments if not argument.startswith("--output_dir")]
    profile = profile_detection.main(arguments + ["--steps=3", f"--output_json={tmp_path / 'profile.json'}"])
    assert not (tmp_path / "unused").exists()
    parts = profile["parts"]
    assert list(parts) == [
        "data",
        "backbone",
        "encoder",
        "decoder",
        "matching",
        "loss",
        "forward, other",
        "backward",
        "optimizer",
    ]
    assert all(part["ms_per_step"] > 0 for name, part in parts.items() if name != "forward, other")
    # The parts are disjoint and cover the step: their sum is the step's wall time.
    assert sum(part["ms_per_step"] for part in parts.values()) == pytest.approx(profile["step_ms"], rel=0.05)
    assert profile["images_per_second"] == pytest.approx(4 * 1000 / profile["step_ms"], rel=0.05)
    assert json.loads((tmp_path / "profile.json").read_text()) == profile


def test_canvases_without_objects_train_and_a_split_without_any_is_refused(tmp_path):
    import datasets

    dataset = make_digits_detection_dataset(6, canvas_size=96, seed=5)
    no_objects = {"id": [], "area": [], "bbox": [], "category": []}
    rows = [{**row, "objects": no_objects} if index < 3 else row for index, row in enumerate(dataset.to_list())]
    some_empty, all_empty = tmp_path / "some_empty", tmp_path / "all_empty"
    for folder, validation in ((some_empty, rows[:4]), (all_empty, rows[:3])):
        folder.mkdir()
        datasets.Dataset.from_list(rows, features=dataset.features).to_parquet(folder / "train.parquet")
        datasets.Dataset.from_list(validation, features=dataset.features).to_parquet(folder / "validation.parquet")
    results = train_detection_command.main(
        tiny_run_arguments(tmp_path / "run", dataset_name=some_empty, max_train_steps=1)
    )
    assert results["completed_steps"] == 1  # images without objects are examples of "no object"
    with pytest.raises(ValueError, match=r"The validation split has no objects left \(3 images, no valid box\)"):
        train_detection_command.main(tiny_run_arguments(tmp_path / "refused", dataset_name=all_empty))
    assert not (tmp_path / "refused").exists()
