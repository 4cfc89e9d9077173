"""Throughput figures, streaming data (`--streaming`), equal results with any split of the batch over processes
and accumulation steps. Tiny networks on 32-pixel images, a few steps each."""

import json
import shutil
import subprocess
import sys

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from sklearn.datasets import load_digits

from pvt_tools.commands import train
from pvt_tools.training.checkpoints import CheckpointError
from pvt_tools.training.data import DataError
from pvt_tools.training.loop import UsageError
from tests.conftest import REPO_ROOT
from tests.test_training import (
    SHORT_RUN,
    SUBPROCESS_ENV,
    TINY_MODEL,
    free_port,
    read_results,
    write_digits_folder,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_all_results_report_training_speed(tmp_path):
    output_dir = tmp_path / "run"
    arguments = SHORT_RUN + ["--max_train_samples", "40", "--max_eval_samples", "8", "--max_train_steps", "4"]
    results = train.main(arguments + ["--output_dir", str(output_dir)])
    written = read_results(output_dir)
    assert written["train_samples_per_second"] == results["train_samples_per_second"]
    runtime, speed = written["train_runtime"], written["train_samples_per_second"]
    assert runtime > 0 and speed > 0
    assert written["train_samples_this_run"] == 4 * 8  # 4 steps at batch 8, one process
    assert speed == pytest.approx(4 * 8 / runtime, rel=1e-3)
    assert written["train_steps_per_second"] == pytest.approx(4 / runtime, rel=1e-2)
    assert runtime <= written["total_runtime"]
    assert "eval_accuracy" in written and written["train_steps"] == 4  # the other keys are kept


def copy_checkpoint(source_dir, name: str, destination_dir) -> None:
    """An output folder as a run killed right after writing checkpoint `name` leaves it."""
    destination_dir.mkdir(parents=True)
    shutil.copytree(source_dir / name, destination_dir / name)


def assert_same_weights(expected_dir, actual_dir, atol: float = 1e-6) -> None:
    expected, actual = load_file(expected_dir / "model.safetensors"), load_file(actual_dir / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=atol, rtol=0, msg=name)


def losses(output_dir) -> list[float]:
    return [record["loss"] for record in json.loads((output_dir / "training_history.json").read_text())["steps"]]


STREAM_RUN = SHORT_RUN + ["--streaming", "--max_train_steps", "8", "--checkpointing_steps", "3", "--seed", "3"]


def test_streamed_image_folder_trains_and_resumes_exactly_without_a_shuffle_buffer(tmp_path):
    folders = write_digits_folder(tmp_path / "digits", {"train": 4, "validation": 2})  # 40 and 20 images
    arguments = STREAM_RUN + ["--train_dir", folders["train"], "--validation_dir", folders["validation"]]
    arguments += ["--shuffle_buffer_size", "0"]
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    reference = train.main(arguments + ["--output_dir", str(reference_dir)])
    # 40 images at batch 8: 5 steps a pass, so 8 steps are two passes, each evaluated on all 20 validation images.
    assert reference["train_steps"] == 8 and reference["eval_samples"] == 20
    assert reference["train_samples"] == 8 * 8
    history = json.loads((reference_dir / "training_history.json").read_text())
    assert [(record["step"], record["epoch"]) for record in history["evaluations"]] == [(5, 0), (8, 1)]
    # The stream position is in the checkpoint: 3 batches of 8 read from the first pass.
    stream_state = json.loads((reference_dir / "step_3" / "process_state_0.json").read_text())["stream"]
    assert stream_state["epoch"] == 0 and "24" in json.dumps(stream_state), stream_state

    for checkpoint in ("step_3", "step_6"):  # inside the first pass, and inside the second
        run_dir = resumed_dir / checkpoint
        copy_checkpoint(reference_dir, checkpoint, run_dir)
        resumed = train.main(arguments + ["--output_dir", str(run_dir), "--resume_from_checkpoint", "latest"])
        assert resumed["train_steps"] == 8
        np.testing.assert_allclose(losses(run_dir), losses(reference_dir), atol=1e-6)
        assert resumed["eval_accuracy"] == pytest.approx(reference["eval_accuracy"], abs=1e-6)
        assert_same_weights(reference_dir, run_dir)


def write_parquet_shards(root, num_shards: int = 2) -> tuple[str, str]:
    """The digits as parquet shards (images as PNG bytes, ClassLabel labels): globs for train and validation."""
    digits = load_digits()
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(digit) for digit in range(10)])}
    )
    images = [PIL.Image.fromarray(255 - np.round(scan * 255 / 16).astype(np.uint8)) for scan in digits.images[:60]]
    table = datasets.Dataset.from_dict({"image": images, "label": digits.target[:60].tolist()}, features=features)
    root.mkdir()
    for shard in range(num_shards):
        table.select(range(shard * 20, (shard + 1) * 20)).to_parquet(root / f"train-{shard:05d}.parquet")
    table.select(range(40, 60)).to_parquet(root / "validation-00000.parquet")
    return str(root / "train-*.parquet"), str(root / "validation-*.parquet")


