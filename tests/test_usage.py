"""Every command answers the same mistake the same way and loses nothing: the output-folder rule, model and
checkpoint flags, counts, unknown names, refused pickles, the batch that runs, out of memory, default flips, file
modes, `--help` before torch, cards naming the repo id, `pvt-stats --model` (pvt_tools/usage.py and its users)."""

import json
import os
import subprocess
import sys

import pytest
import tomllib
import torch

from configuration_pvt import PVT_VARIANTS
from modeling_pvt import PvtForImageClassification
from pvt_tools import hub, stats, usage
from pvt_tools.commands import (
    benchmark,
    convert,
    demo,
    dense_arguments,
    export_onnx,
    finetune_with_trainer,
    local_cache,
    push,
    train,
    train_detection,
    train_segmentation,
)
from pvt_tools.commands import stats as stats_command
from pvt_tools.official import OfficialCheckpointError, read_checkpoint_weights_only
from pvt_tools.training import classification, dense, loop
from pvt_tools.training.arguments import AugmentationArguments
from pvt_tools.usage import UsageError, check_output_folder
from tests.conftest import REPO_ROOT, tiny_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), "TQDM_DISABLE": "1"}
FINISHED_RUN = ("model.safetensors", "config.json", "all_results.json")


def finished_run(folder, checkpoint: str | None = None):
    """A folder as a finished run leaves it (optionally with one complete checkpoint); returns its contents."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FINISHED_RUN:
        (folder / name).write_text(f"{name} of the finished run")
    if checkpoint:
        marker = "trainer_state.json" if checkpoint.startswith("checkpoint-") else "training_state.json"
        (folder / checkpoint).mkdir()
        (folder / checkpoint / marker).write_text("{}")
    return contents(folder)


def contents(folder) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None for path in folder.rglob("*")}


def error_of(command, argv, capsys) -> str:
    """The one-line error a console entry point prints (exit status 2), with its traceback-free stderr."""
    sys_argv = sys.argv
    sys.argv = ["pvt", *argv]
    try:
        with pytest.raises(SystemExit) as exited:
            command.run()
    finally:
        sys.argv = sys_argv
    err = capsys.readouterr().err.strip()
    message = err or str(exited.value.code)
    assert "Traceback" not in message
    return message.splitlines()[-1]


# --- 1. nothing finished is lost, one rule for every command -------------------------------------------------------

TRAINING_COMMANDS = {
    "pvt-train": (train, []),
    "pvt-finetune-trainer": (finetune_with_trainer, []),
    "pvt-train-detection": (train_detection, []),
    "pvt-train-segmentation": (train_segmentation, []),
}


@pytest.mark.parametrize("name", list(TRAINING_COMMANDS))
def test_training_commands_keep_a_finished_run(name, tmp_path, capsys):
    command, extra = TRAINING_COMMANDS[name]
    out = tmp_path / "out_d"
    before = finished_run(out)
    message = error_of(command, ["--output_dir", str(out), *extra], capsys)
    assert "already holds a model or results (model.safetensors, config.json, all_results.json)" in message
    assert "--resume_from_checkpoint" not in message  # there is nothing to resume: suggesting it would lose the run
    assert "Replace it with --overwrite_output_dir, or choose another --output_dir." in message
    # Following the old advice (resume 'latest' without a checkpoint) is refused too, naming what is there.
    message = error_of(command, ["--output_dir", str(out), "--resume_from_checkpoint", "latest", *extra], capsys)
    assert message.startswith(f"error: --resume_from_checkpoint latest: {out} holds no checkpoint to continue from")
    assert "model.safetensors" in message and "--checkpointing_steps" in message
    assert contents(out) == before


@pytest.mark.parametrize(
    ("name", "checkpoint"),
    [("pvt-train", "step_4"), ("pvt-train-detection", "epoch_0"), ("pvt-finetune-trainer", "checkpoint-8")],
)
def test_resuming_is_suggested_only_when_there_is_a_checkpoint(name, checkpoint, tmp_path, capsys):
    command, extra = TRAINING_COMMANDS[name]
    out = tmp_path / "run"
    before = finished_run(out, checkpoint)
    message = error_of(command, ["--output_dir", str(out), *extra], capsys)
    assert f"checkpoints ({checkpoint})" in message
    assert "Continue it with --resume_from_checkpoint latest, replace it with --overwrite_output_dir" in message
    assert contents(out) == before


def test_trainer_resumes_latest_like_pvt_train(tmp_path, capsys):
    from pvt_tools.training.trainer import check_trainer_run

    arguments = ["--output_dir", str(tmp_path / "new"), "--resume_from_checkpoint", "latest"]
    _, _, training_args, given, overwrite = finetune_with_trainer.parse_args(arguments)
    assert check_trainer_run(training_args, given, overwrite) is None  # nothing yet: a new run
    assert "No checkpoint in" in capsys.readouterr().out
    assert training_args.save_strategy == "no"  # checkpoints only when --save_strategy asks, as pvt-train
    out = tmp_path / "run"
    for step in (8, 16, 120):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-200").mkdir()  # incomplete: no trainer_state.json
    arguments = ["--output_dir", str(out), "--resume_from_checkpoint", "latest", "--save_strategy", "epoch"]
    _, _, training_args, given, overwrite = finetune_with_trainer.parse_args(arguments)
    assert check_trainer_run(training_args, given, overwrite) == str(out / "checkpoint-120")
    assert training_args.save_strategy == "epoch"


EXPORT_COMMANDS = {
    "pvt-convert": (convert, lambda out, source: ["--checkpoint", str(source), "--output_dir", str(out)]),
    "pvt-export-onnx": (export_onnx, lambda out, source: ["--model", str(source), "--output", str(out)]),
    "pvt-demo": (demo, lambda out, source: ["--output_dir", str(out)]),
}


@pytest.mark.parametrize("name", list(EXPORT_COMMANDS))
def test_exporting_commands_keep_a_finished_model(name, tmp_path, capsys):
    command, argv = EXPORT_COMMANDS[name]
    source = tmp_path / "source.pth"
    source.write_bytes(b"not read: the folder check comes first")
    if name == "pvt-export-onnx":
        source = tmp_path / "model"
        PvtForImageClassification(tiny_config()).save_pretrained(source)
    out = tmp_path / "out"
    before = finished_run(out)
    if name == "pvt-convert":  # main() returns the status
        assert command.main(argv(out, source)) == 2
        message = capsys.readouterr().err.strip()
    else:
        message = error_of(command, argv(out, source), capsys)
    assert ("already holds a model or results" in message) or ("is not an empty folder" in message), message
    assert "Traceback" not in message and len(message.splitlines()) == 1
    assert contents(out) == before


def test_overwrite_replaces_the_checkpoints_only_once_training_starts(tmp_path):
    out = tmp_path / "run"
    finished_run(out, "step_4")
    assert check_output_folder(out, overwrite=True) == ["step_4"]
    assert (out / "step_4").is_dir()  # the check alone changes nothing
    accelerator = loop.create_accelerator(seed=0)
    loop.prepare_run_output_dir(accelerator, out, resume_from_checkpoint=None, overwrite_output_dir=True)
    assert not (out / "step_4").exists() and (out / "model.safetensors").is_file()  # replaced at the end


def test_output_folder_that_is_a_file_and_resume_path_that_is_missing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"--output_dir .*file is a file, not a folder"):
        check_output_folder(tmp_path / "file", overwrite=True)


# --- 2. mistakes answered alike ----------------------------------------------------------------------------------

MODEL_FLAGS = [
    (train, ["--model_name_or_path"], "--model_name_or_path"),
    (finetune_with_trainer, ["--model_name_or_path"], "--model_name_or_path"),
    (train_detection, ["--pvt_checkpoint"], "--pvt_checkpoint"),
    (train_segmentation, ["--pvt_checkpoint"], "--pvt_checkpoint"),
    (export_onnx, ["--output", "ONNX", "--model"], "--model"),
    (stats_command, ["--model"], "--model"),
    (push, ["--repo_id", "me/x", "--dry-run", "--model_dir"], "--model_dir"),
    (local_cache, ["--repo_id", "me/x", "--model_dir"], "--model_dir"),
]


@pytest.mark.parametrize(("command", "flags", "flag"), MODEL_FLAGS, ids=[flag[0].__name__ for flag in MODEL_FLAGS])
@pytest.mark.parametrize("value", ["../runs/shape", "not//a repo"])
def test_missing_model_path_or_malformed_repo_id_is_one_line(command, flags, flag, value, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*flags, value]
    argv = [str(out) if item == "ONNX" else item for item in argv]
    if command not in (export_onnx, stats_command, push, local_cache):
        argv += ["--output_dir", str(out)]
    message = error_of(command, argv, capsys)
    assert message.startswith(f"error: {flag} {value}: no such folder")
    if command in (push, local_cache):  # a local folder only
        assert message.endswith("Give a folder written by a training run or save_pretrained (e.g. outputs/demo).")
    else:
        assert "no such folder here, and not a Hub repo id" in message and "org/pvt-small" in message
    assert not out.exists()  # nothing written before the checks pass


def test_well_formed_repo_id_that_cannot_be_read_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    message = error_of(train, ["--model_name_or_path", "runs/shape", "--output_dir", str(out)], capsys)
    assert message.startswith("error: --model_name_or_path runs/shape: not a folder here, and no Hub repo")
    assert not out.exists()


def test_convert_names_a_missing_checkpoint_file(tmp_path, capsys):
    assert convert.main(["--checkpoint", str(tmp_path / "pvt.pth"), "--output_dir", str(tmp_path / "o")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: --checkpoint {tmp_path / 'pvt.pth'}: no such file. Check the path (run ls on it)."
    )


COUNT_FLAGS = [
    ("--num_train_epochs", "0"),
    ("--per_device_train_batch_size", "0"),
    ("--gradient_accumulation_steps", "-1"),
]


@pytest.mark.parametrize(("flag", "value"), COUNT_FLAGS)
def test_counts_are_refused_in_the_same_words(flag, value, tmp_path, capsys):
    messages = {
        name: error_of(command, ["--output_dir", str(tmp_path / name), flag, value, *extra], capsys)
        for name, (command, extra) in TRAINING_COMMANDS.items()
    }
    expected = f"error: {flag} must be greater than 0, got {value}."
    assert messages == dict.fromkeys(TRAINING_COMMANDS, expected)
    assert not any((tmp_path / name).exists() for name in TRAINING_COMMANDS)


def test_max_steps_zero_is_refused_by_both_classification_commands(tmp_path, capsys):
    for command in (train, finetune_with_trainer):
        message = error_of(command, ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "0"], capsys)
        assert message == "error: --max_train_steps must be greater than 0, got 0."


def test_unknown_variant_names_get_the_same_did_you_mean(tmp_path, capsys):
    expected = (
        "is not a PVT variant: did you mean 'pvt-tiny'? Choose one of pvt-tiny, pvt-small, pvt-medium, pvt-large."
    )
    assert expected in error_of(train, ["--variant", "pvt_tinny", "--output_dir", str(tmp_path)], capsys)
    for command in (train_detection, train_segmentation):
        with pytest.raises(SystemExit):
            command.parse_args(["--output_dir", str(tmp_path), "--pvt_variant", "pvt_tinny"])
        assert expected in capsys.readouterr().err


def test_light_copies_of_names_match_their_sources():
    """The names commands check before torch is imported are the ones the torch-side modules define."""
    from pvt_tools.benchmark import plan
    from pvt_tools.training import detection, segmentation, segmentation_data

    assert usage.PVT_VARIANT_NAMES == tuple(PVT_VARIANTS)
    assert dense_arguments.DETECTION_ARCHITECTURES == tuple(detection.IMAGE_PROCESSOR_CLASSES)
    assert dense_arguments.SEGMENTATION_ARCHITECTURES == segmentation.ARCHITECTURES
    assert dense_arguments.SEGMENTATION_TASKS == segmentation_data.TASKS
    assert (benchmark.CASES, benchmark.MEMORY_CASES) == (plan.CASES, plan.MEMORY_CASES)


# --- a checkpoint carrying code -----------------------------------------------------------------------------------


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Metadata:
    pass


def test_a_pickle_that_runs_a_command_is_named_for_what_it_is_and_not_run(tmp_path):
    marker = tmp_path / "was_run"
    path = tmp_path / "pvt_tiny.pth"
    torch.save({"model": {"head.weight": torch.zeros(2, 2)}, "extra": RunsACommand(marker)}, path)
    with pytest.raises(OfficialCheckpointError) as refused:
        read_checkpoint_weights_only(path)
    message = str(refused.value)
    assert f"{os.name == 'posix' and 'posix' or 'nt'}.system" in message and "nothing in it was executed" in message
    assert "damaged" not in message and "truncated" not in message
    assert "weights_only=False" not in message and "set to `False`" not in message
    assert not marker.exists()


def test_a_pickle_with_other_python_objects_names_them(tmp_path):
    path = tmp_path / "mmdet.pth"
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}, "meta": Metadata()}, path)
    with pytest.raises(OfficialCheckpointError) as refused:
        read_checkpoint_weights_only(path)
    message = str(refused.value)
    assert f"Python objects ({__name__}.Metadata;" in message and "nothing in it was executed" in message
    assert "damaged" not in message and "weights_only=False" not in message
    assert "still with weights_only=True" in message


# --- 3. honest defaults at the edges ------------------------------------------------------------------------------


def test_the_learning_rate_rule_uses_the_batch_that_runs():
    assert classification.batch_that_runs(64, 1, 1, 1000) == (64, "")
    total, note = classification.batch_that_runs(100000, 1, 1, 90)
    assert total == 90 and "not the 100,000 the batch flags ask for: the data set has 90 training images" in note
    assert classification.batch_that_runs(32, 2, 4, 100)[0] == 32 * 2 * 2  # 50 images per process: 2 batches
    assert classification.batch_that_runs(8, 1, 1, None) == (8, "")  # a stream: unknown length
    rate, source = classification.default_learning_rate(90, fine_tuning=False)
    assert rate == 5e-4 and "5e-4 x 90/512" in source


def test_pvt_train_summary_shows_the_batch_that_runs(tmp_path, capsys):
    train.main(
        [
            *("--image_size", "32", "--hidden_sizes", "8", "8", "8", "8", "--depths", "1", "1", "1", "1"),
            *("--num_attention_heads", "1", "1", "1", "1", "--mlp_ratios", "1", "1", "1", "1"),
            *("--max_train_samples", "40", "--max_eval_samples", "8", "--max_train_steps", "1"),
            *("--per_device_train_batch_size", "100000", "--output_dir", str(tmp_path / "run")),
        ]
    )
    out = capsys.readouterr().out
    assert "total batch size 40, not the 100,000 the batch flags ask for" in out
    assert "DeiT's 5e-4 x 40/512" in out and "x 100000/512" not in out
    assert "no flips (they can change a digit's class" in out


def test_out_of_memory_names_the_batch_and_the_flags(tmp_path):
    accelerator = loop.create_accelerator(seed=0)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = torch.utils.data.DataLoader([{"x": torch.zeros(2)}] * 3, batch_size=3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, batches, scheduler = accelerator.prepare(model, optimizer, batches, scheduler)
    plan = loop.plan_training_steps(len(batches), 1, 1)

    def compute_loss(model, batch):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you tried")

    with pytest.raises(loop.OutOfMemoryError) as stopped:
        loop.run_training(
            accelerator,
            model,
            optimizer,
            scheduler,
            batches,
            plan,
            compute_loss=compute_loss,
            evaluate=dict,
            output_dir=tmp_path,
            run_settings={"per_device_train_batch_size": 3},
        )
    message = str(stopped.value)
    assert message.startswith("Out of memory with batches of 3 images per device.")
    assert "--per_device_train_batch_size" in message and "--gradient_accumulation_steps" in message
    assert loop.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert not loop.is_out_of_memory(RuntimeError("shape mismatch"))


def test_flips_are_off_by_default_where_they_change_the_label():
    digits = AugmentationArguments().for_run(3, flips_change_labels=True)
    photos = AugmentationArguments().for_run(3, flips_change_labels=False)
    assert digits.horizontal_flip_probability == 0.0 and photos.horizontal_flip_probability == 0.5
    assert "--horizontal_flip_probability 0.5 turns them on" in digits.describe()
    assert "flips (0.5, the default: --horizontal_flip_probability 0 if a flip changes the class)" in photos.describe()
    asked = AugmentationArguments(horizontal_flip_probability=0.5).for_run(3, flips_change_labels=True)
    assert asked.horizontal_flip_probability == 0.5 and "default" not in asked.describe()


# --- 4. alike in small things -------------------------------------------------------------------------------------


def test_every_file_written_gets_the_same_mode(tmp_path):
    """safetensors writes model.safetensors through a private temporary file (0600); everything we write gets
    what the umask gives any other file, as config.json."""
    model = PvtForImageClassification(tiny_config())
    model.save_pretrained(tmp_path / "plain")
    config_mode = (tmp_path / "plain" / "config.json").stat().st_mode & 0o777
    accelerator = loop.create_accelerator(seed=0)
    from transformers import PvtImageProcessor

    dense.save_final_model(accelerator, model, PvtImageProcessor(), tmp_path / "run", "pvt-test", "AutoModel")
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "run").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {config_mode}


CONSOLE_SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
HELP_PROBE = """
import importlib, resource, sys, time
module, function = sys.argv[1].split(":")
sys.argv = [sys.argv[1], "--help"]
try:
    getattr(importlib.import_module(module), function)()
