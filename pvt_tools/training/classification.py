# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Training a PVT image classifier with Accelerate: the whole of scripts/train.py, as functions.

    results = train_image_classifier(DataArguments(), ModelArguments(variant="pvt-tiny"), OptimizationArguments(),
                                     AugmentationArguments(), RunArguments(output_dir="out"))

builds the data (training_data.py), the model (from a paper variant with optional smaller settings, or fine-tuned
from a folder or Hub repo), AdamW with type-based weight decay and a warm-up + cosine schedule, then runs
training_loop.run_training with the DeiT loss (MixUp / CutMix, label smoothing) and a top-1 / top-5 evaluation
through `evaluate` (pvt_tools/training/metrics/top_k_accuracy). At the end it writes the Hub-ready export
(pvt_tools.hub.export_model: weights, config, both code files, image processor, model card) into output_dir itself,
beside the step_N / epoch_N checkpoints, so that `AutoModelForImageClassification.from_pretrained(output_dir)`
loads the result; then all_results.json (eval_accuracy, eval_top5_accuracy, ... as in Transformers' examples),
training_history.json and training_curves.png; optionally it pushes the export to the Hub.

The defaults are the DeiT recipe the PVT authors trained ImageNet with: AdamW, weight decay 0.05, cosine schedule,
label smoothing 0.1, drop path 0.1 (tiny, small) or 0.3 (medium, large) and gradient clipping at 1.0 for medium
and large; five defaults adapt to the run:

- learning rate: from scratch, DeiT's 5e-4 x (total batch size / 512) but at least 5e-4 (DeiT's rule gives 3e-5 at
  batch 32, too low for anything but a 300-epoch run); fine-tuning (--model_name_or_path), 5e-5 as in
  Transformers' image-classification examples;
- warm-up: DeiT's 5 epochs, but at most 10% of the optimizer steps;
- augmentations: DeiT's RandAugment, random erasing, MixUp and CutMix for runs of 100 epochs or more; shorter runs
  get random resized crops (scale 0.35-1) and flips only, which let them learn (see pvt_tools.training.data);
- evaluation crop: the authors' centre crop (0.875) after random resized crops, the whole image after shifts
  (--random_crop_padding) or no augmentation, so that evaluation sees the scale training saw;
- spatial reduction (from scratch): the paper's 8 4 2 1 at 224 px and above, less where the image is smaller, so
  that keys and values keep up to 7x7 positions (all of them at 32 px).
