"""The README's and the guides' code runs as written, in order, offline, against what `pip install` installs.

Each document runs in its own fresh directory and Hugging Face home: every Python block, and every shell block the
document marks runnable, with a comment on the line before the block:

    <!-- docs-test: run -->                            the shell block runs as it is
    <!-- docs-test: append --num_train_epochs 1 -->    it runs with these flags added to each `pvt-*` command
                                                       (small settings for a long run; argparse takes the last)
    <!-- docs-test: expect-warning REGEX -->           the block prints a warning the text explains: it must appear
    <!-- docs-test: allow-warning REGEX -->            the same for a warning only some machines print

A warning or logged message (WARNING or above, from any library) that a block prints and its document does not
expect fails the test, as does an expected one that no longer appears. Other shell blocks (downloads, hours of
training, several GPUs) are shown, not run.

Figures come from one place: a table or paragraph after `<!-- figures: benchmarks/FILE.md -->` holds only numbers
that FILE holds.
"""

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
GUIDES = sorted((REPO_ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, *GUIDES]
OUR_MODULES = ("configuration_pvt", "modeling_pvt", "pvt_tools")
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!-- docs-test: (run|append|expect-warning|allow-warning)\b\s*(.*?)\s*-->$")
FIGURES_MARKER = re.compile(r"^<!-- figures: (\S+) -->$")
# `print(<something>.shape)  # (1, 5, 64): ...`: the document states the shape a line prints.
STATED_SHAPE = re.compile(r"^\s*print\(.*\.shape\)\s*#\s*\(([\d, ]+)\)", re.MULTILINE)
# What a command line prints that is a warning to its reader (the Python blocks' warnings are caught as records):
# Python's warnings ("UserWarning: ..."), the lines SITE_HOOK adds for logged messages, load reports, tracebacks.
SHELL_WARNING = re.compile(r"warning|UNEXPECTED|MISMATCH|Traceback", re.IGNORECASE)
# Imported by every Python process of a run (sitecustomize): logged messages of WARNING and above are also written
# as "docs-test warning: <logger>: <message>", since Transformers' log lines do not name their level.
SITE_HOOK = textwrap.dedent(
    """
    import logging, sys

    class _DocsTestWarnings(logging.Handler):
        def emit(self, record):
            sys.stderr.write(f"docs-test warning: {record.name}: {record.getMessage()}\\n")

    _handler = _DocsTestWarnings(logging.WARNING)
    for _name in ("", "transformers", "datasets", "accelerate", "huggingface_hub", "evaluate", "torch"):
        logging.getLogger(_name).addHandler(_handler)
    """
)


@dataclass
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    markers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return self.language == "python" or any(kind in ("run", "append") for kind, _ in self.markers)

    @property
    def expected_warnings(self) -> list[str]:
        return [argument for kind, argument in self.markers if kind == "expect-warning"]

    @property
    def allowed_warnings(self) -> list[str]:
        return [argument for kind, argument in self.markers if kind == "allow-warning"]

    def runnable_code(self) -> str:
        """The code as it runs: for `append`, the flags added to each `pvt-*` command (before a trailing comment)."""
        flags = " ".join(argument for kind, argument in self.markers if kind == "append")
        if not flags:
            return self.code
        commands = self.code.replace("\\\n", " ").splitlines()
        runnable = []
        for command in commands:
            words = command.split()
            program = next((word for word in words if "=" not in word), "")
            if program.startswith("pvt-"):
                command, hash_, comment = command.partition("  #")
                command = f"{command.rstrip()} {flags}" + (f"  {hash_.strip()}{comment}" if hash_ else "")
            runnable.append(command)
        return "\n".join(runnable) + "\n"


def document_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, each with the docs-test markers on the lines just before it."""
    blocks, markers, inside = [], [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(line)
        if inside is None:
            marker = MARKER.match(line)
            if marker:
                markers.append((marker.group(1), marker.group(2)))
            elif fence:
                inside = Block(fence.group(1), "", number, markers)
                markers = []
            elif line.strip():
                assert not markers, f"{path.name}:{number}: a docs-test marker must come just before a code block"
        elif fence and not fence.group(1):
            blocks.append(inside)
            inside = None
        else:
            inside.code += line + "\n"
    assert inside is None, f"{path.name}: a code block is not closed"
    return blocks


def python_blocks(path: Path) -> list[str]:
    return [block.code for block in document_blocks(path) if block.language == "python"]


# Runs each block in a fresh namespace (each must stand on its own) but in one process and one directory, in order,
# shell blocks with bash; collects every warning and logged message (WARNING and above) per block; prints one JSON
# line: each block's output and messages, and where our modules came from.
RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, logging, subprocess, sys, traceback, warnings
    blocks = json.load(open(sys.argv[1]))

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []
        def emit(self, record):
            self.messages.append(f"{record.name}: {record.getMessage()}")

    collect = Collect()
    # libraries whose loggers do not propagate to the root logger get the handler too
    for name in ("", "transformers", "datasets", "accelerate", "huggingface_hub", "evaluate", "torch"):
        logging.getLogger(name).addHandler(collect)
    results = []
    for index, block in enumerate(blocks):
        label = block["label"]
        collect.messages = []
        captured = io.StringIO()
        if block["language"] == "python":
            try:
                with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(captured):
                    exec(compile(block["code"], label, "exec"), {"__name__": "__main__"})
            except BaseException:
                sys.stderr.write(f"{label} failed:\\n{block['code']}\\n")
                traceback.print_exc()
                sys.exit(1)
            messages = collect.messages + [f"{item.category.__name__}: {item.message}" for item in caught]
            output = captured.getvalue()
        else:
            run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]], capture_output=True, text=True)
            output = run.stdout + run.stderr
            if run.returncode != 0:
                sys.stderr.write(f"{label} failed ({run.returncode}):\\n{block['code']}\\n{output[-6000:]}\\n")
                sys.exit(1)
            messages = [line.strip() for line in output.replace("\\r", "\\n").splitlines()
                        if __import__("re").search(block["warning_pattern"], line)]
        results.append({"output": output, "messages": messages})
    modules = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
               if name.split(".")[0] in ("configuration_pvt", "modeling_pvt", "pvt_tools")}
    print(json.dumps({"results": results, "modules": modules}))
    """
)


