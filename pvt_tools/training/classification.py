# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Training a PVT image classifier with Accelerate: the whole of scripts/train.py, as functions.

    results = train_image_classifier(DataArguments(), ModelArguments(variant="pvt-tiny"), OptimizationArguments(),
                                     AugmentationArguments(), RunArguments(output_dir="out"))

builds the data (training_data.py), the model (from a paper variant with optional smaller settings, or fine-tuned
from a folder or Hub repo), AdamW with type-based weight decay and a warm-up + cosine schedule, then runs
training_loop.run_training with the DeiT loss (MixUp / CutMix, label smoothing) and a top-1 / top-5 evaluation
through `evaluate` (scripts/metrics/top_k_accuracy). At the end it writes the Hub-ready export
(hub_export.export_model) to output_dir/export, all_results.json (eval_accuracy, eval_top5_accuracy, ... as in
Transformers' examples), training_history.json and training_curves.png; optionally pushes the export to the Hub.

The defaults are the DeiT recipe the PVT authors trained ImageNet with: AdamW, learning rate 5e-4 x (total batch
size / 512), weight decay 0.05, cosine schedule after 5 warm-up epochs, RandAugment m9, random erasing 0.25, MixUp
0.8 / CutMix 1.0, label smoothing 0.1, drop path 0.1 (tiny, small) or 0.3 (medium, large) and gradient clipping
at 1.0 for medium and large.
"""

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import evaluate
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType
from huggingface_hub import constants
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoImageProcessor, PvtImageProcessor, get_scheduler

from pvt_tools.training.checkpoints import CheckpointError, list_checkpoints
from configuration_pvt import PVT_VARIANTS, PvtConfig
from pvt_tools.hub import export_model, official_eval_image_processor
from modeling_pvt import PvtForImageClassification  # importing it registers "pvt_v1" with the Auto classes
from pvt_tools.hub import PushError, check_repo_id, push_export
from pvt_tools.training.data import (
    AugmentationArguments,
    DataArguments,
    DataError,
    ImageClassificationDataset,
    build_batch_mixing,
    build_eval_transform,
    build_train_transform,
    class_names,
    collate_image_batch,
    dataset_label,
    load_image_classification_dataset,
)
from pvt_tools.training.loop import (
    create_accelerator,
    parse_checkpointing_steps,
    plan_training_steps,
    run_training,
    weight_decay_parameter_groups,
    write_json,
)

TOP_K_ACCURACY_METRIC = Path(__file__).resolve().parent / "metrics" / "top_k_accuracy"
EXPORT_DIR_NAME = "export"
# Per-variant settings of the authors' ImageNet training (classification/configs/pvt/*.py).
VARIANT_RECIPES = {
    "pvt-tiny": {"drop_path_rate": 0.1, "max_grad_norm": None},
    "pvt-small": {"drop_path_rate": 0.1, "max_grad_norm": None},
    "pvt-medium": {"drop_path_rate": 0.3, "max_grad_norm": 1.0},
    "pvt-large": {"drop_path_rate": 0.3, "max_grad_norm": 1.0},
}
ARCHITECTURE_OVERRIDES = ("hidden_sizes", "depths", "num_attention_heads", "mlp_ratios", "sequence_reduction_ratios")


@dataclass
class ModelArguments:
    """Which network: fine-tune a saved one, or train one of the paper's variants (optionally smaller) from scratch."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A folder or Hub repo holding a PVT classifier to fine-tune (ours or Transformers' Pvt)."},
    )
    variant: str = field(
        default="pvt-tiny", metadata={"help": f"Train this paper variant from scratch: one of {list(PVT_VARIANTS)}."}
    )
    hidden_sizes: list[int] | None = field(default=None, metadata={"help": "Override: channels of the 4 stages."})
    depths: list[int] | None = field(default=None, metadata={"help": "Override: layers of the 4 stages."})
    num_attention_heads: list[int] | None = field(default=None, metadata={"help": "Override: heads per stage."})
    mlp_ratios: list[int] | None = field(default=None, metadata={"help": "Override: MLP ratio per stage."})
    sequence_reduction_ratios: list[int] | None = field(
        default=None, metadata={"help": "Override: spatial-reduction ratio per stage (last must be 1)."}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Training and evaluation resolution (default 224, or the model's own)."}
    )
    drop_path_rate: float | None = field(default=None, metadata={"help": "Stochastic depth (default: per variant)."})
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Fine-tune a checkpoint whose classifier has a different number of classes."}
    )


