"""Shared test set-up: tiny configurations, the official fixture."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402  (after HF_HUB_OFFLINE, which Transformers reads on import)

from configuration_pvt import PvtConfig  # noqa: E402

# Stand-in modules named test_*.py by Transformers' layout, holding no tests (see tests/transformers_tests.py).
collect_ignore = ["transformers_stand_ins"]

OFFICIAL_FIXTURE_FILES = ("official_pvt_v1_random.pth", "architecture.json", "expected_outputs.safetensors")


def official_fixture_candidates() -> list[Path]:
    """Where the official fixture is looked for: $PVT_OFFICIAL_FIXTURE_DIR alone when set, else
    shared/fixtures/official_pvt_v1 beside this checkout or one of its parents, or beside the local repository it
    was cloned from."""
    if "PVT_OFFICIAL_FIXTURE_DIR" in os.environ:
        return [Path(os.environ["PVT_OFFICIAL_FIXTURE_DIR"])]
    checkouts = [REPO_ROOT]
    origin = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        checkouts.append(Path(origin).resolve())
    return [folder / "shared" / "fixtures" / "official_pvt_v1" for checkout in checkouts for folder in checkout.parents]


def find_official_fixture_dir() -> Path:
    """The first candidate holding the fixture, else the first candidate (reported by official_fixture)."""
    candidates = official_fixture_candidates()
    return next((path for path in candidates if path.is_dir()), candidates[0])


OFFICIAL_FIXTURE_DIR = find_official_fixture_dir()


def load_official_fixture(directory: Path) -> dict:
    """The fixture's files; fails (never skips: the tests that need it are the model's reference) with where it was
    looked for and how to point to it."""
    missing = [name for name in OFFICIAL_FIXTURE_FILES if not (directory / name).is_file()]
    if missing:
        searched = "\n  ".join(str(path) for path in official_fixture_candidates())
        pytest.fail(
            f"The official PVT fixture is required, but {directory} lacks {', '.join(missing)}.\n"
            f"Looked for it in:\n  {searched}\n"
            "Point to it with PVT_OFFICIAL_FIXTURE_DIR=/path/to/fixtures/official_pvt_v1 (the folder holding "
            f"{', '.join(OFFICIAL_FIXTURE_FILES)}).",
            pytrace=False,
        )
    from safetensors.torch import load_file

    return {
        "architecture": json.loads((directory / "architecture.json").read_text()),
        "checkpoint": directory / "official_pvt_v1_random.pth",
        "state_dict": torch.load(directory / "official_pvt_v1_random.pth", weights_only=True),
        "expected": load_file(directory / "expected_outputs.safetensors"),
    }


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
def official_fixture() -> dict:
    """The authors' outputs on a small random PVT (see ../shared/fixtures/official_pvt_v1/README.md)."""
    return load_official_fixture(OFFICIAL_FIXTURE_DIR)


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


def builtin_tiny_classifier() -> transformers.PvtForImageClassification:
    """A small checkpoint of Transformers' own Pvt (model_type "pvt", its own tensor names), every LayerNorm away
    from its initial values so that a mis-mapped one shows."""
    config = transformers.PvtConfig(
        image_size=64,
        hidden_sizes=[16, 32, 40, 64],
        depths=[1, 1, 2, 1],
        num_attention_heads=[1, 2, 2, 4],
        mlp_ratios=[2, 2, 2, 2],
        num_labels=5,
    )
    torch.manual_seed(0)
    model = transformers.PvtForImageClassification(config).eval()
    with torch.no_grad():  # make every LayerNorm matter
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model
