"""Transformers' own common test mixins (ModelTesterMixin, BackboneTesterMixin, ConfigTester), taken at test time
from the transformers source distribution whose version equals the installed one, so this repository holds no
copy of them.

`make test` runs `python -m tests.transformers_tests` before pytest; tests/test_common_pvt.py calls
`import_common_tests_or_skip()`, which fetches too when the cache is missing. The fetch:
  1. asks pip's configured package index (PIP_INDEX_URL, `pip config`, else PyPI) for the sdist's published sha256;
  2. `pip download --no-deps --no-binary :all: --no-build-isolation` with that hash required;
  3. checks the file's sha256 again, extracts only the files below into a temporary folder beside the cache and
     renames it into place, so an interrupted fetch never leaves a half-written cache.
The sdist lacks three small modules the mixins import (exporters/, generation/, utils/ under its tests/); our own
stand-ins live in tests/transformers_stand_ins/. Both folders are loaded as one private package through importlib
(its __path__ lists the cache, then the stand-ins), so the mixins' relative imports resolve without any change to
the interpreter's module search path.
"""

import hashlib
import html.parser
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
STAND_INS_DIR = Path(__file__).resolve().parent / "transformers_stand_ins"
DEFAULT_INDEX_URL = "https://pypi.org/simple"
# The sdist's tests/ files the PVT common checks use; their relative imports are all served by the stand-ins.
COMMON_TEST_FILES = ("test_modeling_common.py", "test_backbone_common.py", "test_configuration_common.py")
MANIFEST_NAME = "SOURCE.json"
PACKAGE_NAME = "_pvt_transformers_common_tests"
# Set by .ci/run: the common checks must run there, so an unavailable download fails instead of skipping.
REQUIRE_ENV = "PVT_REQUIRE_TRANSFORMERS_TESTS"
CACHE_ENV = "PVT_TRANSFORMERS_TESTS_CACHE"
HOW_TO_FIX = (
    "Connect to the package index (or point pip at a reachable one with PIP_INDEX_URL) and run "
    "`python -m tests.transformers_tests` (or `make test`) once; the files are then cached in {cache}."
)


class TransformersTestsUnavailable(RuntimeError):
    """The common test files could not be fetched or verified; the message says why and how to fix it."""


def installed_transformers_version() -> str:
    """The version of the transformers package the tests run against (its tests must match it exactly)."""
    return importlib.metadata.version("transformers")


def cache_root() -> Path:
    """Where versioned copies live: $PVT_TRANSFORMERS_TESTS_CACHE, else .cache/transformers-tests (git-ignored)."""
    return Path(os.environ.get(CACHE_ENV) or REPO_ROOT / ".cache" / "transformers-tests")


def common_tests_required() -> bool:
    """True in CI, where skipping the common checks would hide that they did not run."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def configured_index_url() -> str:
    """The index pip itself would use: PIP_INDEX_URL, else the last index-url in `pip config list`, else PyPI."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    index_url = DEFAULT_INDEX_URL
    # pip lists its configuration files in loading order (global, user, site, environment), later ones winning.
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        section, _, option = key.rpartition(".")
        if option == "index-url" and section in ("global", "download", ":env:"):
            index_url = value.strip().strip("'\"")
    return index_url


