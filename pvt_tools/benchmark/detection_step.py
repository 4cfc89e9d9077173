# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Where a detection training step's time goes: data, backbone, encoder, decoder, matching, loss, backward, optimizer.

`profile_detection_steps` runs training steps of the detector `pvt-train-detection`'s flags describe and times each
part with wall clocks: forward hooks on the PVT backbone, the transformer's encoder and decoder, and wrappers
around Transformers' DETR losses and Hungarian matchers (classes patched for the duration only). On a CPU every
operator runs synchronously, so these clocks measure the work itself. Which parts are this project's: the data
(datasets' on-the-fly transform, the image processor, collation) and the PVT; the rest is Transformers'.
"""

import argparse
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from unittest import mock

import torch
from transformers.loss import loss_deformable_detr, loss_for_object_detection

from pvt_tools.backbones import find_pvt_backbone

PARTS = ("data", "backbone", "encoder", "decoder", "matching", "loss", "forward, other", "backward", "optimizer")
OWNERS = {
    "data": "this project (datasets transform, image processor, collation)",
    "backbone": "this project (PVT)",
    "encoder": "Transformers",
    "decoder": "Transformers",
    "matching": "Transformers (scipy's linear_sum_assignment)",
    "loss": "Transformers",
    "forward, other": "Transformers (input projections, position embeddings, heads)",
    "backward": "PyTorch autograd, all parts",
    "optimizer": "PyTorch AdamW",
}


class PartClock:
    """Seconds spent in each named part, summed over the calls it timed."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def part(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def timed_module(self, module: torch.nn.Module, name: str) -> list:
        """Forward hooks adding `module`'s forward time to `name`; returns the handles to remove."""
        starts = []

        def before(*_):
            starts.append(time.perf_counter())

        def after(*_):
            self.seconds[name] += time.perf_counter() - starts.pop()

        return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def timed_method(self, owner: type, method: str, name: str):
        """A patch of `owner.method` adding its time to `name` (a context manager)."""
        original = getattr(owner, method)
        clock = self

        def timed(*args, **kwargs):
            with clock.part(name):
                return original(*args, **kwargs)

        return mock.patch.object(owner, method, timed)


def transformer_parts(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The PVT backbone and the transformer's encoder and decoder of a DETR / Deformable DETR."""
    inner = model.model
    return {"backbone": find_pvt_backbone(model), "encoder": inner.encoder, "decoder": inner.decoder}


def profile_detection_steps(model, optimizer, dataloader, steps: int, warmup_steps: int = 2) -> dict:
    """Time `steps` training steps (after `warmup_steps` untimed ones) part by part; returns images/s and, per part,
    milliseconds per step and its share of the step."""
    model.train()
    clock = PartClock()
    batches = (batch for _ in iter(int, 1) for batch in dataloader)  # epoch after epoch, as long as needed
    handles = []
    images = 0
    with ExitStack() as patches:
        # Matching runs inside the loss: its time is taken out of "loss" below. ImageLoss.forward is shared by DETR and
        # Deformable DETR; each has its own matcher class.
        patches.enter_context(clock.timed_method(loss_for_object_detection.ImageLoss, "forward", "loss + matching"))
        for matcher in (
            loss_for_object_detection.HungarianMatcher,
            loss_deformable_detr.DeformableDetrHungarianMatcher,
        ):
            patches.enter_context(clock.timed_method(matcher, "forward", "matching"))
        for name, module in transformer_parts(model).items():
            handles += clock.timed_module(module, name)
        try:
            for step in range(warmup_steps + steps):
                if step == warmup_steps:
                    clock.seconds.clear()
                    started = time.perf_counter()
                with clock.part("data"):
                    batch = next(batches)
                with clock.part("forward"):
                    loss = model(**batch).loss
                with clock.part("backward"):
                    loss.backward()
                with clock.part("optimizer"):
                    optimizer.step()
                    optimizer.zero_grad()
                if step >= warmup_steps:
                    images += len(batch["labels"])
            total = time.perf_counter() - started
        finally:
            for handle in handles:
                handle.remove()
    seconds = dict(clock.seconds)
    seconds["loss"] = seconds.pop("loss + matching") - seconds["matching"]
    seconds["forward, other"] = seconds.pop("forward") - sum(
        seconds[name] for name in ("backbone", "encoder", "decoder", "matching", "loss")
    )
    return {
        "steps": steps,
        "images_per_second": round(images / total, 2),
        "step_ms": round(1000 * total / steps, 1),
        "parts": {
            name: {
                "ms_per_step": round(1000 * seconds[name] / steps, 1),
                "percent": round(100 * seconds[name] / total, 1),
                "owner": OWNERS[name],
            }
            for name in PARTS
        },
    }


def profile_table(profile: dict) -> str:
    """The profile as a Markdown table."""
    lines = [
        f"{profile['steps']} steps, {profile['step_ms']} ms per step, {profile['images_per_second']} images/s",
        "",
        "| part | ms per step | share | whose |",
        "|---|---|---|---|",
    ]
    for name, part in profile["parts"].items():
        lines.append(f"| {name} | {part['ms_per_step']} | {part['percent']}% | {part['owner']} |")
    return "\n".join(lines)


def profile_from_arguments(args: argparse.Namespace, steps: int) -> dict:
    """Build the detector, its data and its optimizer exactly as `pvt-train-detection` with `args` would, then
    profile `steps` of its training steps."""
    from pvt_tools.training import detection

    model, optimizer, train_dataloader = detection.training_setup(args)
    return profile_detection_steps(model, optimizer, train_dataloader, steps)


__all__ = ["PARTS", "PartClock", "profile_detection_steps", "profile_from_arguments", "profile_table"]