except SystemExit:
    pass
usage = resource.getrusage(resource.RUSAGE_SELF)
print("torch" in sys.modules, usage.ru_utime + usage.ru_stime, file=sys.stderr)
"""


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_help_answers_before_torch_is_imported(script):
    """`--help` prints without importing torch, in under 2 s of CPU time (CPU rather than wall time: the test
    machine is shared, and waiting for a core is not the command's doing)."""
    result = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, CONSOLE_SCRIPTS[script]], env=ENV, capture_output=True, text=True
    )
    imported_torch, cpu_seconds = result.stderr.strip().splitlines()[-1].split()
    assert "usage:" in result.stdout
    assert imported_torch == "False"
    assert float(cpu_seconds) < 2.0


def test_push_names_the_given_repo_id_and_install_source_in_the_card(tmp_path):
    folder = hub.export_model(PvtForImageClassification(tiny_config()), tmp_path / "export")
    card = (folder / "README.md").read_text()
    assert "ORG/pvt-model" in card and hub.PLACEHOLDER_PACKAGE_SOURCE in card
    plan = hub.push_export(folder, "me/pvt-shapes", dry_run=True)
    assert "README.md would first be made to name me/pvt-shapes" in plan
    assert (folder / "README.md").read_text() == card  # a dry run changes nothing
    assert hub.name_repo_in_card(folder, "me/pvt-shapes", "git+https://github.com/me/pvt-transformers")
    named = (folder / "README.md").read_text()
    assert "ORG/" not in named and named.count("me/pvt-shapes") == card.count("ORG/pvt-model")
    assert "pvt-transformers @ git+https://github.com/me/pvt-transformers" in named
    hub.validate_export_dir(folder)


def test_stats_counts_a_saved_model(tmp_path, capsys):
    model = PvtForImageClassification(tiny_config())
    model.save_pretrained(tmp_path / "model")
    assert stats_command.main(["--model", str(tmp_path / "model"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["parameters"] == sum(parameter.numel() for parameter in model.parameters())
    assert row["image_size"] == 64
    reference = stats.model_stats(model.config, "reference", 64)
    assert row["macs"] == reference.macs
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="holds a 'vit' model, not a PVT"):
        stats_command.main(["--model", str(tmp_path / "other")])
