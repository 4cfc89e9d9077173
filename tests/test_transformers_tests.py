"""tests/transformers_tests.py: Transformers' common test files come verified from the package index, whole or not
at all, and their absence skips (or, in CI, fails) the common checks with directions."""

import hashlib
import io
import json
import os
import tarfile

import pytest

from tests import transformers_tests

VERSION = "9.8.7"


def fake_sdist(path, extra_files=("tests/test_pipeline_mixin.py", "src/transformers/__init__.py")):
    """A transformers-like sdist holding the three common files and others that must not be extracted."""
    with tarfile.open(path, "w:gz") as archive:
        names = [f"tests/{name}" for name in transformers_tests.COMMON_TEST_FILES] + list(extra_files)
        for name in names:
            content = f"# {name}\n".encode()
            member = tarfile.TarInfo(f"transformers-{VERSION}/{name}")
            member.size = len(content)
            archive.addfile(member, io.BytesIO(content))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(transformers_tests.CACHE_ENV, str(root))
    return root


def serve_fake_sdist(monkeypatch, tmp_path, published_sha256=None):
    """Replaces the index query and pip download with a local fake sdist; returns its real sha256."""
    source = tmp_path / f"transformers-{VERSION}.tar.gz"
    real_sha256 = fake_sdist(source)
    monkeypatch.setattr(
        transformers_tests,
        "published_sdist_sha256",
        lambda version, index_url: (source.name, published_sha256 or real_sha256),
    )
    monkeypatch.setattr(
        transformers_tests,
        "download_sdist",
        lambda version, sha256, directory: (directory / source.name).write_bytes(source.read_bytes()),
    )
    return real_sha256


def test_index_pages_give_the_sdist_sha256_in_json_and_html():
    sha256 = "ab" * 32
    json_page = json.dumps(
        {"files": [{"filename": "transformers-5.24.0.tar.gz", "hashes": {"sha256": sha256}, "url": "x"}]}
    ).encode()
    html_page = f'<a href="../../files/transformers-5.24.0.tar.gz#sha256={sha256}">transformers</a>'.encode()
    assert transformers_tests.published_hashes(json_page, "application/vnd.pypi.simple.v1+json") == {
        "transformers-5.24.0.tar.gz": sha256
    }
    assert transformers_tests.published_hashes(html_page, "text/html") == {"transformers-5.24.0.tar.gz": sha256}


def test_unreachable_index_is_named_with_the_fix(cache_root):
    with pytest.raises(transformers_tests.TransformersTestsUnavailable) as unavailable:
        transformers_tests.fetch_common_tests(VERSION, index_url="http://127.0.0.1:9/simple")
    message = str(unavailable.value)
    assert "http://127.0.0.1:9/simple could not be reached" in message
    assert "PIP_INDEX_URL" in message and str(cache_root / VERSION) in message
    assert not cache_root.exists() or not any(cache_root.iterdir())


def test_pip_index_url_overrides_pip_config(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://mirror.invalid/simple")
    assert transformers_tests.configured_index_url() == "http://mirror.invalid/simple"


def test_fetch_extracts_only_the_common_files_with_a_manifest(cache_root, tmp_path, monkeypatch):
    sha256 = serve_fake_sdist(monkeypatch, tmp_path)
    folder = transformers_tests.fetch_common_tests(VERSION, index_url="http://index.invalid/simple")
    assert folder == cache_root / VERSION
    expected = {*transformers_tests.COMMON_TEST_FILES, "__init__.py", transformers_tests.MANIFEST_NAME}
    assert {path.name for path in folder.iterdir()} == expected
    assert (folder / "test_backbone_common.py").read_text() == "# tests/test_backbone_common.py\n"
    manifest = json.loads((folder / transformers_tests.MANIFEST_NAME).read_text())
    assert manifest["sha256"] == sha256 and manifest["sdist"] == f"transformers-{VERSION}.tar.gz"
    assert [path.name for path in cache_root.iterdir()] == [VERSION]  # no partial folder left
    transformers_tests.verify_cache(folder)


def test_sha256_mismatch_refuses_the_file_and_leaves_no_cache(cache_root, tmp_path, monkeypatch):
    serve_fake_sdist(monkeypatch, tmp_path, published_sha256="0" * 64)
    with pytest.raises(transformers_tests.TransformersTestsUnavailable, match="publishes 0{64}: refusing"):
        transformers_tests.fetch_common_tests(VERSION, index_url="http://index.invalid/simple")
    assert list(cache_root.iterdir()) == []


def test_an_edited_cached_file_is_detected(cache_root, tmp_path, monkeypatch):
    serve_fake_sdist(monkeypatch, tmp_path)
    folder = transformers_tests.fetch_common_tests(VERSION, index_url="http://index.invalid/simple")
    (folder / "test_modeling_common.py").write_text("# edited\n")
    with pytest.raises(transformers_tests.TransformersTestsUnavailable, match="differs from transformers-9.8.7"):
        transformers_tests.verify_cache(folder)


@pytest.mark.parametrize("required", ["", "1"], ids=["local", "ci"])
def test_unavailable_files_skip_the_common_checks_but_fail_them_in_ci(required, monkeypatch):
    def unavailable():
        raise transformers_tests.TransformersTestsUnavailable("index down")

    monkeypatch.setattr(transformers_tests, "import_common_tests", unavailable)
    monkeypatch.setenv(transformers_tests.REQUIRE_ENV, required)
    outcome = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(outcome, match="index down"):
        transformers_tests.import_common_tests_or_skip()


def test_a_killed_fetch_leaves_no_cache_and_its_leftovers_are_cleared(cache_root, tmp_path, monkeypatch):
    leftover = cache_root / f".partial-{VERSION}-killed"
    leftover.mkdir(parents=True)
    (leftover / "test_modeling_common.py").write_text("# half written\n")
    os.utime(leftover, (0, 0))  # as left by a fetch killed long ago
    serve_fake_sdist(monkeypatch, tmp_path)
    folder = transformers_tests.fetch_common_tests(VERSION, index_url="http://index.invalid/simple")
    assert [path.name for path in cache_root.iterdir()] == [VERSION]
    transformers_tests.verify_cache(folder)