@dataclass
class OptimizationArguments:
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate (default: DeiT's 5e-4 x total batch size / 512)."}
    )
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay of linear and conv weights."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Any name of transformers.get_scheduler."})
    num_warmup_steps: int | None = field(
        default=None, metadata={"help": "Warm-up steps (default: --num_warmup_epochs)."}
    )
    num_warmup_epochs: float = field(
        default=5.0, metadata={"help": "Warm-up length in epochs when --num_warmup_steps is not given."}
    )
    max_grad_norm: float | None = field(default=None, metadata={"help": "Gradient clipping (default: per variant)."})


@dataclass
class RunArguments:
    output_dir: str = field(
        default="outputs/pvt-image-classification",
        metadata={"help": "Checkpoints, export/, all_results.json and the training curves go here."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start a new run in an output_dir that holds an earlier run's checkpoints."}
    )
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per process."})
    num_train_epochs: int = field(default=3, metadata={"help": "Epochs to train (DeiT on ImageNet: 300)."})
    max_train_steps: int | None = field(default=None, metadata={"help": "Optimizer steps; overrides the epochs."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    seed: int = field(default=42, metadata={"help": "Seed of the initialisation, data order and augmentations."})
    checkpointing_steps: str | None = field(
        default=None, metadata={"help": "Save the training state every N optimizer steps, or 'epoch'."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder to continue from, or 'latest' (in output_dir)."}
    )
    with_tracking: bool = field(default=False, metadata={"help": "Log to experiment trackers (--report_to)."})
    report_to: str = field(
        default="all", metadata={"help": "Accelerate tracker(s): tensorboard, wandb, comet_ml, ... or 'all'."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the export to --hub_model_id at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "The Hub repo, 'org/name', to push to."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Worker processes per data loader."})


def build_model(model_args: ModelArguments, names: list[str]) -> tuple[PvtForImageClassification, PvtImageProcessor]:
    """The classifier with a head for `names`, and the image processor its export will carry."""
    labels = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: index for index, name in enumerate(names)},
    }
    overrides = {name: getattr(model_args, name) for name in ARCHITECTURE_OVERRIDES if getattr(model_args, name)}
    if model_args.model_name_or_path is None:
        recipe = VARIANT_RECIPES.get(model_args.variant, {"drop_path_rate": 0.1})
        drop_path_rate = recipe["drop_path_rate"] if model_args.drop_path_rate is None else model_args.drop_path_rate
        image_size = model_args.image_size or 224
        config = PvtConfig.from_variant(
            model_args.variant, image_size=image_size, drop_path_rate=drop_path_rate, **overrides, **labels
        )
        return PvtForImageClassification(config), official_eval_image_processor(image_size)

    if overrides:
        raise ValueError(
            f"{sorted(overrides)} change the architecture, which only applies to training from scratch (--variant); "
            "a fine-tuned model keeps the architecture of --model_name_or_path."
        )
    pretrained_labels = AutoConfig.from_pretrained(model_args.model_name_or_path).num_labels
    if pretrained_labels != len(names) and not model_args.ignore_mismatched_sizes:
        raise DataError(
            f"{model_args.model_name_or_path} classifies {pretrained_labels} classes but the data has {len(names)} "
            f"({names[:10]}{'...' if len(names) > 10 else ''}): pass --ignore_mismatched_sizes to train a new "
            "classifier head on top of the pretrained network."
        )
    extra = {} if model_args.drop_path_rate is None else {"drop_path_rate": model_args.drop_path_rate}
    model = PvtForImageClassification.from_pretrained(
        model_args.model_name_or_path, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **labels, **extra
    )
    config_size = model.config.image_size if isinstance(model.config.image_size, int) else min(model.config.image_size)
    try:
        image_processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path)
    except OSError:  # no preprocessor_config.json: the authors' evaluation transform
        image_processor = official_eval_image_processor(model_args.image_size or config_size)
    if model_args.image_size is not None and model_args.image_size != processor_image_size(image_processor):
        mean, std = image_processor.image_mean, image_processor.image_std
        image_processor = official_eval_image_processor(model_args.image_size)
        image_processor.image_mean, image_processor.image_std = mean, std
    return model, image_processor


def processor_image_size(image_processor) -> int:
    """The side of the images the processor produces."""
    size = image_processor.crop_size if getattr(image_processor, "do_center_crop", False) else image_processor.size
    return min(size.get("height", 0), size.get("width", 0)) or size["shortest_edge"]


def classification_loss(batch_mixing, label_smoothing: float):
    """DeiT's loss: MixUp/CutMix on the training batch, then cross-entropy with label smoothing."""

    def compute_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        if batch_mixing is not None:
            pixel_values, labels = batch_mixing(pixel_values, labels)  # labels become (B, num_labels) soft targets
        logits = model(pixel_values=pixel_values).logits
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)

    return compute_loss


def load_top_k_accuracy(accelerator: Accelerator) -> evaluate.EvaluationModule:
    with accelerator.main_process_first():  # evaluate copies the module into its cache
        return evaluate.load(str(TOP_K_ACCURACY_METRIC), keep_in_memory=True)


def classification_evaluator(accelerator: Accelerator, eval_dataloader, num_labels: int):
    """Top-1 (and top-5 with more than 5 classes) accuracy over the whole validation split, on every process."""
    metric = load_top_k_accuracy(accelerator)
    k = 5 if num_labels > 5 else 1

    def evaluate_model(model: torch.nn.Module) -> dict[str, float]:
        model.eval()
        for batch in eval_dataloader:
            with torch.no_grad():
                logits = model(pixel_values=batch["pixel_values"]).logits
            ranked = logits.topk(k, dim=-1).indices
            ranked, references = accelerator.gather_for_metrics((ranked, batch["labels"]))
            metric.add_batch(predictions=ranked, references=references)
        return metric.compute()

    return evaluate_model


def prepare_output_dir(accelerator: Accelerator, run_args: RunArguments) -> Path:
    """Refuse to mix a new run into an earlier one's checkpoints, unless told to start over."""
    output_dir = Path(run_args.output_dir)
    if run_args.resume_from_checkpoint is None:
        earlier = [path.name for path in list_checkpoints(output_dir)]
        if (output_dir / EXPORT_DIR_NAME).exists():
            earlier.append(EXPORT_DIR_NAME)
        if earlier and not run_args.overwrite_output_dir:
            raise CheckpointError(
                f"{output_dir} already holds an earlier run ({', '.join(earlier[:5])}); nothing was changed. Continue "
                "it with --resume_from_checkpoint latest, replace it with --overwrite_output_dir, or choose another "
                "--output_dir."
            )
        if earlier and accelerator.is_main_process:
            for path in list_checkpoints(output_dir):
                shutil.rmtree(path)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return output_dir


def exportable_model(accelerator: Accelerator, model: torch.nn.Module) -> PvtForImageClassification | None:
    """The trained classifier as a plain model on the main process (None elsewhere); every process must call it."""
    state_dict = accelerator.get_state_dict(model)  # gathers shards under FSDP / DeepSpeed
    if not accelerator.is_main_process:
        return None
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        unwrapped = PvtForImageClassification(unwrapped.config)
        unwrapped.load_state_dict(state_dict)
    return unwrapped


def hub_repo_or_none(model_name_or_path: str | None) -> str | None:
    """The fine-tuned base model for the card's metadata, when it is a Hub repo rather than a local folder."""
    if model_name_or_path is None or Path(model_name_or_path).exists():
        return None
    return model_name_or_path


def check_push_settings(run_args: RunArguments) -> None:
    """Fail before training, not after, when the upload cannot happen."""
    if not run_args.push_to_hub:
        return
    if run_args.hub_model_id is None:
        raise PushError("--push_to_hub needs --hub_model_id org/name.")
    check_repo_id(run_args.hub_model_id)
    if constants.is_offline_mode():
        raise PushError("--push_to_hub needs the network, but HF_HUB_OFFLINE is set: unset it or drop --push_to_hub.")


def train_image_classifier(
    data_args: DataArguments,
    model_args: ModelArguments,
    optimization_args: OptimizationArguments,
    augmentation_args: AugmentationArguments,
    run_args: RunArguments,
) -> dict:
    """Train, evaluate every epoch, export; returns what all_results.json holds."""
    started = time.perf_counter()
    check_push_settings(run_args)
    checkpointing_steps = parse_checkpointing_steps(run_args.checkpointing_steps)
    accelerator = create_accelerator(
        seed=run_args.seed,
        gradient_accumulation_steps=run_args.gradient_accumulation_steps,
        output_dir=run_args.output_dir,
        with_tracking=run_args.with_tracking,
        report_to=run_args.report_to,
    )
    output_dir = prepare_output_dir(accelerator, run_args)

    with accelerator.main_process_first():
        dataset, skipped = load_image_classification_dataset(data_args)
    if any(skipped.values()):
        accelerator.print(f"Left out unreadable images (--corrupt_images skip): {skipped}.")
    names = class_names(dataset["train"], data_args.label_column_name)
    model, image_processor = build_model(model_args, names)
    image_size = processor_image_size(image_processor)

    columns = (data_args.image_column_name, data_args.label_column_name)
    train_transform = build_train_transform(
        image_size, image_processor.image_mean, image_processor.image_std, augmentation_args
    )
    train_dataset = ImageClassificationDataset(dataset["train"], train_transform, *columns, seed=run_args.seed)
    eval_dataset = ImageClassificationDataset(dataset["validation"], build_eval_transform(image_processor), *columns)
    loader_settings = {"collate_fn": collate_image_batch, "num_workers": run_args.dataloader_num_workers}
    train_dataloader = DataLoader(
        train_dataset,
        shuffle=True,
        batch_size=run_args.per_device_train_batch_size,
        generator=torch.Generator().manual_seed(run_args.seed),  # keeps the global RNG out of the data order
        **loader_settings,
    )
    eval_dataloader = DataLoader(eval_dataset, batch_size=run_args.per_device_eval_batch_size, **loader_settings)

    total_batch_size = (
        run_args.per_device_train_batch_size * accelerator.num_processes * run_args.gradient_accumulation_steps
    )
    learning_rate = optimization_args.learning_rate
    if learning_rate is None:
        learning_rate = 5e-4 * total_batch_size / 512
    optimizer = torch.optim.AdamW(
        weight_decay_parameter_groups(model, optimization_args.weight_decay), lr=learning_rate
    )
    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader
    )
    plan = plan_training_steps(
        len(train_dataloader),
        run_args.gradient_accumulation_steps,
        run_args.num_train_epochs,
        run_args.max_train_steps,
    )
    num_warmup_steps = optimization_args.num_warmup_steps
    if num_warmup_steps is None:
        num_warmup_steps = math.ceil(optimization_args.num_warmup_epochs * plan.num_update_steps_per_epoch)
    lr_scheduler = accelerator.prepare(
        get_scheduler(
            optimization_args.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=num_warmup_steps,
            num_training_steps=plan.max_train_steps,
        )
    )
    max_grad_norm = optimization_args.max_grad_norm
    if max_grad_norm is None and model_args.model_name_or_path is None:
        max_grad_norm = VARIANT_RECIPES.get(model_args.variant, {}).get("max_grad_norm")

    if run_args.with_tracking:
        settings = {**asdict(data_args), **asdict(model_args), **asdict(optimization_args)}
        settings.update({**asdict(augmentation_args), **asdict(run_args), "learning_rate": learning_rate})
        loggable = {name: value for name, value in settings.items() if isinstance(value, (int, float, str, bool))}
        accelerator.init_trackers("pvt_image_classification", loggable)
    accelerator.print(
        f"Training {sum(p.numel() for p in model.parameters()):,} parameters on {len(train_dataset)} images "
        f"({len(names)} classes) on {accelerator.num_processes} process(es), validating on {len(eval_dataset)}: "
        f"{plan.max_train_steps} optimizer steps ({num_warmup_steps} warm-up), {plan.num_train_epochs} epochs, total "
        f"batch size {total_batch_size}, learning rate {learning_rate:.2e}."
    )

    history = run_training(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        train_dataloader,
        plan,
        compute_loss=classification_loss(
            build_batch_mixing(augmentation_args.mixup, augmentation_args.cutmix, len(names)),
            augmentation_args.label_smoothing,
        ),
        evaluate=classification_evaluator(accelerator, eval_dataloader, len(names)),
        output_dir=output_dir,
        checkpointing_steps=checkpointing_steps,
        resume_from_checkpoint=run_args.resume_from_checkpoint,
        max_grad_norm=max_grad_norm,
        run_settings={
            "per_device_train_batch_size": run_args.per_device_train_batch_size,
            "gradient_accumulation_steps": run_args.gradient_accumulation_steps,
            "seed": run_args.seed,
            "train_samples": len(train_dataset),
        },
    )

    final = history.last_evaluation
    eval_metrics = {f"eval_{name}": value for name, value in final.items() if name not in ("step", "epoch")}
    step_losses = [record["loss"] for record in history.steps]
    results = {
        "epoch": final["epoch"],
        **eval_metrics,
        "eval_samples": len(eval_dataset),
        "train_samples": len(train_dataset),
        "train_steps": final["step"],
        "train_loss": sum(step_losses) / len(step_losses) if step_losses else None,
        "unreadable_images_skipped": sum(skipped.values()),
        "train_runtime": round(time.perf_counter() - started, 2),
    }
    final_model = exportable_model(accelerator, model)
    if accelerator.is_main_process:
        export_dir = export_model(
            final_model,
            output_dir / EXPORT_DIR_NAME,
            repo_id=run_args.hub_model_id,
            image_processor=image_processor,
            dataset=dataset_label(data_args),
            metrics=eval_metrics,
            base_model=hub_repo_or_none(model_args.model_name_or_path),
            overwrite=True,
        )
        write_json(output_dir / "all_results.json", results)
        accelerator.print(f"Exported the model to {export_dir}; results: {results}")
        if run_args.push_to_hub:
            push_export(export_dir, run_args.hub_model_id, commit_message="End of training")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


__all__ = [
    "ModelArguments",
    "OptimizationArguments",
    "RunArguments",
    "VARIANT_RECIPES",
    "build_model",
    "classification_evaluator",
    "classification_loss",
    "train_image_classifier",
]
