"""Inputs tried in bulk: seeded generators (the same cases every run; a failure names its case) over output
folders, flag values, repo ids, model configurations, input sizes and dtypes, and damaged checkpoints, config.json
files and images. Every case must work or give the documented one-line error: no other exception, nothing written.
Then the training-time randomness (dropout, stochastic depth, label smoothing, MixUp, CutMix) against its
definition. Each generator's case count is its CASES constant (the closing note of issue 20 adds them up)."""

import io
import json
import math
import os
import random
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import nn

from configuration_pvt import PvtConfig
from modeling_pvt import PvtDropPath, PvtForImageClassification
from pvt_tools.commands import train, train_detection
from pvt_tools.official import OfficialCheckpointError, load_official_checkpoint
from pvt_tools.training import classification, dense
from pvt_tools.training.data import (
    DataArguments,
    DataError,
    build_batch_mixing,
    image_problem,
    load_image_classification_dataset,
    to_rgb,
)
from pvt_tools.usage import FINISHED_WORK, UsageError, check_model_reference, check_output_folder
from tests.conftest import tiny_config

FOLDER_CASES = 400
FLAG_CASES = 300
REPO_ID_CASES = 600
CONFIG_CASES = 120
INPUT_CASES = 150
CHECKPOINT_CASES = 160
CONFIG_FILE_CASES = 80
IMAGE_CASES = 300


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


def snapshot(folder) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None for path in folder.rglob("*")}


