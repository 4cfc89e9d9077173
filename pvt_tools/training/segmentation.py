# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune Transformers' Mask2Former (semantic or instance segmentation) or UperNet with a PVT backbone.

Data: any `datasets` segmentation data set in the layout of Transformers' segmentation examples (an `image` column
and an `annotation` column, see segmentation_data.py), from the Hub or a local folder; by default the embedded
digits canvases, which need no download. Transformers' image processors prepare the inputs (Mask2Former: binary
`mask_labels` and `class_labels`; UperNet: Segformer-style label maps) and turn predictions back into label maps
(`post_process_semantic_segmentation`). Metrics come from torchmetrics' confusion matrix: mean IoU, per-class IoU,
mean (per-class) accuracy and overall pixel accuracy, with the definitions of `evaluate`'s mean_iou. The loop,
checkpoints and exact resumption are loop.py's, shared with the classification and detection scripts; data loading,
the model with its PVT backbone, the optimizer groups, the dataloaders and the record of the run are dense.py's,
shared with the detection script.

    pvt-train-segmentation --output_dir out/mask2former-digits                 # Mask2Former, semantic, PVT-Tiny
    pvt-train-segmentation --architecture upernet --pvt_checkpoint path/to/pvt-small ...
    pvt-train-segmentation --task instance ...                                   # Mask2Former, instance masks

