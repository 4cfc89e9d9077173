# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune Transformers' DETR (or, with --architecture deformable_detr, Deformable DETR) with a PVT backbone.

Data: any `datasets` object-detection data set in the layout of Transformers' object-detection examples (an
`image` column and an `objects` column with COCO `bbox` and `category`), from the Hub or a local folder; by default
the embedded digits canvases of detection_data.py, which need no download. Transformers' DetrImageProcessor /
DeformableDetrImageProcessor resizes, normalises and converts the boxes; torchmetrics' MeanAveragePrecision
(pycocotools) gives the COCO mAP. The loop, checkpoints and resumption are training_loop.py's, shared with the
classification script.

    python scripts/train_detection.py --output_dir out/detr-digits            # DETR, PVT-Tiny from scratch
    python scripts/train_detection.py --architecture deformable_detr --pvt_checkpoint path/to/pvt-small ...
    accelerate launch scripts/train_detection.py ...                          # several processes or machines

Writes to --output_dir: step_N / epoch_N checkpoints, training_history.json, training_curves.png (loss, learning
rate and mAP against the step), all_results.json and, last, model/ (the detector and its image processor, ready
for `from_pretrained`).
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader
from torchmetrics.detection import MeanAveragePrecision
from transformers import DeformableDetrImageProcessor, DetrImageProcessor, get_scheduler
from transformers.image_transforms import center_to_corners_format

from pvt_tools.backbones import (
    DEFAULT_OUT_FEATURES,
    DETECTOR_MODEL_CLASSES,
    detector_config_with_pvt,
    find_pvt_backbone,
    pvt_detector_from_checkpoint,
)
from configuration_pvt import PVT_VARIANTS, PvtConfig
from pvt_tools.training.detection_data import category_names, check_boxes, make_digits_detection_splits
from pvt_tools.hub import replace_directory
from pvt_tools.training.loop import (
    create_accelerator,
    parse_checkpointing_steps,
    plan_training_steps,
    run_training,
    weight_decay_parameter_groups,
    write_json,
)

IMAGE_PROCESSOR_CLASSES = {"detr": DetrImageProcessor, "deformable_detr": DeformableDetrImageProcessor}
REPORTED_METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")


# --- data -------------------------------------------------------------------------------------------------------


def load_detection_dataset(args: argparse.Namespace) -> datasets.DatasetDict:
    """Train and validation splits: the embedded digits canvases, or a Hub / local data set (a validation split is
    cut from train when it has none)."""
    if args.dataset_name is None:
        return make_digits_detection_splits(
            args.num_train_images, args.num_validation_images, args.canvas_size, seed=args.seed
        )
    dataset = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
    if "validation" not in dataset:
        split = dataset["train"].train_test_split(args.train_val_split, seed=args.seed)
        dataset = datasets.DatasetDict({"train": split["train"], "validation": split["test"]})
    missing = {"image", "objects"} - set(dataset["train"].column_names)
    if missing:
        raise ValueError(
            f"{args.dataset_name} lacks the column(s) {sorted(missing)}: a detection data set needs 'image' and "
            f"'objects' (with COCO 'bbox' and 'category'), as Transformers' object-detection examples."
        )
    return dataset


def coco_annotations(image_id: int, objects: dict) -> dict:
    """One image's objects as the COCO annotation dict the DETR image processors take."""
    areas = objects.get("area") or [width * height for _, _, width, height in objects["bbox"]]
    return {
        "image_id": image_id,
        "annotations": [
            {"image_id": image_id, "category_id": category, "bbox": list(bbox), "area": area, "iscrowd": 0}
            for category, bbox, area in zip(objects["category"], objects["bbox"], areas)
        ],
    }


def make_batch_transform(image_processor):
    """Examples -> pixel_values, pixel_mask and labels (class_labels, boxes as normalised (cx, cy, w, h), size)."""

    def transform(examples: dict) -> dict:
        image_ids = examples.get("image_id") or list(range(len(examples["image"])))
        annotations = list(map(coco_annotations, image_ids, examples["objects"]))
        images = [image.convert("RGB") for image in examples["image"]]
        return image_processor(images=images, annotations=annotations, return_tensors="pt")

    return transform


