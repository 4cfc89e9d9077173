# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Deployment speed on CPU: ONNX Runtime (float32, int8) against PyTorch eager, all holding the same weights.

    python -m pvt_tools.benchmark.deployment [--variant pvt-small] [--batch_sizes 1 8] [--threads 2] \\
        [--rounds 5] [--output benchmarks/deployment_cpu_2cores.json] [--markdown benchmarks/deployment.md]

Implementations, measured side by side in one process and alternated round by round (so that load on the machine
falls on all of them alike): Transformers' built-in `PvtForImageClassification` with random weights (the
reference), ours loaded from the built-in's saved checkpoint, both again with bfloat16 weights
(`from_pretrained(..., dtype=torch.bfloat16)`), and our ONNX export in ONNX Runtime, float32 and dynamic int8.
Every figure is images per second (median over rounds), with its ratio to the built-in's float32 eager speed.
A per-operator profile of the ONNX Runtime runs (its own profiler) says where their time goes.
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from pvt_tools.benchmark.plan import TEST_VARIANT, benchmark_config, builtin_config
from pvt_tools.export import onnx_session, quantize_int8, write_onnx

REFERENCE = "builtin_eager_float32"
DEFAULT_JSON = Path("benchmarks/deployment_cpu_2cores.json")
DEFAULT_MARKDOWN = Path("benchmarks/deployment.md")
COMMAND = "python -m pvt_tools.benchmark.deployment"  # main() records the arguments of the run


def images_per_second(run: Callable[[], object], batch_size: int, min_seconds: float) -> float:
    """Calls `run` until `min_seconds` have passed (at least twice) and returns the throughput."""
    run()  # warm-up (first-call allocations, ONNX Runtime's arena)
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_seconds:
        run()
        calls += 1
    return calls * batch_size / (time.perf_counter() - start)


def onnx_profile(path: Path, pixel_values: np.ndarray, threads: int, runs: int = 3) -> dict[str, float]:
    """Share of ONNX Runtime's kernel time per operator type (its built-in profiler)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, {"pixel_values": pixel_values})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    overall = sum(totals.values()) or 1.0
    return {name: round(value / overall, 4) for name, value in sorted(totals.items(), key=lambda item: -item[1])[:8]}


def cpu_has_bfloat16_instructions() -> bool:
    """Whether the CPU reports bfloat16 matrix instructions (AVX512-BF16 or AMX): without them PyTorch's bfloat16
    matrix multiplies are emulated and slow (Linux flags; False where /proc/cpuinfo is unavailable)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run_deployment_benchmark(
    *,
    variant: str = "pvt-small",
    batch_sizes: Sequence[int] = (1, 8),
    image_size: int = 224,
    threads: int = 2,
    rounds: int = 5,
    min_seconds: float = 2.0,
    work_dir: str | Path | None = None,
) -> dict:
    """Measure every implementation at every batch size; return the results (rows + profile + environment)."""
    import onnxruntime
    from transformers import PvtForImageClassification as BuiltinPvtForImageClassification

    from modeling_pvt import PvtForImageClassification

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        folder = Path(folder)
        config = builtin_config(benchmark_config(variant))
        config.image_size = image_size  # position embeddings for the measured size: the built-in cannot resize them
        builtin = BuiltinPvtForImageClassification(config).eval()
        builtin.save_pretrained(folder / "builtin")
        models = {
            "builtin_eager_float32": builtin,
            "ours_eager_float32": PvtForImageClassification.from_pretrained(folder / "builtin").eval(),
            "builtin_eager_bfloat16": BuiltinPvtForImageClassification.from_pretrained(
                folder / "builtin", dtype=torch.bfloat16
            ).eval(),
            "ours_eager_bfloat16": PvtForImageClassification.from_pretrained(
                folder / "builtin", dtype=torch.bfloat16
            ).eval(),
        }
        float_path = write_onnx(models["ours_eager_float32"], "image-classification", folder / "model.onnx")
        quantized_path = quantize_int8(float_path, folder / "model_quantized.onnx")
        sessions = {
            "onnxruntime_float32": onnx_session(float_path, threads),
            "onnxruntime_int8": onnx_session(quantized_path, threads),
        }
        sizes_mb = {
            "model.onnx": round(float_path.stat().st_size / 1e6, 1),
            "model_quantized.onnx": round(quantized_path.stat().st_size / 1e6, 1),
        }

        measurements: dict[tuple[str, int], list[float]] = defaultdict(list)
        profile = {}
        for batch_size in batch_sizes:
            pixel_values = torch.randn(batch_size, 3, image_size, image_size)
            runners: dict[str, Callable[[], object]] = {}
            for name, model in models.items():
                inputs = pixel_values.to(model.dtype)
                runners[name] = lambda model=model, inputs=inputs: model(pixel_values=inputs)
            for name, session in sessions.items():
                array = pixel_values.numpy()
                runners[name] = lambda session=session, array=array: session.run(None, {"pixel_values": array})
            with torch.inference_mode():
                for _ in range(rounds):
                    for name, run in runners.items():
                        measurements[(name, batch_size)].append(images_per_second(run, batch_size, min_seconds))
            if batch_size == max(batch_sizes):
                profile = {
                    f"{name} batch {batch_size}": onnx_profile(path, pixel_values.numpy(), threads)
                    for name, path in (("onnxruntime_float32", float_path), ("onnxruntime_int8", quantized_path))
                }

    rows = []
    for batch_size in batch_sizes:
        reference = statistics.median(measurements[(REFERENCE, batch_size)])
        for name in [*models, *sessions]:
            values = measurements[(name, batch_size)]
            median = statistics.median(values)
            rows.append(
                {
                    "implementation": name,
                    "batch_size": batch_size,
                    "images_per_second": round(median, 2),
                    "min": round(min(values), 2),
                    "max": round(max(values), 2),
                    "ratio_vs_builtin_eager_float32": round(median / reference, 3),
                }
            )
    return {
        "command": COMMAND,
        "variant": variant,
        "image_size": image_size,
        "threads": threads,
        "rounds": rounds,
        "weights": "random (speed does not depend on the values)",
        "file_sizes_mb": sizes_mb,
        "rows": rows,
        "onnxruntime_operator_time_share": profile,
        "environment": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "processor": platform.processor() or platform.machine(),
            "cpu_has_bfloat16_matmul": cpu_has_bfloat16_instructions(),
        },
    }