"""

import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import evaluate
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType
from huggingface_hub import constants
from huggingface_hub.errors import StrictDataclassError
from torch.utils.data import DataLoader
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    PvtImageProcessor,
    get_scheduler,
)

from configuration_pvt import PvtConfig
from modeling_pvt import (
    PvtForImageClassification,  # importing it registers "pvt_v1" with the Auto classes
)
from pvt_tools.hub import (
    EVAL_CROP_RATIO,
    PushError,
    check_repo_id,
    export_model,
    official_eval_image_processor,
    push_export,
)
from pvt_tools.training.arguments import ModelArguments, OptimizationArguments, RunArguments
from pvt_tools.training.data import (
    DIGITS_DATASET_NAME,
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
    report_skipped_images,
)
from pvt_tools.training.loop import (
    TrainingPlan,
    check_warmup,
    create_accelerator,
    end_line,
    final_eval_metrics,
    plan_training_steps,
    prepare_run_output_dir,
    resolve_warmup,
    run_summary,
    run_training,
    weight_decay_parameter_groups,
    write_json,
)
from pvt_tools.training.streaming import (
    StreamingBatches,
    StreamingImageDataset,
    evaluation_stream,
    load_streaming_splits,
    stream_class_names,
    streamed_skipped_images,
    streaming_classification_evaluator,
    training_stream,
)
from pvt_tools.usage import UsageError, check_model_reference, check_output_folder, parse_checkpointing_steps

TOP_K_ACCURACY_METRIC = Path(__file__).resolve().parent / "metrics" / "top_k_accuracy"

# Default learning rates. From scratch: DeiT's linear rule (5e-4 per 512 images of total batch), with a floor. The
# rule was tuned for 300 ImageNet epochs at batch 1024; at the batch sizes of a first run (32-64) it gives 3e-5 to
# 6e-5, with which a short run hardly moves. Measured on the embedded digits (tiny PVT, 32x32, 60 steps at batch 32,
# crops and flips): 9% validation accuracy at the rule's 3.1e-5, 57% at 5e-4, 65% at 1e-3, 58% at 2e-3. The floor is
# DeiT's own rate at its reference batch of 512. Fine-tuning: 5e-5, the default of Transformers' examples.
DEIT_BASE_LEARNING_RATE = 5e-4
DEIT_REFERENCE_BATCH_SIZE = 512
FROM_SCRATCH_MIN_LEARNING_RATE = 5e-4
FINE_TUNING_LEARNING_RATE = 5e-5
# Per-variant settings of the authors' ImageNet training (classification/configs/pvt/*.py).
VARIANT_RECIPES = {
    "pvt-tiny": {"drop_path_rate": 0.1, "max_grad_norm": None},
    "pvt-small": {"drop_path_rate": 0.1, "max_grad_norm": None},
    "pvt-medium": {"drop_path_rate": 0.3, "max_grad_norm": 1.0},
    "pvt-large": {"drop_path_rate": 0.3, "max_grad_norm": 1.0},
}
ARCHITECTURE_OVERRIDES = (
    "hidden_sizes",
    "depths",
    "num_attention_heads",
    "mlp_ratios",
    "sequence_reduction_ratios",
    "patch_sizes",
)
# The paper's spatial reductions (R = 8, 4, 2, 1 at 224 px) keep every stage's keys and values on a 7x7 grid (the
# stages' grids are 56, 28, 14, 7). Kept at other sizes, the same R collapse them: at 32 px every stage's keys and
# values are one token, so each attention layer can only add one averaged value to every position. Measured on
# Fashion-MNIST at 32 px (benchmarks/fashion_mnist.md): the same accuracy after 3 epochs (0.837 with the paper's R,
# 0.839 without reduction), with 21% fewer parameters and 1.24x the training throughput (no reduction layers).
# From scratch, unless --sequence_reduction_ratios is given, R_i = min(paper's R_i, max(1, grid_i // 7)): the
# paper's R at 224 px and above, less reduction below.
PAPER_REDUCED_GRID = 7


def build_model(model_args: ModelArguments, names: list[str]) -> tuple[PvtForImageClassification, PvtImageProcessor]:
    """The classifier with a head for `names`, and the image processor its export will carry."""
    labels = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: index for index, name in enumerate(names)},
    }
    overrides = {name: getattr(model_args, name) for name in ARCHITECTURE_OVERRIDES if getattr(model_args, name)}
    crop_ratio = model_args.eval_crop_ratio or EVAL_CROP_RATIO
    if model_args.model_name_or_path is None:
        recipe = VARIANT_RECIPES.get(model_args.variant, {"drop_path_rate": 0.1})
        drop_path_rate = recipe["drop_path_rate"] if model_args.drop_path_rate is None else model_args.drop_path_rate
        image_size = model_args.image_size or 224
        if "patch_sizes" in overrides:  # PVT v1's patch embeddings do not overlap
            overrides["strides"] = overrides["patch_sizes"]
        if "sequence_reduction_ratios" not in overrides:
            strides = overrides.get("strides", PvtConfig().strides)
            overrides["sequence_reduction_ratios"] = sequence_reduction_for(image_size, strides)
        config = PvtConfig.from_variant(
            model_args.variant, image_size=image_size, drop_path_rate=drop_path_rate, **overrides, **labels
        )
        return PvtForImageClassification(config), official_eval_image_processor(image_size, crop_ratio)

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
        image_processor = official_eval_image_processor(model_args.image_size or config_size, crop_ratio)
    if model_args.image_size is not None and model_args.image_size != processor_image_size(image_processor):
        mean, std = image_processor.image_mean, image_processor.image_std
        image_processor = official_eval_image_processor(model_args.image_size, crop_ratio)
        image_processor.image_mean, image_processor.image_std = mean, std
    return model, image_processor


def describe_evaluation(image_processor) -> str:
    """How evaluation images are prepared, in a few words, for the start of a run."""
    size = image_processor.size.get("shortest_edge")
    crop = processor_image_size(image_processor)
    if not getattr(image_processor, "do_center_crop", False) or size is None:
        return f"resized to {crop}x{crop}"
    if size == crop:
        return f"whole image, shorter side resized to {crop} (--eval_crop_ratio 1)"
    return f"shorter side resized to {size}, centre crop {crop} (--eval_crop_ratio 1 keeps the whole image)"


def eval_crop_ratio_for(augmentation_args: AugmentationArguments) -> float:
    """Evaluate at the scale training saw. Random resized crops zoom in (by about 1/sqrt(area) on average), which
    the authors' centre crop of 0.875 matches; shifts or no augmentation keep the whole image at its size, and a
    centre crop would then cut and enlarge every evaluation image. Measured on Fashion-MNIST (28 px at 32): the
    same weights score 0.884 with the whole image and 0.775 with the 0.875 crop (benchmarks/fashion_mnist.md)."""
    if augmentation_args.no_augmentation or augmentation_args.random_crop_padding > 0:
        return 1.0
    return EVAL_CROP_RATIO


def sequence_reduction_for(image_size: int, strides: list[int]) -> list[int]:
    """Spatial-reduction ratios that keep each stage's keys and values on the paper's 7x7 grid, or on the stage's
    whole grid when it is smaller (see PAPER_REDUCED_GRID), never reducing more than the paper (larger images keep
    its 8, 4, 2, 1, as its detectors do); the last stage, which carries the class token, uses 1."""
    ratios, grid = [], image_size
    for stride, paper_ratio in zip(strides, PvtConfig().sequence_reduction_ratios):
        grid //= stride
        ratios.append(min(paper_ratio, max(1, grid // PAPER_REDUCED_GRID)))
    return [*ratios[:-1], 1]


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


def batch_that_runs(
    per_device_batch_size: int, num_processes: int, gradient_accumulation_steps: int, num_images: int | None
) -> tuple[int, str]:
    """The total batch of one optimizer step as it actually runs, and a note when it is smaller than the flags
    ask: a process's batch cannot hold more than its share of the `num_images` training images (None: a stream,
    whose length is unknown), nor can an epoch accumulate more batches than it has."""
    if not num_images:
        return per_device_batch_size * num_processes * gradient_accumulation_steps, ""
    share = math.ceil(num_images / num_processes)
    per_process = min(per_device_batch_size, share)
    accumulated = min(gradient_accumulation_steps, math.ceil(share / per_process))
    total = per_process * num_processes * accumulated
    asked = per_device_batch_size * num_processes * gradient_accumulation_steps
    if total == asked:
        return total, ""
    return total, (
        f", not the {asked:,} the batch flags ask for: the data set has {num_images:,} training images "
        f"(--per_device_train_batch_size {per_device_batch_size}, --gradient_accumulation_steps "
        f"{gradient_accumulation_steps})"
    )


def default_learning_rate(total_batch_size: int, fine_tuning: bool) -> tuple[float, str]:
    """The default peak learning rate and how it was chosen (see the module docstring)."""
    if fine_tuning:
        return FINE_TUNING_LEARNING_RATE, "default for fine-tuning"
    rule = DEIT_BASE_LEARNING_RATE * total_batch_size / DEIT_REFERENCE_BATCH_SIZE
    described = f"DeiT's 5e-4 x {total_batch_size}/{DEIT_REFERENCE_BATCH_SIZE} = {rule:.3g}"
    if rule < FROM_SCRATCH_MIN_LEARNING_RATE:
        return FROM_SCRATCH_MIN_LEARNING_RATE, f"default from scratch: {described}, raised to the 5e-4 minimum"
    return rule, f"default from scratch: {described}"


def check_pretrained_model(model_name_or_path: str | None, flag: str = "--model_name_or_path") -> None:
    """--model_name_or_path names a folder here or a Hub repo whose config can be read: checked before anything is
    loaded or written, in one line naming the flag, the value and the fix."""
    if model_name_or_path is None:
        return
    check_model_reference(flag, model_name_or_path)
    try:
        AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError, TypeError, KeyError, StrictDataclassError) as error:  # a config.json it cannot use
        where = (
            "a folder here without a readable config.json"
            if Path(model_name_or_path).exists()
            else ("not a folder here, and no Hub repo of that name could be read")
        )
        raise UsageError(
            f"{flag} {model_name_or_path}: {where} ({str(error).splitlines()[0][:160]}). Give a folder written by a "
            "training run or save_pretrained (e.g. outputs/demo), or a Hub repo id such as org/pvt-small."
        ) from None


def prepare_output_dir(accelerator: Accelerator, run_args: RunArguments) -> Path:
    """Refuse to mix a new run into an earlier one's outputs, unless told to continue or start over."""
    return prepare_run_output_dir(
        accelerator,
        run_args.output_dir,
        resume_from_checkpoint=run_args.resume_from_checkpoint,
        overwrite_output_dir=run_args.overwrite_output_dir,
    )


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


