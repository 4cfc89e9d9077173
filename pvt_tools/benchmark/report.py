# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""What a run measured, as a table, a summary of the key ratios, a JSON file and a plot.

Every row is labelled by the comparison (or profile) it comes from, so the report names exactly the variant,
batch, input size and dtype that were measured. Files are written whole or not at all.
"""

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

from pvt_tools.benchmark.plan import BUILTIN, EAGER, OURS, OUTPUT_TOLERANCE, BenchmarkPlan
from pvt_tools.benchmark.profile import profile_label
from pvt_tools.benchmark.timing import Comparison

# The implementation each case's subject is summarised against: the built-in where it runs, our eager path for
# the backbone (the built-in has none), and ours without torch.compile for the compile case.
SUMMARY_REFERENCE = {"inference": BUILTIN, "training": BUILTIN, "backbone": EAGER, "compile": OURS}
LABEL_WIDTH = 56
TOP_OPERATORS = 8  # operators outside matrix multiplies listed per profile in the table

# --- the summary ----------------------------------------------------------------------------------------------


def key_ratios(comparisons: list[Comparison]) -> list[dict]:
    """One row per comparison of a summarised case (SUMMARY_REFERENCE): the subject's speed-up over the reference
    and its memory increase relative to the reference's, as recorded in the comparison (None where not measured),
    under the comparison's own label."""
    rows = []
    for comparison in comparisons:
        reference = SUMMARY_REFERENCE.get(comparison.case)
        if reference is None:
            continue
        ratios = comparison.ratios.get(reference, {})
        rows.append(
            {
                "label": comparison.label,
                "subject": comparison.subject,
                "reference": reference,
                "speedup": ratios.get("speedup"),
                "memory_ratio": ratios.get("memory_ratio"),
                "error": comparison.error,
            }
        )
    return rows


# --- the table ------------------------------------------------------------------------------------------------