Writes to --output_dir: step_N / epoch_N checkpoints, training_history.json, training_curves.png, all_results.json
(eval_mean_iou, eval_mean_accuracy, eval_overall_accuracy, eval_per_category_iou; for --task instance also
eval_mask_map and eval_mask_map_50, COCO mask mAP), validation_predictions.png
(a few validation images, their ground truth and the model's prediction) and, last, the model and its image
processor (config.json, model.safetensors, preprocessor_config.json), ready for `from_pretrained` once
`modeling_pvt` is imported.
"""

import argparse
import json
import math
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from torchmetrics.classification import MulticlassConfusionMatrix
from transformers import (
    Mask2FormerImageProcessor,
    SegformerImageProcessor,
    get_scheduler,
)

from pvt_tools.backbones import find_pvt_backbone
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
from pvt_tools.training.loop import (
    create_accelerator,
    end_line,
    final_eval_metrics,
    plan_training_steps,
    run_training,
    write_json,
)
from pvt_tools.training.segmentation_data import (
    IGNORE_INDEX,
    TASKS,
    digits_id2label,
    instance_annotation,
    make_digits_segmentation_splits,
    semantic_label_map,
)

ARCHITECTURES = ("mask2former", "upernet")
AUTO_MODEL_CLASSES = {
    "mask2former": "AutoModelForUniversalSegmentation",
    "upernet": "AutoModelForSemanticSegmentation",
}
REPORTED_METRICS = ("mean_iou", "mean_accuracy", "overall_accuracy")
PREDICTIONS_PICTURE = "validation_predictions.png"


# --- data -------------------------------------------------------------------------------------------------------


def load_segmentation_dataset(args: argparse.Namespace) -> datasets.DatasetDict:
    """Train and validation splits with `image` and `annotation` columns: the embedded digits canvases, or a Hub /
    local data set (`label` or `pixel_values` columns are renamed as Transformers' examples do; a validation split
    is cut from train when there is none)."""
    if args.dataset_name is None:
        return make_digits_segmentation_splits(
            args.num_train_images, args.num_validation_images, args.canvas_size, task=args.task, seed=args.seed
        )
    dataset = load_train_and_validation(
        args,
        required_columns={"image", "annotation"},
        requirement="a segmentation data set needs 'image' and 'annotation' (or 'label'), as Transformers' "
        "segmentation examples.",
        renames={"pixel_values": "image", "label": "annotation"},
    )
    columns = ["image", "annotation"]
    return datasets.DatasetDict({name: split.select_columns(columns) for name, split in dataset.items()})


def read_id2label(path: str) -> dict[int, str]:
    """An --id2label JSON file: {"0": "background", "1": "road", ...}."""
    try:
        mapping = json.loads(Path(path).read_text())
        return {int(index): str(name) for index, name in sorted(mapping.items(), key=lambda item: int(item[0]))}
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(
            f"--id2label {path} is not a readable JSON object of class ids to names, e.g. "
            f'{{"0": "background", "1": "cat"}} ({error}).'
        ) from error


def class_names(args: argparse.Namespace, dataset: datasets.DatasetDict) -> dict[int, str]:
    """id2label: from --id2label, the embedded data's names, or else the class ids found in the training
    annotations (after reduce_labels), named by their number."""
    if args.id2label:
        id2label = read_id2label(args.id2label)
    elif args.dataset_name is None:
        id2label = digits_id2label(args.task)
    else:
        annotations = dataset["train"]["annotation"]
        label_maps = (semantic_label_map(annotation, args.task, args.reduce_labels) for annotation in annotations)
        largest = max(int(np.max(np.where(labels == IGNORE_INDEX, -1, labels))) for labels in label_maps)
        if largest < 0:
            raise ValueError("The training annotations hold no labelled pixel: check the data or --reduce_labels.")
        id2label = {index: str(index) for index in range(largest + 1)}
    if sorted(id2label) != list(range(len(id2label))):
        raise ValueError(f"Class ids must be 0 .. N-1 without gaps; --id2label gives {sorted(id2label)}.")
    return id2label


def make_image_processor(args: argparse.Namespace):
    """Resizes every image to --image_size squared; Mask2Former's processor also makes the binary masks."""
    size = {"height": args.image_size, "width": args.image_size}
    if args.architecture == "upernet":
        return SegformerImageProcessor(size=size, do_reduce_labels=args.reduce_labels)
    # Instance annotations number classes from 1 (0 = no object): the processor's reduce_labels shifts them back.
    return Mask2FormerImageProcessor(
        size=size, ignore_index=IGNORE_INDEX, do_reduce_labels=args.reduce_labels or args.task == "instance"
    )


def make_batch_transform(image_processor, task: str, reduce_labels: bool, image_size: int):
    """Examples -> pixel_values (+ pixel_mask, mask_labels, class_labels for Mask2Former) and `labels`, the label
    map at the processed size that the metrics compare against."""

    def label_maps(annotations) -> torch.Tensor:
        resized = [annotation.resize((image_size, image_size), Image.Resampling.NEAREST) for annotation in annotations]
        return torch.stack([torch.from_numpy(semantic_label_map(a, task, reduce_labels)) for a in resized])

    def transform(examples: dict) -> dict:
        images = [image.convert("RGB") for image in examples["image"]]
        annotations = examples["annotation"]
        if isinstance(image_processor, SegformerImageProcessor):
            maps = [Image.fromarray(semantic_label_map(a, task, False).astype(np.uint8)) for a in annotations]
            return dict(image_processor(images=images, segmentation_maps=maps, return_tensors="pt"))
        if task == "instance":
            instance_maps, instance_to_class = zip(*map(instance_annotation, annotations))
            inputs = image_processor(
                images=images,
                segmentation_maps=list(instance_maps),
                instance_id_to_semantic_id=list(instance_to_class),
                return_tensors="pt",
            )
        else:
            maps = [semantic_label_map(a, task, False).astype(np.uint8) for a in annotations]
            inputs = image_processor(images=images, segmentation_maps=maps, return_tensors="pt")
        return {**inputs, "labels": label_maps(annotations)}

    return transform


def collate_segmentation_batch(examples: list[dict]) -> dict:
    batch = {name: torch.stack([example[name] for example in examples]) for name in ("pixel_values", "labels")}
    if "mask_labels" in examples[0]:
        batch["pixel_mask"] = torch.stack([example["pixel_mask"] for example in examples])
        batch["mask_labels"] = [example["mask_labels"] for example in examples]
        batch["class_labels"] = [example["class_labels"] for example in examples]
    return batch


def compute_loss(model, batch: dict) -> torch.Tensor:
    if "mask_labels" in batch:
        inputs = {name: batch[name] for name in ("pixel_values", "pixel_mask", "mask_labels", "class_labels")}
        return model(**inputs).loss
    return model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss


# --- model ------------------------------------------------------------------------------------------------------


def freeze_backbone_stages(model: torch.nn.Module, num_stages: int) -> None:
    """Freeze the first `num_stages` stages of the PVT backbone (patch embedding, position embedding, layers), as
    mmdet's `frozen_stages`, with the flag's name in the error."""
    backbone = find_pvt_backbone(model)
    if not 0 <= num_stages <= len(backbone.stages):
        raise ValueError(
            f"--freeze_backbone_stages must be between 0 and {len(backbone.stages)} (the PVT's stages), got "
            f"{num_stages}."
        )
    backbone.freeze_stages(num_stages)


def build_segmentation_model(args: argparse.Namespace, id2label: dict[int, str]):
    """Mask2Former / UperNet with a PVT backbone: pretrained from --pvt_checkpoint, else a random --pvt_variant."""
    model = build_model_with_pvt_backbone(args, id2label)
    if args.freeze_backbone_stages:
        freeze_backbone_stages(model, args.freeze_backbone_stages)
    return model


# --- evaluation -------------------------------------------------------------------------------------------------


def scores_from_confusion(confusion: torch.Tensor) -> dict:
    """Mean IoU, mean accuracy, overall accuracy and per-class IoU / accuracy from a (ground truth x prediction)
    confusion matrix, with `evaluate`'s mean_iou definitions: a class without ground-truth pixels has no accuracy,
    a class absent from both ground truth and prediction no IoU (NaN, left out of the means)."""
    confusion = confusion.double()
    intersection = confusion.diagonal()
    ground_truth, predicted = confusion.sum(dim=1), confusion.sum(dim=0)
    union = ground_truth + predicted - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.nan)
    accuracy = torch.where(ground_truth > 0, intersection / ground_truth.clamp(min=1), torch.nan)
    return {
        "mean_iou": float(iou.nanmean()),
        "mean_accuracy": float(accuracy.nanmean()),
        "overall_accuracy": float(intersection.sum() / ground_truth.sum().clamp(min=1)),
        "per_category_iou": iou.tolist(),
        "per_category_accuracy": accuracy.tolist(),
    }


