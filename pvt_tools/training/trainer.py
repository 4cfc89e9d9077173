# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune (or train) a PVT image classifier with `transformers.Trainer`: PVT needs no special code there.

    python scripts/finetune_with_trainer.py --model_name_or_path outputs/demo/export --train_dir photos/train \\
        --ignore_mismatched_sizes --output_dir outputs/trainer --num_train_epochs 10 --learning_rate 1e-4 \\
        --eval_strategy epoch --save_strategy epoch --label_smoothing_factor 0.1

All of Trainer's own flags (TrainingArguments) work, next to the data and model flags of scripts/train.py.
Image datasets need two things with Trainer, and this script sets both:

- `remove_unused_columns=False` (made the default here): Trainer otherwise drops every dataset column that is not
  an argument of `model.forward`, the "image" column included, before the on-the-fly transform
  (`Dataset.set_transform`) can turn images into `pixel_values`.
- a collate function that stacks `pixel_values` and `labels` (`training_data.collate_image_batch`).

The per-image augmentations are those of Transformers' run_image_classification.py (random resized crop and
horizontal flip); Trainer's `--label_smoothing_factor` smooths the labels. MixUp / CutMix and the rest of the DeiT
recipe are in scripts/train.py. The model is saved by `trainer.save_model` to --output_dir and, as the Hub-ready
export, to --output_dir/export.
"""

from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction, HfArgumentParser, Trainer, TrainingArguments, set_seed

from pvt_tools.training.classification import TOP_K_ACCURACY_METRIC, ModelArguments, build_model, processor_image_size
from pvt_tools.hub import export_model
from pvt_tools.training.data import (
    AugmentationArguments,
    DataArguments,
    build_eval_transform,
    build_train_transform,
    class_names,
    collate_image_batch,
    dataset_label,
    load_image_classification_dataset,
    make_batch_transform,
)

# run_image_classification.py's training transform: random resized crop and horizontal flip only.
FINE_TUNING_AUGMENTATION = AugmentationArguments(
    rand_augment_num_ops=0, random_erasing_probability=0.0, mixup=0.0, cutmix=0.0, label_smoothing=0.0
)


def top_k_accuracy(num_labels: int):
    """Trainer's compute_metrics: top-1 (and top-5 with more than 5 classes) accuracy from the logits."""
    metric = evaluate.load(str(TOP_K_ACCURACY_METRIC), keep_in_memory=True)
    k = 5 if num_labels > 5 else 1

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        ranked = np.argsort(-prediction.predictions, axis=-1, kind="stable")[:, :k]
        return metric.compute(predictions=ranked, references=prediction.label_ids)

    return compute_metrics


def finetune(
    data_args: DataArguments, model_args: ModelArguments, training_args: TrainingArguments
) -> tuple[Trainer, dict[str, float]]:
    """Train with Trainer, evaluate, save and export; returns the trainer and the evaluation metrics."""
    set_seed(training_args.seed)
    dataset, skipped = load_image_classification_dataset(data_args)
    names = class_names(dataset["train"], data_args.label_column_name)
    model, image_processor = build_model(model_args, names)

    columns = (data_args.image_column_name, data_args.label_column_name)
    image_size = processor_image_size(image_processor)
    mean, std = image_processor.image_mean, image_processor.image_std
    train_transform = build_train_transform(image_size, mean, std, FINE_TUNING_AUGMENTATION)
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
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(dataset["validation"])
    metrics["unreadable_images_skipped"] = sum(skipped.values())
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        export_model(
            trainer.model,
            Path(training_args.output_dir) / "export",
            image_processor=image_processor,
            dataset=dataset_label(data_args),
            metrics={name: value for name, value in metrics.items() if name.endswith("accuracy")},
            overwrite=True,
        )
    return trainer, metrics
