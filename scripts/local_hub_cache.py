"""Place an export folder into a local Hugging Face cache, so that "org/name" loads offline as a Hub download.

    python scripts/local_hub_cache.py --model_dir exports/pvt-small --repo_id my-org/pvt-small [--cache_dir DIR]

    HF_HUB_OFFLINE=1 python -c 'from transformers import pipeline; \\
        pipeline("image-classification", model="my-org/pvt-small", trust_remote_code=True)'

It writes what `huggingface_hub` writes when it downloads a repository (its cache layout, see
https://huggingface.co/docs/huggingface_hub/guides/manage-cache):

    <cache_dir>/models--my-org--pvt-small/
        blobs/<etag>                         each file's content, named by its Hub ETag: the sha256 for files the
                                             Hub keeps in LFS (weights), the git blob sha1 for the others
        snapshots/<commit>/<file>            relative symlinks into blobs/ (copies where symlinks are unavailable)
        refs/<revision>                      the commit hash that <revision> (default "main") points to

The commit hash is derived from the files' names and ETags, so placing the same export twice is a no-op and a
changed export becomes a new snapshot. The cache defaults to huggingface_hub's (HF_HUB_CACHE, or HF_HOME/hub;
both are read when huggingface_hub is imported, so set them before starting Python, or pass --cache_dir). Blobs,
the snapshot and the ref are each written under a temporary name and renamed when complete, the ref last: a
reader sees the old snapshot or the new one, never half of one.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id
from huggingface_hub.utils.sha import git_hash

from hub_export import EXPORT_FILES, validate_export_dir

# Files the Hub stores in LFS (its default .gitattributes patterns that exports can contain, and anything >= 10 MB).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5")
LFS_MIN_SIZE = 10 * 1024 * 1024


def hub_etag(path: Path) -> str:
    """The ETag the Hub serves for this file, which huggingface_hub uses as the blob's name."""
    if path.suffix in LFS_SUFFIXES or path.stat().st_size >= LFS_MIN_SIZE:
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    return git_hash(path.read_bytes())


def snapshot_commit_hash(etags: dict[str, str]) -> str:
    """A stable 40-hex "commit" for a set of files: a sha1 over their names and ETags."""
    listing = "".join(f"{name}\0{etag}\n" for name, etag in sorted(etags.items()))
    return hashlib.sha1(listing.encode()).hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def link_or_copy(blob: Path, link: Path) -> None:
    """A relative symlink, as huggingface_hub makes; a copy where the filesystem has no symlinks."""
    try:
        link.symlink_to(os.path.relpath(blob, link.parent))
    except OSError:
        shutil.copyfile(blob, link)


def place_in_hub_cache(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str = "main",
) -> Path:
    """Copy the export in `model_dir` into the Hub cache as `repo_id` at `revision`; returns the snapshot folder."""
    validate_repo_id(repo_id)  # raises HFValidationError (a ValueError) naming the problem
    model_dir = validate_export_dir(model_dir)
    cache_dir = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    storage = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
    for folder in ("blobs", "snapshots", "refs"):
        (storage / folder).mkdir(parents=True, exist_ok=True)

    etags = {name: hub_etag(model_dir / name) for name in EXPORT_FILES}
    commit = snapshot_commit_hash(etags)
    for name, etag in etags.items():
        blob = storage / "blobs" / etag
        if not blob.exists():
            temporary = blob.with_name(f".{etag}.incomplete-{os.getpid()}")
            shutil.copyfile(model_dir / name, temporary)
            os.replace(temporary, blob)

    snapshot = storage / "snapshots" / commit
    if not snapshot.exists():
        staging = Path(tempfile.mkdtemp(prefix=f".{commit}.tmp-", dir=storage / "snapshots"))
        try:
            for name, etag in etags.items():
                link_or_copy(storage / "blobs" / etag, staging / name)
            staging.chmod(0o755)
            staging.rename(snapshot)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    (storage / "refs" / revision).parent.mkdir(parents=True, exist_ok=True)
    write_atomically(storage / "refs" / revision, commit.encode())
    return snapshot


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, type=Path, help="An export folder (hub_export.export_model).")
    parser.add_argument("--repo_id", required=True, help='The "org/name" it should load as.')
    parser.add_argument("--cache_dir", type=Path, default=None, help="Default: huggingface_hub's HF_HUB_CACHE.")
    parser.add_argument("--revision", default="main")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        snapshot = place_in_hub_cache(args.model_dir, args.repo_id, cache_dir=args.cache_dir, revision=args.revision)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.repo_id}@{args.revision} -> {snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
