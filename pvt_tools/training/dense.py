# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""What the detection and the segmentation trainers share: dense prediction with a PVT backbone.

detection.py (DETR, Deformable DETR) and segmentation.py (Mask2Former, UperNet) read the same flags for these steps,
so each step is written once here:

- `check_dense_run` / `prepare_dense_output_dir`: the output folder rule (pvt_tools.usage), checked before anything
  is loaded, and the folder created once the data and the model are ready;
- `load_train_and_validation`: a Hub / local data set, with a validation split cut from train when it has none;
- `build_model_with_pvt_backbone`: the model from --pvt_checkpoint, or with a random --pvt_variant backbone;
- `optimizer_parameter_groups`: AdamW groups, the backbone at its own learning rate;
- `make_dataloaders`: the training and validation dataloaders, seeded for exact resumption;
- `run_settings`: what a checkpoint must have been trained with to be resumed;
- `training_results`: the part of all_results.json that comes from the training loop's history;
- `save_final_model`: the trained model, its image processor, the PVT code and a README, into the output folder.
"""

import argparse
import inspect
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader

import configuration_pvt
import modeling_pvt
from configuration_pvt import PVT_VARIANTS, PvtConfig
from pvt_tools.backbones import (
    DEFAULT_OUT_FEATURES,
    DETECTOR_MODEL_CLASSES,
    detector_config_with_pvt,
    find_pvt_backbone,
    pvt_detector_from_checkpoint,
)
from pvt_tools.hub import move_files_into, set_shared_file_modes, staging_folder
from pvt_tools.training.curves import TrainingHistory
from pvt_tools.training.loop import TrainingPlan, prepare_run_output_dir, run_summary, weight_decay_parameter_groups
from pvt_tools.usage import check_model_reference, check_output_folder, check_training_counts


def check_dense_run(args: argparse.Namespace) -> None:
    """What the flags alone show, before anything is loaded or written: the counts pvt-train checks too, in its
    words, and the output folder rule."""
    check_training_counts(args)
    check_model_reference("--pvt_checkpoint", args.pvt_checkpoint)
    check_output_folder(
        args.output_dir, overwrite=args.overwrite_output_dir, resume_from_checkpoint=args.resume_from_checkpoint
    )


def prepare_dense_output_dir(accelerator, args: argparse.Namespace) -> Path:
    """The output folder, created right before training (loop.prepare_run_output_dir)."""
    return prepare_run_output_dir(
        accelerator,
        args.output_dir,
        resume_from_checkpoint=args.resume_from_checkpoint,
        overwrite_output_dir=args.overwrite_output_dir,
    )


def load_train_and_validation(
    args: argparse.Namespace, required_columns: set[str], requirement: str, renames: dict[str, str] | None = None
) -> datasets.DatasetDict:
    """--dataset_name (Hub or local) as train and validation splits: columns named in `renames` that the data set
    has are renamed first, and a validation split is cut from train (--train_val_split) when there is none. A data
    set without the `required_columns` is refused with `requirement`, which says what the task needs."""
    dataset = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
    if renames:
        present = set(dataset["train"].column_names)
        dataset = dataset.rename_columns({old: new for old, new in renames.items() if old in present})
    if "validation" not in dataset:
        split = dataset["train"].train_test_split(args.train_val_split, seed=args.seed)
        dataset = datasets.DatasetDict({"train": split["train"], "validation": split["test"]})
    missing = required_columns - set(dataset["train"].column_names)
    if missing:
        raise ValueError(f"{args.dataset_name} lacks the column(s) {sorted(missing)}: {requirement}")
    return dataset


def build_model_with_pvt_backbone(args: argparse.Namespace, id2label: dict[int, str]) -> torch.nn.Module:
    """The --architecture model for the classes of `id2label`, its config changed by --detector_config_overrides:
    pretrained from --pvt_checkpoint, else with a randomly initialised --pvt_variant (+ --pvt_config_overrides)."""
    labels = {"id2label": id2label, "label2id": {name: index for index, name in id2label.items()}}
    model_kwargs = {**args.detector_config_overrides, "num_labels": len(id2label), **labels}
    if args.pvt_checkpoint and args.pvt_config_overrides:
        raise ValueError(
            "--pvt_config_overrides shape a randomly initialised backbone; with --pvt_checkpoint the checkpoint "
            "fixes the architecture. Give one of the two."
        )
    if args.pvt_checkpoint:
        try:
            return pvt_detector_from_checkpoint(args.architecture, args.pvt_checkpoint, **model_kwargs)
        except OSError as error:  # neither a folder here nor a Hub repo that can be read (offline, misspelt)
            raise ValueError(
                f"--pvt_checkpoint {args.pvt_checkpoint} is not a folder here, and no Hub repo of that name could be "
                f"read ({str(error).splitlines()[0]}). Give the folder a training run wrote (e.g. out/upernet-digits) "
                "or a Hub repo id org/name."
            ) from error
    settings = {**PVT_VARIANTS[args.pvt_variant], **args.pvt_config_overrides}
    pvt_config = PvtConfig(**settings, out_features=DEFAULT_OUT_FEATURES[args.architecture])
    config = detector_config_with_pvt(args.architecture, pvt_config, **model_kwargs)
    return DETECTOR_MODEL_CLASSES[args.architecture](config)


def optimizer_parameter_groups(model: torch.nn.Module, args: argparse.Namespace) -> list[dict]:
    """AdamW groups: weight decay by module type (loop.py), and the backbone at its own learning rate."""
    backbone = {id(parameter) for parameter in find_pvt_backbone(model).parameters()}
    groups = []
    for in_backbone, learning_rate in ((False, args.learning_rate), (True, args.backbone_learning_rate)):
        for group in weight_decay_parameter_groups(model, args.weight_decay):
            parameters = [parameter for parameter in group["params"] if (id(parameter) in backbone) == in_backbone]
            if parameters:
                groups.append({**group, "params": parameters, "lr": learning_rate})
    return groups


def make_dataloaders(
    dataset: datasets.DatasetDict, transform, collate_fn, args: argparse.Namespace, drop_last: bool = False
) -> tuple[DataLoader, DataLoader]:
    """Training (shuffled; `drop_last` drops an incomplete last batch) and validation dataloaders over `dataset`'s
    two splits, `transform` applied on the fly."""
    # Each dataloader draws its base seed from its own generator, not from the global RNG: a resumed run's dropout
    # then sees the same random numbers as the uninterrupted run.
    loader_settings = {"collate_fn": collate_fn, "num_workers": args.dataloader_num_workers}
    train_dataloader = DataLoader(
        dataset["train"].with_transform(transform),
        shuffle=True,
        batch_size=args.per_device_train_batch_size,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(args.seed),
        **loader_settings,
    )
    eval_dataloader = DataLoader(
        dataset["validation"].with_transform(transform),
        batch_size=args.per_device_eval_batch_size,
        generator=torch.Generator().manual_seed(args.seed),
        **loader_settings,
    )
    return train_dataloader, eval_dataloader


def run_settings(args: argparse.Namespace, **task_settings) -> dict:
    """The settings a resumed run must share with the checkpoint's run (loop.run_training checks them): the batch
    layout, the model, the seed and the data, plus the task's own `task_settings`."""
    embedded_digits = args.dataset_name is None
    return {
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "architecture": args.architecture,
        "seed": args.seed,
        "dataset_name": args.dataset_name,
        "num_train_images": args.num_train_images if embedded_digits else None,
        "canvas_size": args.canvas_size if embedded_digits else None,
        **task_settings,
    }