class _AnchorParser(html.parser.HTMLParser):
    """Collects the href of every <a> on a PEP 503 (HTML) simple-index page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def published_hashes(page: bytes, content_type: str) -> dict[str, str]:
    """{file name: sha256} from a simple-index project page, JSON (PEP 691) or HTML (PEP 503 `#sha256=`)."""
    if "json" in content_type:
        files = json.loads(page)["files"]
        return {entry["filename"]: entry["hashes"]["sha256"] for entry in files if "sha256" in entry["hashes"]}
    parser = _AnchorParser()
    parser.feed(page.decode("utf-8", errors="replace"))
    hashes = {}
    for href in parser.hrefs:
        url, _, fragment = href.partition("#")
        if fragment.startswith("sha256="):
            hashes[urllib.parse.unquote(url.rsplit("/", 1)[-1])] = fragment.removeprefix("sha256=")
    return hashes


def published_sdist_sha256(version: str, index_url: str) -> tuple[str, str]:
    """(file name, sha256) the index publishes for transformers' source distribution of `version`."""
    project_url = index_url.rstrip("/") + "/transformers/"
    if project_url.startswith("file:"):
        project_url += "index.html"
    request = urllib.request.Request(
        project_url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    cache = cache_root() / version
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            page, content_type = response.read(), response.headers.get("Content-Type", "text/html")
    except (urllib.error.URLError, OSError) as error:
        raise TransformersTestsUnavailable(
            f"Transformers' common test files for {version} are not cached, and the package index {index_url} "
            f"could not be reached ({error}). " + HOW_TO_FIX.format(cache=cache)
        ) from error
    file_name = f"transformers-{version}.tar.gz"
    sha256 = published_hashes(page, content_type).get(file_name)
    if sha256 is None:
        raise TransformersTestsUnavailable(
            f"The package index {index_url} publishes no sha256 for {file_name}; the common test files need "
            f"transformers' source distribution of exactly the installed version. " + HOW_TO_FIX.format(cache=cache)
        )
    return file_name, sha256


def download_sdist(version: str, sha256: str, directory: Path) -> None:
    """pip download of the sdist into `directory`, pip checking the published hash (its hash-checking mode)."""
    requirements = directory / "requirements.txt"
    requirements.write_text(f"transformers=={version} --hash=sha256:{sha256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
        "--no-build-isolation", "-r", str(requirements), "-d", str(directory),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise TransformersTestsUnavailable(
            f"`pip download` of transformers {version}'s source distribution failed:\n{result.stderr.strip()[-2000:]}"
            '\n(it needs `setuptools` and `wheel` in this environment: pip install -e ".[dev]"). '
            + HOW_TO_FIX.format(cache=cache_root() / version)
        )


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_common_tests(sdist: Path, version: str, destination: Path) -> dict[str, str]:
    """Writes only COMMON_TEST_FILES from the sdist's tests/ into `destination`; returns {name: sha256}."""
    written = {}
    with tarfile.open(sdist, "r:gz") as archive:
        for name in COMMON_TEST_FILES:
            member_name = f"transformers-{version}/tests/{name}"
            try:
                member = archive.getmember(member_name)
            except KeyError as error:
                raise TransformersTestsUnavailable(f"{sdist.name} has no {member_name}") from error
            source = archive.extractfile(member) if member.isfile() else None
            if source is None:
                raise TransformersTestsUnavailable(f"{member_name} in {sdist.name} is not a regular file")
            content = source.read()
            (destination / name).write_bytes(content)
            written[name] = hashlib.sha256(content).hexdigest()
    return written


def fetch_common_tests(version: str | None = None, index_url: str | None = None) -> Path:
    """The cache folder holding transformers `version`'s common test files, fetching it first if missing."""
    version = version or installed_transformers_version()
    final = cache_root() / version
    if (final / MANIFEST_NAME).is_file():
        return final
    index_url = index_url or configured_index_url()
    file_name, published_sha256 = published_sdist_sha256(version, index_url)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partial_folders(final.parent)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{version}-", dir=final.parent))
    partial.chmod(0o755)  # mkdtemp makes it private; the cache is ordinary readable files
    try:
        # The download lies inside the partial folder too, so a killed fetch leaves only .partial-* behind.
        download_dir = partial / "download"
        download_dir.mkdir()
        download_sdist(version, published_sha256, download_dir)
        sdist = download_dir / file_name
        if not sdist.is_file():
            raise TransformersTestsUnavailable(f"pip download did not produce {file_name} in {download_dir}")
        actual_sha256 = file_sha256(sdist)
        if actual_sha256 != published_sha256:
            raise TransformersTestsUnavailable(
                f"{file_name} has sha256 {actual_sha256}, but {index_url} publishes {published_sha256}: "
                "refusing to use it."
            )
        files = extract_common_tests(sdist, version, partial)
        shutil.rmtree(download_dir)
        # direct_transformers_import() in test_configuration_common.py executes its folder's __init__.py.
        (partial / "__init__.py").write_text(
            f'"""Transformers {version} common test mixins, extracted by tests/transformers_tests.py."""\n'
        )
        manifest = {"sdist": file_name, "sha256": published_sha256, "index_url": index_url, "files": files}
        (partial / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            partial.rename(final)
        except OSError:
            if not (final / MANIFEST_NAME).is_file():  # not a concurrent fetch that finished first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final


def remove_stale_partial_folders(root: Path, older_than_s: float = 3600) -> None:
    """Removes what killed fetches left (.partial-* folders, never used as a cache), sparing recent ones that a
    concurrent fetch may still be writing."""
    for folder in root.glob(".partial-*"):
        if time.time() - folder.stat().st_mtime > older_than_s:
            shutil.rmtree(folder, ignore_errors=True)


def verify_cache(folder: Path) -> None:
    """Checks the cached files against the manifest written at extraction (an edited file is not Transformers')."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for name, sha256 in manifest["files"].items():
        if not (folder / name).is_file() or file_sha256(folder / name) != sha256:
            raise TransformersTestsUnavailable(
                f"{folder / name} is missing or differs from {manifest['sdist']}: delete {folder} and run "
                "`python -m tests.transformers_tests` to fetch it again."
            )


def common_tests_package(folder: Path) -> ModuleType:
    """Registers `folder` (then the stand-ins) as the private package PACKAGE_NAME, so that the mixins' relative
    imports (`from .generation.test_utils import ...`) resolve, without touching the module search path."""
    package = sys.modules.get(PACKAGE_NAME)
    if package is not None:
        if Path(package.__file__).parent != folder:
            raise TransformersTestsUnavailable(f"{PACKAGE_NAME} is already loaded from {package.__file__}")
        return package
    spec = importlib.util.spec_from_file_location(
        PACKAGE_NAME, folder / "__init__.py", submodule_search_locations=[str(folder), str(STAND_INS_DIR)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE_NAME] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[PACKAGE_NAME]
        raise
    return package


def import_common_tests() -> tuple[ModuleType, ModuleType, ModuleType]:
    """(test_modeling_common, test_backbone_common, test_configuration_common) of the installed transformers."""
    folder = fetch_common_tests()
    verify_cache(folder)
    common_tests_package(folder)
    return tuple(importlib.import_module(f"{PACKAGE_NAME}.{Path(name).stem}") for name in COMMON_TEST_FILES)


def import_common_tests_or_skip() -> tuple[ModuleType, ModuleType, ModuleType]:
    """import_common_tests() for a test module: skips it when the files cannot be had, fails instead in CI."""
    import pytest

    try:
        return import_common_tests()
    except TransformersTestsUnavailable as error:
        unavailable = str(error)  # reported outside the handler, without the chained traceback
    if common_tests_required():
        pytest.fail(f"{unavailable}\n({REQUIRE_ENV}=1: the common checks must run here.)", pytrace=False)
    pytest.skip(f"Skipping Transformers' common checks. {unavailable}", allow_module_level=True)


def main() -> int:
    """`python -m tests.transformers_tests`: fetch before pytest; exit 1 only when the checks are required."""
    try:
        folder = fetch_common_tests()
        verify_cache(folder)
    except TransformersTestsUnavailable as error:
        print(f"transformers common tests: {error}", file=sys.stderr)
        if common_tests_required():
            return 1
        print("transformers common tests: tests/test_common_pvt.py will be skipped.", file=sys.stderr)
        return 0
    print(f"transformers common tests: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
