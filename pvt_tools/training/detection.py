# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune Transformers' Deformable DETR (or, with --architecture detr, DETR) with a PVT backbone.

Data: any `datasets` object-detection data set in the layout of Transformers' object-detection examples (an
`image` column and an `objects` column with COCO `bbox` and `category`), from the Hub or a local folder; by default
the embedded digits canvases of detection_data.py, which need no download. Transformers' DetrImageProcessor /
DeformableDetrImageProcessor resizes, normalises and converts the boxes; torchmetrics' MeanAveragePrecision
(pycocotools) gives the COCO mAP. The loop, checkpoints and resumption are loop.py's, shared with the
classification script; data loading, the model with its PVT backbone, the optimizer groups, the dataloaders and the
record of the run are dense.py's, shared with the segmentation script.

    pvt-train-detection --output_dir out/detr-digits --pvt_checkpoint out/upernet-digits --freeze_backbone
    accelerate launch -m pvt_tools.commands.train_detection ...     # several processes or machines

Writes to --output_dir: step_N / epoch_N checkpoints, training_history.json, training_curves.png (loss, learning
rate and mAP against the step), all_results.json (the final scores beside the untrained detector's, `untrained_*`),
validation_predictions.png (boxes over the first validation images) and, last, the detector itself, beside them:
its weights and config, its image processor, the two PVT code files its backbone needs and a README.md saying how
to load it (`AutoModelForObjectDetection.from_pretrained(output_dir)` once `modeling_pvt` is imported).
"""

import argparse
import json
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, ImageDraw
from torchmetrics.detection import MeanAveragePrecision
from transformers import DeformableDetrImageProcessor, DetrImageProcessor, get_scheduler
from transformers.image_transforms import center_to_corners_format

from pvt_tools.backbones import check_detector_buildable
from pvt_tools.training.curves import save_png_whole
from pvt_tools.training.dense import (
    build_model_with_pvt_backbone,
    check_dense_run,
    dense_run_summary,
    displayable_image,
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
    run_training,
    write_json,
)

IMAGE_PROCESSOR_CLASSES = {"detr": DetrImageProcessor, "deformable_detr": DeformableDetrImageProcessor}
REPORTED_METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")
PREDICTIONS_PICTURE = "validation_predictions.png"
TRUTH_COLOUR = (0, 200, 0)
PREDICTION_COLOUR = (230, 0, 0)
PICTURE_HEADER = 16  # pixels above the panels, for the legend
PANEL_GAP = 8  # white pixels between panels


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


def load_checked_dataset(args: argparse.Namespace, report=print) -> tuple[datasets.DatasetDict, list[str]]:
    """The train and validation splits with malformed boxes dropped (each count passed to `report`) or refused, as
    --invalid_boxes says, and the class names."""
    dataset = load_detection_dataset(args)
    for split in ("train", "validation"):
        dataset[split], dropped = check_boxes(dataset[split], on_invalid=args.invalid_boxes)
        if dropped:
            report(f"Dropped {dropped} malformed box(es) from the {split} split.")
        if not any(objects["bbox"] for objects in dataset[split]["objects"]):
            raise ValueError(
                f"The {split} split has no objects left ({len(dataset[split]):,} images, no valid box): a detector "
                "cannot learn from it, nor be scored on it. Check its 'objects' column (COCO 'bbox' [x, y, width, "
                "height] in pixels)."
            )
    return dataset, category_names(dataset["train"])


def make_image_processor(args: argparse.Namespace):
    """The architecture's image processor: the longer side resized to --image_square_size, padded to a square."""
    return IMAGE_PROCESSOR_CLASSES[args.architecture](
        size={"max_height": args.image_square_size, "max_width": args.image_square_size},
        do_pad=True,
        pad_size={"height": args.image_square_size, "width": args.image_square_size},
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


def training_setup(args: argparse.Namespace):
    """The model, its AdamW and the training dataloader as a run with `args` builds them, without Accelerate: what
    the step profiler (pvt_tools.benchmark.detection_step) times."""
    check_detector_buildable(args.architecture, **args.detector_config_overrides)
    dataset, names = load_checked_dataset(args)
    model = build_detector(args, names)
    train_dataloader, _ = make_dataloaders(
        dataset, make_batch_transform(make_image_processor(args)), collate_detection_batch, args
    )
    return model, torch.optim.AdamW(optimizer_parameter_groups(model, args)), train_dataloader


def describe_detector(config) -> str:
    """E.g. "deformable_detr (d_model 128, 2+2 layers, 20 queries)", for the start summary."""
    return (
        f"{config.model_type} (d_model {config.d_model}, {config.encoder_layers}+{config.decoder_layers} layers, "
        f"{config.num_queries} queries)"
    )


# --- evaluation -------------------------------------------------------------------------------------------------


def predictions_and_targets(model, batch: dict, image_processor, threshold: float) -> list[tuple[dict, dict]]:
    """(prediction, target) per image of `batch`, on the CPU: the predictions scoring at least `threshold` and the
    ground truth, both with xyxy boxes in the pixels of the processed image (labels' `size`)."""
    with torch.no_grad():
        outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
    frame_sizes = torch.stack([label["size"] for label in batch["labels"]])
    predictions = image_processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=frame_sizes)
    pairs = []
    for prediction, label in zip(predictions, batch["labels"]):
        height, width = label["size"].tolist()
        scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=label["boxes"].device)
        target = {"boxes": center_to_corners_format(label["boxes"]) * scale, "labels": label["class_labels"]}
        prediction = {name: value.cpu() for name, value in prediction.items()}
        pairs.append((prediction, {name: value.cpu() for name, value in target.items()}))
    return pairs