def test_streamed_parquet_shards_with_a_shuffle_buffer_resume_from_the_saved_position(tmp_path):
    train_glob, validation_glob = write_parquet_shards(tmp_path / "shards")
    arguments = STREAM_RUN + ["--train_file", train_glob, "--validation_file", validation_glob]
    arguments += ["--shuffle_buffer_size", "16"]
    reference_dir = tmp_path / "reference"
    reference = train.main(arguments + ["--output_dir", str(reference_dir)])
    assert reference["train_steps"] == 8 and reference["eval_samples"] == 20
    run_dir = tmp_path / "resumed"
    copy_checkpoint(reference_dir, "step_3", run_dir)
    resumed = train.main(arguments + ["--output_dir", str(run_dir), "--resume_from_checkpoint", "latest"])
    assert resumed["train_steps"] == 8
    # Up to the checkpoint the runs are one; after it, the buffer is refilled from the saved shard position, so
    # the resumed run goes on with other examples than the uninterrupted one (what datasets' state_dict promises).
    np.testing.assert_allclose(losses(run_dir)[:3], losses(reference_dir)[:3], atol=1e-6)
    assert len(losses(run_dir)) == 8 and not np.allclose(losses(run_dir)[3:], losses(reference_dir)[3:], atol=1e-3)
    # A shuffled pass with the same seed gives the same order: a second uninterrupted run equals the first.
    again_dir = tmp_path / "again"
    train.main(arguments + ["--output_dir", str(again_dir)])
    assert_same_weights(reference_dir, again_dir)


def test_streaming_mistakes_stop_before_any_data_is_read(tmp_path, monkeypatch):
    train_glob, validation_glob = write_parquet_shards(tmp_path / "shards")
    files = ["--train_file", train_glob, "--validation_file", validation_glob, "--output_dir", str(tmp_path / "run")]

    def no_loading(*args, **kwargs):
        raise AssertionError("data was read before the flags were checked")

    with monkeypatch.context() as patched:
        patched.setattr(datasets, "load_dataset", no_loading)
        with pytest.raises(UsageError, match="--streaming needs --max_train_steps"):
            train.main(TINY_MODEL + ["--streaming"] + files)
        with pytest.raises(DataError, match="--train_file is read as a stream: add --streaming"):
            train.main(TINY_MODEL + files)
    # A stream that ends before the first optimizer step.
    arguments = TINY_MODEL + ["--streaming", "--max_train_steps", "4", "--max_train_samples", "8"] + files
    arguments += ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2"]
    # 8 examples: one batch, and a window of 2 never completes... but a pass ending syncs nothing: an error.
    with pytest.raises(DataError, match=r"ended after 1 batch\(es\) per process, before the first optimizer step"):
        train.main(arguments)


