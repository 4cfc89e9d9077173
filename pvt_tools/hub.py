"""The Hub-ready export of a PVT image classifier: the one folder format that every script of this project writes.

    from pvt_tools.hub import export_model
    export_model(model, "exports/pvt-small", variant="pvt-small", repo_id="my-org/pvt-small")

`export_model(model, output_dir, *, variant=None, repo_id=None, image_processor=None, model_card=None,
dataset=None, metrics=None, base_model=None, overwrite=False) -> Path` writes `output_dir` with exactly:

- `model.safetensors`                  the weights (no pickle files);
- `config.json`                        with `auto_map` for AutoConfig / AutoModel / AutoModelForImageClassification /
                                       AutoBackbone and real class names in id2label / label2id (ImageNet-1k names,
                                       from torchvision's weight metadata, when a 1000-class head has no names yet);
- `configuration_pvt.py`, `modeling_pvt.py`   the code that `trust_remote_code=True` runs;
- `preprocessor_config.json`           Transformers' `PvtImageProcessor`; by default the official evaluation
                                       transform (shorter side to 256/224 x image_size, bicubic, centre crop,
                                       ImageNet mean/std), see `official_eval_image_processor`;
- `README.md`                          the model card: `model_cards/<variant>.md` for the paper's ImageNet weights
                                       (`variant="pvt-small"`, ...), otherwise `model_cards/pvt-trained.md` filled
                                       with the model's own facts (`dataset`, `metrics`, `base_model`), or the text
                                       given as `model_card`.

The folder is written into a temporary sibling directory and renamed into place only when complete, so a failure
or a kill never leaves a half-written export. An existing `output_dir` is replaced only when `overwrite=True` and
it holds nothing but a previous export (an empty directory is always fine); anything else is refused rather than
deleted: export into a sub-folder of a training run's output directory, e.g. `output_dir / "export"`.

`validate_export_dir(path)` checks a folder against this format (used by push_to_hub.py and local_hub_cache.py).
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id
from huggingface_hub.utils.sha import git_hash
from transformers import PreTrainedModel, PvtImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from pvt_tools.variants import matching_variant_differences

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CARDS_DIR = REPO_ROOT / "model_cards"
TRAINED_MODEL_CARD_TEMPLATE = MODEL_CARDS_DIR / "pvt-trained.md"

CODE_FILES = ("configuration_pvt.py", "modeling_pvt.py")
EXPORT_FILES = ("README.md", "config.json", *CODE_FILES, "model.safetensors", "preprocessor_config.json")
AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoBackbone")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
ONNX_FOLDER = "onnx"  # optional: onnx/model.onnx (export_model(..., onnx=True)), the layout Transformers.js reads

# DeiT's evaluation transform, which the PVT authors evaluate with: resize the shorter side to 256/224 of the crop.
EVAL_CROP_RATIO = 224 / 256


class ExportError(ValueError):
    """A folder that is not (or cannot become) a Hub-ready PVT export."""


def official_eval_image_processor(image_size: int = 224) -> PvtImageProcessor:
    """Transformers' `PvtImageProcessor` set to the authors' evaluation transform: shorter side to
    int(image_size / 0.875) with bicubic resampling, centre crop image_size x image_size, rescale to [0, 1],
    normalise with the ImageNet mean and std."""
    return PvtImageProcessor(
        do_resize=True,
        size={"shortest_edge": int(image_size / EVAL_CROP_RATIO)},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order, as torchvision ships them with its weights (no download)."""
    try:
        from torchvision.models import ResNet50_Weights
    except ImportError as error:
        raise ImportError(
            "ImageNet-1k class names come from torchvision's weight metadata: pip install 'pvt-transformers[train]' "
            "(or torchvision), or give the model real id2label names before exporting."
        ) from error
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def has_placeholder_labels(config) -> bool:
    """True when id2label still holds Transformers' defaults LABEL_0, LABEL_1, ..."""
    return all(name == f"LABEL_{index}" for index, name in config.id2label.items())


def exported_label_names(config) -> dict[int, str]:
    """id2label to write: the model's own names, or ImageNet-1k's for a 1000-class head without names."""
    if config.num_labels == 1000 and has_placeholder_labels(config):
        return dict(enumerate(imagenet_class_names()))
    return {int(index): name for index, name in config.id2label.items()}


