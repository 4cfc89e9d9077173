# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""The Accelerate training loop of the project's training scripts, independent of the task.

It follows the skeleton of Transformers' examples/pytorch/*_no_trainer.py: prepare -> accumulate -> count optimizer
steps on `sync_gradients` -> gather_for_metrics in the task's evaluation -> save_state / export. Mixed precision,
several processes and several machines come from `accelerate launch` / `accelerate config`; nothing here depends
on them.

    accelerator = create_accelerator(seed=42, gradient_accumulation_steps=1)
    optimizer = torch.optim.AdamW(weight_decay_parameter_groups(model, 0.05), lr=5e-4)
    model, optimizer, train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
    plan = plan_training_steps(len(train_dataloader), gradient_accumulation_steps=1, num_train_epochs=300)
    lr_scheduler = accelerator.prepare(get_scheduler("cosine", optimizer, warmup, plan.max_train_steps))
    history = run_training(
        accelerator, model, optimizer, lr_scheduler, train_dataloader, plan,
        compute_loss=lambda model, batch: model(**batch).loss,      # a scalar tensor
        evaluate=lambda model: {"accuracy": ...},                    # same dict on every process
        output_dir="out", checkpointing_steps=500, resume_from_checkpoint="latest",
        run_settings={"per_device_train_batch_size": 64},            # must match to resume
    )

