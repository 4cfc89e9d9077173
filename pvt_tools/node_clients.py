# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""The JavaScript clients of an ONNX export, run from Python: Transformers.js and onnxruntime-web, under Node.

The packages are pinned in `pvt_tools/node/package.json` (and its lock file) and installed from the npm registry
by `make node-packages` into `.cache/node` of a checkout, or wherever $PVT_NODE_PACKAGES points (a folder whose
`node_modules` holds them). `ONNXRUNTIME_NODE_INSTALL_CUDA=skip` keeps onnxruntime-node's install script from
fetching CUDA binaries from outside the registry. Both clients run offline: Transformers.js with
`env.allowRemoteModels = false` and `env.localModelPath`.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS_DIR = Path(__file__).resolve().parent / "node"
PACKAGES_ENV = "PVT_NODE_PACKAGES"
DEFAULT_PACKAGES_DIR = REPO_ROOT / ".cache" / "node"
INSTALL_COMMAND = "make node-packages"
TIMEOUT_SECONDS = 300


class NodeClientError(RuntimeError):
    """Node or the pinned JavaScript packages are missing, or a client failed on the export."""


def packages_dir() -> Path:
    """The folder whose node_modules holds the pinned packages: $PVT_NODE_PACKAGES, else .cache/node."""
    return Path(os.environ.get(PACKAGES_ENV) or DEFAULT_PACKAGES_DIR)


def pinned_packages() -> dict[str, str]:
    """The npm packages and versions pvt_tools/node/package.json pins."""
    return json.loads((SCRIPTS_DIR / "package.json").read_text())["dependencies"]


def install_hint() -> str:
    packages = " ".join(f"{name}@{version}" for name, version in pinned_packages().items())
    return (
        f"run `{INSTALL_COMMAND}` in a checkout of this repository, or `ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm "
        f"install --prefix <folder> {packages}` and set {PACKAGES_ENV}=<folder>"
    )


def check_node_clients() -> Path:
    """The `node` executable, once Node and the pinned packages are known to be there; else one error naming the
    fix (before any work is done)."""
    node = shutil.which("node")
    if node is None:
        raise NodeClientError(
            "Node.js is not installed (no `node` on PATH), so Transformers.js cannot be run: install Node 18 or "
            f"newer (e.g. apt-get install nodejs npm), then {install_hint()}."
        )
    installed = packages_dir() / "node_modules"
    missing = [name for name in pinned_packages() if not (installed / name / "package.json").is_file()]
    if missing:
        raise NodeClientError(f"{', '.join(missing)} not installed in {packages_dir()}/node_modules: {install_hint()}.")
    return Path(node)


def run_node(script: str, *arguments: str) -> object:
    """Run one of pvt_tools/node's scripts; return the JSON it prints."""
    node = check_node_clients()
    command = [str(node), str(SCRIPTS_DIR / script), str(packages_dir()), *arguments]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired as error:
        raise NodeClientError(f"{script} did not finish within {TIMEOUT_SECONDS} s.") from error
    if completed.returncode != 0:
        raise NodeClientError(f"{script} failed: {completed.stderr.strip()[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def classify_with_transformers_js(export_dir: str | os.PathLike, images: list[Path], dtype: str) -> list[list[dict]]:
    """Transformers.js's `pipeline("image-classification", ...)` on the export folder, offline; for each image its
    top-3 [{label, score}, ...]. dtype "fp32" reads onnx/model.onnx, "q8" onnx/model_quantized.onnx."""
    with tempfile.TemporaryDirectory() as folder:
        # Transformers.js takes a model id under env.localModelPath and refuses some names (a staging folder's
        # leading dot): the folder is linked under a plain one.
        (Path(folder) / "model").symlink_to(Path(export_dir).resolve(), target_is_directory=True)
        return run_node("run_transformers_js.cjs", folder, "model", dtype, *(str(path) for path in images))


def run_with_onnxruntime_web(onnx_file: str | os.PathLike, pixel_values: np.ndarray) -> np.ndarray:
    """The logits of an ONNX classifier run in onnxruntime-web (its WebAssembly backend, under Node)."""
    pixel_values = np.ascontiguousarray(pixel_values, dtype="<f4")
    with tempfile.TemporaryDirectory() as folder:
        input_file = Path(folder) / "pixel_values.f32"
        input_file.write_bytes(pixel_values.tobytes())
        result = run_node(
            "run_onnxruntime_web.cjs", str(Path(onnx_file).resolve()), str(input_file), *map(str, pixel_values.shape)
        )
    return np.asarray(result["logits"], dtype=np.float32).reshape(result["dims"])


__all__ = [
    "NodeClientError",
    "check_node_clients",
    "classify_with_transformers_js",
    "packages_dir",
    "run_with_onnxruntime_web",
]