def majority_class_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """The confusion matrix of a model that learned nothing: every pixel called the most frequent ground-truth
    class. Its scores are the baseline a trained model has to beat (on the digits: all background)."""
    ground_truth = confusion.sum(dim=1)
    baseline = torch.zeros_like(confusion)
    baseline[:, ground_truth.argmax()] = ground_truth
    return baseline


def segmenter_outputs(model, batch: dict):
    """The model's raw outputs for a batch (no gradients)."""
    inputs = {"pixel_values": batch["pixel_values"]}
    if "pixel_mask" in batch:
        inputs["pixel_mask"] = batch["pixel_mask"]
    with torch.no_grad():
        return model(**inputs)


def predict_label_maps(model, batch: dict, image_processor, outputs=None) -> torch.Tensor:
    """(B, H, W) class ids at the labels' size, through the image processor's post-processing."""
    outputs = segmenter_outputs(model, batch) if outputs is None else outputs
    sizes = [tuple(labels.shape) for labels in batch["labels"]]
    return torch.stack(image_processor.post_process_semantic_segmentation(outputs, target_sizes=sizes))


def instance_pairs(outputs, batch: dict, image_processor) -> list[tuple[dict, dict]]:
    """(prediction, ground truth) per image for torchmetrics' mask mAP: every query with a non-empty mask, scored
    (threshold 0: AP ranks them), against the processor's ground-truth masks of the same (processed) size."""
    sizes = [tuple(masks.shape[-2:]) for masks in batch["mask_labels"]]
    results = image_processor.post_process_instance_segmentation(
        outputs, threshold=0.0, target_sizes=sizes, return_binary_maps=True
    )
    pairs = []
    for result, size, masks, classes in zip(results, sizes, batch["mask_labels"], batch["class_labels"]):
        segments = result["segments_info"]
        predicted = result["segmentation"].bool() if segments else torch.zeros((0, *size), dtype=torch.bool)
        prediction = {
            "masks": predicted.cpu(),
            "scores": torch.tensor([segment["score"] for segment in segments], dtype=torch.float32),
            "labels": torch.tensor([segment["label_id"] for segment in segments], dtype=torch.long),
        }
        pairs.append((prediction, {"masks": masks.bool().cpu(), "labels": classes.long().cpu()}))
    return pairs