def check_exportable(model: PreTrainedModel) -> None:
    """Only a PVT image classifier makes a folder that the image-classification pipeline can serve."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "pvt_v1" or type(model).__name__ != "PvtForImageClassification":
        raise TypeError(
            f"export_model takes a PvtForImageClassification, got {type(model).__name__}"
            f"{' with model_type ' + repr(config.model_type) if config is not None else ''}. Unwrap it first "
            "(accelerator.unwrap_model(model), model._orig_mod for torch.compile) or load it with "
            "PvtForImageClassification.from_pretrained."
        )


def variant_card_path(variant: str) -> Path:
    path = MODEL_CARDS_DIR / f"{variant}.md"
    if not path.is_file():
        known = sorted(p.stem for p in MODEL_CARDS_DIR.glob("pvt-*.md") if p != TRAINED_MODEL_CARD_TEMPLATE)
        raise ExportError(f"No model card for variant {variant!r} in {MODEL_CARDS_DIR}; known variants: {known}.")
    return path


def check_model_is_variant(config, variant: str) -> None:
    """The variant cards describe the paper's ImageNet-1k models: refuse to put one on a different network."""
    differences = matching_variant_differences(config, variant)
    if differences:
        raise ExportError(
            f"variant={variant!r} is for the paper's ImageNet-1k weights, but this model has "
            f"{'; '.join(differences)}. Leave variant out to get a card describing this model."
        )


def render_model_card(
    model: PreTrainedModel,
    *,
    variant: str | None = None,
    repo_id: str | None = None,
    dataset: str | None = None,
    metrics: Mapping[str, float] | None = None,
    base_model: str | None = None,
) -> str:
    """The README.md of an export: the variant's card, or the trained-model card filled in from the model."""
    config = model.config
    if variant is not None:
        check_model_is_variant(config, variant)
        path = variant_card_path(variant)
        card = ModelCard.from_template(ModelCard.load(path).data, template_path=str(path), repo_id=repo_id or f"ORG/{variant}")
        return str(card)

    repo_id = repo_id or "ORG/pvt-model"
    numeric_metrics = {
        name: float(value)
        for name, value in (metrics or {}).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    eval_results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset or "custom",
            dataset_name=dataset or "custom",
            metric_type=name.removeprefix("eval_"),
            metric_name=name,
            metric_value=value,
        )
        for name, value in numeric_metrics.items()
    ]
    card_data = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["image-classification", "vision", "pvt", "pvt_v1", "custom_code"],
        datasets=[dataset] if dataset else None,
        base_model=base_model,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    labels = exported_label_names(config)
    card = ModelCard.from_template(
        card_data,
        template_path=str(TRAINED_MODEL_CARD_TEMPLATE),
        repo_id=repo_id,
        model_name=card_data.model_name,
        dataset=dataset,
        metrics=numeric_metrics,
        num_parameters=sum(parameter.numel() for parameter in model.parameters()),
        hidden_sizes=config.hidden_sizes,
        depths=config.depths,
        image_size=config.image_size,
        num_labels=config.num_labels,
        label_names=[labels[index] for index in sorted(labels)][:20],
    )
    return str(card)


def validate_export_dir(path: str | os.PathLike) -> Path:
    """Raise ExportError listing everything that keeps `path` from being a Hub-ready PVT export."""
    path = Path(path)
    if not path.is_dir():
        raise ExportError(f"{path} is not a directory: give the folder that export_model (or a conversion) wrote.")
    problems = [f"missing {name}" for name in EXPORT_FILES if not (path / name).is_file()]
    problems += [
        f"pickle file {child.name} (only safetensors are published)"
        for child in sorted(path.iterdir())
        if child.suffix in PICKLE_SUFFIXES
    ]
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text())
        except json.JSONDecodeError as error:
            problems.append(f"config.json is not valid JSON ({error})")
        else:
            if config.get("model_type") != "pvt_v1":
                problems.append(f"config.json has model_type {config.get('model_type')!r}, not 'pvt_v1'")
            missing_auto = [name for name in AUTO_CLASSES if name not in (config.get("auto_map") or {})]
            if missing_auto:
                problems.append(f"config.json auto_map lacks {missing_auto}")
    if problems:
        raise ExportError(
            f"{path} is not a Hub-ready PVT export: {'; '.join(problems)}. Write it with hub_export.export_model "
            "(scripts/convert_official_checkpoint.py and scripts/train.py do)."
        )
    return path


