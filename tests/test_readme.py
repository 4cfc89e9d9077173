"""The README's Python examples run as written, in order, offline, against what `pip install` installs.
The examples make their own Hub repo id: the quick start's first block exports a tiny PVT and places it in the
local Hugging Face cache as "org/pvt-small", as it tells users to do."""

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
OUR_MODULES = ("configuration_pvt", "modeling_pvt", "pvt_tools")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
# `print(<something>.shape)  # (1, 5, 64): ...`: the README states the shape a line prints.
STATED_SHAPE = re.compile(r"^\s*print\(.*\.shape\)\s*#\s*\(([\d, ]+)\)", re.MULTILINE)

# Runs each block in a fresh namespace (each must stand on its own) but in one process and one directory, in order;
# prints one JSON line: the stdout of every block, and where our modules came from.
RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, sys, traceback
    blocks = json.load(open(sys.argv[1]))
    outputs = []
    for index, block in enumerate(blocks):
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured):
                exec(compile(block, f"README python block {index + 1}", "exec"), {"__name__": "__main__"})
        except BaseException:
            sys.stderr.write(f"README python block {index + 1} of {len(blocks)} failed:\\n{block}\\n")
            traceback.print_exc()
            sys.exit(1)
        outputs.append(captured.getvalue())
    modules = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
               if name.split(".")[0] in ("configuration_pvt", "modeling_pvt", "pvt_tools")}
    print(json.dumps({"outputs": outputs, "modules": modules}))
    """
)


def readme_python_blocks() -> list[str]:
    return PYTHON_BLOCK.findall(README.read_text(encoding="utf-8"))


def user_environment(home: Path, pythonpath: Path) -> dict[str, str]:
    """A process that sees `pythonpath` first, a fresh Hugging Face home and no Hub."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_TOKEN", "PYTHONPATH")
    }
    environment.update(
        HF_HOME=str(home),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(pythonpath),
        PYTHONNOUSERSITE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
    )
    return environment


def import_statements(blocks: list[str]) -> list[str]:
    """Every import statement of the blocks (nested ones included), as source lines."""
    statements = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                line = ast.unparse(node)
                if line not in statements:
                    statements.append(line)
    return statements


def test_readme_has_the_quick_start_in_order():
    text = README.read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:5] == ["## Install", "## The two commands", "## Quick start", "## The repository", "## The model"]
    blocks = readme_python_blocks()
    assert "place_in_hub_cache(" in blocks[0] and "pvt-local-cache --model_dir" in blocks[0]
    for block in blocks:
        if "pixel_values" in block:
            assert re.search(r"^pixel_values = ", block, re.MULTILINE), f"a block uses pixel_values undefined:\n{block}"
        if "trust_remote_code=True" in block:
            assert "revision=" in block, block
    for word in ("../shared", "fixtures", "issue", "target"):
        assert word not in text.lower(), word


def install_into(target: Path) -> None:
    """`pip install` this checkout into a folder (no dependencies: the environment has them)."""
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]


def test_readme_python_blocks_run_in_order_offline_from_a_pip_install(tmp_path):
    """Every Python block of the README, in order, in a fresh directory, offline, in a process that has only a
    `pip install` of this checkout (into a folder on PYTHONPATH) and its dependencies: so every import the README
    shows works against the installed copy, with the package data it needs (the card template, the metric)."""
    target = tmp_path / "site"
    install_into(target)
    # what pip installs of ours: the two model modules, the package (with its data) and the console commands
    ours = sorted(
        path.name
        for path in target.iterdir()
        if path.suffix == ".py" or path.is_dir() and path.name not in ("__pycache__", "bin")
        if not path.name.endswith(".dist-info")
    )
    assert ours == ["configuration_pvt.py", "modeling_pvt.py", "pvt_tools"]
    assert (target / "bin" / "pvt-train").is_file() and (target / "bin" / "pvt-export-onnx").is_file()
    assert (target / "pvt_tools" / "training" / "metrics" / "top_k_accuracy" / "top_k_accuracy.py").is_file()
    blocks = readme_python_blocks()
    assert len(blocks) >= 6
    statements = import_statements(blocks)
    assert len([line for line in statements if re.match(rf"(from|import) ({'|'.join(OUR_MODULES)})\b", line)]) >= 5
    # After the blocks: the installed copy renders the same cards as the checkout (the template is package data).
    card_check = "from pvt_tools.hub import render_variant_card\nprint(render_variant_card('pvt-small'), end='')"
    (tmp_path / "blocks.json").write_text(json.dumps([*blocks, card_check]))
    (tmp_path / "run_blocks.py").write_text(RUNNER)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-s", str(tmp_path / "run_blocks.py"), str(tmp_path / "blocks.json")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env=user_environment(tmp_path / "hf_home", target),
    )
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"configuration_pvt", "modeling_pvt", "pvt_tools.hub", "pvt_tools.backbones"} <= set(report["modules"])
    for name, file in report["modules"].items():  # the installed copy, not the checkout or another install
        assert file is None or Path(file).resolve().is_relative_to(target.resolve()), (name, file)
    assert report["outputs"][-1] == (REPO_ROOT / "model_cards" / "pvt-small.md").read_text(encoding="utf-8")

    # the shapes the README states are the shapes the blocks print
    stated = 0
    for block, output in zip(blocks, report["outputs"]):
        for dimensions in STATED_SHAPE.findall(block):
            shape = [int(size) for size in dimensions.split(",")]
            # a torch tensor prints torch.Size([2, 3]); a NumPy array (ONNX Runtime's output) prints (2, 3)
            assert f"torch.Size({shape})" in output or f"{tuple(shape)}" in output.splitlines(), (dimensions, output)
            stated += 1
    assert stated >= 4
    # the local cache holds "org/pvt-small" as huggingface_hub lays a download out; Trainer wrote its run
    assert (tmp_path / "hf_home" / "hub" / "models--org--pvt-small" / "refs" / "main").is_file()
    assert (workdir / "outputs" / "trainer").is_dir()