class SegmentationEvaluator:
    """Each evaluation: the scalar metrics for the loop's history (mean IoU, mean and overall accuracy; for
    instance segmentation also torchmetrics' COCO mask mAP), the per-class ones kept in `last_scores`."""

    def __init__(self, dataloader, image_processor, accelerator, id2label: dict[int, str], task: str = "semantic"):
        self.dataloader, self.image_processor, self.accelerator = dataloader, image_processor, accelerator
        self.id2label, self.task = id2label, task
        self.last_scores: dict = {}
        self.baseline_scores: dict = {}

    def __call__(self, model) -> dict[str, float]:
        from torchmetrics.detection import MeanAveragePrecision

        model.eval()
        metric = MulticlassConfusionMatrix(num_classes=len(self.id2label), ignore_index=IGNORE_INDEX)
        mask_map = MeanAveragePrecision(iou_type="segm") if self.task == "instance" else None
        for batch in self.dataloader:
            outputs = segmenter_outputs(model, batch)
            predictions = predict_label_maps(model, batch, self.image_processor, outputs)
            predictions, labels = self.accelerator.gather_for_metrics((predictions, batch["labels"]))
            metric.update(predictions.cpu(), labels.cpu())
            if mask_map is not None:
                pairs = instance_pairs(outputs, batch, self.image_processor)
                pairs = self.accelerator.gather_for_metrics(pairs, use_gather_object=True)
                mask_map.update([prediction for prediction, _ in pairs], [target for _, target in pairs])
        confusion = metric.compute()
        self.last_scores = scores_from_confusion(confusion)
        self.baseline_scores = scores_from_confusion(majority_class_confusion(confusion))
        per_class = {self.id2label[index]: value for index, value in enumerate(self.last_scores["per_category_iou"])}
        shown = ", ".join(f"{name} {value:.3f}" for name, value in per_class.items())
        self.accelerator.print(f"per-class IoU: {shown}")
        metrics = {name: round(self.last_scores[name], 4) for name in REPORTED_METRICS}
        if mask_map is not None:
            results = mask_map.compute()
            metrics.update({f"mask_{name}": round(float(results[name]), 4) for name in ("map", "map_50")})
        return metrics

    def per_category(self, name: str) -> dict[str, float | None]:
        return {
            self.id2label[index]: None if math.isnan(value) else round(value, 4)
            for index, value in enumerate(self.last_scores[name])
        }


def palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class id (class 0 black), IGNORE_INDEX white."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    colours[1:num_classes] = rng.integers(40, 256, size=(max(num_classes - 1, 0), 3))
    colours[IGNORE_INDEX] = 255
    return colours


