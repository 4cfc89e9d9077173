# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune (or train) a PVT image classifier with `transformers.Trainer`: PVT needs no special code there.

    pvt-finetune-trainer --model_name_or_path outputs/demo --train_dir photos/train \\
        --ignore_mismatched_sizes --output_dir outputs/trainer --num_train_epochs 10 --learning_rate 1e-4 \\
        --eval_strategy epoch --save_strategy epoch --label_smoothing_factor 0.1

All of Trainer's own flags (TrainingArguments) work, next to the data and model flags of pvt-train; `--help` shows
ours and the Trainer flags used most, `--help_trainer` all of Trainer's. Two Trainer defaults adapt to the run
unless given: the learning rate (5e-5 fine-tuning, as Trainer; from scratch pvt-train's rule, at least 5e-4) and
the warm-up (min(5 epochs, 10% of the steps)).
Image datasets need two things with Trainer, and this script sets both:

- `remove_unused_columns=False` (made the default here): Trainer otherwise drops every dataset column that is not
  an argument of `model.forward`, the "image" column included, before the on-the-fly transform
  (`Dataset.set_transform`) can turn images into `pixel_values`.
- a collate function that stacks `pixel_values` and `labels` (`training_data.collate_image_batch`).

The per-image augmentations are those of Transformers' run_image_classification.py (random resized crop and
horizontal flip); Trainer's `--label_smoothing_factor` smooths the labels. MixUp / CutMix and the rest of the DeiT
recipe are in pvt-train. The model is saved once, as the Hub-ready export (weights, config, both code files, image
processor, card), into --output_dir itself, beside the results. Trainer's checkpoint-N folders (the model with its
optimizer state, to continue a run with --resume_from_checkpoint latest) are written only when --save_strategy
epoch|steps asks for them, as pvt-train writes checkpoints only with --checkpointing_steps.
"""

import math
import shutil
from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import SaveStrategy

from pvt_tools.hub import export_model
from pvt_tools.training.classification import (
    TOP_K_ACCURACY_METRIC,
    ModelArguments,
    batch_that_runs,
    build_model,
    check_pretrained_model,
    default_learning_rate,
    processor_image_size,
)
from pvt_tools.training.data import (
    DIGITS_DATASET_NAME,
    AugmentationArguments,
    DataArguments,
    build_eval_transform,
    build_train_transform,
    class_names,
    collate_image_batch,
    dataset_label,
    load_image_classification_dataset,
    make_batch_transform,
    report_skipped_images,
)
from pvt_tools.training.loop import (
    OutOfMemoryError,
    check_warmup,
    default_warmup_steps,
    end_line,
    is_out_of_memory,
    plan_training_steps,
    run_summary,
)
from pvt_tools.usage import check_output_folder, check_positive, checkpoints_in

# run_image_classification.py's training transform: random resized crop and horizontal flip only.
FINE_TUNING_AUGMENTATION = AugmentationArguments(
    random_resized_crop_scale=[0.08, 1.0],
    rand_augment_num_ops=0,
    random_erasing_probability=0.0,
    mixup=0.0,
    cutmix=0.0,
    label_smoothing=0.0,
)


def top_k_accuracy(num_labels: int):
    """Trainer's compute_metrics: top-1 (and top-5 with more than 5 classes) accuracy from the logits."""
    metric = evaluate.load(str(TOP_K_ACCURACY_METRIC), keep_in_memory=True)
    k = 5 if num_labels > 5 else 1

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        ranked = np.argsort(-prediction.predictions, axis=-1, kind="stable")[:, :k]
        return metric.compute(predictions=ranked, references=prediction.label_ids)

    return compute_metrics


def adapt_defaults(
    training_args: TrainingArguments,
    given_flags: frozenset[str],
    *,
    num_train_images: int,
    fine_tuning: bool,
    num_parameters: int,
    details: str,
) -> str:
    """Set the learning rate and warm-up the user left at Trainer's defaults to ours; return the start summary."""
    total_batch_size, batch_note = batch_that_runs(
        training_args.per_device_train_batch_size,
        training_args.world_size,
        training_args.gradient_accumulation_steps,
        num_train_images,
    )
    batches = math.ceil(num_train_images / (training_args.per_device_train_batch_size * training_args.world_size))
    max_steps = training_args.max_steps if training_args.max_steps > 0 else None
    plan = plan_training_steps(
        batches, training_args.gradient_accumulation_steps, math.ceil(training_args.num_train_epochs), max_steps
    )
    learning_rate_source = "--learning_rate"
    if "--learning_rate" not in given_flags:
        training_args.learning_rate, learning_rate_source = default_learning_rate(total_batch_size, fine_tuning)
    warmup_source = "--warmup_steps"
    if "--warmup_steps" not in given_flags:
        training_args.warmup_steps = default_warmup_steps(plan)
        warmup_source = "default: min(5 epochs, 10% of the steps)"
    warmup = training_args.warmup_steps
    warmup_steps = math.ceil(warmup * plan.max_train_steps) if 0 < warmup < 1 else int(warmup)
    check_warmup(warmup_steps, plan.max_train_steps, warmup_source)
    schedule = str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))
    return run_summary(
        num_parameters=num_parameters,
        num_images=num_train_images,
        details=f"{details}, total batch size {total_batch_size}{batch_note}",
        plan=plan,
        steps_source="--max_steps"
        if max_steps
        else f"{training_args.num_train_epochs:g} x {plan.num_update_steps_per_epoch} steps",
        num_warmup_steps=warmup_steps,
        warmup_source=warmup_source,
        learning_rate=training_args.learning_rate,
        learning_rate_source=learning_rate_source,
        schedule=schedule,
        schedule_source="--lr_scheduler_type" if "--lr_scheduler_type" in given_flags else "Trainer's default",
    )