def collate_detection_batch(examples: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "pixel_mask": torch.stack([example["pixel_mask"] for example in examples]),
        "labels": [example["labels"] for example in examples],
    }


# --- model ------------------------------------------------------------------------------------------------------


def build_detector(args: argparse.Namespace, names: list[str]):
    """DETR / Deformable DETR with a PVT backbone: pretrained from --pvt_checkpoint, else a random --pvt_variant."""
    labels = {"id2label": dict(enumerate(names)), "label2id": {name: index for index, name in enumerate(names)}}
    detector_kwargs = {**args.detector_config_overrides, "num_labels": len(names), **labels}
    if args.pvt_checkpoint and args.pvt_config_overrides:
        raise ValueError(
            "--pvt_config_overrides shape a randomly initialised backbone; with --pvt_checkpoint the checkpoint "
            "fixes the architecture. Give one of the two."
        )
    if args.pvt_checkpoint:
        model = pvt_detector_from_checkpoint(args.architecture, args.pvt_checkpoint, **detector_kwargs)
    else:
        settings = {**PVT_VARIANTS[args.pvt_variant], **args.pvt_config_overrides}
        pvt_config = PvtConfig(**settings, out_features=DEFAULT_OUT_FEATURES[args.architecture])
        config = detector_config_with_pvt(args.architecture, pvt_config, **detector_kwargs)
        model = DETECTOR_MODEL_CLASSES[args.architecture](config)
    if args.freeze_backbone:
        model.model.freeze_backbone()
    return model


def optimizer_parameter_groups(model, args: argparse.Namespace) -> list[dict]:
    """AdamW groups: weight decay by module type (training_loop), and the backbone at its own learning rate."""
    backbone = {id(parameter) for parameter in find_pvt_backbone(model).parameters()}
    groups = []
    for in_backbone, learning_rate in ((False, args.learning_rate), (True, args.backbone_learning_rate)):
        for group in weight_decay_parameter_groups(model, args.weight_decay):
            parameters = [parameter for parameter in group["params"] if (id(parameter) in backbone) == in_backbone]
            if parameters:
                groups.append({**group, "params": parameters, "lr": learning_rate})
    return groups


# --- evaluation -------------------------------------------------------------------------------------------------


def evaluate_detection(model, dataloader, image_processor, accelerator) -> dict[str, float]:
    """COCO box mAP (torchmetrics / pycocotools) over `dataloader`. Predictions and ground truth are compared in
    the pixels of the processed image (labels' `size`); IoU, hence AP, is the same in the original pixels since
    resizing keeps the aspect ratio (only the small / medium / large area ranges refer to processed pixels)."""
    model.eval()
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    for batch in dataloader:
        with torch.no_grad():
            outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        frame_sizes = torch.stack([label["size"] for label in batch["labels"]])
        predictions = image_processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=frame_sizes)
        pairs = []
        for prediction, label in zip(predictions, batch["labels"]):
            height, width = label["size"].tolist()
            scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=label["boxes"].device)
            target = {"boxes": center_to_corners_format(label["boxes"]) * scale, "labels": label["class_labels"]}
            prediction = {name: value.cpu() for name, value in prediction.items()}
            pairs.append((prediction, {name: value.cpu() for name, value in target.items()}))
        pairs = accelerator.gather_for_metrics(pairs, use_gather_object=True)
        metric.update([prediction for prediction, _ in pairs], [target for _, target in pairs])
    results = metric.compute()
    # torchmetrics reports -1 where a quantity does not apply (e.g. map_large without large objects): left out.
    return {name: round(float(results[name]), 4) for name in REPORTED_METRICS if float(results[name]) != -1}


# --- the run ----------------------------------------------------------------------------------------------------