def format_number(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def format_comparisons(comparisons: list[Comparison]) -> list[str]:
    """One line per implementation of each comparison, the subject's ratios on its line; notes and checks."""
    header = (
        f"{'case':<{LABEL_WIDTH}} {'impl':<14} {'median ms':>10} {'min ms':>9} {'img/s':>9} {'peak MiB':>9} "
        f"{'+MiB':>8}  ratios"
    )
    lines = [header, "-" * len(header)]
    for comparison in comparisons:
        if comparison.error:
            lines.append(f"{comparison.label:<{LABEL_WIDTH}} ERROR: {comparison.error}")
        for name, result in comparison.results.items():
            ratio_text = ""
            if name == comparison.subject:
                parts = []
                for other, ratios in comparison.ratios.items():
                    text = f"x{ratios['speedup']:.2f} speed vs {other}" if "speedup" in ratios else ""
                    if "memory_ratio" in ratios:
                        text += f", {ratios['memory_ratio']:.2f} mem vs {other}"
                    parts.append(text)
                ratio_text = "; ".join(parts)
            lines.append(
                f"{comparison.label:<{LABEL_WIDTH}} {name:<14} {result['median_s'] * 1000:>10.1f} "
                f"{result['min_s'] * 1000:>9.1f} {result['images_per_s']:>9.2f} "
                f"{format_number(result.get('peak_memory_mib'), '{:.0f}'):>9} "
                f"{format_number(result.get('memory_increase_mib'), '{:.0f}'):>8}  {ratio_text}"
            )
        for note in comparison.notes:
            lines.append(f"{'':<{LABEL_WIDTH}} note: {note}")
        for check, value in comparison.checks.items():
            lines.append(f"{'':<{LABEL_WIDTH}} check: {check} = {value:.3g}")
    return lines


def format_profiles(profiles: list[dict]) -> list[str]:
    lines = ["Profile (share of a float32 forward):"]
    for entry in profiles:
        percent = entry["percent"]
        lines.append(
            f"  {profile_label(entry)}: {entry['forward_ms']:.1f} ms/forward ({entry['time_basis']}); "
            f"GEMM {percent['gemm']:.1f}%, attention {percent['attention']:.1f}%, "
            f"conv {percent['convolution']:.1f}%, other {percent['other']:.1f}% -> outside matmul (strict) "
            f"{entry['outside_matmul_percent']:.1f}%, outside matmul+conv+attention "
            f"{entry['outside_matmul_conv_attention_percent']:.1f}%"
        )
        top = ", ".join(f"{op['name']} {op['percent']:.1f}%" for op in entry["other_operators"][:TOP_OPERATORS])
        lines.append(f"    top non-matmul: {top}")
    return lines


def format_summary(rows: list[dict]) -> list[str]:
    heading = (
        "Key ratios (speed: median over rounds of the reference's time / the subject's; memory: the subject's "
        "increase over set-up / the reference's):"
    )
    lines = [heading]
    for row in rows:
        pair = f"{row['subject']} vs {row['reference']}"
        if row["error"]:
            figures = f"not timed: {row['error']}"
        else:
            figures = f"speed {format_number(row['speedup'], 'x{:.2f}')}"
            if row["memory_ratio"] is not None:
                figures += f", memory {row['memory_ratio']:.2f}"
        lines.append(f"  {row['label']:<{LABEL_WIDTH}} {pair:<24} {figures}")
    return lines


def format_weight_check(check: dict) -> str:
    """The line that says the implementations agreed, and by how much."""
    differences = ", ".join(
        f"{name} vs built-in max |diff| {value:.2e}" for name, value in check["max_abs_diff_vs_builtin"].items()
    )
    return f"weight check {check['variant']} @{check['image_size']}: {differences} (< {OUTPUT_TOLERANCE:g}) OK"


def format_table(results: dict) -> str:
    """Fixed-width text of `run_benchmark`'s results: the comparisons, then the profiles, failures and the key
    ratios."""
    lines = format_comparisons(results["comparisons"])
    if results["profiles"]:
        lines += ["", *format_profiles(results["profiles"])]
    if results["failures"]:
        lines += ["", "Failures:"] + [f"  {f['case']} {f['variant']}: {f['error']}" for f in results["failures"]]
    if results["summary"]:
        lines += ["", *format_summary(results["summary"])]
    return "\n".join(lines)


# --- files ----------------------------------------------------------------------------------------------------


def plot_throughput_vs_resolution(comparisons: list[Comparison], path: Path, title: str) -> None:
    """Images/s against the input side, one line per implementation and variant: the resolutions case (or, when
    it did not run, the float32 inference case at its smallest batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [c for c in comparisons if c.case == "resolutions" and not c.error]
    if not measured:
        inference = [c for c in comparisons if c.case == "inference" and c.dtype == "float32" and not c.error]
        smallest = min((c.batch_size for c in inference), default=None)
        measured = [c for c in inference if c.batch_size == smallest]
    lines: dict[tuple[str, str], dict[int, float]] = {}
    for comparison in measured:
        for name, result in comparison.results.items():
            lines.setdefault((comparison.variant, name), {})[comparison.height] = result["images_per_s"]
    colors = {OURS: "tab:blue", EAGER: "tab:orange", BUILTIN: "tab:green"}
    markers = {OURS: "o", EAGER: "s", BUILTIN: "D"}
    variants = sorted({variant for variant, _ in lines})
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (variant, name), line in sorted(lines.items()):
        sides = sorted(line)
        linestyle = ("-", "--", ":", "-.")[variants.index(variant) % 4]
        axes.plot(
            sides,
            [line[side] for side in sides],
            linestyle=linestyle,
            marker=markers.get(name, "x"),
            color=colors.get(name),
            markersize=8,
            label=f"{name} ({variant})",
        )
    batch_sizes = sorted({comparison.batch_size for comparison in measured})
    axes.set_xlabel("input side (pixels, square images)")
    axes.set_ylabel(f"images / s (float32, median, batch {', '.join(map(str, batch_sizes))})")
    axes.set_yscale("log")
    axes.set_title(f"PVT throughput vs resolution; built-in runs at its configured size only\n{title}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    if lines:
        axes.legend(fontsize=8)
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.partial.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    temporary.replace(path)


def write_json_atomically(data: dict, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


def write_report(results: dict, output_dir: str | Path) -> dict[str, Path]:
    """benchmark.json (everything in `results`) and throughput_vs_resolution.png, each written whole or not at
    all. `results` holds "comparisons" (Comparison objects), "profiles", "summary" and "environment"."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "benchmark.json"
    plot_path = output_dir / "throughput_vs_resolution.png"
    serialisable = {**results, "comparisons": [asdict(comparison) for comparison in results["comparisons"]]}
    write_json_atomically(serialisable, json_path)
    plot_throughput_vs_resolution(results["comparisons"], plot_path, environment_line(results["environment"]))
    return {"json": json_path, "plot": plot_path}


# --- where it ran ---------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_summary(device: torch.device, plan: BenchmarkPlan, argv: list[str]) -> dict:
    """The machine, the library versions, the command line and the whole plan: what the figures depend on."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_name()})",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "command": ["pvt-benchmark", *argv],
        "plan": asdict(plan),
    }


def environment_line(environment: dict) -> str:
    return f"{environment['device']}, {environment['torch_threads']} threads, torch {environment['torch']}"


__all__ = [
    "SUMMARY_REFERENCE",
    "environment_summary",
    "format_table",
    "key_ratios",
    "plot_throughput_vs_resolution",
    "write_report",
]