def dense_run_summary(
    accelerator,
    args: argparse.Namespace,
    model: torch.nn.Module,
    dataset: datasets.DatasetDict,
    plan: TrainingPlan,
    *,
    what: str,
    num_warmup_steps: int,
    warmup_source: str,
    learning_rate_source: str,
    default_schedule: str,
) -> str:
    """The start line of a detection or segmentation run (loop.run_summary), `what` naming the detector or
    segmenter and its classes."""
    processes = accelerator.num_processes
    total_batch_size = args.per_device_train_batch_size * processes * args.gradient_accumulation_steps
    return run_summary(
        num_parameters=sum(parameter.numel() for parameter in model.parameters()),
        num_images=len(dataset["train"]),
        details=f"{what}, {len(dataset['validation']):,} for validation, total batch size {total_batch_size}, "
        f"{processes} process{'es' if processes != 1 else ''}",
        plan=plan,
        steps_source="--max_train_steps"
        if args.max_train_steps is not None
        else f"{args.num_train_epochs} x {plan.num_update_steps_per_epoch} steps",
        num_warmup_steps=num_warmup_steps,
        warmup_source=warmup_source,
        learning_rate=args.learning_rate,
        learning_rate_source=learning_rate_source,
        schedule=args.lr_scheduler_type,
        schedule_source="default" if args.lr_scheduler_type == default_schedule else "--lr_scheduler_type",
    )