def render_markdown(results: dict) -> str:
    """benchmarks/deployment.md: the table, the profile, the command."""
    lines = [
        "# Deployment speed on CPU",
        "",
        (
            f"{results['variant']}, {results['image_size']}x{results['image_size']}, {results['threads']} threads, "
            f"{results['weights']}; median of {results['rounds']} alternating rounds. Generated by:"
        ),
        "",
        "```",
        results["command"],
        "```",
        "",
        "| implementation | batch | images/s | vs built-in eager float32 |",
        "|---|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['implementation']} | {row['batch_size']} | {row['images_per_second']:.1f} "
            f"| {row['ratio_vs_builtin_eager_float32']:.2f}x |"
        )
    lines += ["", "File sizes (MB): " + ", ".join(f"{name} {size}" for name, size in results["file_sizes_mb"].items())]
    lines += ["", "ONNX Runtime time per operator type (share of kernel time):", ""]
    for name, shares in results["onnxruntime_operator_time_share"].items():
        lines.append(f"- {name}: " + ", ".join(f"{op} {share:.0%}" for op, share in shares.items()))
    environment = results["environment"]
    lines += [
        "",
        (
            f"torch {environment['torch']}, onnxruntime {environment['onnxruntime']}, "
            f"processor {environment['processor']}, bfloat16 matrix instructions: "
            f"{environment['cpu_has_bfloat16_matmul']}."
        ),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant", default="pvt-small", help=f"A paper variant (pvt-tiny ... pvt-large) or {TEST_VARIANT} (seconds)."
    )
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min_seconds", type=float, default=2.0, help="Timed seconds per implementation and round.")
    parser.add_argument("--output", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run_deployment_benchmark(
        variant=args.variant,
        batch_sizes=args.batch_sizes,
        image_size=args.image_size,
        threads=args.threads,
        rounds=args.rounds,
        min_seconds=args.min_seconds,
    )
    results["command"] = " ".join(
        ["python -m pvt_tools.benchmark.deployment", *(argv if argv is not None else sys.argv[1:])]
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    args.markdown.write_text(render_markdown(results))
    print(render_markdown(results))
    return results


if __name__ == "__main__":
    main()
