"""Publish an export folder (see hub_export.py) to the Hugging Face Hub as one commit.

    python scripts/push_to_hub.py --model_dir exports/pvt-small --repo_id my-org/pvt-small [--private]
        [--revision BRANCH] [--dry-run]

It creates the repository if needed, then uploads exactly the export's files with `HfApi.upload_folder`.
`--dry-run` prints every file with its size and sha256 and the commit that would be made, without any network
access. The token is the one `hf auth login` stored, or $HF_TOKEN.
"""

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, constants, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from hub_export import EXPORT_FILES, validate_export_dir


class PushError(ValueError):
    """Something to fix before an upload can start; nothing was sent."""


@dataclass(frozen=True)
class UploadFile:
    name: str
    size: int
    sha256: str


def check_repo_id(repo_id: str) -> str:
    """A model repository id of the form "org/name" (the Hub's own character rules apply to both parts)."""
    problem = None
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        problem = 'it must be "org/name" (your user or organisation name, a slash, the model name)'
    else:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            problem = str(error)
    if problem:
        raise PushError(f"Malformed repo id {repo_id!r}: {problem}. Example: --repo_id my-org/pvt-small.")
    return repo_id


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan_upload(model_dir: str | os.PathLike) -> list[UploadFile]:
    """The files of a valid export, in upload order, with their sizes and sha256 digests."""
    model_dir = validate_export_dir(model_dir)
    return [
        UploadFile(name, (model_dir / name).stat().st_size, sha256_of(model_dir / name)) for name in sorted(EXPORT_FILES)
    ]


def describe_upload(
    files: list[UploadFile], repo_id: str, *, private: bool, revision: str | None, commit_message: str
) -> str:
    """What a push would do, one line per file: the text of --dry-run."""
    lines = [f"{file.size:>14,d}  {file.sha256}  {file.name}" for file in files]
    total = sum(file.size for file in files)
    visibility = "private" if private else "public"
    return "\n".join(
        [
            f"Would create the {visibility} model repository {repo_id} (if it does not exist) and commit "
            f"{len(files)} files ({total:,} bytes) to branch {revision or 'main'} with the message "
            f"{commit_message!r}:",
            *lines,
        ]
    )


def push_export(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> CommitInfo | str:
    """Upload the export in `model_dir` to `repo_id` as one commit (or, with dry_run, return what would be done)."""
    check_repo_id(repo_id)
    files = plan_upload(model_dir)
    commit_message = commit_message or f"Upload PVT export ({len(files)} files)"
    description = describe_upload(files, repo_id, private=private, revision=revision, commit_message=commit_message)
    if dry_run:
        return description
    if constants.is_offline_mode():
        raise PushError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it (or use --dry-run).")
    token = token or get_token()
    if not token:
        raise PushError(
            "No Hugging Face token found: run `hf auth login` or set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens). Nothing was uploaded."
        )
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id=repo_id, repo_type="model", branch=revision, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(Path(model_dir)),
        revision=revision,
        commit_message=commit_message,
        allow_patterns=[file.name for file in files],
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, type=Path, help="An export folder (hub_export.export_model).")
    parser.add_argument("--repo_id", required=True, help='Target model repository, "org/name".')
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", default=None, help="Branch to commit to (created if needed); default main.")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="Print the files (size, sha256) and the commit, touching no network.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = push_export(
            args.model_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            dry_run=args.dry_run,
            commit_message=args.commit_message,
        )
    except (PushError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result if args.dry_run else f"Uploaded: {result.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