def evaluate_detection(model, dataloader, image_processor, accelerator) -> dict[str, float]:
    """COCO box mAP (torchmetrics / pycocotools) over `dataloader`. Predictions and ground truth are compared in
    the pixels of the processed image (labels' `size`); IoU, hence AP, is the same in the original pixels since
    resizing keeps the aspect ratio (only the small / medium / large area ranges refer to processed pixels)."""
    model.eval()
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    for batch in dataloader:
        pairs = predictions_and_targets(model, batch, image_processor, threshold=0.0)
        pairs = accelerator.gather_for_metrics(pairs, use_gather_object=True)
        metric.update([prediction for prediction, _ in pairs], [target for _, target in pairs])
    results = metric.compute()
    # torchmetrics reports -1 where a quantity does not apply (e.g. map_large without large objects): left out.
    return {name: round(float(results[name]), 4) for name in REPORTED_METRICS if float(results[name]) != -1}


# --- pictures ---------------------------------------------------------------------------------------------------


def draw_detections(
    image: Image.Image,
    truth_boxes: list[list[float]],
    truth_names: list[str],
    predicted_boxes: list[list[float]],
    predicted_names: list[str],
    scores: list[float],
    scale: int = 1,
) -> Image.Image:
    """`image` enlarged `scale` times, with the ground truth's boxes (xyxy, in `image`'s pixels) in green, named
    below their box, and the predictions' in red, named with their score above it."""
    panel = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(panel)
    for colour, boxes, captions, above in (
        (TRUTH_COLOUR, truth_boxes, truth_names, False),
        (
            PREDICTION_COLOUR,
            predicted_boxes,
            [f"{name} {score:.2f}" for name, score in zip(predicted_names, scores)],
            True,
        ),
    ):
        for box, caption in zip(boxes, captions):
            left, top, right, bottom = (round(value * scale) for value in box)
            draw.rectangle((left, top, right, bottom), outline=colour, width=2)
            draw.text((left + 2, top - 11 if above else bottom + 2), caption, fill=colour)
    return panel


