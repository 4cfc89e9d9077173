"""The official fixture is the model's reference: without it the tests that need it fail, never skip."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import OFFICIAL_FIXTURE_FILES, REPO_ROOT, load_official_fixture


def test_missing_fixture_fails_naming_where_it_looked_and_the_variable(tmp_path, monkeypatch):
    missing = tmp_path / "no_fixture_here"
    monkeypatch.setenv("PVT_OFFICIAL_FIXTURE_DIR", str(missing))
    with pytest.raises(pytest.fail.Exception) as failure:
        load_official_fixture(missing)
    message = str(failure.value)
    assert f"Looked for it in:\n  {missing}\n" in message
    assert "PVT_OFFICIAL_FIXTURE_DIR=" in message
    assert all(name in message for name in OFFICIAL_FIXTURE_FILES)


def test_incomplete_fixture_folder_fails_naming_the_missing_file(tmp_path, monkeypatch):
    (tmp_path / "architecture.json").write_text("{}")
    monkeypatch.setenv("PVT_OFFICIAL_FIXTURE_DIR", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"lacks official_pvt_v1_random\.pth, expected_outputs"):
        load_official_fixture(tmp_path)


def test_a_test_needing_the_missing_fixture_is_reported_failed_not_skipped(tmp_path):
    """End to end: pytest itself, pointed at a folder without the fixture."""
    environment = dict(os.environ, PVT_OFFICIAL_FIXTURE_DIR=str(tmp_path / "absent"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         "tests/test_modeling_pvt.py::test_classifier_trunk_equals_backbone_at_other_sizes"],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout and "skipped" not in result.stdout, result.stdout
    assert f"{Path(tmp_path / 'absent')} lacks" in result.stdout
