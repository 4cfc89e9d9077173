# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""What a training run logged, and its picture.

Task-agnostic (classification and detection training both use it):

    history = TrainingHistory()
    history.log_step(step=1, epoch=0, loss=2.30, learning_rate=1e-4)    # any named numbers per optimizer step
    history.log_evaluation(step=24, epoch=0, accuracy=0.91)             # any named metrics per evaluation
    history.to_dict() / TrainingHistory.from_dict(...)                   # JSON-ready; checkpoints carry it
    plot_training_curves(history, "out/training_curves.png")           # one panel per quantity, against the step
"""

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainingHistory:
    steps: list[dict] = field(default_factory=list)  # {"step", "epoch", <quantity>: value, ...} per optimizer step
    evaluations: list[dict] = field(default_factory=list)  # {"step", "epoch", <metric>: value, ...} per evaluation
    # This run's speed (run_training fills it: train_runtime, train_samples_per_second, ...); not saved with it.
    throughput: dict = field(default_factory=dict)

    def log_step(self, step: int, epoch: int, **values: float) -> None:
        self.steps.append({"step": step, "epoch": epoch, **values})

    def log_evaluation(self, step: int, epoch: int, **metrics: float) -> None:
        self.evaluations.append({"step": step, "epoch": epoch, **metrics})

    @property
    def last_evaluation(self) -> dict | None:
        return self.evaluations[-1] if self.evaluations else None

    def to_dict(self) -> dict:
        return {"steps": self.steps, "evaluations": self.evaluations}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingHistory":
        return cls(steps=list(data.get("steps", [])), evaluations=list(data.get("evaluations", [])))


def quantities(records: list[dict]) -> list[str]:
    """The logged names, in first-seen order, without the step and epoch counters."""
    names: dict[str, None] = {}
    for record in records:
        names.update({name: None for name in record if name not in ("step", "epoch")})
    return list(names)


def plot_training_curves(history: TrainingHistory, path: str | os.PathLike, title: str | None = None) -> Path:
    """A PNG with one panel per logged quantity (loss, learning rate, each evaluation metric) against the
    optimizer step. Written to a temporary name and renamed, so the file is always a whole picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(history.steps, name, "-") for name in quantities(history.steps)]
    panels += [(history.evaluations, name, "o-") for name in quantities(history.evaluations)]
    columns = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for axis, (records, name, style) in zip(axes.flat, panels):
        points = [(record["step"], record[name]) for record in records if name in record]
        axis.plot([step for step, _ in points], [value for _, value in points], style, markersize=3)
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    save_png_whole(Path(path), lambda partial: figure.savefig(partial, dpi=100))
    plt.close(figure)
    return path


def save_png_whole(path: Path, save: Callable[[Path], object]) -> Path:
    """Call `save(partial)` to write the PNG beside `path`, then move it into place: the picture is there whole or
    not at all."""
    partial = path.with_name(f".{path.name}.incomplete.png")
    save(partial)
    os.replace(partial, path)
    return path


__all__ = ["TrainingHistory", "plot_training_curves", "save_png_whole"]