def displayable_image(pixel_values: torch.Tensor, image_processor) -> np.ndarray:
    """A processed image (channels, height, width) with the processor's normalisation undone, in [0, 1], for the
    validation pictures."""
    mean = np.asarray(image_processor.image_mean).reshape(3, 1, 1)
    std = np.asarray(image_processor.image_std).reshape(3, 1, 1)
    return (pixel_values.cpu().float().numpy() * std + mean).clip(0, 1)


def training_results(history: TrainingHistory, started: float) -> dict:
    """all_results.json's record of the run: the last step's loss, where training ended, the loop's throughput
    (train_runtime, train_samples_per_second, ...) and the time since `started` (a time.perf_counter())."""
    return {
        "train_loss": history.steps[-1]["loss"] if history.steps else None,
        "completed_steps": history.last_evaluation["step"],
        "epoch": history.last_evaluation["epoch"],
        **history.throughput,
        "total_runtime": round(time.perf_counter() - started, 1),
    }


MODEL_README = """# {architecture} with a PVT backbone

Trained with pvt_tools' `{command}`. The backbone's code (`configuration_pvt.py`, `modeling_pvt.py`) is in this
folder: import it once, then load the model with Transformers' own classes.

```python
import modeling_pvt  # registers the "pvt_v1" backbone: from `pip install` of pvt-transformers, or this folder's copy
from transformers import AutoImageProcessor, {auto_class}

model = {auto_class}.from_pretrained("path/to/this/folder")
image_processor = AutoImageProcessor.from_pretrained("path/to/this/folder")
```
"""


def save_final_model(accelerator, model, image_processor, destination: Path, command: str, auto_class: str) -> None:
    """The trained model, its image processor, the PVT code files and a README saying how to load it (with
    `auto_class`), written into `destination` beside the run's checkpoints and results: each file is written whole
    in a temporary folder, then moved into place, so none is ever half-written."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with staging_folder(destination, "model") as staging:
            unwrapped = accelerator.unwrap_model(model)
            unwrapped.save_pretrained(staging)
            image_processor.save_pretrained(staging)
            for module in (configuration_pvt, modeling_pvt):
                shutil.copyfile(inspect.getfile(module), staging / Path(inspect.getfile(module)).name)
            readme = MODEL_README.format(architecture=type(unwrapped).__name__, command=command, auto_class=auto_class)
            (staging / "README.md").write_text(readme, encoding="utf-8")
            set_shared_file_modes(staging)
            move_files_into(staging, destination)
    accelerator.wait_for_everyone()


__all__ = [
    "build_model_with_pvt_backbone",
    "check_dense_run",
    "prepare_dense_output_dir",
    "load_train_and_validation",
    "make_dataloaders",
    "optimizer_parameter_groups",
    "run_settings",
    "save_final_model",
    "training_results",
]
