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
    assert len(losses(run_dir)) == 8
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
