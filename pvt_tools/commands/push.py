# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""`pvt-push`: publish an export folder to the Hugging Face Hub as one commit.

    pvt-push --model_dir exports/pvt-small --repo_id my-org/pvt-small [--private] [--revision BRANCH] [--dry-run]

The folder is a PyTorch repository folder (a training run's --output_dir, pvt-convert's output: model_type
"pvt_v1", trust_remote_code) or the ONNX repository folder pvt-export-onnx writes for a classifier (what
Transformers.js loads): e.g. my-org/fashion-pvt and my-org/fashion-pvt-onnx.

It creates the repository if needed, then uploads exactly the export's files with `HfApi.upload_folder`.
`--dry-run` prints every file with its size and sha256 and the commit that would be made, without any network
access. The token is the one `hf auth login` stored, or $HF_TOKEN.
"""

import argparse
import sys

from pvt_tools.usage import check_model_reference


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model_dir",
        required=True,
        help="A training run's --output_dir (pvt_tools.hub.export_model), or pvt-export-onnx's output.",
    )
    parser.add_argument("--repo_id", required=True, help='Target model repository, "org/name".')
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", default=None, help="Branch to commit to (created if needed); default main.")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument(
        "--package_source",
        default=None,
        help="Where users install pvt-transformers from, for the card's install line, e.g. "
        "git+https://github.com/me/pvt-transformers (default: the card keeps its placeholder).",
    )
    parser.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="Print the files (size, sha256) and the commit, touching no network.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_model_reference("--model_dir", args.model_dir, kind="folder")
        from pvt_tools.hub import push_export  # transformers: only once the flags are read

        result = push_export(
            args.model_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            dry_run=args.dry_run,
            commit_message=args.commit_message,
            package_source=args.package_source,
        )
    except ValueError as error:  # PushError, ExportError, UsageError
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result if args.dry_run else f"Uploaded: {result.commit_url}")
    return 0


def run() -> None:
    """Console entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
