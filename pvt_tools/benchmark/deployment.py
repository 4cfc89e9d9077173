# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Deployment speed on CPU: ONNX Runtime (float32, int8 options) against PyTorch eager, all holding the same weights.

    python -m pvt_tools.benchmark.deployment [--variant pvt-small] [--batch_sizes 1 8] [--threads 2] \\
        [--rounds 5] [--bfloat16] [--output benchmarks/deployment_cpu_2cores.json] [--markdown benchmarks/deployment.md]

Implementations, measured side by side in one process and alternated round by round (so that load on the machine
falls on all of them alike): Transformers' built-in `PvtForImageClassification` with random weights (the
reference), ours loaded from the built-in's saved checkpoint (with --bfloat16 both again with bfloat16 weights),
and our ONNX export in ONNX Runtime: the exporter's plain graph, the graph pvt-export-onnx writes (ONNX Runtime's
transformer fusions, `optimize_for_onnxruntime`), and the int8 options made from it (pvt_tools.export's
QUANTIZATIONS, and MatMul-only with unsigned weights). Static (calibrated) int8 is not among them: ONNX Runtime
1.32's `quantize_static` fails on the fused graph ("Unable to get valid quantization scale ... when quantizing
bias"); benchmarks/deployment.md gives its figures from the earlier exporter's graph. Every
figure is images per second, the median over rounds and the best round (on a shared machine the best round is the
least disturbed one), with its ratio to the built-in's float32 eager speed in the same round statistic. A
per-operator profile of the ONNX Runtime runs (its own profiler) says where their time goes; the CPU's
instruction-set features are recorded beside the figures.
"""

import argparse
import json
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
from pvt_tools.benchmark.report import cpu_name
from pvt_tools.export import QUANTIZATIONS, onnx_session, optimize_for_onnxruntime, quantize_int8, write_onnx

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


# CPU flags (Linux /proc/cpuinfo names) that decide int8 and bfloat16 speed.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_features() -> list[str]:
    """Which of CPU_FEATURES the CPU reports ([] where /proc/cpuinfo is unavailable)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [name for name in CPU_FEATURES if name in flags]


def int8_matmul_uint8(source: Path, destination: Path) -> Path:
    """Dynamic int8 of the MatMuls with unsigned (QUInt8) weights, for comparison with the signed default."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(destination),
        weight_type=QuantType.QUInt8,
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # as quantize_int8
    )
    return destination


def cpu_has_bfloat16_instructions() -> bool:
    """Whether the CPU reports bfloat16 matrix instructions (AVX512-BF16 or AMX): without them PyTorch's bfloat16
    matrix multiplies are emulated and slow (Linux flags; False where /proc/cpuinfo is unavailable)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_features()))


def run_deployment_benchmark(
    *,
    variant: str = "pvt-small",
    batch_sizes: Sequence[int] = (1, 8),
    image_size: int = 224,
    threads: int = 2,
    rounds: int = 5,
    min_seconds: float = 2.0,
    bfloat16: bool = False,
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
        }
        if bfloat16:
            models["builtin_eager_bfloat16"] = BuiltinPvtForImageClassification.from_pretrained(
                folder / "builtin", dtype=torch.bfloat16
            ).eval()
            models["ours_eager_bfloat16"] = PvtForImageClassification.from_pretrained(
                folder / "builtin", dtype=torch.bfloat16
            ).eval()
        plain_path = write_onnx(models["ours_eager_float32"], "image-classification", folder / "plain.onnx")
        float_path = optimize_for_onnxruntime(plain_path, folder / "model.onnx")
        files = {"onnxruntime_float32_plain": plain_path, "onnxruntime_float32": float_path}
        for mode in QUANTIZATIONS:
            if mode != "int8":  # "int8" names the default, one of the others
                files[f"onnxruntime_{mode.replace('-', '_')}"] = quantize_int8(
                    float_path, folder / f"{mode}.onnx", mode
                )
        files["onnxruntime_int8_matmul_uint8"] = int8_matmul_uint8(float_path, folder / "int8-matmul-uint8.onnx")
        sessions = {name: onnx_session(path, threads) for name, path in files.items()}
        sizes_mb = {name: round(path.stat().st_size / 1e6, 1) for name, path in files.items()}

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
                    for name, path in files.items()
                }

    rows = []
    for batch_size in batch_sizes:
        reference = measurements[(REFERENCE, batch_size)]
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
                    "ratio_vs_builtin_eager_float32": round(median / statistics.median(reference), 3),
                    "best_round_ratio_vs_builtin_eager_float32": round(max(values) / max(reference), 3),
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
            "processor": cpu_name(),
            "cpu_features": cpu_features(),
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
        "",
        f"CPU: {results['environment']['processor']}; features: {', '.join(results['environment']['cpu_features'])}.",
        "",
        "| implementation | batch | images/s (median) | best round | vs built-in eager float32 (median / best) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['implementation']} | {row['batch_size']} | {row['images_per_second']:.1f} | {row['max']:.1f} "
            f"| {row['ratio_vs_builtin_eager_float32']:.2f}x "
            f"/ {row['best_round_ratio_vs_builtin_eager_float32']:.2f}x |"
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
    parser.add_argument("--bfloat16", action="store_true", help="Also time PyTorch eager with bfloat16 weights.")
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
        bfloat16=args.bfloat16,
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
