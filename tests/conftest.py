"""Shared test set-up: tiny configurations, the official fixture."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from configuration_pvt import PvtConfig


def find_official_fixture_dir() -> Path:
    """$PVT_OFFICIAL_FIXTURE_DIR, else shared/fixtures/official_pvt_v1 beside this checkout or one of its parents,
    or beside the local repository it was cloned from."""
    if "PVT_OFFICIAL_FIXTURE_DIR" in os.environ:
        return Path(os.environ["PVT_OFFICIAL_FIXTURE_DIR"])
    checkouts = [REPO_ROOT]
    origin = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        checkouts.append(Path(origin).resolve())
    candidates = [
        folder / "shared" / "fixtures" / "official_pvt_v1" for checkout in checkouts for folder in checkout.parents
    ]
    return next((path for path in candidates if path.is_dir()), candidates[0])


OFFICIAL_FIXTURE_DIR = find_official_fixture_dir()


def tiny_config(**overrides) -> PvtConfig:
    """A four-stage PVT small enough for a unit test (64-pixel images)."""
    settings = dict(
        image_size=64,
        hidden_sizes=[16, 32, 40, 64],
        depths=[1, 1, 2, 1],
        num_attention_heads=[1, 2, 2, 4],
        mlp_ratios=[2, 2, 2, 2],
        sequence_reduction_ratios=[4, 2, 2, 1],
        num_labels=5,
    )
    settings.update(overrides)
    return PvtConfig(**settings)


@pytest.fixture
def official_fixture():
    """The authors' outputs on a small random PVT (see ../shared/fixtures/official_pvt_v1/README.md)."""
    if not (OFFICIAL_FIXTURE_DIR / "official_pvt_v1_random.pth").is_file():
        pytest.skip(f"official PVT fixture not found at {OFFICIAL_FIXTURE_DIR} (set PVT_OFFICIAL_FIXTURE_DIR)")
    from safetensors.torch import load_file

    architecture = json.loads((OFFICIAL_FIXTURE_DIR / "architecture.json").read_text())
    return {
        "architecture": architecture,
        "checkpoint": OFFICIAL_FIXTURE_DIR / "official_pvt_v1_random.pth",
        "state_dict": torch.load(OFFICIAL_FIXTURE_DIR / "official_pvt_v1_random.pth", weights_only=True),
        "expected": load_file(OFFICIAL_FIXTURE_DIR / "expected_outputs.safetensors"),
    }


def config_from_official_architecture(architecture: dict, **overrides) -> PvtConfig:
    """PvtConfig for the fixture's architecture.json (official argument names)."""
    return PvtConfig(
        image_size=architecture["img_size"],
        patch_sizes=[architecture["patch_size"], 2, 2, 2],
        strides=[architecture["patch_size"], 2, 2, 2],
        hidden_sizes=architecture["embed_dims"],
        num_attention_heads=architecture["num_heads"],
        mlp_ratios=architecture["mlp_ratios"],
        depths=architecture["depths"],
        sequence_reduction_ratios=architecture["sr_ratios"],
        qkv_bias=architecture["qkv_bias"],
        layer_norm_eps=architecture["layer_norm_eps"],
        sequence_reduction_layer_norm_eps=architecture["sr_layer_norm_eps"],
        num_labels=architecture["num_classes"],
        **overrides,
    )