`run_training` evaluates after every epoch, saves checkpoints (checkpointing.py) every N steps or every epoch,
resumes exactly (model, optimizer, scheduler, RNG and the position in the data), stops with NonFiniteLossError on
a NaN/inf loss, shows a tqdm bar on the main process, and logs loss, learning rate and metrics to the history,
to `accelerator.log` (trackers of --with_tracking) and to training_history.json / training_curves.png in
`output_dir`. The scheduler is stepped once per optimizer update (`create_accelerator` sets
`step_scheduler_with_optimizer=False`), so its length is `plan.max_train_steps` whatever the number of processes.
For exact resumption, random transforms of the data must not use the global RNG while batches are prefetched:
`training_data.ImageClassificationDataset` seeds each example itself; datasets with a `set_epoch` method are told
the epoch.
"""

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, set_seed
from torch import nn
from tqdm.auto import tqdm

from pvt_tools.training.checkpoints import (
    NonFiniteLossError,
    TrainingProgress,
    check_finite_loss,
    load_checkpoint,
    read_process_state,
    resolve_checkpoint,
    resume_batches,
    save_checkpoint,
)
from pvt_tools.training.curves import TrainingHistory, plot_training_curves
from pvt_tools.training.data import DataError
from pvt_tools.usage import UsageError, check_output_folder

# Layers whose weight is a matrix (or kernel) that multiplies the input: the only parameters with weight decay.
DECAYED_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def create_accelerator(
    *,
    seed: int,
    gradient_accumulation_steps: int = 1,
    output_dir: str | os.PathLike | None = None,
    with_tracking: bool = False,
    report_to: str = "all",
) -> Accelerator:
    """An Accelerator set up for exactly resumable runs: a seedable sampler (the data order depends only on the
    seed and the epoch), the scheduler stepped by us once per update, and a per-process seed."""
    accelerator = Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),
        step_scheduler_with_optimizer=False,
        log_with=report_to if with_tracking else None,
        project_dir=str(output_dir) if output_dir is not None else None,
    )
    check_sharding_took_effect(accelerator)
    set_seed(seed, device_specific=True)
    return accelerator


def check_sharding_took_effect(accelerator: Accelerator) -> None:
    """`accelerate launch --use_fsdp` on CPU processes (ACCELERATE_USE_CPU / --cpu) trains unsharded without a word:
    Accelerate (1.15) switches FSDP on only for GPU-like devices. Say so instead of pretending to shard."""
    fsdp_asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_asked and accelerator.distributed_type != DistributedType.FSDP:
        raise UsageError(
            f"FSDP was asked for (accelerate launch --use_fsdp), but Accelerate runs these processes as "
            f"{accelerator.distributed_type.value} on {accelerator.device.type}: it enables FSDP only for several GPU "
            "(or other accelerator) processes, not on CPU processes. Leave --use_fsdp out on CPUs (the processes then "
            "train with DistributedDataParallel), or launch on GPUs."
        )


def weight_decay_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups chosen by module type: the weights of linear and convolution layers decay; everything else
    (normalisation layers, all biases, position embeddings, class tokens and other free parameters) does not."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            if isinstance(module, DECAYED_LAYER_TYPES) and name == "weight":
                decay.append(parameter)
            else:
                no_decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class TrainingPlan:
    max_train_steps: int  # optimizer updates in the whole run
    num_train_epochs: int
    num_update_steps_per_epoch: int


def plan_training_steps(
    num_batches_per_epoch: int,
    gradient_accumulation_steps: int,
    num_train_epochs: int,
    max_train_steps: int | None = None,
) -> TrainingPlan:
    """How many optimizer updates and epochs; `num_batches_per_epoch` is the prepared (per-process) dataloader's
    length. `max_train_steps`, when given, overrides `num_train_epochs`."""
    per_epoch = math.ceil(num_batches_per_epoch / gradient_accumulation_steps)
    if per_epoch == 0:
        raise UsageError("The training data gives no batch: there is nothing to train on.")
    if max_train_steps is None:
        max_train_steps = num_train_epochs * per_epoch
    return TrainingPlan(max_train_steps, math.ceil(max_train_steps / per_epoch), per_epoch)


# The default warm-up: DeiT's 5 epochs, but never more than a tenth of the run (a short run would otherwise spend
# most or all of its steps warming up and end before the learning rate reaches its peak).
DEFAULT_WARMUP_EPOCHS = 5
DEFAULT_WARMUP_FRACTION = 0.1


def default_warmup_steps(plan: "TrainingPlan") -> int:
    """min(5 epochs, 10% of the optimizer steps), rounded down: always shorter than the run."""
    return min(
        DEFAULT_WARMUP_EPOCHS * plan.num_update_steps_per_epoch, int(DEFAULT_WARMUP_FRACTION * plan.max_train_steps)
    )


def check_warmup(num_warmup_steps: int, max_train_steps: int, given_as: str = "--num_warmup_steps") -> None:
    """A warm-up as long as the run never reaches the peak learning rate: refused, naming both numbers."""
    if num_warmup_steps < 0:
        raise UsageError(f"{given_as} must be 0 or more, got {num_warmup_steps}.")
    if num_warmup_steps > 0 and num_warmup_steps >= max_train_steps:
        raise UsageError(
            f"The warm-up ({num_warmup_steps} steps, {given_as}) is at least as long as the whole run "
            f"({max_train_steps} optimizer steps): the learning rate would never reach its peak. Shorten the warm-up "
            "or train for more steps (--max_train_steps / --num_train_epochs); leave the warm-up flags out for the "
            f"default, min({DEFAULT_WARMUP_EPOCHS} epochs, {DEFAULT_WARMUP_FRACTION:.0%} of the steps)."
        )


def resolve_warmup(
    plan: "TrainingPlan", num_warmup_steps: int | None = None, num_warmup_epochs: float | None = None
) -> tuple[int, str]:
    """The warm-up length in optimizer steps and where it came from (a flag or the default rule)."""
    if num_warmup_steps is not None:
        warmup, source = num_warmup_steps, "--num_warmup_steps"
    elif num_warmup_epochs is not None:
        warmup = math.ceil(num_warmup_epochs * plan.num_update_steps_per_epoch)
        source = f"--num_warmup_epochs {num_warmup_epochs:g}"
    else:
        warmup = default_warmup_steps(plan)
        source = f"default: min({DEFAULT_WARMUP_EPOCHS} epochs, {DEFAULT_WARMUP_FRACTION:.0%} of the steps)"
    check_warmup(warmup, plan.max_train_steps, source if num_warmup_steps is None else "--num_warmup_steps")
    return warmup, source


def run_summary(
    *,
    num_parameters: int,
    num_images: int,
    details: str,
    plan: "TrainingPlan",
    steps_source: str,
    num_warmup_steps: int,
    warmup_source: str,
    learning_rate: float,
    learning_rate_source: str,
    schedule: str,
    schedule_source: str,
) -> str:
    """The line every training script prints before it starts: what will run, and where each number came from."""
    return (
        f"Training {num_parameters:,} parameters on {num_images:,} images ({details}): {plan.max_train_steps} "
        f"optimizer steps ({plan.num_train_epochs} epoch{'s' if plan.num_train_epochs != 1 else ''}, "
        f"{steps_source}), warm-up {num_warmup_steps} step{'s' if num_warmup_steps != 1 else ''} ({warmup_source}), "
        f"learning rate {learning_rate:.3g} "
        f"({learning_rate_source}), schedule {schedule} ({schedule_source})."
    )


def end_line(model_dir: str | os.PathLike, results_path: str | os.PathLike) -> str:
    """The line every training script prints last."""
    return f"Saved to {model_dir}; results {results_path}"


class OutOfMemoryError(UsageError):
    """A batch did not fit in memory; the message names the batch size and the flags that lower it."""

    def __init__(self, per_device_train_batch_size: int):
        super().__init__(
            f"Out of memory with batches of {per_device_train_batch_size} images per device. Lower "
            "--per_device_train_batch_size (and raise --gradient_accumulation_steps to keep the total batch, and the "
            "learning rate, the same), or --per_device_eval_batch_size if it happened while evaluating; a smaller "
            "--image_size or model also helps."
        )


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation failure: torch.OutOfMemoryError on an accelerator, or the RuntimeError of
    the CPU allocator."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def prepare_run_output_dir(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    *,
    resume_from_checkpoint: str | None,
    overwrite_output_dir: bool,
) -> Path:
    """Create the run's output folder once every other check has passed, right before training. The folder rule
    (pvt_tools.usage.check_output_folder, which each command also runs before it loads anything) is checked again;
    a new run with --overwrite_output_dir removes the earlier checkpoints here, and its model and results are
    replaced at the end; other files are never touched."""
    output_dir = Path(output_dir)
    checkpoints = check_output_folder(
        output_dir, overwrite=overwrite_output_dir, resume_from_checkpoint=resume_from_checkpoint
    )
    if resume_from_checkpoint is None and accelerator.is_main_process:
        for name in checkpoints:
            shutil.rmtree(output_dir / name)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return output_dir


def write_json(path: Path, data: dict) -> None:
    """Write JSON whole or not at all."""
    partial = path.with_name(f".{path.name}.incomplete")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)


def set_epoch(train_dataloader, epoch: int) -> None:
    """The sampler's shuffle and the dataset's per-example augmentation seeds follow the epoch."""
    train_dataloader.set_epoch(epoch)
    if hasattr(train_dataloader, "dataset") and hasattr(train_dataloader.dataset, "set_epoch"):
        train_dataloader.dataset.set_epoch(epoch)


def batch_size_of(batch) -> int:
    """Examples in a batch: the first dimension of its first tensor (or the length of its first list)."""
    values = batch.values() if isinstance(batch, dict) else batch
    for value in values:
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
        if isinstance(value, (list, tuple)):
            return len(value)
    raise TypeError(f"Cannot tell how many examples a batch of {type(batch).__name__} holds.")


@dataclass
class Throughput:
    """Images trained by this run (not counting steps done before a resume) and the time they took; reported as
    Trainer reports them (train_runtime, train_samples_per_second, train_steps_per_second)."""

    num_processes: int
    started: float = field(default_factory=time.perf_counter)
    samples_per_process: int = 0  # examples this process trained on
    steps: int = 0  # optimizer steps done by this run

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    def per_process(self) -> float:
        """Images per second on one process."""
        return self.samples_per_process / self.elapsed

    def total(self) -> float:
        """Images per second over all processes (every process trains on batches of the same size)."""
        return self.per_process() * self.num_processes

    def seconds_left(self, remaining_steps: int) -> float:
        return self.elapsed / self.steps * remaining_steps if self.steps else float("nan")

    def describe(self, remaining_steps: int) -> str:
        """e.g. "410 img/s (205 per process), 1:02:03 left"."""
        left = self.seconds_left(remaining_steps)
        shown = "?" if math.isnan(left) else time.strftime("%H:%M:%S", time.gmtime(left))
        return f"{self.total():.1f} img/s ({self.per_process():.1f} per process), {shown} left"

    def results(self) -> dict:
        runtime = self.elapsed
        return {
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(self.samples_per_process * self.num_processes / runtime, 3),
            "train_steps_per_second": round(self.steps / runtime, 3),
            "train_samples_this_run": self.samples_per_process * self.num_processes,
        }


def run_training(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    train_dataloader,
    plan: TrainingPlan,
    *,
    compute_loss: Callable[[nn.Module, dict], torch.Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]],
    output_dir: str | os.PathLike,
    checkpointing_steps: int | str | None = None,
    resume_from_checkpoint: str | None = None,
    max_grad_norm: float | None = None,
    run_settings: dict | None = None,
) -> TrainingHistory:
    """Train to `plan.max_train_steps`, evaluating after each epoch; returns the history (see module docstring),
    with this run's speed in `history.throughput` (the train_runtime / train_samples_per_second keys of
    all_results.json: the training loop's time, evaluations included, as Trainer measures it)."""
    output_dir = Path(output_dir)
    run_settings = {"num_processes": accelerator.num_processes, **(run_settings or {})}
    progress, history = TrainingProgress(), TrainingHistory()
    checkpoint = resolve_checkpoint(resume_from_checkpoint, output_dir) if resume_from_checkpoint else None
    if checkpoint is not None:
        progress, extra_state = load_checkpoint(accelerator, checkpoint, run_settings)
        history = TrainingHistory.from_dict(extra_state.get("history", {}))
        accelerator.print(f"Resumed from {checkpoint} at optimizer step {progress.completed_steps}.")
    elif resume_from_checkpoint == "latest":
        accelerator.print(f"No checkpoint in {output_dir} yet: starting from the beginning.")

    # A stream (streaming.StreamingBatches) has no length to skip batches by: its position is saved and restored.
    is_stream = getattr(train_dataloader, "is_stream", False)

    def save(name: str) -> None:
        stream_state = {"stream": train_dataloader.state_dict()} if is_stream else None
        save_checkpoint(
            accelerator, output_dir, name, progress, run_settings, {"history": history.to_dict()}, stream_state
        )

    progress_bar = tqdm(
        total=plan.max_train_steps, initial=progress.completed_steps, disable=not accelerator.is_local_main_process
    )
    start_epoch, _ = progress.resume_point()
    throughput = Throughput(accelerator.num_processes)
    try:
        for epoch in range(start_epoch, plan.num_train_epochs):
            if progress.completed_steps >= plan.max_train_steps:
                break
            model.train()
            set_epoch(train_dataloader, epoch)
            if epoch == start_epoch and is_stream:
                if checkpoint is not None and not progress.epoch_finished:
                    stream_state = read_process_state(checkpoint, accelerator.process_index)["stream"]
                    train_dataloader.load_state_dict(stream_state)
                batches = train_dataloader
            elif epoch == start_epoch:
                batches = resume_batches(accelerator, train_dataloader, progress)
            else:
                batches = train_dataloader
            if epoch != progress.epoch or progress.epoch_finished:  # a new epoch, not the rest of a resumed one
                progress = TrainingProgress(completed_steps=progress.completed_steps, epoch=epoch)
            window_losses = []
            for batch in batches:
                with accelerator.accumulate(model):
                    loss = compute_loss(model, batch)
                    losses = accelerator.gather(loss.detach().float().reshape(1))  # every process's loss
                    check_finite_loss(losses, progress, output_dir)
                    window_losses.append(losses.mean())
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and max_grad_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                progress.batches_seen += 1
                throughput.samples_per_process += batch_size_of(batch)
                if not accelerator.sync_gradients:
                    continue
                learning_rate = lr_scheduler.get_last_lr()[0]
                lr_scheduler.step()
                progress.completed_steps += 1
                throughput.steps += 1
                train_loss = torch.stack(window_losses).mean().item()
                window_losses = []
                history.log_step(progress.completed_steps, epoch, loss=train_loss, learning_rate=learning_rate)
                accelerator.log(
                    {
                        "train_loss": train_loss,
                        "learning_rate": learning_rate,
                        "epoch": epoch,
                        "train_samples_per_second": throughput.total(),
                    },
                    step=progress.completed_steps,
                )
                progress_bar.update(1)
                progress_bar.set_postfix(
                    epoch=epoch,
                    loss=f"{train_loss:.4f}",
                    lr=f"{learning_rate:.1e}",
                    img_s=f"{throughput.total():.1f} ({throughput.per_process():.1f}/process)",
                )
                if isinstance(checkpointing_steps, int) and progress.completed_steps % checkpointing_steps == 0:
                    save(f"step_{progress.completed_steps}")
                if progress.completed_steps >= plan.max_train_steps:
                    break
            if window_losses:  # a stream ended inside an accumulation window: drop its unfinished gradients
                optimizer.zero_grad()
                accelerator.step = 0
            if progress.completed_steps == 0:
                raise DataError(
                    f"The training data ended after {progress.batches_seen} batch(es) per process, before the first "
                    f"optimizer step ({accelerator.gradient_accumulation_steps} batch(es) of "
                    "--per_device_train_batch_size per process make one): give more data or smaller batches."
                )

            metrics = evaluate(model)
            history.log_evaluation(progress.completed_steps, epoch, **metrics)
            accelerator.log({f"eval_{name}": value for name, value in metrics.items()}, step=progress.completed_steps)
            if accelerator.is_local_main_process:
                shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
                speed = throughput.describe(plan.max_train_steps - progress.completed_steps)
                progress_bar.write(f"epoch {epoch} (step {progress.completed_steps}): {shown}; {speed}")
            progress.epoch_finished = True
            if checkpointing_steps == "epoch":
                save(f"epoch_{epoch}")
        history.throughput = throughput.results()
    except NonFiniteLossError:
        write_history(accelerator, history, output_dir)  # the curves up to the failure
        raise
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        batch_size = run_settings.get("per_device_train_batch_size", "?")
        raise OutOfMemoryError(batch_size) from None
    finally:
        progress_bar.close()

    if history.last_evaluation is None or history.last_evaluation["step"] != progress.completed_steps:
        # Resumed from a checkpoint taken at the very last step, before its evaluation.
        history.log_evaluation(progress.completed_steps, progress.epoch, **evaluate(model))
    write_history(accelerator, history, output_dir)
    return history


def final_eval_metrics(history: TrainingHistory) -> dict:
    """The last evaluation's metrics as all_results.json names them, after Transformers' examples: eval_<metric>."""
    return {f"eval_{name}": value for name, value in history.last_evaluation.items() if name not in ("step", "epoch")}


def write_history(accelerator: Accelerator, history: TrainingHistory, output_dir: Path) -> None:
    """training_history.json and training_curves.png in `output_dir` (main process)."""
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "training_history.json", history.to_dict())
        plot_training_curves(history, output_dir / "training_curves.png")


__all__ = [
    "OutOfMemoryError",
    "Throughput",
    "TrainingPlan",
    "UsageError",
    "batch_size_of",
    "check_warmup",
    "create_accelerator",
    "default_warmup_steps",
    "end_line",
    "final_eval_metrics",
    "is_out_of_memory",
    "plan_training_steps",
    "prepare_run_output_dir",
    "resolve_warmup",
    "run_summary",
    "run_training",
    "weight_decay_parameter_groups",
    "write_json",
]
