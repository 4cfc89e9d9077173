# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-local-cache`: place an export folder into the local Hugging Face cache, so that "org/name" loads offline.

    pvt-local-cache --model_dir exports/pvt-small --repo_id my-org/pvt-small [--cache_dir DIR]
    HF_HUB_OFFLINE=1 python -c 'from transformers import pipeline; \\
        pipeline("image-classification", model="my-org/pvt-small", trust_remote_code=True)'

It writes what `huggingface_hub` writes when it downloads a repository (see `pvt_tools.hub.place_in_hub_cache`).
The cache defaults to huggingface_hub's (HF_HUB_CACHE, or HF_HOME/hub). When the cache already holds another
snapshot under that repo id and revision (a download, or an earlier export), the repo id points to the new one
from then on, and the command says so; the old snapshot stays in the cache.
"""

import argparse
import sys
from pathlib import Path

from pvt_tools.usage import check_model_reference


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model_dir",
        required=True,
        help="A training run's --output_dir (pvt_tools.hub.export_model), or pvt-export-onnx's output.",
    )
    parser.add_argument("--repo_id", required=True, help='The "org/name" it should load as.')
    parser.add_argument("--cache_dir", type=Path, default=None, help="Default: huggingface_hub's HF_HUB_CACHE.")
    parser.add_argument("--revision", default="main")
    return parser.parse_args(argv)


def cached_snapshot(repo_id: str, revision: str, cache_dir: Path | None) -> Path | None:
    """The snapshot the cache holds for `repo_id` at `revision`, if any (nothing is downloaded)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_model_reference("--model_dir", args.model_dir, kind="folder")
        from pvt_tools.hub import place_in_hub_cache  # transformers: only once the flags are read

        before = cached_snapshot(args.repo_id, args.revision, args.cache_dir)
        snapshot = place_in_hub_cache(args.model_dir, args.repo_id, cache_dir=args.cache_dir, revision=args.revision)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if before is not None and before.name != snapshot.name:
        print(
            f"Replaced the cache entry {args.repo_id}@{args.revision}: it pointed to snapshot {before.name} "
            f"(still in {before.parent}), now to {snapshot.name}, the files of {args.model_dir}."
        )
    print(f"{args.repo_id}@{args.revision} -> {snapshot}")
    return 0


def run() -> None:
    """Console entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
