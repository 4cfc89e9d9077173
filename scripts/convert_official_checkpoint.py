"""Convert the authors' PVT v1 classifier checkpoint (pvt_tiny.pth ... pvt_large.pth) into a Hub-ready export.

    python scripts/convert_official_checkpoint.py --checkpoint pvt_small.pth --output_dir exports/pvt-small \\
        [--variant pvt-small] [--num_attention_heads 1 2 5 8] [--push_to_hub --repo_id my-org/pvt-small]

The weights determine the architecture (hidden sizes, depths, MLP and reduction ratios, patch sizes, native image
size, classes, qkv bias); head counts come from --variant or --num_attention_heads (default 1 2 5 8, shared by the
paper's four models). The file is read with torch.load(weights_only=True) only. Before anything is written the
converted model is checked against the official network's maths on a sample input; the folder is then written
atomically by hub_export.export_model, so a failure at any step leaves --output_dir untouched.
"""

import argparse
import sys
from pathlib import Path

import torch

from hub_export import ExportError, export_model
from modeling_pvt import PvtForImageClassification
from official_checkpoint import (
    OfficialCheckpointError,
    check_official_state_dict,
    convert_official_state_dict,
    infer_config_from_official,
    load_official_checkpoint,
    matching_variant,
    official_classifier_forward,
)

VERIFICATION_TOLERANCE = 1e-4


class ConversionMismatchError(RuntimeError):
    """The converted model does not compute what the official network computes."""


def verify_conversion(model: PvtForImageClassification, state_dict: dict[str, torch.Tensor]) -> float:
    """Largest absolute logit difference between `model` and the official maths on a seeded sample image at the
    native size; raises ConversionMismatchError above VERIFICATION_TOLERANCE."""
    config = model.config
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    sample = torch.randn(1, config.num_channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = official_classifier_forward(state_dict, config, sample)
        logits = model.eval()(sample).logits
    difference = (logits - expected).abs().max().item()
    verdict = "OK" if difference <= VERIFICATION_TOLERANCE else "FAILED"
    print(
        f"verification: max |logit difference| vs the official maths = {difference:.2e} on a "
        f"{tuple(sample.shape)} sample (tolerance {VERIFICATION_TOLERANCE:.0e}): {verdict}"
    )
    if verdict != "OK":
        raise ConversionMismatchError(
            f"The converted model differs from the official network by {difference:.2e} (> "
            f"{VERIFICATION_TOLERANCE:.0e}); nothing was written. Check --num_attention_heads."
        )
    return difference


def convert_official_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    variant: str | None = None,
    num_attention_heads: list[int] | None = None,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Read, validate, convert, verify and export an official checkpoint; returns the export folder."""
    state_dict = load_official_checkpoint(checkpoint)
    config = infer_config_from_official(state_dict, num_attention_heads=num_attention_heads, variant=variant)
    check_official_state_dict(state_dict, config)
    variant = variant or matching_variant(config)
    print(
        f"{checkpoint}: {variant or 'a custom PVT v1'} with hidden sizes {config.hidden_sizes}, depths "
        f"{config.depths}, heads {config.num_attention_heads}, {config.num_labels} classes, "
        f"{config.image_size}px native"
    )
    with torch.device("meta"):  # no random initialisation: every parameter comes from the checkpoint
        model = PvtForImageClassification(config).eval()
    model.load_state_dict(convert_official_state_dict(state_dict, config.num_encoder_blocks), strict=True, assign=True)
    verify_conversion(model, state_dict)
    return export_model(model, output_dir, variant=variant, repo_id=repo_id, overwrite=overwrite)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="The official .pth file.")
    parser.add_argument("--output_dir", required=True, type=Path, help="Where the export folder is written.")
    parser.add_argument("--variant", choices=["pvt-tiny", "pvt-small", "pvt-medium", "pvt-large"], default=None,
                        help="The paper's model these weights are (checked against the weights; picks the card).")
    parser.add_argument("--num_attention_heads", type=int, nargs="+", default=None,
                        help="Heads per stage (the weights cannot tell); default 1 2 5 8.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing export in --output_dir.")
    parser.add_argument("--push_to_hub", action="store_true", help="Upload the export (needs --repo_id).")
    parser.add_argument("--repo_id", default=None, help='"org/name": shown in the card, and the push target.')
    parser.add_argument("--private", action="store_true", help="With --push_to_hub: create a private repository.")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.repo_id:
        parser.error("--push_to_hub needs --repo_id ORG/NAME")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.push_to_hub:
            from push_to_hub import check_repo_id

            check_repo_id(args.repo_id)  # fail before converting, not after
        folder = convert_official_checkpoint(
            args.checkpoint,
            args.output_dir,
            variant=args.variant,
            num_attention_heads=args.num_attention_heads,
            repo_id=args.repo_id,
            overwrite=args.overwrite,
        )
        print(f"wrote {folder}")
        if args.push_to_hub:
            from push_to_hub import push_export

            commit = push_export(folder, args.repo_id, private=args.private)
            print(f"uploaded: {commit.commit_url}")
    except (OfficialCheckpointError, ExportError, ConversionMismatchError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
