"""Throughput figures, streaming data (`--streaming`), equal results with any split of the batch over processes
and accumulation steps. Tiny networks on 32-pixel images, a few steps each."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pvt_tools.commands import train
from tests.conftest import REPO_ROOT
from tests.test_training import SHORT_RUN, SUBPROCESS_ENV, TINY_MODEL, free_port, read_results


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
