# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Training on image data read as a stream (`pvt-train --streaming`): nothing is downloaded or cached whole.

    splits = load_streaming_splits(data_args)         # IterableDatasetDict "train" / "validation", checked
    names = stream_class_names(splits, data_args)
    train_batches = StreamingBatches(accelerator, StreamingImageDataset(
        training_stream(splits["train"], data_args, accelerator, seed=42, shuffle_buffer_size=1000), ...), 64)

Sources, with the flag names of Transformers' examples: a Hub dataset (--dataset_name), image folders
(--train_dir / --validation_dir) or local data files (--train_file / --validation_file: globs of parquet, arrow or
webdataset .tar shards). Each process reads its own part of the stream (`datasets.distributed.split_dataset_by_node`:
whole shards when their number is a multiple of the number of processes, else every n-th example). Training runs
for --max_train_steps optimizer steps, starting the stream again (reshuffled) whenever it ends; every pass is an
epoch, evaluated at its end. When one process runs out, every process ends the pass there, so that all take the same
number of steps (unfinished gradient accumulation at the end of a pass is dropped).

Resuming: each process's stream position (`IterableDataset.state_dict()`) is saved in every checkpoint and restored.
The shuffle buffer's contents are not part of that state (datasets' documentation: the buffer is refilled from the
saved position), so a resumed run equals an uninterrupted one exactly with --shuffle_buffer_size 0 (the source's
order, shards in order); with a buffer it continues from the same shard and example, with a freshly filled buffer,
so the examples that sat in the buffer at the checkpoint are not seen in that pass.
"""

import io
import os
from pathlib import Path

import datasets
import PIL.Image
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, send_to_device
from datasets import ClassLabel, IterableDataset, IterableDatasetDict
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader

from pvt_tools.training.data import DataArguments, DataError, to_rgb

# The `datasets` builder reading each kind of local data file.
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".tar": "webdataset"}


def file_builder(pattern: str, flag: str) -> str:
    """The `datasets` builder for a glob of data files, chosen by their suffix."""
    suffix = Path(pattern).suffix.lower()
    if suffix not in FILE_BUILDERS:
        raise DataError(
            f"{flag} {pattern}: cannot tell the format from {suffix or 'a name without a suffix'!r}; give files "
            f"ending in {', '.join(FILE_BUILDERS)} (parquet, arrow or webdataset shards)."
        )
    return FILE_BUILDERS[suffix]


def load_streaming_splits(args: DataArguments) -> IterableDatasetDict:
    """The "train" and "validation" streams, their columns checked (nothing is read but the schema)."""
    if args.dataset_name is not None:
        splits = datasets.load_dataset(
            args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir, streaming=True
        )
    elif args.train_dir is not None:
        data_files = {"train": os.path.join(args.train_dir, "**")}
        if args.validation_dir is not None:
            data_files["validation"] = os.path.join(args.validation_dir, "**")
        splits = datasets.load_dataset("imagefolder", data_files=data_files, streaming=True)
    elif args.train_file is not None:
        builder = file_builder(args.train_file, "--train_file")
        data_files = {"train": args.train_file}
        if args.validation_file is not None:
            if file_builder(args.validation_file, "--validation_file") != builder:
                raise DataError("--train_file and --validation_file must be files of the same format.")
            data_files["validation"] = args.validation_file
        try:
            splits = datasets.load_dataset(builder, data_files=data_files, streaming=True)
        except FileNotFoundError as error:
            raise DataError(f"No data files match --train_file / --validation_file: {error}") from error
    else:
        raise DataError(
            "--streaming needs a source to stream: --dataset_name, --train_dir or --train_file (the embedded digits "
            "are not a stream; leave --streaming out to use them)."
        )
    if not isinstance(splits, IterableDatasetDict) or "train" not in splits or "validation" not in splits:
        found = list(splits) if isinstance(splits, IterableDatasetDict) else type(splits).__name__
        raise DataError(
            f"--streaming needs a 'train' and a 'validation' split (found {found}): a stream cannot be split for "
            "validation without reading it. Give --validation_dir / --validation_file, or a dataset with both."
        )
    for split_name in ("train", "validation"):
        check_stream_columns(splits[split_name], split_name, args.image_column_name, args.label_column_name)
    return IterableDatasetDict({"train": splits["train"], "validation": splits["validation"]})


def check_stream_columns(stream: IterableDataset, split_name: str, image_column: str, label_column: str) -> None:
    """The image and label columns must exist, the image column must hold images (from the stream's schema)."""
    features = stream.features
    if features is None:
        raise DataError(
            f"The {split_name!r} stream does not declare its columns, so they cannot be checked before training; "
            "store the data with its features (e.g. Dataset.to_parquet or push_to_hub)."
        )
    missing = [name for name in (image_column, label_column) if name not in features]
    if missing:
        raise DataError(
            f"The {split_name!r} split has no column {' or '.join(map(repr, missing))}; its columns are "
            f"{list(features)}. Name the right ones with --image_column_name / --label_column_name."
        )
    if not isinstance(features[image_column], datasets.Image):
        raise DataError(
            f"Column {image_column!r} of the {split_name!r} split holds {features[image_column]}, not images; "
            f"columns: {list(features)}. Name the image column with --image_column_name."
        )


def stream_class_names(splits: IterableDatasetDict, args: DataArguments) -> list[str]:
    """The class names of a ClassLabel column; for integer labels "0".."N-1", N read from the validation labels."""
    feature = splits["train"].features[args.label_column_name]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        validation = splits["validation"].select_columns([args.label_column_name])
        if args.max_eval_samples is not None:
            validation = validation.take(args.max_eval_samples)
        labels = [example[args.label_column_name] for example in validation]
        if not labels:
            raise DataError("The 'validation' stream is empty: there is nothing to evaluate on.")
        return [str(index) for index in range(max(labels) + 1)]
    raise DataError(
        f"Column {args.label_column_name!r} holds {feature}; labels must be class indices (ClassLabel or integers)."
    )


def training_stream(
    split: IterableDataset, args: DataArguments, accelerator: Accelerator, *, seed: int, shuffle_buffer_size: int
) -> IterableDataset:
    """This process's part of the training stream: limited, shuffled (same seed everywhere), split by process."""
    stream = split.cast_column(args.image_column_name, datasets.Image(decode=False))
    if args.max_train_samples is not None:
        stream = stream.take(args.max_train_samples)
    if shuffle_buffer_size > 0:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    return split_dataset_by_node(stream, rank=accelerator.process_index, world_size=accelerator.num_processes)


def evaluation_stream(split: IterableDataset, args: DataArguments, accelerator: Accelerator) -> IterableDataset:
    """This process's part of the validation stream (every example is evaluated by exactly one process)."""
    stream = split.cast_column(args.image_column_name, datasets.Image(decode=False))
    if args.max_eval_samples is not None:
        stream = stream.take(args.max_eval_samples)
    return split_dataset_by_node(stream, rank=accelerator.process_index, world_size=accelerator.num_processes)


def decode_image(stored: dict) -> tuple[PIL.Image.Image | None, str]:
    """(the image, "") or (None, why it cannot be read)."""
    try:
        source = io.BytesIO(stored["bytes"]) if stored.get("bytes") is not None else stored["path"]
        with PIL.Image.open(source) as opened:
            opened.load()
            return opened.copy(), ""
    except Exception as error:  # PIL raises many kinds for broken files
        return None, f"{type(error).__name__}: {error}"


class StreamingImageDataset(torch.utils.data.IterableDataset):
    """A stream of `datasets` examples as {"pixel_values", "labels"}: decoded, checked and transformed here, in
    the main process (random transforms draw from the global RNG, which checkpoints save and restore)."""

    def __init__(
        self,
        stream: IterableDataset,
        transform,
        image_column: str,
        label_column: str,
        *,
        split_name: str,
        num_labels: int,
        corrupt_images: str = "error",
    ):
        self.stream = stream
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.split_name = split_name
        self.num_labels = num_labels
        self.corrupt_images = corrupt_images
        self.skipped: list[str] = []  # "file (why)" of the unreadable images left out, by this process

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __iter__(self):
        for example in self.stream:
            stored = example[self.image_column]
            image, problem = decode_image(stored)
            if image is None:
                described = f"{stored.get('path') or 'an embedded image'} ({problem})"
                if self.corrupt_images != "skip":
                    raise DataError(
                        f"An image of the {self.split_name!r} stream cannot be read: {described}. Fix or remove it, "
                        "or pass --corrupt_images skip to leave such images out."
                    )
                self.skipped.append(described)
                continue
            label = example[self.label_column]
            if not 0 <= label < self.num_labels:
                raise DataError(
                    f"A label of the {self.split_name!r} stream is {label}, outside 0..{self.num_labels - 1} (image "
                    f"{stored.get('path') or 'embedded'}): filter out unlabelled examples, or check "
                    "--label_column_name."
                )
            yield {"pixel_values": self.transform(to_rgb(image)), "labels": label}


def streamed_skipped_images(streams: list[StreamingImageDataset]) -> dict[str, list[str]]:
    """The unreadable images every process left out of `streams`, per split, each file once (a file met again in
    a later pass is not listed again): what the in-memory path's checks return, for `data.report_skipped_images`.
    Call it on every process (it gathers)."""
    skipped: dict[str, list[str]] = {}
    for part in gather_object([{stream.split_name: stream.skipped for stream in streams}]):
        for split_name, described in part.items():
            skipped.setdefault(split_name, []).extend(described)
    return {split_name: list(dict.fromkeys(described)) for split_name, described in skipped.items()}


class StreamingBatches:
    """The training batches of a stream, on the accelerator's device, for `loop.run_training`: every process ends
    a pass when the first one runs out of data; `state_dict` / `load_state_dict` give the stream position."""

    is_stream = True  # loop.run_training saves and restores the position instead of skipping batches

    def __init__(self, accelerator: Accelerator, dataset: StreamingImageDataset, batch_size: int, collate_fn):
        self.accelerator = accelerator
        self.dataset = dataset
        # No workers: the stream's position is then exactly the batches handed out (see the module docstring). Its
        # own generator: starting a pass must not draw from the global RNG, which a resumed run restores later.
        self.loader = DataLoader(
            dataset, batch_size=batch_size, collate_fn=collate_fn, num_workers=0, generator=torch.Generator()
        )

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.dataset.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dataset.stream.load_state_dict(state)

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            batch = next(batches, None)
            has_batch = torch.tensor([0 if batch is None else 1], device=self.accelerator.device)
            if int(self.accelerator.gather(has_batch).min()) == 0:
                return
            yield send_to_device(batch, self.accelerator.device)


def streaming_classification_evaluator(accelerator: Accelerator, eval_dataloader: DataLoader, metric, k: int):
    """Top-1 (and top-k) accuracy over the whole validation stream: each process evaluates its part, the
    predictions of all are gathered at the end (the parts may differ in length)."""

    def evaluate_model(model: torch.nn.Module) -> dict[str, float]:
        network = accelerator.unwrap_model(model)
        network.eval()
        ranked_parts, label_parts = [], []
        for batch in eval_dataloader:
            batch = send_to_device(batch, accelerator.device)
            with torch.no_grad():
                logits = network(pixel_values=batch["pixel_values"]).logits
            ranked_parts.append(logits.topk(k, dim=-1).indices.cpu())
            label_parts.append(batch["labels"].cpu())
        local = (torch.cat(ranked_parts), torch.cat(label_parts)) if ranked_parts else None
        gathered = [part for part in gather_object([local]) if part is not None]
        if not gathered:
            raise DataError("The 'validation' stream is empty: there is nothing to evaluate on.")
        predictions = torch.cat([ranked for ranked, _ in gathered])
        references = torch.cat([labels for _, labels in gathered])
        evaluate_model.num_examples = len(references)
        return metric.compute(predictions=predictions, references=references)

    evaluate_model.num_examples = 0
    return evaluate_model


__all__ = [
    "StreamingBatches",
    "StreamingImageDataset",
    "evaluation_stream",
    "load_streaming_splits",
    "streamed_skipped_images",
    "stream_class_names",
    "streaming_classification_evaluator",
    "training_stream",
]