def save_final_model(accelerator, model, image_processor, destination: Path) -> None:
    """The trained detector and its image processor as one folder, written beside it and then renamed."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        staging = destination.with_name(f".{destination.name}.incomplete")
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
        accelerator.unwrap_model(model).save_pretrained(staging)
        image_processor.save_pretrained(staging)
        replace_directory(staging, destination)
    accelerator.wait_for_everyone()


def train_detector(args: argparse.Namespace) -> dict:
    """Fine-tune the detector that `args` (the command's flags) describe; returns the final results."""
    output_dir = Path(args.output_dir)
    accelerator = create_accelerator(
        seed=args.seed,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        output_dir=output_dir,
        with_tracking=args.with_tracking,
        report_to=args.report_to,
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    with accelerator.main_process_first():
        dataset = load_detection_dataset(args)
        for split in ("train", "validation"):
            dataset[split], dropped = check_boxes(dataset[split], on_invalid=args.invalid_boxes)
            if dropped:
                accelerator.print(f"Dropped {dropped} malformed box(es) from the {split} split.")
    names = category_names(dataset["train"])

    model = build_detector(args, names)
    image_processor = IMAGE_PROCESSOR_CLASSES[args.architecture](
        size={"max_height": args.image_square_size, "max_width": args.image_square_size},
        do_pad=True,
        pad_size={"height": args.image_square_size, "width": args.image_square_size},
    )
    transform = make_batch_transform(image_processor)
    # Each dataloader draws its base seed from its own generator, not from the global RNG: a resumed run's dropout
    # then sees the same random numbers as the uninterrupted run.
    loader_settings = {"collate_fn": collate_detection_batch, "num_workers": args.dataloader_num_workers}
    train_dataloader = DataLoader(
        dataset["train"].with_transform(transform),
        shuffle=True,
        batch_size=args.per_device_train_batch_size,
        generator=torch.Generator().manual_seed(args.seed),
        **loader_settings,
    )
    eval_dataloader = DataLoader(
        dataset["validation"].with_transform(transform),
        batch_size=args.per_device_eval_batch_size,
        generator=torch.Generator().manual_seed(args.seed),
        **loader_settings,
    )
    optimizer = torch.optim.AdamW(optimizer_parameter_groups(model, args))
    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader
    )
    plan = plan_training_steps(
        len(train_dataloader), args.gradient_accumulation_steps, args.num_train_epochs, args.max_train_steps
    )
    lr_scheduler = accelerator.prepare(
        get_scheduler(args.lr_scheduler_type, optimizer, args.num_warmup_steps, plan.max_train_steps)
    )
    if args.with_tracking:
        accelerator.init_trackers("pvt_detection", {k: v for k, v in vars(args).items() if not isinstance(v, dict)})

    start = time.perf_counter()
    history = run_training(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        train_dataloader,
        plan,
        compute_loss=lambda model, batch: model(**batch).loss,
        evaluate=lambda model: evaluate_detection(model, eval_dataloader, image_processor, accelerator),
        output_dir=output_dir,
        checkpointing_steps=args.checkpointing_steps,
        resume_from_checkpoint=args.resume_from_checkpoint,
        max_grad_norm=args.max_grad_norm or None,
        run_settings={
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "architecture": args.architecture,
            "seed": args.seed,
            "dataset_name": args.dataset_name,
            "num_train_images": args.num_train_images if args.dataset_name is None else None,
            "canvas_size": args.canvas_size if args.dataset_name is None else None,
            "image_square_size": args.image_square_size,
        },
    )
    results = {
        **{f"eval_{name}": value for name, value in history.last_evaluation.items() if name not in ("step", "epoch")},
        "train_loss": history.steps[-1]["loss"] if history.steps else None,
        "completed_steps": history.last_evaluation["step"],
        "epoch": history.last_evaluation["epoch"],
        "train_runtime_seconds_this_run": round(time.perf_counter() - start, 1),
        "architecture": args.architecture,
    }
    if accelerator.is_main_process:
        write_json(output_dir / "all_results.json", results)
    save_final_model(accelerator, model, image_processor, output_dir / "model")
    accelerator.end_training()
    accelerator.print(json.dumps(results, indent=2))
    return results