def check_streaming_flags(
    data_args: DataArguments, optimization_args: OptimizationArguments, run_args: RunArguments
) -> None:
    """--streaming: what a stream without a length needs, checked before any data is read."""
    if not data_args.streaming:
        return
    if run_args.max_train_steps is None:
        raise UsageError(
            "--streaming needs --max_train_steps: a stream has no length, so the number of optimizer steps cannot "
            "come from --num_train_epochs."
        )
    if optimization_args.num_warmup_epochs is not None:
        raise UsageError("--num_warmup_epochs needs a known epoch length; with --streaming give --num_warmup_steps.")
    if run_args.dataloader_num_workers != 0:
        raise UsageError(
            f"--streaming reads the stream in the main process (so that checkpoints hold its exact position); "
            f"--dataloader_num_workers must be 0, got {run_args.dataloader_num_workers}."
        )


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
    check_streaming_flags(data_args, optimization_args, run_args)
    if optimization_args.num_warmup_steps is not None and run_args.max_train_steps is not None:
        check_warmup(optimization_args.num_warmup_steps, run_args.max_train_steps)  # before any data is loaded
    check_output_folder(
        run_args.output_dir,
        overwrite=run_args.overwrite_output_dir,
        resume_from_checkpoint=run_args.resume_from_checkpoint,
    )
    check_pretrained_model(model_args.model_name_or_path)
    accelerator = create_accelerator(
        seed=run_args.seed,
        gradient_accumulation_steps=run_args.gradient_accumulation_steps,
        output_dir=run_args.output_dir,
        with_tracking=run_args.with_tracking,
        report_to=run_args.report_to,
    )
    output_dir = Path(run_args.output_dir)  # created once the data and the model are ready (prepare_output_dir)

    streaming = data_args.streaming
    skipped = {}
    if streaming:
        with accelerator.main_process_first():
            splits = load_streaming_splits(data_args)
            names = stream_class_names(splits, data_args)
    else:
        with accelerator.main_process_first():
            dataset, skipped = load_image_classification_dataset(data_args)
        if accelerator.is_main_process:
            skipped_message = report_skipped_images(skipped, output_dir)
            if skipped_message:
                accelerator.print(skipped_message)
        names = class_names(dataset["train"], data_args.label_column_name)
    if model_args.eval_crop_ratio is None:
        model_args = replace(model_args, eval_crop_ratio=eval_crop_ratio_for(augmentation_args))
    model, image_processor = build_model(model_args, names)
    image_size = processor_image_size(image_processor)

    columns = (data_args.image_column_name, data_args.label_column_name)
    loader_settings = {"collate_fn": collate_image_batch, "num_workers": run_args.dataloader_num_workers}
    # The training transform depends on the run's length (AugmentationArguments.for_run): set once it is planned.
    if streaming:
        stream_settings = {"num_labels": len(names), "corrupt_images": data_args.corrupt_images}
        train_dataset = StreamingImageDataset(
            training_stream(
                splits["train"],
                data_args,
                accelerator,
                seed=run_args.seed,
                shuffle_buffer_size=data_args.shuffle_buffer_size,
            ),
            None,
            *columns,
            split_name="train",
            **stream_settings,
        )
        eval_dataset = StreamingImageDataset(
            evaluation_stream(splits["validation"], data_args, accelerator),
            build_eval_transform(image_processor),
            *columns,
            split_name="validation",
            **stream_settings,
        )
        train_dataloader = StreamingBatches(
            accelerator, train_dataset, run_args.per_device_train_batch_size, collate_image_batch
        )
    else:
        train_dataset = ImageClassificationDataset(dataset["train"], None, *columns, seed=run_args.seed)
        eval_dataset = ImageClassificationDataset(
            dataset["validation"], build_eval_transform(image_processor), *columns
        )
        train_dataloader = DataLoader(
            train_dataset,
            shuffle=True,
            batch_size=run_args.per_device_train_batch_size,
            generator=torch.Generator().manual_seed(run_args.seed),  # keeps the global RNG out of the data order
            **loader_settings,
        )
    eval_dataloader = DataLoader(eval_dataset, batch_size=run_args.per_device_eval_batch_size, **loader_settings)

    total_batch_size, batch_note = batch_that_runs(
        run_args.per_device_train_batch_size,
        accelerator.num_processes,
        run_args.gradient_accumulation_steps,
        None if streaming else len(train_dataset),
    )
    learning_rate, learning_rate_source = optimization_args.learning_rate, "--learning_rate"
    if learning_rate is None:
        learning_rate, learning_rate_source = default_learning_rate(
            total_batch_size, fine_tuning=model_args.model_name_or_path is not None
        )
    optimizer = torch.optim.AdamW(
        weight_decay_parameter_groups(model, optimization_args.weight_decay), lr=learning_rate
    )
    if streaming:
        # Each process reads its own part of the stream: the data loaders are not handed to Accelerate.
        model, optimizer = accelerator.prepare(model, optimizer)
        # A pass over the stream has an unknown length: as many passes as it takes to reach --max_train_steps.
        plan = TrainingPlan(run_args.max_train_steps, run_args.max_train_steps, run_args.max_train_steps)
    else:
        model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
            model, optimizer, train_dataloader, eval_dataloader
        )
        plan = plan_training_steps(
            len(train_dataloader),
            run_args.gradient_accumulation_steps,
            run_args.num_train_epochs,
            run_args.max_train_steps,
        )
    num_warmup_steps, warmup_source = resolve_warmup(
        plan, optimization_args.num_warmup_steps, optimization_args.num_warmup_epochs
    )
    # With --streaming the number of epochs is unknown: the short-run augmentations unless given explicitly.
    augmentation_args = augmentation_args.for_run(
        0 if streaming else plan.num_train_epochs, flips_change_labels=dataset_label(data_args) == DIGITS_DATASET_NAME
    )
    train_dataset.transform = build_train_transform(
        image_size, image_processor.image_mean, image_processor.image_std, augmentation_args
    )
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
    if run_args.max_train_steps is not None:
        steps_source = "--max_train_steps"
    else:
        steps_source = f"{run_args.num_train_epochs} x {plan.num_update_steps_per_epoch} steps"
    processes = accelerator.num_processes
    if streaming:
        evaluate_model = streaming_classification_evaluator(
            accelerator, eval_dataloader, load_top_k_accuracy(accelerator), 5 if len(names) > 5 else 1
        )
        accelerator.print(
            f"Training {sum(parameter.numel() for parameter in model.parameters()):,} parameters on a stream "
            f"({len(names)} classes, shuffle buffer {data_args.shuffle_buffer_size}, total batch size "
            f"{total_batch_size}, {processes} process{'es' if processes != 1 else ''}): {plan.max_train_steps} "
            f"optimizer steps (--max_train_steps), warm-up {num_warmup_steps} ({warmup_source}), learning rate "
            f"{learning_rate:.3g} ({learning_rate_source}), schedule {optimization_args.lr_scheduler_type}."
        )
    else:
        evaluate_model = classification_evaluator(accelerator, eval_dataloader, len(names))
        accelerator.print(
            run_summary(
                num_parameters=sum(parameter.numel() for parameter in model.parameters()),
                num_images=len(train_dataset),
                details=f"{len(names)} classes, {len(eval_dataset):,} for validation, total batch size "
                f"{total_batch_size}{batch_note}, {processes} process{'es' if processes != 1 else ''}",
                plan=plan,
                steps_source=steps_source,
                num_warmup_steps=num_warmup_steps,
                warmup_source=warmup_source,
                learning_rate=learning_rate,
                learning_rate_source=learning_rate_source,
                schedule=optimization_args.lr_scheduler_type,
                schedule_source="default" if optimization_args.lr_scheduler_type == "cosine" else "--lr_scheduler_type",
            )
        )
    accelerator.print(
        f"Augmentations: {augmentation_args.describe()}; evaluation: {describe_evaluation(image_processor)}."
    )

    prepare_output_dir(accelerator, run_args)
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
        evaluate=evaluate_model,
        output_dir=output_dir,
        checkpointing_steps=checkpointing_steps,
        resume_from_checkpoint=run_args.resume_from_checkpoint,
        max_grad_norm=max_grad_norm,
        run_settings={
            "per_device_train_batch_size": run_args.per_device_train_batch_size,
            "gradient_accumulation_steps": run_args.gradient_accumulation_steps,
            "seed": run_args.seed,
            **(
                {"streaming": True, "shuffle_buffer_size": data_args.shuffle_buffer_size}
                if streaming
                else {"train_samples": len(train_dataset)}
            ),
        },
    )

    if streaming:  # the images every process left out, now that the streams have been read
        skipped = streamed_skipped_images([train_dataset, eval_dataset])
        if accelerator.is_main_process:
            skipped_message = report_skipped_images(skipped, output_dir)
            if skipped_message:
                accelerator.print(skipped_message)
    final = history.last_evaluation
    eval_metrics = final_eval_metrics(history)
    test_metrics = {}
    if not streaming and "test" in dataset:  # the final model on images that neither trained nor guided it
        test_dataset = ImageClassificationDataset(dataset["test"], build_eval_transform(image_processor), *columns)
        test_dataloader = accelerator.prepare(
            DataLoader(test_dataset, batch_size=run_args.per_device_eval_batch_size, **loader_settings)
        )
        scored = classification_evaluator(accelerator, test_dataloader, len(names))(model)
        test_metrics = {f"test_{name}": value for name, value in scored.items()}
        test_metrics["test_samples"] = len(test_dataset)
    step_losses = [record["loss"] for record in history.steps]
    results = {
        "epoch": final["epoch"],
        **eval_metrics,
        **test_metrics,
        "eval_samples": evaluate_model.num_examples if streaming else len(eval_dataset),
        "train_samples": history.throughput.get("train_samples_this_run") if streaming else len(train_dataset),
        "train_steps": final["step"],
        "train_loss": sum(step_losses) / len(step_losses) if step_losses else None,
        "unreadable_images_skipped": sum(len(described) for described in skipped.values()),
        **history.throughput,  # train_runtime, train_samples_per_second, ... of the training loop
        "total_runtime": round(time.perf_counter() - started, 2),
    }
    final_model = exportable_model(accelerator, model)
    if accelerator.is_main_process:
        export_dir = export_model(
            final_model,
            output_dir,
            repo_id=run_args.hub_model_id,
            image_processor=image_processor,
            dataset=dataset_label(data_args),
            metrics={**eval_metrics, **{name: value for name, value in test_metrics.items() if name != "test_samples"}},
            base_model=hub_repo_or_none(model_args.model_name_or_path),
            overwrite=True,
            beside_other_files=True,
        )
        write_json(output_dir / "all_results.json", results)
        shown = ", ".join(
            f"{name} {value:.4f}"
            for name, value in {**eval_metrics, **test_metrics}.items()
            if isinstance(value, float)
        )
        accelerator.print(
            f"{shown}; {results['train_steps']} steps in {results['train_runtime']:.0f} s "
            f"({results['train_samples_per_second']:.1f} img/s)."
        )
        accelerator.print(end_line(output_dir, output_dir / "all_results.json"))
        if run_args.push_to_hub:
            push_export(export_dir, run_args.hub_model_id, commit_message="End of training")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


__all__ = [
    "VARIANT_RECIPES",
    "ModelArguments",
    "OptimizationArguments",
    "RunArguments",
    "build_model",
    "classification_evaluator",
    "classification_loss",
    "default_learning_rate",
    "train_image_classifier",
]