def save_prediction_picture(
    model, dataloader, image_processor, id2label: dict[int, str], path: Path, count: int = 4
) -> Path:
    """A PNG of `count` validation images, their ground truth and the prediction, side by side (rows); the titles
    name the classes in each label map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    batch = next(iter(dataloader))
    predictions = predict_label_maps(model, batch, image_processor).cpu().numpy()
    labels = batch["labels"].cpu().numpy()
    colours = palette(len(id2label))
    count = min(count, len(labels))
    figure, axes = plt.subplots(count, 3, figsize=(7.5, 2.6 * count), squeeze=False)
    for row in range(count):
        image = displayable_image(batch["pixel_values"][row], image_processor).transpose(1, 2, 0)
        titles = ["image"] + [
            f"{kind}: {', '.join(id2label[index] for index in np.unique(label_map) if index in id2label)}"
            for kind, label_map in (("truth", labels[row]), ("predicted", predictions[row]))
        ]
        for axis, picture, title in zip(axes[row], (image, colours[labels[row]], colours[predictions[row]]), titles):
            axis.imshow(picture, interpolation="nearest")
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    save_png_whole(path, lambda partial: figure.savefig(partial, dpi=90))
    plt.close(figure)
    return path


# --- the run ----------------------------------------------------------------------------------------------------


def check_arguments(args: argparse.Namespace) -> None:
    if args.architecture == "upernet" and args.task != "semantic":
        raise ValueError(
            "UperNet predicts semantic label maps only: use --architecture mask2former for --task instance."
        )
    if args.task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {args.task!r}.")


def train_segmenter(args: argparse.Namespace) -> dict:
    """Fine-tune the segmentation model that `args` (the command's flags) describe; returns the final results."""
    check_arguments(args)
    check_dense_run(args)
    accelerator = create_accelerator(
        seed=args.seed,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        output_dir=args.output_dir,
        with_tracking=args.with_tracking,
        report_to=args.report_to,
    )

    with accelerator.main_process_first():
        dataset = load_segmentation_dataset(args)
        id2label = class_names(args, dataset)

    model = build_segmentation_model(args, id2label)
    image_processor = make_image_processor(args)
    train_dataloader, eval_dataloader = make_dataloaders(
        dataset,
        make_batch_transform(image_processor, args.task, args.reduce_labels, args.image_size),
        collate_segmentation_batch,
        args,
        # UperNet's pooling module has a BatchNorm over 1x1 maps, which cannot train on a batch of one image.
        drop_last=args.architecture == "upernet" and len(dataset["train"]) > args.per_device_train_batch_size,
    )
    if args.backbone_learning_rate is None:
        args.backbone_learning_rate = args.learning_rate
    optimizer = torch.optim.AdamW(
        optimizer_parameter_groups(model, args), betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )
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
        accelerator.init_trackers("pvt_segmentation", {k: v for k, v in vars(args).items() if not isinstance(v, dict)})

    accelerator.print(
        dense_run_summary(
            accelerator,
            args,
            model,
            dataset,
            plan,
            what=f"{args.architecture}, {args.task}, {len(id2label)} classes",
            num_warmup_steps=args.num_warmup_steps,
            warmup_source="--num_warmup_steps" if args.num_warmup_steps else "default: none",
            learning_rate_source="--learning_rate; backbone the same"
            if args.backbone_learning_rate == args.learning_rate
            else f"--learning_rate; backbone {args.backbone_learning_rate:.3g}",
            default_schedule="polynomial",
        )
    )
    evaluator = SegmentationEvaluator(eval_dataloader, image_processor, accelerator, id2label, args.task)
    start = time.perf_counter()
    output_dir = prepare_dense_output_dir(accelerator, args)
    history = run_training(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        train_dataloader,
        plan,
        compute_loss=compute_loss,
        evaluate=evaluator,
        output_dir=output_dir,
        checkpointing_steps=args.checkpointing_steps,
        resume_from_checkpoint=args.resume_from_checkpoint,
        max_grad_norm=args.max_grad_norm or None,
        run_settings=run_settings(args, task=args.task, image_size=args.image_size),
    )
    if not evaluator.last_scores:  # resumed from a checkpoint that already held the last evaluation
        evaluator(model)
    results = {
        **final_eval_metrics(history),
        "eval_per_category_iou": evaluator.per_category("per_category_iou"),
        "eval_per_category_accuracy": evaluator.per_category("per_category_accuracy"),
        **{f"majority_class_baseline_{name}": round(evaluator.baseline_scores[name], 4) for name in REPORTED_METRICS},
        **training_results(history, start),
        "architecture": args.architecture,
        "task": args.task,
    }
    if accelerator.is_main_process:
        write_json(output_dir / "all_results.json", results)
        save_prediction_picture(
            accelerator.unwrap_model(model),
            eval_dataloader,
            image_processor,
            id2label,
            output_dir / PREDICTIONS_PICTURE,
        )
    auto_class = AUTO_MODEL_CLASSES[args.architecture]
    save_final_model(accelerator, model, image_processor, output_dir, "pvt-train-segmentation", auto_class)
    accelerator.end_training()
    accelerator.print(json.dumps(results, indent=2))
    accelerator.print(end_line(output_dir, output_dir / "all_results.json"))
    return results


__all__ = [
    "ARCHITECTURES",
    "SegmentationEvaluator",
    "build_segmentation_model",
    "class_names",
    "freeze_backbone_stages",
    "majority_class_confusion",
    "load_segmentation_dataset",
    "make_batch_transform",
    "make_image_processor",
    "scores_from_confusion",
    "train_segmenter",
]