def save_detection_picture(
    model,
    dataloader,
    image_processor,
    id2label: dict[int, str],
    path: Path,
    count: int = 4,
    threshold: float = 0.3,
    panel_size: int = 256,
) -> Path:
    """A PNG of the first `count` validation images side by side, below a legend, each with its ground truth
    (green) and the predictions scoring at least `threshold` (red, with label and score), written whole or not at
    all. (Deformable DETR's sigmoid scores stay around 0.3-0.5 after a short run, even for right answers.)"""
    model.eval()
    batch = next(iter(dataloader))
    pairs = predictions_and_targets(model, batch, image_processor, threshold)
    panels = []
    for pixels, label, (prediction, target) in list(zip(batch["pixel_values"], batch["labels"], pairs))[:count]:
        height, width = label["size"].tolist()
        image = displayable_image(pixels, image_processor)[:, :height, :width]
        image = Image.fromarray(np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8))
        panels.append(
            draw_detections(
                image,
                target["boxes"].tolist(),
                [id2label[int(index)] for index in target["labels"]],
                prediction["boxes"].tolist(),
                [id2label[int(index)] for index in prediction["labels"]],
                prediction["scores"].tolist(),
                scale=max(1, panel_size // max(height, width)),
            )
        )
    width = sum(panel.width for panel in panels) + PANEL_GAP * (len(panels) - 1)
    picture = Image.new("RGB", (width, PICTURE_HEADER + max(panel.height for panel in panels)), "white")
    caption = ImageDraw.Draw(picture)
    caption.text((2, 3), "ground truth", fill=TRUTH_COLOUR)
    caption.text((90, 3), f"predictions scoring at least {threshold:.2f}, with their scores", fill=PREDICTION_COLOUR)
    left = 0
    for panel in panels:
        picture.paste(panel, (left, PICTURE_HEADER))
        left += panel.width + PANEL_GAP
    return save_png_whole(path, picture.save)


# --- the run ----------------------------------------------------------------------------------------------------


def train_detector(args: argparse.Namespace) -> dict:
    """Fine-tune the detector that `args` (the command's flags) describe; returns the final results."""
    check_dense_run(args)
    check_detector_buildable(args.architecture, **args.detector_config_overrides)
    accelerator = create_accelerator(
        seed=args.seed,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        output_dir=args.output_dir,
        with_tracking=args.with_tracking,
        report_to=args.report_to,
    )
    with accelerator.main_process_first():
        dataset, names = load_checked_dataset(args, report=accelerator.print)
    model = build_detector(args, names)
    image_processor = make_image_processor(args)
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
    accelerator.print(
        dense_run_summary(
            accelerator,
            args,
            model,
            dataset,
            plan,
            what=f"{describe_detector(accelerator.unwrap_model(model).config)}, {len(names)} classes",
            num_warmup_steps=num_warmup_steps,
            warmup_source=warmup_source,
            learning_rate_source=f"{args.learning_rate_source}; backbone "
            + ("frozen" if args.freeze_backbone else f"{args.backbone_learning_rate:.3g}"),
            default_schedule="cosine",
        )
    )

    def evaluate(model) -> dict[str, float]:
        return evaluate_detection(model, eval_dataloader, image_processor, accelerator)

    # What the detector scores before any training step (its backbone as given, its heads random): the baseline
    # that all_results.json shows beside the trained scores.
    untrained_scores = evaluate(model)
    accelerator.print(
        f"Untrained detector on the {len(dataset['validation']):,} validation images: "
        f"mAP {untrained_scores['map']:.3f}, "
        f"mAP@50 {untrained_scores['map_50']:.3f}, recall@100 {untrained_scores['mar_100']:.3f}."
    )
    if not args.pvt_checkpoint:
        accelerator.print(
            f"Backbone: a randomly initialised {args.pvt_variant} (no --pvt_checkpoint). A detector on a random "
            "backbone learns slowly (benchmarks/detection.md: mAP 0.034 after 40 minutes on 2 CPU cores); to detect "
            "within minutes, start from a PVT that knows the objects (--pvt_checkpoint, as docs/detection.md shows)."
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
        evaluate=evaluate,
        output_dir=output_dir,
        checkpointing_steps=args.checkpointing_steps,
        resume_from_checkpoint=args.resume_from_checkpoint,
        max_grad_norm=args.max_grad_norm or None,
        run_settings=run_settings(args, image_square_size=args.image_square_size),
    )
    results = {
        **final_eval_metrics(history),
        **{f"untrained_{name}": value for name, value in untrained_scores.items()},
        **training_results(history, start),
        "architecture": args.architecture,
    }
    save_final_model(
        accelerator, model, image_processor, output_dir, "pvt-train-detection", "AutoModelForObjectDetection"
    )
    if accelerator.is_main_process:
        write_json(output_dir / "all_results.json", results)
        save_detection_picture(
            accelerator.unwrap_model(model),
            eval_dataloader,
            image_processor,
            dict(enumerate(names)),
            output_dir / PREDICTIONS_PICTURE,
        )
    accelerator.end_training()
    accelerator.print(json.dumps(results, indent=2))
    accelerator.print(end_line(output_dir, output_dir / "all_results.json"))
    return results


__all__ = [
    "IMAGE_PROCESSOR_CLASSES",
    "PREDICTIONS_PICTURE",
    "draw_detections",
    "save_detection_picture",
    "build_detector",
    "collate_detection_batch",
    "evaluate_detection",
    "load_checked_dataset",
    "load_detection_dataset",
    "make_batch_transform",
    "make_image_processor",
    "train_detector",
    "training_setup",
]