def check_trainer_run(
    training_args: TrainingArguments, given_flags: frozenset[str], overwrite_output_dir: bool
) -> str | None:
    """pvt-train's checks, in its words, before anything is loaded or written: counts > 0, the output folder rule
    (pvt_tools.usage.check_output_folder), and `--resume_from_checkpoint latest` as pvt-train reads it (the newest
    checkpoint-N in --output_dir; none there yet: a new run). Checkpoints, whose optimizer state only a resumed run
    needs, are written only when --save_strategy asks for them, as pvt-train writes them only with
    --checkpointing_steps. Returns the checkpoint to resume from, or None."""
    check_positive(
        num_train_epochs=training_args.num_train_epochs if training_args.max_steps <= 0 else None,
        max_train_steps=training_args.max_steps if "--max_steps" in given_flags else None,
        per_device_train_batch_size=training_args.per_device_train_batch_size,
        per_device_eval_batch_size=training_args.per_device_eval_batch_size,
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
    )
    if "--save_strategy" not in given_flags:
        training_args.save_strategy = SaveStrategy.NO
    resume = training_args.resume_from_checkpoint
    latest = check_output_folder(
        training_args.output_dir, overwrite=overwrite_output_dir, resume_from_checkpoint=resume
    )
    if resume != "latest":
        return resume
    if not latest:
        print(f"No checkpoint in {training_args.output_dir} yet: starting from the beginning.")
        return None
    return str(Path(training_args.output_dir) / latest[-1])


def finetune(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: TrainingArguments,
    given_flags: frozenset[str] = frozenset({"--learning_rate", "--warmup_steps", "--save_strategy"}),
    overwrite_output_dir: bool = False,
) -> tuple[Trainer, dict[str, float]]:
    """Train with Trainer, evaluate, export into --output_dir; returns the trainer and the evaluation metrics.
    `given_flags`: the Trainer flags given on the command line; the learning rate and warm-up follow our
    defaults unless named there (by default both count as given, so a TrainingArguments object is used as it is)."""
    output_dir = Path(training_args.output_dir)
    resume_from_checkpoint = check_trainer_run(training_args, given_flags, overwrite_output_dir)
    check_pretrained_model(model_args.model_name_or_path)
    set_seed(training_args.seed)
    dataset, skipped = load_image_classification_dataset(data_args)
    if training_args.process_index == 0:
        skipped_message = report_skipped_images(skipped, output_dir)
        if skipped_message:
            print(skipped_message)
    names = class_names(dataset["train"], data_args.label_column_name)
    model, image_processor = build_model(model_args, names)
    summary = adapt_defaults(
        training_args,
        given_flags,
        num_train_images=len(dataset["train"]),
        fine_tuning=model_args.model_name_or_path is not None,
        num_parameters=sum(parameter.numel() for parameter in model.parameters()),
        details=f"{len(names)} classes, {len(dataset['validation']):,} for validation, with Trainer",
    )
    if training_args.device.type == "cpu" and "--dataloader_pin_memory" not in given_flags:
        training_args.dataloader_pin_memory = False  # pinned memory serves a GPU; on a CPU PyTorch only warns
    if training_args.process_index == 0:
        print(summary)

    columns = (data_args.image_column_name, data_args.label_column_name)
    image_size = processor_image_size(image_processor)
    mean, std = image_processor.image_mean, image_processor.image_std
    augmentation = FINE_TUNING_AUGMENTATION.for_run(
        0, flips_change_labels=dataset_label(data_args) == DIGITS_DATASET_NAME
    )
    if training_args.process_index == 0:
        print(f"Augmentations: {augmentation.describe()}.")
    train_transform = build_train_transform(image_size, mean, std, augmentation)
    dataset["train"].set_transform(make_batch_transform(train_transform, *columns))
    dataset["validation"].set_transform(make_batch_transform(build_eval_transform(image_processor), *columns))

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=collate_image_batch,
        compute_metrics=top_k_accuracy(len(names)),
        processing_class=image_processor,
    )
    if overwrite_output_dir and resume_from_checkpoint is None and training_args.process_index == 0:
        for name in checkpoints_in(output_dir):  # a new run replaces the earlier one's checkpoints
            shutil.rmtree(output_dir / name)
    try:
        train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except Exception as error:
        if is_out_of_memory(error):
            raise OutOfMemoryError(training_args.per_device_train_batch_size) from None
        raise
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(dataset["validation"])
    metrics["unreadable_images_skipped"] = sum(len(described) for described in skipped.values())
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if "test" in dataset:  # the final model on images that neither trained nor guided it, as --do_predict does
        dataset["test"].set_transform(make_batch_transform(build_eval_transform(image_processor), *columns))
        test_metrics = trainer.predict(dataset["test"], metric_key_prefix="test").metrics
        test_metrics["test_samples"] = len(dataset["test"])
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        metrics.update(test_metrics)
    if trainer.is_world_process_zero():
        # Trainer's save_model would write the weights a second time; the export is the model (Trainer semantics:
        # an earlier model in --output_dir is replaced, everything else there is left as it is).
        export_model(
            trainer.accelerator.unwrap_model(trainer.model),
            output_dir,
            image_processor=image_processor,
            dataset=dataset_label(data_args),
            metrics={name: value for name, value in metrics.items() if name.endswith("accuracy")},
            overwrite=True,
            beside_other_files=True,
        )
        print(end_line(output_dir, output_dir / "all_results.json"))
    return trainer, metrics