# --- the output folder --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", range(4))
def test_output_folder_rule_over_generated_folders(chunk, tmp_path):
    """Random folder contents x flags against the rule, written out independently here: refuse iff finished work
    or checkpoints are there and neither resuming (with a checkpoint) nor overwriting was asked; suggest resuming
    iff there is a checkpoint; never change the folder."""
    rng = random.Random(20 + chunk)
    for case in range(FOLDER_CASES // 4):
        folder = tmp_path / f"case{case}"
        finished = rng.sample(FINISHED_WORK, rng.randint(0, 2)) if rng.random() < 0.6 else []
        complete, incomplete = [], []
        exists = rng.random() < 0.9
        if exists:
            folder.mkdir()
            for name in finished:
                (folder / name).mkdir() if name == "onnx" else (folder / name).write_text("x")
            for name in rng.sample(["step_3", "epoch_0", "checkpoint-8", "step_12"], rng.randint(0, 2)):
                (folder / name).mkdir()
                if rng.random() < 0.7:
                    marker = "trainer_state.json" if name.startswith("checkpoint") else "training_state.json"
                    (folder / name / marker).write_text("{}")
                    complete.append(name)
                else:
                    incomplete.append(name)
            if rng.random() < 0.3:
                (folder / "notes.txt").write_text("mine")
            if rng.random() < 0.1:
                (folder / "export").mkdir()
                (folder / "export" / "config.json").write_text("{}")
                finished.append("export")
        else:
            finished = []
        overwrite = rng.random() < 0.3
        resume = rng.choice([None, None, "latest"])
        resumable = rng.random() < 0.8
        overwrite_flag = rng.choice(["--overwrite_output_dir", None])
        checkpoints = complete
        before = snapshot(folder) if exists else None
        case_name = f"case {chunk}/{case}: {finished=} {complete=} {incomplete=} {overwrite=} {resume=} {resumable=}"
        refuse = bool(finished or checkpoints) and not overwrite and (resume is None or not checkpoints)
        try:
            found = check_output_folder(
                folder,
                overwrite=overwrite,
                resume_from_checkpoint=resume,
                overwrite_flag=overwrite_flag,
                resumable=resumable,
            )
        except UsageError as error:
            message = one_line(error)
            assert refuse, case_name
            suggests_resuming = "Continue it with --resume_from_checkpoint latest" in message
            assert suggests_resuming == (resumable and bool(checkpoints)), case_name
            assert ("eplace it with --overwrite_output_dir" in message) == bool(overwrite_flag), case_name
            assert "nothing was changed" in message
        else:
            assert not refuse, case_name
            assert sorted(found) == sorted(checkpoints), case_name
        assert (snapshot(folder) if exists else None) == before and folder.exists() == exists, case_name


# --- flags --------------------------------------------------------------------------------------------------------

COUNTS = ("per_device_train_batch_size", "per_device_eval_batch_size", "num_train_epochs", "max_train_steps")


@pytest.mark.parametrize("command", ["pvt-train", "pvt-train-detection"])
def test_count_flags_over_generated_values(command, tmp_path):
    """Random values of the counts both commands share: accepted iff all > 0; else the first bad one, named in the
    same words by both."""
    rng = random.Random(7)
    for case in range(FLAG_CASES // 2):
        values = {name: rng.choice([-3, -1, 0, 1, 2, 64]) for name in COUNTS}
        values["gradient_accumulation_steps"] = rng.choice([-1, 0, 1, 4])
        argv = [item for name, value in values.items() for item in (f"--{name}", str(value))]
        argv += ["--output_dir", str(tmp_path / "never")]
        bad = [(name, value) for name, value in values.items() if value <= 0]
        expected = f"--{bad[0][0]} must be greater than 0, got {bad[0][1]}." if bad else None
        try:
            if command == "pvt-train":
                train.parse_args(argv)
            else:
                dense.check_dense_run(train_detection.parse_args(argv))
        except UsageError as error:
            assert one_line(error) == expected, (case, values)
        else:
            assert expected is None, (case, values)
    assert not (tmp_path / "never").exists()


def test_model_references_over_generated_values(tmp_path):
    """Existing paths pass; anything else passes only as a well-formed Hub repo id (huggingface_hub's own
    validate_repo_id is the reference) that does not look like a path; every refusal is one line naming the flag
    and the value."""
    rng = random.Random(3)
    (tmp_path / "model").mkdir()
    (tmp_path / "weights.pth").write_bytes(b"x")
    alphabet = "abz09-_./~ @"
    for case in range(REPO_ID_CASES):
        roll = rng.random()
        if roll < 0.1:
            value = str(rng.choice([tmp_path / "model", tmp_path / "weights.pth"]))
        elif roll < 0.2:
            value = str(tmp_path / "missing" / "".join(rng.choices("abc", k=4)))
        else:
            value = "".join(rng.choices(alphabet, k=rng.randint(1, 14)))
            if rng.random() < 0.05:
                value = "a" * rng.randint(90, 100)
        exists = os.path.exists(os.path.expanduser(value))  # "~", ".", ".." exist too
        try:
            validate_repo_id(value)
            well_formed = True
        except HFValidationError:
            well_formed = False
        path_like = value.startswith((".", "/", "~")) or value.count("/") > 1
        expected_pass = exists or (well_formed and not path_like)
        try:
            check_model_reference("--model_name_or_path", value)
        except UsageError as error:
            message = one_line(error)
            assert not expected_pass, (case, value)
            assert message.startswith(f"--model_name_or_path {value}: ")
        else:
            assert expected_pass, (case, value, well_formed)


# --- configurations and inputs ------------------------------------------------------------------------------------


def test_model_configurations_over_generated_values():
    """Random PVT configurations: PvtConfig refuses with a ValueError (or huggingface_hub's strict-dataclass type
    error for a wrong type), or the model builds and classifies an image of its size."""
    from huggingface_hub.errors import StrictDataclassError

    rng = random.Random(11)
    built = 0
    for case in range(CONFIG_CASES):
        stages = rng.choice([1, 2, 4, 4])
        length = stages if rng.random() < 0.85 else stages + rng.choice([-1, 1])
        settings = {
            "num_encoder_blocks": stages,
            "hidden_sizes": [rng.choice([0, 8, 12, 16]) for _ in range(length)],
            "depths": [rng.choice([0, 1, 1, 2]) for _ in range(stages)],
            "num_attention_heads": [rng.choice([1, 1, 2, 3]) for _ in range(stages)],
            "mlp_ratios": [rng.choice([1, 2, 4]) for _ in range(stages)],
            "sequence_reduction_ratios": [rng.choice([1, 2]) for _ in range(stages - 1)] + [rng.choice([1, 1, 2])],
            "patch_sizes": [rng.choice([2, 4]) for _ in range(stages)],
            "image_size": rng.choice([0, 32, 48, 64]),
            "num_labels": rng.choice([1, 3]),
        }
        settings["strides"] = settings["patch_sizes"]
        try:
            config = PvtConfig(**settings)
        except (ValueError, StrictDataclassError) as error:
            assert str(error), case
            continue
        try:
            model = PvtForImageClassification(config).eval()
            size = config.image_size
            logits = model(torch.rand(2, 3, size, size)).logits
        except ValueError as error:  # documented: e.g. an image too small for the strides
            assert "pixel_values" in str(error), (case, settings, error)
            continue
        assert logits.shape == (2, config.num_labels) and torch.isfinite(logits).all(), (case, settings)
        built += 1
    assert built >= 10  # the generator reaches working configurations too


def test_input_sizes_and_dtypes_over_generated_values():
    """Random batch sizes, sides, channel counts, ranks and dtypes: logits of the right shape, or a ValueError
    naming pixel_values and the fix (never a RuntimeError from deep inside a convolution)."""
    rng = random.Random(5)
    model = PvtForImageClassification(tiny_config(num_labels=3)).eval()
    worked = 0
    for case in range(INPUT_CASES):
        batch = rng.choice([1, 2, 3])
        height, width = rng.choice([1, 16, 31, 32, 33, 64, 97]), rng.choice([1, 32, 40, 64])
        channels = rng.choice([1, 3, 3, 3, 3, 4])
        dtype = rng.choice([torch.float32] * 4 + [torch.float64, torch.bfloat16, torch.uint8, torch.int64])
        shape = rng.choice(
            [(batch, channels, height, width), (channels, height, width), (1, batch, channels, height, width)]
        )
        pixel_values = (torch.rand(shape) * 255).to(dtype)
        valid = len(shape) == 4 and channels == 3 and min(height, width) >= 32 and dtype == torch.float32
        with torch.no_grad():
            try:
                logits = model(pixel_values).logits
            except ValueError as error:
                assert not valid and "pixel_values" in one_line(error), (case, shape, dtype)
                continue
        assert valid, (case, shape, dtype)
        assert logits.shape == (batch, 3) and torch.isfinite(logits).all()
        worked += 1
    assert worked >= 5  # the generator reaches valid inputs too


# --- damaged files ------------------------------------------------------------------------------------------------


def damaged(data: bytes, rng: random.Random) -> bytes:
    """Truncated, bit-flipped, or both."""
    data = bytearray(data)
    kind = rng.choice(["truncate", "flip", "flip", "both"])
    if kind in ("flip", "both"):
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
    if kind in ("truncate", "both"):
        data = data[: rng.randrange(len(data))]
    return bytes(data)


def test_damaged_and_wrong_format_checkpoints(tmp_path):
    """Truncated and bit-flipped .pth files (zip and legacy format), and files of other formats: the tensors come
    back, or an OfficialCheckpointError in one line that never advises loading with weights_only=False."""
    rng = random.Random(13)
    state_dict = {"patch_embed1.proj.weight": torch.randn(4, 3, 2, 2), "head.bias": torch.randn(5)}
    sources = []
    for legacy in (False, True):
        buffer = io.BytesIO()
        torch.save({"model": state_dict}, buffer, _use_new_zipfile_serialization=not legacy)
        sources.append(buffer.getvalue())
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(CHECKPOINT_CASES):
        path = tmp_path / f"case{case}.pth"
        path.write_bytes(damaged(sources[case % 2], rng))
        try:
            loaded = load_official_checkpoint(path)
        except OfficialCheckpointError as error:
            message = str(error)
            assert "weights_only=False" not in message and "set to `False`" not in message, (case, message)
            assert "\n" not in message, (case, message)
            outcomes["refused"] += 1
            continue
        assert set(loaded) == set(state_dict) and all(torch.is_tensor(value) for value in loaded.values()), case
        outcomes["loaded"] += 1
    assert outcomes["refused"] > CHECKPOINT_CASES // 2, outcomes

    from safetensors.torch import save_file

    save_file(state_dict, tmp_path / "weights.safetensors")
    wrong_formats = {
        "safetensors.pth": (tmp_path / "weights.safetensors").read_bytes(),
        "config.pth": json.dumps({"model_type": "pvt_v1"}).encode(),
        "empty.pth": b"",
        "numpy.pth": (lambda buffer: (np.save(buffer, np.zeros(3)), buffer.getvalue())[1])(io.BytesIO()),
        "other-zip.pth": (lambda buffer: (zipfile.ZipFile(buffer, "w").close(), buffer.getvalue())[1])(io.BytesIO()),
    }
    for name, data in wrong_formats.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(OfficialCheckpointError) as refused:
            load_official_checkpoint(tmp_path / name)
        assert "\n" not in str(refused.value) and "weights_only=False" not in str(refused.value), name
    for name, value in {"tensor.pth": torch.zeros(2), "list.pth": [torch.zeros(2)], "mixed.pth": {"a": 1}}.items():
        torch.save(value, tmp_path / name)
        with pytest.raises(OfficialCheckpointError, match="not a (state dict|PVT checkpoint)|not tensors"):
            load_official_checkpoint(tmp_path / name)


def test_damaged_config_files(tmp_path):
    """A model folder whose config.json is truncated, bit-flipped or holds wrong values: --model_name_or_path is
    accepted (the config is usable) or refused in one line naming the flag; nothing else escapes."""
    rng = random.Random(17)
    folder = tmp_path / "model"
    PvtForImageClassification(tiny_config()).save_pretrained(folder)
    original = (folder / "config.json").read_bytes()
    fields = json.loads(original)
    accepted = refused = 0
    for case in range(CONFIG_FILE_CASES):
        if case % 2:
            data = damaged(original, rng)
        else:
            changed = dict(fields)
            key = rng.choice(
                ["hidden_sizes", "depths", "num_attention_heads", "image_size", "model_type", "mlp_ratios"]
            )
            changed[key] = rng.choice([None, "x", -1, 0, [], [1.5], [0, 0, 0, 0], {"a": 1}, "pvt"])
            data = json.dumps(changed).encode()
        (folder / "config.json").write_bytes(data)
        try:
            classification.check_pretrained_model(str(folder))
        except UsageError as error:
            assert one_line(error).startswith(f"--model_name_or_path {folder}: "), case
            refused += 1
        else:
            accepted += 1
    assert refused > CONFIG_FILE_CASES // 2 and accepted + refused == CONFIG_FILE_CASES


def image_bytes(format: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (24, 20, 3 if mode == "RGB" else 1), dtype=np.uint8)
    PIL.Image.fromarray(pixels.squeeze()).convert(mode).save(buffer, format=format)
    return buffer.getvalue()


def test_damaged_images():
    """Truncated and bit-flipped PNG, JPEG, GIF and BMP files: image_problem says why one cannot be read (it never
    raises), and every image it passes converts to RGB."""
    rng = random.Random(19)
    sources = [image_bytes("PNG"), image_bytes("JPEG"), image_bytes("GIF", "L"), image_bytes("BMP")]
    readable = 0
    for case in range(IMAGE_CASES):
        data = damaged(sources[case % len(sources)], rng)
        problem = image_problem({"bytes": data, "path": None})
        assert isinstance(problem, str), case
        if not problem:
            with PIL.Image.open(io.BytesIO(data)) as opened:
                assert to_rgb(opened).mode == "RGB"
            readable += 1
    assert 0 < readable < IMAGE_CASES


def test_a_folder_with_damaged_images_is_refused_or_skipped(tmp_path):
    """--corrupt_images error names the damaged files (DataError); skip leaves exactly those out."""
    rng = random.Random(23)
    good, broken = image_bytes("PNG"), image_bytes("PNG")[:40]
    damaged_names = set()
    for label in ("cat", "dog"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for index in range(6):
            bad = rng.random() < 0.3
            (tmp_path / "train" / label / f"{index}.png").write_bytes(broken if bad else good)
            if bad:
                damaged_names.add(f"{label}/{index}.png")
    with pytest.raises(DataError) as refused:
        load_image_classification_dataset(DataArguments(train_dir=str(tmp_path / "train"), train_val_split=0.25))
    assert any(name in str(refused.value) for name in damaged_names)
    dataset, skipped = load_image_classification_dataset(
        DataArguments(train_dir=str(tmp_path / "train"), train_val_split=0.25, corrupt_images="skip")
    )
    left_out = {entry.split(" (")[0].split("train/")[-1] for entries in skipped.values() for entry in entries}
    assert left_out == damaged_names
    assert sum(len(split) for split in dataset.values()) == 12 - len(damaged_names)


# --- training-time randomness against its definition --------------------------------------------------------------


def test_dropout_in_the_model_is_inverted_dropout_with_the_configured_rate():
    """Every dropout of the network, in training: each element kept with probability 1 - p and scaled by 1/(1-p),
    with p from the config; in evaluation the identity."""
    probability = 0.3
    model = PvtForImageClassification(tiny_config(hidden_dropout_prob=probability, attention_probs_dropout_prob=0.3))
    seen = []

    def check(module, inputs, output):
        seen.append((module.p, inputs[0].detach(), output.detach()))

    hooks = [module.register_forward_hook(check) for module in model.modules() if isinstance(module, nn.Dropout)]
    assert hooks
    torch.manual_seed(0)
    model.train()(torch.rand(4, 3, 64, 64))
    kept = total = 0
    for p, before, after in seen:
        assert p == probability
        scaled = before / (1 - p)
        nonzero = before != 0
        is_kept = torch.isclose(after, scaled, rtol=1e-5, atol=1e-6) & nonzero
        is_dropped = (after == 0) & nonzero
        assert bool((is_kept | is_dropped | ~nonzero).all())
        kept += int(is_kept.sum())
        total += int(nonzero.sum())
    rate = 1 - kept / total
    assert abs(rate - probability) < 4 * math.sqrt(probability * (1 - probability) / total) + 1e-3, (rate, total)
    seen.clear()
    model.eval()(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(before, after) for _, before, after in seen)


def test_stochastic_depth_drops_whole_samples_at_the_configured_linear_rates():
    """Drop path keeps a sample's residual branch with probability 1 - p, scaled by 1/(1-p), else zeroes all of
    it; the rates grow linearly over the layers from 0 to drop_path_rate (DeiT / the authors' code)."""
    rate = 0.4
    model = PvtForImageClassification(tiny_config(drop_path_rate=rate))
    probabilities = [module.drop_prob for module in model.modules() if isinstance(module, PvtDropPath)]
    layers = sum(model.config.depths)
    linear = [rate * index / (layers - 1) for index in range(layers)]
    assert probabilities == pytest.approx([p for p in linear if p > 0])  # a rate of 0 needs no module

    drop_path = PvtDropPath(0.25).train()
    torch.manual_seed(1)
    branch = torch.rand(20000, 5, 3) + 0.5
    out = drop_path(branch)
    per_sample_kept = torch.isclose(out, branch / 0.75).all(dim=(1, 2))
    per_sample_dropped = (out == 0).all(dim=(1, 2))
    assert bool((per_sample_kept ^ per_sample_dropped).all())  # whole samples, never parts
    dropped = per_sample_dropped.float().mean().item()
    assert abs(dropped - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 20000)
    assert torch.equal(drop_path.eval()(branch), branch)


def test_label_smoothing_matches_its_definition():
    """loss = mean over samples of (1 - e) * (-log p_y) + e * mean_k(-log p_k) (Szegedy et al.; DeiT's 0.1)."""
    torch.manual_seed(2)
    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])

    class Logits(nn.Module):
        def forward(self, pixel_values):
            return type("Output", (), {"logits": logits})()

    for smoothing in (0.0, 0.1, 0.5):
        loss = classification.classification_loss(None, smoothing)(Logits(), {"pixel_values": None, "labels": labels})
        log_probabilities = logits.log_softmax(-1)
        expected = (
            (1 - smoothing) * -log_probabilities[torch.arange(6), labels] - smoothing * log_probabilities.mean(-1)
        ).mean()
        torch.testing.assert_close(loss, expected)


def test_mixup_mixes_images_and_labels_with_one_beta_drawn_weight():
    """MixUp: x' = l x + (1 - l) x_rolled, y' = l y + (1 - l) y_rolled, with the same l ~ Beta(a, a)."""
    alpha, classes = 0.8, 4
    mixing = build_batch_mixing(alpha, 0.0, classes)
    torch.manual_seed(3)
    weights = []
    for _ in range(400):
        images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        mixed, soft = mixing(images, labels)
        weight = soft[0, 0].item()  # sample 0 is class 0 mixed with sample 3 (class 3)
        one_hot = F.one_hot(labels, classes).float()
        torch.testing.assert_close(soft, weight * one_hot + (1 - weight) * one_hot.roll(1, 0))
        torch.testing.assert_close(mixed, weight * images + (1 - weight) * images.roll(1, 0))
        weights.append(weight)
    mean, variance = np.mean(weights), np.var(weights)
    assert abs(mean - 0.5) < 0.05 and abs(variance - 1 / (4 * (2 * alpha + 1))) < 0.02


def test_cutmix_pastes_one_box_and_weights_labels_by_its_area():
    """CutMix: x' is x outside one box and x_rolled inside it; y' = l y + (1 - l) y_rolled with l = 1 - box area /
    image area."""
    classes = 3
    mixing = build_batch_mixing(0.0, 1.0, classes)
    torch.manual_seed(4)
    for _ in range(200):
        images, labels = torch.rand(3, 2, 16, 16), torch.tensor([0, 1, 2])
        mixed, soft = mixing(images, labels)
        from_other = (mixed != images).any(dim=1)[0]  # where sample 0 shows sample 2
        torch.testing.assert_close(mixed[:, :, ~from_other], images[:, :, ~from_other])
        torch.testing.assert_close(mixed[:, :, from_other], images.roll(1, 0)[:, :, from_other])
        if from_other.any():
            rows, columns = from_other.nonzero(as_tuple=True)
            box = (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
            assert int(from_other.sum()) == int(box)  # one rectangle
        weight = 1 - from_other.float().mean().item()
        one_hot = F.one_hot(labels, classes).float()
        torch.testing.assert_close(soft, weight * one_hot + (1 - weight) * one_hot.roll(1, 0))
