"""Training: data loading and checks, Accelerate runs (resume after a kill, two processes, NaN stop), the
Trainer example and the exported folder. Tiny networks on 32-pixel images, a few steps each."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import datasets
import evaluate
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from sklearn.datasets import load_digits
from sklearn.metrics import top_k_accuracy_score
from torch import nn
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from modeling_pvt import PvtForImageClassification
from pvt_tools.commands import demo, finetune_with_trainer, train
from pvt_tools.hub import PushError, validate_export_dir
from pvt_tools.training import classification, detection_data
from pvt_tools.training.checkpoints import CheckpointError, NonFiniteLossError, list_checkpoints
from pvt_tools.training.classification import TOP_K_ACCURACY_METRIC
from pvt_tools.training.data import (
    DataArguments,
    DataError,
    digits_split_indices,
    load_image_classification_dataset,
    to_rgb,
)
from pvt_tools.training.loop import UsageError, weight_decay_parameter_groups
from tests.conftest import REPO_ROOT, tiny_config

TINY_MODEL = [
    "--image_size", "32",
    "--hidden_sizes", "16", "32", "48", "64",
    "--depths", "1", "1", "1", "1",
    "--num_attention_heads", "1", "1", "2", "2",
    "--mlp_ratios", "2", "2", "2", "2",
    "--sequence_reduction_ratios", "2", "1", "1", "1",
]  # fmt: skip
SHORT_RUN = TINY_MODEL + [
    "--per_device_train_batch_size", "8",
    "--per_device_eval_batch_size", "16",
    "--learning_rate", "1e-3",
    "--num_warmup_steps", "1",
]  # fmt: skip
DEIT_AUGMENTATION = [
    "--mixup", "0.8", "--cutmix", "1.0", "--rand_augment_num_ops", "2", "--random_erasing_probability", "0.25",
    "--random_resized_crop_scale", "0.08", "1.0",
]  # fmt: skip
# Networks this small run fastest on one thread per process (and the machine's cores are shared); in-process and
# subprocess runs use the same thread count, so that their results agree to the bit.
# PYTHONPATH: the subprocesses import this checkout's pvt_tools, not whichever copy is installed.
SUBPROCESS_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": str(REPO_ROOT),
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_results(output_dir) -> dict:
    return json.loads((output_dir / "all_results.json").read_text())


def exported_predictions(export_dir, split, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Top-k classes of every validation image, through the exported model and image processor."""
    model = AutoModelForImageClassification.from_pretrained(export_dir).eval()
    processor = AutoImageProcessor.from_pretrained(export_dir)
    pixel_values = processor([to_rgb(image) for image in split["image"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    return logits.topk(k, dim=-1).indices.numpy(), np.asarray(split["label"])


# --- data -------------------------------------------------------------------------------------------------------


def test_top_k_accuracy_metric_matches_scikit_learn():
    metric = evaluate.load(str(TOP_K_ACCURACY_METRIC), keep_in_memory=True)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 12, generator=generator)
    labels = torch.randint(0, 12, (200,), generator=generator)
    for start in range(0, 200, 64):  # in batches, as the training loop adds them
        metric.add_batch(predictions=logits[start : start + 64].topk(5).indices, references=labels[start : start + 64])
    results = metric.compute()
    assert results["accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=1, labels=range(12)))
    assert results["top5_accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5, labels=range(12)))
    assert set(metric.compute(predictions=[[3], [1]], references=[3, 2])) == {"accuracy"}


def test_default_dataset_is_scikit_learn_digits_with_a_fixed_split():
    dataset, skipped = load_image_classification_dataset(DataArguments())
    again, _ = load_image_classification_dataset(DataArguments())
    digits = load_digits()
    assert skipped == {"train": [], "validation": []}
    assert len(dataset["train"]) + len(dataset["validation"]) == 1797
    assert len(dataset["validation"]) == round(0.15 * 1797)
    assert dataset["train"].features["label"].names == [str(digit) for digit in range(10)]
    assert dataset["validation"]["label"] == again["validation"]["label"]
    # every class in validation (stratified split), every image an RGB rendering of a real scan
    assert sorted(set(dataset["validation"]["label"])) == list(range(10))
    image, label = dataset["train"][0]["image"], dataset["train"][0]["label"]
    assert image.mode == "RGB" and image.size == (8, 8)
    pixels = np.asarray(image)[:, :, 0].astype(np.float64)
    matches = [
        index
        for index in np.flatnonzero(digits.target == label)
        if np.allclose(255 - pixels, digits.images[index] * 255 / 16, atol=0.5)
    ]
    assert matches, "the image is not one of scikit-learn's scans of its digit"


def test_canvases_draw_their_digits_from_the_classification_split(monkeypatch):
    # The scans behind digits_split_indices are exactly the classifier's default training / validation images ...
    dataset, _ = load_image_classification_dataset(DataArguments())
    indices = digits_split_indices()
    scans = np.round(load_digits().images * 255 / 16)
    for name in ("train", "validation"):
        ink = np.stack([255 - np.asarray(image)[:, :, 0] for image in dataset[name]["image"]])
        np.testing.assert_array_equal(ink, scans[list(indices[name])])
    assert not set(indices["train"]) & set(indices["validation"])
    # ... and the detection / segmentation canvases take their digits from those parts only.
    threes = [int(index) for index in np.flatnonzero(load_digits().target == 3)]
    monkeypatch.setattr(detection_data, "digits_split_indices", lambda: {"train": [], "validation": threes})
    canvases = detection_data.make_digits_detection_dataset(8, canvas_size=64, digit_sizes=(16, 32), split="validation")
    categories = {category for objects in canvases["objects"] for category in objects["category"]}
    assert categories == {3}


def test_to_rgb_handles_grayscale_alpha_palette_cmyk_and_16_bit():
    gray = PIL.Image.fromarray(np.array([[0, 128], [200, 255]], dtype=np.uint8))
    np.testing.assert_array_equal(np.asarray(to_rgb(gray)), np.repeat(np.asarray(gray)[:, :, None], 3, axis=2))

    sixteen_bit = PIL.Image.fromarray(np.array([[0, 257 * 100], [65535, 30000]], dtype=np.uint16))
    assert sixteen_bit.mode == "I;16"
    expected = np.round(np.array([[0, 25700], [65535, 30000]]) / 257).astype(np.uint8)  # scaled, not clipped
    np.testing.assert_array_equal(np.asarray(to_rgb(sixteen_bit))[:, :, 1], expected)

    rgba_pixels = [[[200, 0, 0, 255], [200, 0, 0, 0]], [[0, 100, 0, 128], [0, 0, 0, 255]]]
    rgba = PIL.Image.fromarray(np.array(rgba_pixels, dtype=np.uint8))
    rgb = np.asarray(to_rgb(rgba)).astype(np.float64)
    pixels = np.asarray(rgba).astype(np.float64)
    alpha = pixels[:, :, 3:] / 255
    np.testing.assert_allclose(rgb, pixels[:, :, :3] * alpha + 255 * (1 - alpha), atol=1)  # over white

    cmyk = PIL.Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    np.testing.assert_array_equal(np.asarray(to_rgb(cmyk))[0, 0], [255, 0, 0])
    palette = gray.convert("P")
    assert to_rgb(palette).mode == "RGB"


def test_weight_decay_groups_come_from_module_types():
    model = PvtForImageClassification(tiny_config())
    decay, no_decay = weight_decay_parameter_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    expected = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert decayed == expected
    not_decayed = {id(p) for p in no_decay["params"]}
    assert decayed.isdisjoint(not_decayed) and len(decayed | not_decayed) == len(list(model.parameters()))
    stages = model.pvt.stages
    for parameter in [stage.position_embeddings for stage in stages] + [stages[-1].cls_token]:
        assert id(parameter) in not_decayed
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            assert {id(module.weight), id(module.bias)} <= not_decayed
        if getattr(module, "bias", None) is not None and isinstance(module.bias, nn.Parameter):
            assert id(module.bias) in not_decayed


# --- training runs ----------------------------------------------------------------------------------------------


def test_train_on_default_dataset_and_exported_folder_loads_back(tmp_path, capsys):
    output_dir = tmp_path / "run"
    results = train.main(
        SHORT_RUN
        + ["--max_train_samples", "48", "--max_eval_samples", "40", "--max_train_steps", "4"]
        + ["--output_dir", str(output_dir)]
    )
    printed = capsys.readouterr().out
    num_parameters = sum(p.numel() for p in AutoModelForImageClassification.from_pretrained(output_dir).parameters())
    assert (
        f"Training {num_parameters:,} parameters on 48 images (10 classes, 40 for validation, total batch size 8, 1 "
        "process): 4 optimizer steps (1 epoch, --max_train_steps), warm-up 1 step (--num_warmup_steps), learning rate "
        "0.001 (--learning_rate), schedule cosine (default)."
    ) in printed
    assert f"Saved to {output_dir}; results {output_dir / 'all_results.json'}" in printed
    assert read_results(output_dir) == results
    assert results["train_steps"] == 4 and results["eval_samples"] == 40 and results["train_samples"] == 48
    assert {"eval_accuracy", "eval_top5_accuracy"} <= set(results)
    assert (output_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((output_dir / "training_history.json").read_text())
    assert [record["step"] for record in history["steps"]] == [1, 2, 3, 4]
    assert all(np.isfinite(record["loss"]) and record["learning_rate"] >= 0 for record in history["steps"])

    export_dir = validate_export_dir(output_dir)  # the model is the output folder itself, as in Transformers' examples
    assert not (output_dir / "export").exists()
    dataset, _ = load_image_classification_dataset(DataArguments(max_train_samples=48, max_eval_samples=40))
    ranked, labels = exported_predictions(export_dir, dataset["validation"])
    assert results["eval_accuracy"] == pytest.approx((ranked[:, 0] == labels).mean())
    assert results["eval_top5_accuracy"] == pytest.approx((ranked == labels[:, None]).any(axis=1).mean())
    config = json.loads((export_dir / "config.json").read_text())
    assert config["id2label"] == {str(digit): str(digit) for digit in range(10)}
    classify = pipeline("image-classification", model=str(export_dir))
    prediction = classify(to_rgb(dataset["validation"][0]["image"]), top_k=1)[0]
    assert prediction["label"] == str(ranked[0, 0])


def write_image_folder(root) -> dict[str, int]:
    """Two classes of small images in every storage mode the loader must convert, plus one corrupt file."""
    generator = np.random.default_rng(0)
    counts = {}
    for split, per_class in (("train", 4), ("validation", 2)):
        for label in ("circle", "square"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(per_class):
                pixels = generator.integers(0, 255, (20, 20, 3), dtype=np.uint8)
                PIL.Image.fromarray(pixels).save(folder / f"rgb_{index}.png")
        counts[split] = 2 * per_class
    odd = root / "train" / "circle"
    PIL.Image.fromarray(generator.integers(0, 255, (20, 20), dtype=np.uint8)).save(odd / "grayscale.png")
    PIL.Image.fromarray(generator.integers(0, 255, (20, 20, 4), dtype=np.uint8)).save(odd / "rgba.png")
    PIL.Image.new("CMYK", (20, 20), (10, 200, 30, 5)).save(odd / "cmyk.jpg")
    PIL.Image.fromarray(generator.integers(0, 65535, (20, 20), dtype=np.uint16)).save(odd / "sixteen_bit.png")
    (odd / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    counts["train"] += 4  # the corrupt file is not counted
    return counts


def test_image_folder_with_odd_modes_a_corrupt_file_and_fine_tuning(tmp_path, capsys):
    counts = write_image_folder(tmp_path / "images")
    train_dir, validation_dir = str(tmp_path / "images" / "train"), str(tmp_path / "images" / "validation")
    folders = ["--train_dir", train_dir, "--validation_dir", validation_dir]
    with pytest.raises(DataError, match=r"cannot be read: .*corrupt\.png.*--corrupt_images skip"):
        load_image_classification_dataset(DataArguments(train_dir=train_dir, validation_dir=validation_dir))

    # Fine-tune a saved 5-class PVT on the 2 classes; learning rate 0 keeps the pretrained network as it was.
    pretrained = PvtForImageClassification(tiny_config(image_size=32))
    pretrained.save_pretrained(tmp_path / "pretrained")
    output_dir = tmp_path / "run"
    arguments = folders + ["--model_name_or_path", str(tmp_path / "pretrained"), "--corrupt_images", "skip"]
    arguments += ["--per_device_train_batch_size", "4", "--max_train_steps", "2", "--output_dir", str(output_dir)]
    with pytest.raises(DataError, match=r"classifies 5 classes but the data has 2 .*--ignore_mismatched_sizes"):
        train.main(arguments)
    capsys.readouterr()
    results = train.main(arguments + ["--ignore_mismatched_sizes", "--learning_rate", "0"])
    assert results["unreadable_images_skipped"] == 1
    assert results["train_samples"] == counts["train"] and results["eval_samples"] == counts["validation"]
    corrupt = tmp_path / "images" / "train" / "circle" / "corrupt.png"
    assert f"Left out 1 unreadable image(s) (--corrupt_images skip): train: {corrupt} (" in capsys.readouterr().out
    assert (output_dir / "skipped_images.txt").read_text().startswith(f"train: {corrupt} (UnidentifiedImageError")
    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "circle", "1": "square"}
    exported = load_file(output_dir / "model.safetensors")
    assert exported["classifier.weight"].shape == (2, 64)
    for name, tensor in pretrained.state_dict().items():
        if not name.startswith("classifier."):
            torch.testing.assert_close(exported[name], tensor, atol=0, rtol=0)
    dataset, _ = load_image_classification_dataset(
        DataArguments(train_dir=train_dir, validation_dir=validation_dir, corrupt_images="skip")
    )
    modes = {image.mode for image in dataset["train"]["image"]}
    assert {"L", "RGBA", "CMYK"} <= modes and modes & {"I;16", "I"}  # converted only when used
    assert {to_rgb(image).mode for image in dataset["train"]["image"]} == {"RGB"}


def write_digits_folder(root, per_class: dict[str, int]) -> dict[str, str]:
    """scikit-learn's digit scans as PNG files, one subfolder per class, as a user's own photos would be."""
    digits = load_digits()
    folders, taken = {}, {label: 0 for label in range(10)}
    for split, count in per_class.items():
        for label in range(10):
            folder = root / split / f"digit_{label}"
            folder.mkdir(parents=True)
            indices = np.flatnonzero(digits.target == label)[taken[label] : taken[label] + count]
            taken[label] += count
            for index in indices:
                ink = np.round(digits.images[index] * 255 / 16).astype(np.uint8)
                PIL.Image.fromarray(255 - ink).save(folder / f"{index}.png")
        folders[split] = str(root / split)
    return folders


def test_default_flags_learn_on_a_folder_of_digits(tmp_path, capsys):
    # Everything at its default (learning rate, warm-up, schedule, augmentations, weight decay, label smoothing)
    # except the network's size, the image size, the batch size and the length of the run.
    folders = write_digits_folder(tmp_path / "digits", {"train": 60, "validation": 15})
    arguments = TINY_MODEL + ["--train_dir", folders["train"], "--validation_dir", folders["validation"]]
    arguments += ["--per_device_train_batch_size", "32", "--max_train_steps", "40"]
    results = train.main(arguments + ["--output_dir", str(tmp_path / "run")])
    printed = capsys.readouterr().out
    assert "learning rate 0.0005 (default from scratch: DeiT's 5e-4 x 32/512 = " in printed
    assert "warm-up 4 steps (default: min(5 epochs, 10% of the steps))" in printed
    assert (
        "Augmentations: random resized crops (scale 0.35-1), flips (0.5, the default: --horizontal_flip_probability 0 "
        "if a flip changes the class), label smoothing 0.1; evaluation: shorter side resized to 36, centre crop 32 "
        "(--eval_crop_ratio 1 keeps the whole image)." in printed
    )
    # Chance is 10%. Measured 0.487 (600 training PNGs, 150 for validation; 83 s with the 2 cores shared 6 ways). With
    # DeiT's augmentations or its learning rate rule alone (3e-5 at batch 32), such runs stay near chance.
    assert results["eval_accuracy"] >= 0.3, results


def test_bad_inputs_stop_with_clear_messages(tmp_path):
    output_dir = ["--output_dir", str(tmp_path / "run")]
    with pytest.raises(DataError, match=r"no column 'img'; its columns are \['image', 'label'\].*--image_column_name"):
        train.main(SHORT_RUN + output_dir + ["--image_column_name", "img"])
    with pytest.raises(DataError, match=r"'train' split is empty"):
        train.main(SHORT_RUN + output_dir + ["--max_train_samples", "0"])
    with pytest.raises(DataError, match=r"'validation' split is empty"):
        train.main(SHORT_RUN + output_dir + ["--max_eval_samples", "0"])
    with pytest.raises(PushError, match=r"--push_to_hub needs --hub_model_id"):  # before any training
        train.main(SHORT_RUN + output_dir + ["--push_to_hub"])
    with pytest.raises(PushError, match=r"needs the network, but HF_HUB_OFFLINE is set"):
        train.main(SHORT_RUN + output_dir + ["--push_to_hub", "--hub_model_id", "my-org/pvt-digits"])

    # A Hub-style dataset (parquet files) whose validation split marks unlabelled examples with -1.
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    blank = PIL.Image.new("RGB", (8, 8))
    data_dir = tmp_path / "hub_style"
    (data_dir / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"image": [blank] * 6, "label": [0, 1, 2, 0, 1, 2]}, features=features).to_parquet(
        str(data_dir / "data" / "train-00000-of-00001.parquet")
    )
    datasets.Dataset.from_dict({"image": [blank] * 3, "label": [0, -1, 2]}, features=features).to_parquet(
        str(data_dir / "data" / "validation-00000-of-00001.parquet")
    )
    out_of_range = r"1 label\(s\) of the 'validation' split are outside 0\.\.2.*example 1 has label -1"
    with pytest.raises(DataError, match=out_of_range):
        train.main(SHORT_RUN + output_dir + ["--dataset_name", str(data_dir)])


def test_flag_mistakes_stop_before_any_data_is_loaded(tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded before the flags were checked")

    monkeypatch.setattr(classification, "load_image_classification_dataset", no_loading)
    output_dir = ["--output_dir", str(tmp_path / "run")]
    with pytest.raises(
        UsageError,
        match=r"--variant 'pvt_small' is not a PVT variant: did you mean 'pvt-small'\? "
        r"Choose one of pvt-tiny, pvt-small, pvt-medium, pvt-large\.",
    ):
        train.main(output_dir + ["--variant", "pvt_small"])
    with pytest.raises(UsageError, match=r"--max_train_steps must be greater than 0, got 0"):
        train.main(output_dir + ["--max_steps", "0"])  # Trainer's name is an alias
    with pytest.raises(UsageError, match=r"--per_device_train_batch_size must be greater than 0, got -1"):
        train.main(output_dir + ["--per_device_train_batch_size", "-1"])
    warmup_too_long = r"warm-up \(20 steps, --num_warmup_steps\) is at least as long as the whole run \(20 optimizer"
    with pytest.raises(UsageError, match=warmup_too_long):
        train.main(output_dir + ["--max_train_steps", "20", "--num_warmup_steps", "20"])
    with pytest.raises(DataError, match=r"--train_dir .*missing does not exist"):
        train.main(output_dir + ["--train_dir", str(tmp_path / "missing")])
    flat = tmp_path / "flat"
    flat.mkdir()
    PIL.Image.new("RGB", (8, 8)).save(flat / "cat_1.png")
    PIL.Image.new("RGB", (8, 8)).save(flat / "dog_1.png")
    with pytest.raises(
        DataError,
        match=r"(?s)images outside any class subfolder \(cat_1.png, dog_1.png.*one subfolder "
        r"per class.*flat/\n    cat/\n      0001.jpg",
    ):
        train.main(output_dir + ["--train_dir", str(flat)])
    assert not (tmp_path / "run").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    output_dir = tmp_path / "run"
    arguments = TINY_MODEL + ["--per_device_train_batch_size", "8"]
    arguments += ["--max_train_samples", "48", "--max_eval_samples", "8"]
    arguments += ["--learning_rate", "1e30", "--num_warmup_steps", "0", "--max_train_steps", "6"]
    arguments += ["--checkpointing_steps", "1", "--output_dir", str(output_dir)]
    with pytest.raises(NonFiniteLossError) as stopped:
        train.main(arguments)
    history = json.loads((output_dir / "training_history.json").read_text())
    good_steps = len(history["steps"])
    assert 1 <= good_steps < 6 and all(np.isfinite(record["loss"]) for record in history["steps"])
    last_good = output_dir / f"step_{good_steps}"
    assert f"optimizer step {good_steps + 1}" in str(stopped.value) and str(last_good) in str(stopped.value)
    checkpoints = [path.name for path in list_checkpoints(output_dir)]
    assert checkpoints == [f"step_{step}" for step in range(1, good_steps + 1)]
    weights = load_file(last_good / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "all_results.json").exists()

    # The run is not silently mixed with a new one, and cannot resume with a different batch layout.
    with pytest.raises(
        UsageError, match=r"already holds .*checkpoints \(step_1\).*Continue it with --resume_from_checkpoint latest"
    ):
        train.main(arguments)
    with pytest.raises(CheckpointError, match=r"per_device_train_batch_size: 8 in the checkpoint, 4 now"):
        train.main(arguments + ["--resume_from_checkpoint", "latest", "--per_device_train_batch_size", "4"])


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    # The DeiT augmentations on (RandAugment, erasing, MixUp/CutMix, drop path): resuming must restore the RNG.
    arguments = SHORT_RUN + DEIT_AUGMENTATION
    arguments += ["--max_train_samples", "48", "--max_eval_samples", "24", "--max_train_steps", "12"]
    arguments += ["--checkpointing_steps", "3", "--seed", "7"]
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = train.main(arguments + ["--output_dir", str(reference_dir)])

    command = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), *arguments, "--output_dir", str(killed_dir)]
    process = subprocess.Popen(command, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (killed_dir / "step_3" / "training_state.json").exists():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the run never wrote its first checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed_dir / "all_results.json").exists()
    assert all((path / "training_state.json").is_file() for path in killed_dir.glob("step_*"))

    resumed = train.main(arguments + ["--output_dir", str(killed_dir), "--resume_from_checkpoint", "latest"])
    assert resumed["train_steps"] == reference["train_steps"] == 12
    for name in ("epoch", "eval_samples", "train_samples"):
        assert resumed[name] == reference[name]
    for name in ("eval_accuracy", "eval_top5_accuracy", "train_loss"):
        assert resumed[name] == pytest.approx(reference[name], abs=1e-6)
    reference_history = json.loads((reference_dir / "training_history.json").read_text())
    resumed_history = json.loads((killed_dir / "training_history.json").read_text())
    assert [r["step"] for r in resumed_history["steps"]] == list(range(1, 13))
    np.testing.assert_allclose(
        [r["loss"] for r in resumed_history["steps"]], [r["loss"] for r in reference_history["steps"]], atol=1e-6
    )
    reference_weights = load_file(reference_dir / "model.safetensors")
    resumed_weights = load_file(killed_dir / "model.safetensors")
    for name, tensor in reference_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, atol=1e-6, rtol=0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_with_accelerate_launch(tmp_path):
    # `accelerate launch --cpu --num_processes 2` starts a single process unless MPI is set up (Accelerate's
    # multi-CPU launcher is mpirun, huggingface/accelerate#2741); torchrun-style launching plus
    # ACCELERATE_USE_CPU=1 gives two gloo processes on one CPU machine.
    output_dir = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    arguments = TINY_MODEL + ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4"]
    arguments += ["--max_train_samples", "40", "--max_eval_samples", "25", "--num_train_epochs", "1"]
    arguments += ["--checkpointing_steps", "epoch", "--output_dir", str(output_dir)]
    completed = subprocess.run(
        launch + [str(REPO_ROOT / "scripts" / "train.py"), *arguments],
        env={**SUBPROCESS_ENV, "ACCELERATE_USE_CPU": "1"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "total batch size 8, 2 processes)" in completed.stdout
    results = read_results(output_dir)
    assert results["train_steps"] == 40 // (2 * 4)  # each process sees half of every global batch
    assert sorted(path.name for path in (output_dir / "epoch_0").glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    # gather_for_metrics counted each of the 25 validation images once (the shards were padded to 28)
    dataset, _ = load_image_classification_dataset(DataArguments(max_train_samples=40, max_eval_samples=25))
    ranked, labels = exported_predictions(output_dir, dataset["validation"])
    assert results["eval_accuracy"] == pytest.approx((ranked[:, 0] == labels).mean())
    assert results["eval_top5_accuracy"] == pytest.approx((ranked == labels[:, None]).any(axis=1).mean())


def validation_loss(model, image_processor, split) -> float:
    """Cross-entropy of `model` on every image of `split`, computed here, independently of Trainer."""
    pixel_values = image_processor([to_rgb(image) for image in split["image"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model.eval()(pixel_values=pixel_values).logits
    return torch.nn.functional.cross_entropy(logits, torch.tensor(split["label"])).item()


def test_trainer_fine_tunes_saves_once_and_reloads_with_the_same_logits(tmp_path, capsys):
    # A saved 10-class PVT (random weights) fine-tuned on the digits with Trainer, default learning rate (5e-5).
    pretrained = PvtForImageClassification(tiny_config(image_size=32, num_labels=10))
    pretrained.save_pretrained(tmp_path / "pretrained")
    output_dir = tmp_path / "trainer"
    arguments = ["--model_name_or_path", str(tmp_path / "pretrained"), "--output_dir", str(output_dir)]
    arguments += ["--max_train_samples", "160", "--max_eval_samples", "64", "--per_device_train_batch_size", "16"]
    arguments += ["--max_train_steps", "20", "--report_to", "none", "--use_cpu", "--seed", "3"]
    trainer, metrics = finetune_with_trainer.finetune(*finetune_with_trainer.parse_args(arguments))
    # Saved once, as the export: checkpoints (with the optimizer state) only when --save_strategy asks for them.
    assert not list(output_dir.glob("checkpoint-*"))
    assert trainer.state.global_step == 20 and {"eval_accuracy", "eval_top5_accuracy"} <= set(metrics)
    printed = capsys.readouterr().out
    assert "images (10 classes, 64 for validation, with Trainer, total batch size 16): 20 optimizer steps" in printed
    assert "learning rate 5e-05 (default for fine-tuning)" in printed
    assert f"Saved to {output_dir}; results {output_dir / 'all_results.json'}" in printed

    # The weights moved and the validation loss fell (measured independently of Trainer's evaluation).
    dataset, _ = load_image_classification_dataset(DataArguments(max_train_samples=160, max_eval_samples=64))
    processor = AutoImageProcessor.from_pretrained(output_dir)
    reloaded = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    before = validation_loss(pretrained, processor, dataset["validation"])
    after = validation_loss(reloaded, processor, dataset["validation"])
    assert after == pytest.approx(metrics["eval_loss"], abs=1e-4)
    assert after < before - 0.01, (before, after)  # measured: 2.3237 -> 2.2996 (10 steps: 2.3103)
    trained = reloaded.state_dict()
    moved = [name for name, tensor in pretrained.state_dict().items() if not torch.equal(trained[name], tensor)]
    assert len(moved) == len(trained)

    # One model in --output_dir itself (no export/ copy, no pickled training_args), loading as the trained one.
    validate_export_dir(output_dir)
    assert not (output_dir / "export").exists() and not list(output_dir.glob("*.bin"))
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(pixel_values=pixel_values.to(trainer.model.device)).logits.cpu()
        torch.testing.assert_close(reloaded(pixel_values=pixel_values).logits, expected, atol=1e-6, rtol=0)


def test_trainer_help_shows_our_flags_first_and_summarises_trainers(capsys):
    with pytest.raises(SystemExit) as finished:
        finetune_with_trainer.parse_args(["--help"])
    assert finished.value.code == 0
    text = capsys.readouterr().out
    assert text.index("--train_dir") < text.index("Trainer's flags") and "--help_trainer" in text
    # Ours in full (about 140 lines), Trainer's summarised: its own help is over 600 lines.
    assert "--adam_beta1" not in text and len(text.splitlines()) < 170
    with pytest.raises(SystemExit):
        finetune_with_trainer.parse_args(["--help_trainer"])
    assert "--adam_beta1" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: an unknown flag is named, not ignored
        finetune_with_trainer.parse_args(["--not_a_flag", "1"])
    assert "--not_a_flag" in capsys.readouterr().err
    _, _, training_args, given, _ = finetune_with_trainer.parse_args(["--max_train_steps", "7", "--output_dir", "x"])
    assert training_args.max_steps == 7 and given == {"--max_steps", "--output_dir"}


def test_demo_reloads_its_model_and_reports_the_training_accuracy(tmp_path, capsys):
    accuracy = demo.main(
        ["--output_dir", str(tmp_path / "demo"), "--num_train_epochs", "1", "--required_accuracy", "0"]
    )
    results = read_results(tmp_path / "demo")
    assert results["train_steps"] == 24 and results["eval_samples"] == 270  # one epoch of the 1,527 digits
    assert accuracy == pytest.approx(results["eval_accuracy"])  # the reloaded model, as evaluated in training
    # A short run on the embedded digits learns: chance is 10%, measured 74.1% after these 24 steps.
    assert accuracy >= 0.5
    assert f"Validation accuracy of the reloaded model: {accuracy:.2%}" in capsys.readouterr().out
    demo.check_accuracy(0.97, 0.97)
    with pytest.raises(demo.DemoAccuracyError, match=r"validation accuracy is 96\.90%, below the required 97%"):
        demo.check_accuracy(0.969, 0.97)


def test_sequence_reduction_keeps_the_papers_grid_and_never_collapses_small_images():
    from configuration_pvt import PvtConfig

    paper = PvtConfig().sequence_reduction_ratios  # the paper's Table 1: R = 8, 4, 2, 1 at 224 px
    assert classification.sequence_reduction_for(224, [4, 2, 2, 2]) == paper == [8, 4, 2, 1]
    assert classification.sequence_reduction_for(800, [4, 2, 2, 2]) == paper  # detection sizes keep the paper's R
    assert classification.sequence_reduction_for(32, [4, 2, 2, 2]) == [1, 1, 1, 1]
    assert classification.sequence_reduction_for(64, [4, 2, 2, 2]) == [2, 1, 1, 1]
    # What the rule is for: every stage's keys and values keep min(7x7, the stage's grid) positions.
    for image_size, strides in ((32, [4, 2, 2, 2]), (32, [2, 2, 2, 2]), (96, [4, 2, 2, 2]), (224, [4, 2, 2, 2])):
        grid = image_size
        for stride, ratio in zip(strides, classification.sequence_reduction_for(image_size, strides)):
            grid //= stride
            assert grid // ratio >= min(grid, 7)
    built, _ = classification.build_model(classification.ModelArguments(image_size=32, patch_sizes=[2, 2, 2, 2]), ["a"])
    assert built.config.sequence_reduction_ratios == [2, 1, 1, 1] and built.config.strides == [2, 2, 2, 2]
    given, _ = classification.build_model(
        classification.ModelArguments(image_size=32, sequence_reduction_ratios=[4, 2, 1, 1]), ["a"]
    )
    assert given.config.sequence_reduction_ratios == [4, 2, 1, 1]


def test_random_crop_padding_shifts_the_resized_image_without_rescaling():
    from pvt_tools.training.data import AugmentationArguments, build_train_transform

    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))
    augmentation = AugmentationArguments(random_crop_padding=3, horizontal_flip_probability=0.0).for_run(3)
    transform = build_train_transform(32, [0.0] * 3, [1.0] * 3, augmentation)  # identity normalisation
    resized = torch.from_numpy(np.array(image.resize((32, 32), PIL.Image.BICUBIC))).permute(2, 0, 1).float() / 255
    padded = torch.nn.functional.pad(resized[None], (3, 3, 3, 3), mode="replicate")[0]
    windows = {(top, left): padded[:, top : top + 32, left : left + 32] for top in range(7) for left in range(7)}
    offsets = set()
    for seed in range(20):
        torch.manual_seed(seed)
        shifted = transform(image)
        matches = [offset for offset, window in windows.items() if torch.allclose(shifted, window, atol=2 / 255)]
        assert matches, "the output is no window of the edge-padded, resized image"
        offsets.add(matches[0])
    assert len(offsets) > 5  # it does shift
    assert "random shifts (pad 3 and crop)" in augmentation.describe()
    with pytest.raises(ValueError, match="--random_crop_padding"):
        AugmentationArguments(no_augmentation=True, random_crop_padding=2).for_run(3)


def test_eval_crop_ratio_one_keeps_the_whole_small_image():
    from transformers import PvtImageProcessor

    from pvt_tools.hub import official_eval_image_processor

    image = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8))
    whole = PvtImageProcessor(
        size={"height": 32, "width": 32}, resample=PIL.Image.BICUBIC, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )  # fmt: skip
    ours = official_eval_image_processor(32, crop_ratio=1.0)
    np.testing.assert_allclose(
        ours(image, return_tensors="np")["pixel_values"], whole(image, return_tensors="np")["pixel_values"], atol=1e-6
    )
    cropped = official_eval_image_processor(32)(image, return_tensors="np")["pixel_values"]
    assert not np.allclose(cropped, whole(image, return_tensors="np")["pixel_values"], atol=1e-2)
    with pytest.raises(UsageError, match="--eval_crop_ratio must be in"):
        classification.ModelArguments(eval_crop_ratio=1.5)
    # By default evaluation sees the scale training saw: a crop after zooming crops, the whole image after shifts.
    from pvt_tools.training.data import AugmentationArguments

    assert classification.eval_crop_ratio_for(AugmentationArguments()) == 224 / 256
    assert classification.eval_crop_ratio_for(AugmentationArguments(random_crop_padding=2)) == 1.0
    assert classification.eval_crop_ratio_for(AugmentationArguments(no_augmentation=True)) == 1.0