def test_streamed_unreadable_images_are_skipped_and_listed_once_in_skipped_images_txt(tmp_path):
    folders = write_digits_folder(tmp_path / "digits", {"train": 4, "validation": 2})  # 40 and 20 readable images
    corrupt = tmp_path / "digits" / "train" / "digit_3" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    arguments = STREAM_RUN + ["--train_dir", folders["train"], "--validation_dir", folders["validation"]]
    arguments += ["--shuffle_buffer_size", "0", "--corrupt_images", "skip", "--output_dir", str(tmp_path / "run")]
    results = train.main(arguments)  # 8 steps of 8 images: the corrupt file is met in both passes over 40
    assert results["train_steps"] == 8 and results["unreadable_images_skipped"] == 1
    listed = (tmp_path / "run" / "skipped_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"train: {corrupt} (UnidentifiedImageError"), listed


# No randomness in the data or the network (no augmentation, dropout or drop path): only the batch layout differs.
EQUIVALENCE_RUN = TINY_MODEL + ["--no_augmentation", "--drop_path_rate", "0", "--learning_rate", "1e-3"]
EQUIVALENCE_RUN += ["--num_warmup_steps", "1", "--max_train_samples", "48", "--max_eval_samples", "16"]
EQUIVALENCE_RUN += ["--num_train_epochs", "2", "--per_device_eval_batch_size", "8", "--seed", "5"]


def test_two_processes_one_process_and_accumulation_give_the_same_training(tmp_path):
    two_dir, one_dir, accumulated_dir = tmp_path / "two_x8", tmp_path / "one_x16", tmp_path / "one_x8_x2"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    arguments = EQUIVALENCE_RUN + ["--per_device_train_batch_size", "8", "--checkpointing_steps", "epoch"]
    completed = subprocess.run(
        launch + [str(REPO_ROOT / "scripts" / "train.py"), *arguments, "--output_dir", str(two_dir)],
        env={**SUBPROCESS_ENV, "ACCELERATE_USE_CPU": "1"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "total batch size 16, 2 processes)" in completed.stdout
    one = train.main(EQUIVALENCE_RUN + ["--per_device_train_batch_size", "16", "--output_dir", str(one_dir)])
    accumulated = train.main(
        EQUIVALENCE_RUN
        + ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2"]
        + ["--output_dir", str(accumulated_dir)]
    )
    two = read_results(two_dir)
    assert two["train_steps"] == one["train_steps"] == accumulated["train_steps"] == 6  # 48 / 16 x 2 epochs
    np.testing.assert_allclose(losses(accumulated_dir), losses(two_dir), atol=1e-6)
    assert_same_weights(two_dir, accumulated_dir, atol=1e-6)  # measured: identical to the bit
    np.testing.assert_allclose(losses(one_dir), losses(two_dir), atol=1e-5)
    # The key projection's bias adds the same number to every attention score of a query, which the softmax
    # cancels: its true gradient is 0 and what it gets is rounding noise, which Adam scales up to steps of the
    # learning rate's size. So it alone gets a looser tolerance (measured: 1.9e-5 against 6e-8 for the rest).
    two_weights, one_weights = load_file(two_dir / "model.safetensors"), load_file(one_dir / "model.safetensors")
    assert two_weights.keys() == one_weights.keys()
    for name, tensor in two_weights.items():
        atol = 1e-3 if name.endswith("k_proj.bias") else 1e-6
        torch.testing.assert_close(one_weights[name], tensor, atol=atol, rtol=0, msg=name)
    assert one["eval_accuracy"] == two["eval_accuracy"] == accumulated["eval_accuracy"]
    # The images per second count both processes' batches.
    assert two["train_samples_this_run"] == 6 * 16
    assert two["train_samples_per_second"] == pytest.approx(6 * 16 / two["train_runtime"], rel=1e-3)

    # A checkpoint of the two-process run cannot be continued with another batch layout.
    with pytest.raises(CheckpointError, match=r"num_processes: 2 in the checkpoint, 1 now"):
        train.main(arguments + ["--output_dir", str(two_dir), "--resume_from_checkpoint", str(two_dir / "epoch_0")])
    with pytest.raises(CheckpointError, match=r"per_device_train_batch_size: 8 in the checkpoint, 16 now"):
        train.main(
            EQUIVALENCE_RUN
            + ["--per_device_train_batch_size", "16", "--output_dir", str(two_dir)]
            + ["--resume_from_checkpoint", str(two_dir / "epoch_0")]
        )


def launch_two_processes(arguments: list[str]) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    return subprocess.run(
        launch + [str(REPO_ROOT / "scripts" / "train.py"), *arguments],
        env={**SUBPROCESS_ENV, "ACCELERATE_USE_CPU": "1"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )


def test_two_processes_stream_their_own_shards_and_resume(tmp_path):
    train_glob, validation_glob = write_parquet_shards(tmp_path / "shards")  # 2 training shards of 20 images
    arguments = SHORT_RUN + ["--streaming", "--shuffle_buffer_size", "0", "--max_train_steps", "4"]
    arguments += ["--train_file", train_glob, "--validation_file", validation_glob, "--checkpointing_steps", "2"]
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    completed = launch_two_processes(arguments + ["--output_dir", str(reference_dir)])
    assert completed.returncode == 0, completed.stderr[-4000:]
    reference = read_results(reference_dir)
    # One shard per process: 20 images, 2 full batches of 8 and one of 4 per pass; 4 steps = 3 + 1.
    assert reference["train_steps"] == 4 and reference["train_samples"] == 2 * (8 + 8 + 4 + 8)
    assert reference["eval_samples"] == 20  # every validation image once, half on each process
    positions = [
        json.loads((reference_dir / "step_2" / f"process_state_{rank}.json").read_text())["stream"] for rank in (0, 1)
    ]
    assert positions[0] == positions[1]  # each at example 16 of its own shard (the shard itself is the split)

    copy_checkpoint(reference_dir, "step_2", resumed_dir)
    completed = launch_two_processes(
        arguments + ["--output_dir", str(resumed_dir), "--resume_from_checkpoint", "latest"]
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    np.testing.assert_allclose(losses(resumed_dir), losses(reference_dir), atol=1e-6)
    assert_same_weights(reference_dir, resumed_dir)


def test_fsdp_on_cpu_processes_is_refused_instead_of_silently_unsharded(tmp_path):
    # Accelerate 1.15 sets DistributedType.FSDP only for GPU-like devices; on CPU (ACCELERATE_USE_CPU, gloo) it would
    # train with DDP while the user asked for FSDP2.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2"]
    launch += ["--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_transformer_layer_cls_to_wrap", "PvtLayer"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    arguments = TINY_MODEL + ["--max_train_samples", "16", "--max_train_steps", "1", "--output_dir", str(tmp_path)]
    completed = subprocess.run(
        launch + [str(REPO_ROOT / "scripts" / "train.py"), *arguments],
        env={**SUBPROCESS_ENV, "ACCELERATE_USE_CPU": "1"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode != 0
    assert "FSDP was asked for (accelerate launch --use_fsdp), but Accelerate runs these processes as MULTI_CPU" in (
        completed.stderr
    ), completed.stderr[-3000:]
    assert not (tmp_path / "all_results.json").exists()