def check_destination(output_dir: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an empty folder or (with overwrite) a previous export."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ExportError(f"{output_dir} exists and is not a directory: choose another output directory.")
    entries = sorted(child.name for child in output_dir.iterdir())
    if not entries:
        return
    foreign = [name for name in entries if name not in (*EXPORT_FILES, ONNX_FOLDER)]
    if foreign:
        raise ExportError(
            f"{output_dir} already holds files that are not part of an export ({foreign[:10]}); nothing was "
            "written. Export into a new or empty directory (e.g. a sub-folder 'export')."
        )
    if not overwrite:
        raise ExportError(
            f"{output_dir} already holds an export; nothing was written. Pass overwrite=True (--overwrite) to "
            "replace it."
        )


def replace_directory(new: Path, destination: Path) -> None:
    """Move the finished `new` folder to `destination`, keeping the old one until the new one is in place."""
    if not destination.exists():
        new.rename(destination)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
    old.rmdir()
    destination.rename(old)
    try:
        new.rename(destination)
    except BaseException:
        old.rename(destination)
        raise
    shutil.rmtree(old)


def export_model(
    model: PreTrainedModel,
    output_dir: str | os.PathLike,
    *,
    variant: str | None = None,
    repo_id: str | None = None,
    image_processor: PvtImageProcessor | None = None,
    model_card: str | None = None,
    dataset: str | None = None,
    metrics: Mapping[str, float] | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
    onnx: bool = False,
) -> Path:
    """Write `model` (a PvtForImageClassification) as a Hub-ready folder and return its path.

    Args:
        variant: "pvt-tiny" ... "pvt-large" when these are the paper's ImageNet-1k weights: the card is
            model_cards/<variant>.md (the architecture must match). Otherwise a card describing this model.
        repo_id: the "org/name" the card's usage examples load (placeholder "ORG/..." if not given).
        image_processor: defaults to `official_eval_image_processor(config.image_size)`.
        model_card: full README.md text to use instead of a rendered card (must parse as a ModelCard).
        dataset, metrics, base_model: facts for the trained-model card (e.g. "imagenet-1k",
            {"eval_accuracy": 0.97}, "ORG/pvt-small"); numeric metrics go into its model-index, with the
            type named without the "eval_" prefix ("accuracy").
        overwrite: replace an existing export at `output_dir`.
        onnx: also write onnx/model.onnx (pvt_tools.export; needs the [onnx] extra), checked in ONNX Runtime.
    """
    check_exportable(model)
    output_dir = Path(output_dir).resolve()
    check_destination(output_dir, overwrite)
    config = model.config
    card_text = model_card if model_card is not None else render_model_card(
        model, variant=variant, repo_id=repo_id, dataset=dataset, metrics=metrics, base_model=base_model
    )
    ModelCard(card_text)  # raises on a malformed YAML header before anything is written
    if image_processor is None:
        image_size = config.image_size if isinstance(config.image_size, int) else min(config.image_size)
        image_processor = official_eval_image_processor(image_size)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    original_labels = (config.id2label, config.label2id)
    try:
        labels = exported_label_names(config)
        config.id2label, config.label2id = labels, {name: index for index, name in labels.items()}
        try:
            model.save_pretrained(staging)  # Transformers 5 writes safetensors only
        finally:
            config.id2label, config.label2id = original_labels
        image_processor.save_pretrained(staging)
        (staging / "README.md").write_text(card_text, encoding="utf-8")
        if onnx:
            from pvt_tools.export import write_verified_onnx_files

            write_verified_onnx_files(model, "image-classification", staging / ONNX_FOLDER)
        validate_export_dir(staging)
        staging.chmod(0o755)  # mkdtemp (and the weights writer) make things private; an export is meant to be shared
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        replace_directory(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


__all__ = [
    "EXPORT_FILES",
    "ExportError",
    "export_model",
    "imagenet_class_names",
    "official_eval_image_processor",
    "render_model_card",
    "replace_directory",
    "validate_export_dir",
]


# Publishing: one commit of exactly the export's files.

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
    onnx_files = [f"{ONNX_FOLDER}/{path.name}" for path in sorted((model_dir / ONNX_FOLDER).glob("*.onnx"))]
    return [
        UploadFile(name, (model_dir / name).stat().st_size, sha256_of(model_dir / name))
        for name in [*sorted(EXPORT_FILES), *onnx_files]
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


# A local Hub cache, so that "org/name" loads offline.

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
