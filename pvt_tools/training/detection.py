# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune Transformers' DETR (or, with --architecture deformable_detr, Deformable DETR) with a PVT backbone.

Data: any `datasets` object-detection data set in the layout of Transformers' object-detection examples (an
`image` column and an `objects` column with COCO `bbox` and `category`), from the Hub or a local folder; by default
the embedded digits canvases of detection_data.py, which need no download. Transformers' DetrImageProcessor /
DeformableDetrImageProcessor resizes, normalises and converts the boxes; torchmetrics' MeanAveragePrecision
(pycocotools) gives the COCO mAP. The loop, checkpoints and resumption are loop.py's, shared with the
classification script; data loading, the model with its PVT backbone, the optimizer groups, the dataloaders and the
record of the run are dense.py's, shared with the segmentation script.

    python scripts/train_detection.py --output_dir out/detr-digits            # DETR, PVT-Tiny from scratch
    python scripts/train_detection.py --architecture deformable_detr --pvt_checkpoint path/to/pvt-small ...
    accelerate launch scripts/train_detection.py ...                          # several processes or machines

Writes to --output_dir: step_N / epoch_N checkpoints, training_history.json, training_curves.png (loss, learning
rate and mAP against the step), all_results.json and, last, the detector itself, beside them: its weights and
config, its image processor, the two PVT code files its backbone needs and a README.md saying how to load it
(`DetrForObjectDetection.from_pretrained(output_dir)` once `modeling_pvt` is imported).
"""

import argparse
import json
import time

import datasets
import torch
from torchmetrics.detection import MeanAveragePrecision
from transformers import DeformableDetrImageProcessor, DetrImageProcessor, get_scheduler
from transformers.image_transforms import center_to_corners_format

from pvt_tools.training.dense import (
    build_model_with_pvt_backbone,
    check_dense_run,
    load_train_and_validation,
    make_dataloaders,
    optimizer_parameter_groups,
    prepare_dense_output_dir,
    run_settings,
    save_final_model,
    training_results,
)
from pvt_tools.training.detection_data import (
    category_names,
    check_boxes,
    make_digits_detection_splits,
)
from pvt_tools.training.loop import (
    create_accelerator,
    end_line,
    final_eval_metrics,
    plan_training_steps,
    resolve_warmup,
    run_summary,
    run_training,
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
    return load_train_and_validation(
        args,
        required_columns={"image", "objects"},
        requirement="a detection data set needs 'image' and 'objects' (with COCO 'bbox' and 'category'), as "
        "Transformers' object-detection examples.",
    )


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
    model = build_model_with_pvt_backbone(args, dict(enumerate(names)))
    if args.freeze_backbone:
        model.model.freeze_backbone()
    return model


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


def train_detector(args: argparse.Namespace) -> dict:
    """Fine-tune the detector that `args` (the command's flags) describe; returns the final results."""
    check_dense_run(args)
    accelerator = create_accelerator(
        seed=args.seed,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        output_dir=args.output_dir,
        with_tracking=args.with_tracking,
        report_to=args.report_to,
    )
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
    train_dataloader, eval_dataloader = make_dataloaders(
        dataset, make_batch_transform(image_processor), collate_detection_batch, args
    )
    optimizer = torch.optim.AdamW(optimizer_parameter_groups(model, args))
    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader
    )
    plan = plan_training_steps(
        len(train_dataloader), args.gradient_accumulation_steps, args.num_train_epochs, args.max_train_steps
    )
    if args.num_warmup_steps is None:
        num_warmup_steps, warmup_source = 0, "default: none, as DETR"
    else:
        num_warmup_steps, warmup_source = resolve_warmup(plan, args.num_warmup_steps)
    lr_scheduler = accelerator.prepare(
        get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps, plan.max_train_steps)
    )
    if args.with_tracking:
        accelerator.init_trackers("pvt_detection", {k: v for k, v in vars(args).items() if not isinstance(v, dict)})
    total_batch_size = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    processes = accelerator.num_processes
    learning_rate_default = args.learning_rate == 1e-4 and args.backbone_learning_rate == 1e-5
    accelerator.print(
        run_summary(
            num_parameters=sum(parameter.numel() for parameter in model.parameters()),
            num_images=len(dataset["train"]),
            details=f"{args.architecture}, {len(names)} classes, {len(dataset['validation']):,} for validation, total "
            f"batch size {total_batch_size}, {processes} process{'es' if processes != 1 else ''}",
            plan=plan,
            steps_source="--max_train_steps"
            if args.max_train_steps is not None
            else f"{args.num_train_epochs} x {plan.num_update_steps_per_epoch} steps",
            num_warmup_steps=num_warmup_steps,
            warmup_source=warmup_source,
            learning_rate=args.learning_rate,
            learning_rate_source="default: DETR's 1e-4, and 1e-5 for the backbone"
            if learning_rate_default
            else f"--learning_rate; backbone {args.backbone_learning_rate:.3g}",
            schedule=args.lr_scheduler_type,
            schedule_source="default" if args.lr_scheduler_type == "cosine" else "--lr_scheduler_type",
        )
    )

    start = time.perf_counter()
    output_dir = prepare_dense_output_dir(accelerator, args)
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
        run_settings=run_settings(args, image_square_size=args.image_square_size),
    )
    results = {**final_eval_metrics(history), **training_results(history, start), "architecture": args.architecture}
    save_final_model(
        accelerator, model, image_processor, output_dir, "pvt-train-detection", "AutoModelForObjectDetection"
    )
    if accelerator.is_main_process:
        write_json(output_dir / "all_results.json", results)
    accelerator.end_training()
    accelerator.print(json.dumps(results, indent=2))
    accelerator.print(end_line(output_dir, output_dir / "all_results.json"))
    return results


__all__ = [
    "IMAGE_PROCESSOR_CLASSES",
    "build_detector",
    "collate_detection_batch",
    "evaluate_detection",
    "load_detection_dataset",
    "make_batch_transform",
    "train_detector",
]
