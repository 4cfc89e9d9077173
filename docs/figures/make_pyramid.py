# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Draw the README's picture of PVT's four-stage pyramid from the model itself: pvt-small's backbone run on a
224x224 image gives each stage's grid and channels, and its config gives the spatial reduction of each stage.

    python docs/figures/make_pyramid.py   # writes docs/figures/pvt_pyramid.png
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

from configuration_pvt import PvtConfig  # noqa: E402
from modeling_pvt import PvtBackbone  # noqa: E402

FIGURE = Path(__file__).with_name("pvt_pyramid.png")
IMAGE_SIZE = 224


def stage_shapes(variant: str = "pvt-small") -> list[tuple[int, int, int, int]]:
    """(channels, height, width, spatial reduction) of each stage's output for one 224x224 image."""
    config = PvtConfig.from_variant(variant, out_features=["stage1", "stage2", "stage3", "stage4"])
    backbone = PvtBackbone(config).eval()
    with torch.no_grad():
        feature_maps = backbone(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)).feature_maps
    return [
        (channels, height, width, reduction)
        for (_, channels, height, width), reduction in zip(
            (tuple(feature_map.shape) for feature_map in feature_maps), config.sequence_reduction_ratios
        )
    ]


def draw(shapes: list[tuple[int, int, int, int]], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(9, 3.0), dpi=110)
    side = 2.0  # the input image's drawn side; the stages are drawn to scale with it, enlarged twice over
    slot = 2.1  # each stage's column
    axes.add_patch(Rectangle((0, -side / 2), side, side, facecolor="#d9d9d9", edgecolor="black"))
    axes.text(side / 2, 0, f"image\n{IMAGE_SIZE}x{IMAGE_SIZE}x3", ha="center", va="center", fontsize=9)
    colours = ["#4c72b0", "#55a868", "#c44e52", "#8172b2"]
    previous_right = side
    for stage, ((channels, height, width, reduction), colour) in enumerate(zip(shapes, colours), start=1):
        drawn = max(2 * side * height / IMAGE_SIZE, 0.3)
        centre = side + 0.3 + slot * (stage - 0.5)
        axes.add_patch(
            FancyArrowPatch(
                (previous_right + 0.08, 0), (centre - drawn / 2 - 0.08, 0), arrowstyle="->", mutation_scale=12
            )
        )
        axes.add_patch(
            Rectangle((centre - drawn / 2, -drawn / 2), drawn, drawn, facecolor=colour, alpha=0.75, edgecolor="black")
        )
        axes.text(
            centre,
            -side / 2 - 0.15,
            f"stage {stage}\n{height}x{width}x{channels}\nstride {IMAGE_SIZE // height}\nreduction R={reduction}",
            ha="center",
            va="top",
            fontsize=8.5,
        )
        previous_right = centre + drawn / 2
    axes.set_xlim(-0.1, side + 0.4 + slot * 4)
    axes.set_ylim(-side / 2 - 1.6, side / 2 + 0.1)
    axes.set_aspect("equal")
    axes.axis("off")
    axes.set_title(
        "PVT-Small on a 224x224 image: four stages of patch embedding + transformer layers;\n"
        "attention takes its keys and values from the grid shrunk R times per side",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    draw(stage_shapes(), FIGURE)
    print(f"Wrote {FIGURE}")