def user_environment(home: Path, target: Path, hooks: Path) -> dict[str, str]:
    """A process that sees the pip install in `target` first (modules and console commands), a fresh Hugging Face
    home and no Hub; `hooks` holds SITE_HOOK as sitecustomize.py."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_TOKEN", "PYTHONPATH")
    }
    environment.update(
        HF_HOME=str(home),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=f"{target}{os.pathsep}{hooks}",
        PATH=f"{target / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
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


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A `pip install` of this checkout into a folder: our modules, their package data and the console commands."""
    target = tmp_path_factory.mktemp("site")
    install_into(target)
    ours = sorted(
        path.name
        for path in target.iterdir()
        if path.suffix == ".py" or path.is_dir() and path.name not in ("__pycache__", "bin")
        if not path.name.endswith(".dist-info")
    )
    assert ours == ["configuration_pvt.py", "modeling_pvt.py", "pvt_tools"]
    assert (target / "bin" / "pvt-train").is_file() and (target / "bin" / "pvt-export-onnx").is_file()
    assert (target / "pvt_tools" / "training" / "metrics" / "top_k_accuracy" / "top_k_accuracy.py").is_file()
    return target


def run_document(path: Path, target: Path, tmp_path: Path, extra_python: list[str] = ()) -> tuple[list, dict]:
    """Run a document's runnable blocks in order in a fresh directory; returns (blocks run, the runner's report)."""
    blocks = [block for block in document_blocks(path) if block.runs]
    payload = [
        {
            "label": f"{path.name} {block.language} block at line {block.line}",
            "language": "python" if block.language == "python" else "shell",
            "code": block.runnable_code(),
            "warning_pattern": SHELL_WARNING.pattern,
        }
        for block in blocks
    ]
    payload += [{"label": "check", "language": "python", "code": code, "warning_pattern": ""} for code in extra_python]
    for payload_block in payload:  # (?i) for the runner's re.search
        payload_block["warning_pattern"] = f"(?i){payload_block['warning_pattern']}"
    (tmp_path / "blocks.json").write_text(json.dumps(payload))
    (tmp_path / "run_blocks.py").write_text(RUNNER)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITE_HOOK)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-s", str(tmp_path / "run_blocks.py"), str(tmp_path / "blocks.json")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1800,  # a README's worth of training on a busy 2-core machine took over 15 minutes
        env=user_environment(tmp_path / "hf_home", target, hooks),
    )
    assert result.returncode == 0, result.stderr[-8000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for name, file in report["modules"].items():  # the installed copy, not the checkout or another install
        assert file is None or Path(file).resolve().is_relative_to(target.resolve()), (name, file)
    return blocks, report


def check_messages(path: Path, blocks: list[Block], results: list[dict]) -> None:
    """Every warning a block prints is one its document expects, and every expected warning appears."""
    problems = []
    for block, result in zip(blocks, results):
        expected = block.expected_warnings
        for message in result["messages"]:
            if not any(re.search(pattern, message, re.DOTALL) for pattern in expected + block.allowed_warnings):
                problems.append(f"{path.name}:{block.line} prints a warning the text does not explain: {message}")
        for pattern in expected:
            if not any(re.search(pattern, message, re.DOTALL) for message in result["messages"]):
                problems.append(f"{path.name}:{block.line} expects a warning that no longer appears: {pattern}")
    assert not problems, "\n".join(problems)


def check_stated_shapes(blocks: list[Block], results: list[dict]) -> int:
    """The shapes a document states (`print(x.shape)  # (2, 3)`) are the shapes its blocks print."""
    stated = 0
    for block, result in zip(blocks, results):
        for dimensions in STATED_SHAPE.findall(block.code):
            shape = [int(size) for size in dimensions.split(",")]
            output = result["output"]
            # a torch tensor prints torch.Size([2, 3]); a NumPy array (ONNX Runtime's output) prints (2, 3)
            assert f"torch.Size({shape})" in output or f"{tuple(shape)}" in output.splitlines(), (dimensions, output)
            stated += 1
    return stated


# --- the README -----------------------------------------------------------------------------------------------------


def test_readme_is_short_and_points_to_every_guide():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 180
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:4] == ["## Install", "## The two commands", "## Quick start", "## Guides"], headings
    for guide in GUIDES:
        assert f"(docs/{guide.name})" in text, f"the README's table of guides lacks docs/{guide.name}"
    for word in ("../shared", "fixtures", "issue", "<org>", "<repo>"):
        assert word not in text.lower(), word


def test_readme_blocks_run_in_order_offline_from_a_pip_install(installed, tmp_path):
    """The quick start: `make demo`'s command (1 epoch here), then every Python block, in a process that has only a
    `pip install` of this checkout (into a folder on PYTHONPATH) and its dependencies."""
    blocks = document_blocks(README)
    statements = import_statements([block.code for block in blocks if block.language == "python"])
    assert len([line for line in statements if re.match(rf"(from|import) ({'|'.join(OUR_MODULES)})\b", line)]) >= 2
    # After the blocks: the installed copy renders the same cards as the checkout (the template is package data).
    card_check = "from pvt_tools.hub import render_variant_card\nprint(render_variant_card('pvt-small'), end='')"
    ran, report = run_document(README, installed, tmp_path, [card_check])
    assert [block.language for block in ran][:1] == ["bash"]  # the demo first: the quick start loads its model
    check_messages(README, ran, report["results"])
    assert report["results"][-1]["output"] == (REPO_ROOT / "model_cards" / "pvt-small.md").read_text(encoding="utf-8")
    assert check_stated_shapes(ran, report["results"]) >= 1
    assert (tmp_path / "work" / "outputs" / "demo" / "model.safetensors").is_file()
    assert (tmp_path / "work" / "outputs" / "digits-parity" / "model.safetensors").is_file()


# --- the guides -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("guide", GUIDES, ids=[guide.stem for guide in GUIDES])
def test_guide_blocks_run_in_order_offline_from_a_pip_install(guide, installed, tmp_path):
    blocks, report = run_document(guide, installed, tmp_path)
    assert blocks, f"{guide.name} has no block that runs"
    check_messages(guide, blocks, report["results"])
    check_stated_shapes(blocks, report["results"])


def test_every_guide_has_a_title_and_runs_something():
    for guide in GUIDES:
        lines = guide.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# "), guide.name
        assert any(block.runs for block in document_blocks(guide)), guide.name


# --- links and figures ----------------------------------------------------------------------------------------------


def test_relative_links_point_to_files_that_exist():
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    for document in DOCUMENTS:
        for target in link.findall(document.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (document.parent / target).exists(), f"{document.name} links to {target}, which does not exist"


NUMBER = re.compile(r"(?<![\w.])\d(?:[\d,]*\d)?(?:\.\d+)?(?![\w.]*\d)")  # 1,527 and 0.9248, not "11,"


def figure_passages(document: Path) -> list[tuple[str, str]]:
    """(source, passage) for each `<!-- figures: FILE -->` (or `FOLDER/`: its .md files) marker: the lines after it
    up to a blank line."""
    passages, lines = [], document.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        marker = FIGURES_MARKER.match(line)
        if marker:
            passage = []
            for following in lines[index + 1 :]:
                if not following.strip():
                    break
                passage.append(following)
            passages.append((marker.group(1), "\n".join(passage)))
    return passages


def test_figures_in_the_docs_are_the_figures_in_benchmarks():
    """Every number in a passage marked with its source is in that source (so a rerun that changes a benchmark page
    fails here until the docs say the same)."""
    checked = 0
    for document in DOCUMENTS:
        for source, passage in figure_passages(document):
            files = sorted((REPO_ROOT / source).glob("*.md")) if source.endswith("/") else [REPO_ROOT / source]
            source_text = "\n".join(file.read_text(encoding="utf-8") for file in files)
            source_numbers = set(NUMBER.findall(source_text))
            assert passage, f"{document.name}: an empty passage after the figures marker for {source}"
            for number in NUMBER.findall(passage):
                assert number in source_numbers, f"{document.name}: {number} is not in {source}:\n{passage}"
                checked += 1
    assert checked >= 40


def test_help_texts_say_what_the_docs_say(capsys):
    """`pvt-benchmark --quick` takes as long in --help as in the performance guide."""
    from pvt_tools.commands import benchmark

    with pytest.raises(SystemExit):
        benchmark.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    duration = re.search(r"--quick .*?: (under \w+ minutes|about \w+ minutes)", help_text)
    assert duration, help_text
    performance = (REPO_ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert re.search(rf"--quick\b[^\n]*{duration.group(1)}", performance), duration.group(1)
