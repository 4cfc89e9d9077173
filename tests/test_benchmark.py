"""The benchmark's machinery on a tiny model: shared weights, alternating timing, fresh-process memory, the
profile's accounting, the key ratios, and the written report."""

import json
import os
import re
import statistics
import time
from pathlib import Path

import matplotlib.image
import pytest
import torch
from torch import nn

from pvt_tools.benchmark import deployment, memory, plan, profile, report, timing
from pvt_tools.benchmark.plan import BUILTIN, COMPILED, EAGER, OURS, TEST_VARIANT
from pvt_tools.benchmark.timing import Comparison, Timing
from pvt_tools.commands import benchmark as command

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_models():
    return plan.build_models(TEST_VARIANT)


def tiny_pixels(batch_size: int = 2) -> torch.Tensor:
    config = plan.benchmark_config(TEST_VARIANT)
    return plan.make_inputs(config, batch_size, config.image_size, config.image_size, "cpu")[0]


def test_all_implementations_hold_the_same_weights(tiny_models):
    assert set(tiny_models) == {OURS, EAGER, BUILTIN}
    assert tiny_models[OURS].config._attn_implementation == "sdpa"
    assert tiny_models[EAGER].config._attn_implementation == "eager"
    assert type(tiny_models[BUILTIN]).__module__.startswith("transformers.models.pvt")
    pixel_values = tiny_pixels()
    differences = plan.check_same_outputs(tiny_models, pixel_values, reference=BUILTIN)
    assert set(differences) == {OURS, EAGER}
    with torch.no_grad():
        expected = tiny_models[BUILTIN](pixel_values).logits
        for name in (OURS, EAGER):
            torch.testing.assert_close(tiny_models[name](pixel_values).logits, expected, atol=1e-5, rtol=0)


def test_output_check_fails_when_weights_differ():
    models = plan.build_models(TEST_VARIANT, (OURS, BUILTIN))
    with torch.no_grad():
        models[OURS].classifier.bias.add_(1.0)
    with pytest.raises(AssertionError, match="outputs differ from built-in"):
        plan.check_same_outputs(models, tiny_pixels(), reference=BUILTIN)


def test_backbones_load_the_same_weights_as_the_classifier(tiny_models, tmp_path):
    checkpoint = plan.save_builtin_checkpoint(TEST_VARIANT, tmp_path / "checkpoint")
    backbones = plan.build_models(TEST_VARIANT, (OURS, EAGER), task="backbone", checkpoint_dir=checkpoint)
    builtin = plan.build_models(TEST_VARIANT, (BUILTIN,), checkpoint_dir=checkpoint)[BUILTIN]
    pixel_values = tiny_pixels()
    with torch.no_grad():
        hidden_states = builtin(pixel_values, output_hidden_states=True).hidden_states
        feature_maps = backbones[OURS](pixel_values).feature_maps
    assert len(feature_maps) == 4
    first_stage_tokens = feature_maps[0].flatten(2).transpose(1, 2)  # stage 1 has one layer in the tiny model
    torch.testing.assert_close(first_stage_tokens, hidden_states[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no backbone class"):
        plan.load_implementation(checkpoint, BUILTIN, task="backbone")


def test_time_alternating_alternates_and_times_known_durations():
    calls = []

    def sleeper(name: str, seconds: float):
        def run():
            calls.append(name)
            time.sleep(seconds)

        return run

    durations = {"fast": 0.01, "slow": 0.03}
    timings = timing.time_alternating({name: sleeper(name, s) for name, s in durations.items()}, rounds=4)
    assert set(timings) == set(durations)
    for name, measured in timings.items():
        assert len(measured.seconds_per_call) == 4
        assert measured.minimum >= durations[name] * 0.99
        assert measured.median < durations[name] + 0.5
    assert timings["slow"].median > timings["fast"].median
    timed_calls = calls[2:]  # after one warm-up call each
    assert len(timed_calls) == 8
    for round_index in range(4):  # every round calls each once; the first of the round rotates
        assert sorted(timed_calls[2 * round_index : 2 * round_index + 2]) == ["fast", "slow"]
    assert timed_calls[0] != timed_calls[2]


def test_comparison_ratios_are_medians_of_per_round_ratios():
    comparison = Comparison("inference", "pvt-small", "classification", "inference", 8, 224, 224)
    comparison.record_timings({OURS: Timing([1.0, 2.0, 1.0]), BUILTIN: Timing([2.0, 2.0, 3.0])})
    assert comparison.ratios[BUILTIN]["speedup"] == pytest.approx(2.0)  # median of 2, 1, 3
    assert comparison.ratios[BUILTIN]["time_ratio"] == pytest.approx(0.5)  # median of 1/2, 1, 1/3
    assert comparison.results[OURS]["images_per_s"] == pytest.approx(8 / 1.0)


def synthetic_comparison(case, variant, batch_size, size, dtype, ours_seconds, other, other_seconds, memory=None):
    comparison = Comparison(case, variant, "classification", "inference", batch_size, *size, dtype)
    comparison.record_timings({OURS: Timing(ours_seconds), other: Timing(other_seconds)})
    for name, (peak, increase) in (memory or {}).items():
        comparison.results[name].update(peak_memory_mib=peak, memory_increase_mib=increase)
    comparison.update_ratios()
    return comparison


def test_key_ratios_are_the_measured_ratios_under_the_measured_labels():
    inference = synthetic_comparison(
        "inference",
        "pvt-tiny",
        4,
        (224, 224),
        "float32",
        [1.0, 1.0, 2.0],
        BUILTIN,
        [1.5, 2.0, 2.0],
        memory={OURS: (1100.0, 100.0), BUILTIN: (1250.0, 250.0)},
    )
    resolutions = synthetic_comparison("resolutions", "pvt-tiny", 1, (320, 320), "float32", [1.0], EAGER, [1.1])
    backbone = synthetic_comparison(
        "backbone",
        "pvt-tiny",
        1,
        (800, 1216),
        "float32",
        [0.7] * 3,
        EAGER,
        [1.0] * 3,
        memory={OURS: (1100.0, 100.0), EAGER: (1900.0, 900.0)},
    )
    failed = Comparison("compile", "pvt-tiny", "classification", "inference", 4, 224, 224, error="changed outputs")
    compiled = Comparison("compile", "pvt-tiny", "classification", "inference", 4, 224, 224, subject=COMPILED)
    compiled.record_timings({COMPILED: Timing([0.8] * 3), OURS: Timing([1.0] * 3)})

    rows = report.key_ratios([inference, resolutions, backbone, failed, compiled])
    assert [row["label"] for row in rows] == [c.label for c in (inference, backbone, failed, compiled)]
    assert rows[0]["label"] == "inference pvt-tiny 4x224x224 float32"  # what was measured, whatever the plan
    assert (rows[0]["subject"], rows[0]["reference"]) == (OURS, BUILTIN)
    assert rows[0]["speedup"] == pytest.approx(1.5)  # median of the per-round ratios 1.5, 2, 1
    assert rows[0]["memory_ratio"] == pytest.approx(100 / 250)
    assert (rows[1]["reference"], rows[1]["speedup"]) == (EAGER, pytest.approx(1 / 0.7))
    assert rows[1]["memory_ratio"] == pytest.approx(100 / 900)
    assert rows[2]["error"] == "changed outputs" and rows[2]["speedup"] is None
    assert (rows[3]["subject"], rows[3]["reference"], rows[3]["speedup"]) == (COMPILED, OURS, pytest.approx(1.25))
    assert rows[3]["memory_ratio"] is None  # not measured: no figure invented

    results = {"comparisons": [inference, backbone], "profiles": [], "failures": [], "summary": rows}
    text = report.format_table(results)
    summary = text[text.index("Key ratios") :].splitlines()
    assert re.search(r"inference pvt-tiny 4x224x224 float32 +ours vs built-in +speed x1\.50, memory 0\.40$", summary[1])
    assert re.search(
        r"backbone pvt-tiny 1x800x1216 float32 +ours vs ours-eager +speed x1\.43, memory 0\.11$", summary[2]
    )
    assert summary[3].endswith("not timed: changed outputs") and summary[4].endswith("speed x1.25")
    assert "pvt-small" not in text


def test_quick_plan_and_its_report_name_what_quick_measures():
    quick = command.plan_from_args(command.parse_args(["--quick"]))
    assert quick.variants == ["pvt-tiny"] and quick.inference_batch_sizes == [1, 4]
    assert quick.compile_variant == quick.profile_variant == "pvt-tiny"
    small = command.plan_from_args(command.parse_args(["--quick", "--variants", "pvt-small", "--rounds", "2"]))
    assert (small.variants, small.rounds, small.profile_variant) == (["pvt-small"], 2, "pvt-small")
    tiny = command.plan_from_args(command.parse_args(["--tiny", "--variants", "pvt-small", "--memory_cases"]))
    assert tiny.variants == [TEST_VARIANT] and tiny.memory_cases == []


def test_help_reports_figures_and_ratios_only(capsys):
    with pytest.raises(SystemExit):
        command.parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert "--quick" in help_text and "ratios" in help_text
    assert not re.search(r"(?i:target|issue)|PASS|MISS", help_text)
    with pytest.raises(SystemExit):
        command.parse_args(["--rounds", "0"])
    assert "--rounds must be at least 1" in capsys.readouterr().err


def test_profile_accounts_for_the_whole_forward(tiny_models):
    pixel_values = tiny_pixels()
    ours = profile.profile_outside_matmul(tiny_models[OURS], pixel_values)
    builtin = profile.profile_outside_matmul(tiny_models[BUILTIN], pixel_values)
    for shares in (ours, builtin):
        assert shares["percent_sum"] == pytest.approx(100.0, abs=1.0)
        assert shares["percent"]["gemm"] > 0 and shares["percent"]["convolution"] > 0
        assert shares["outside_matmul_percent"] == pytest.approx(
            shares["percent"]["convolution"] + shares["percent"]["other"]
        )
    assert ours["percent"]["attention"] > 0  # the fused SDPA kernel
    assert builtin["percent"]["attention"] == 0  # the built-in materialises scores and softmax
    assert "aten::_softmax" in {op["name"] for op in builtin["other_operators"]}
    assert "aten::_softmax" not in {op["name"] for op in ours["other_operators"]}

    # A single large matrix product spends most of its time in the GEMM (measured 84-93% at this size; at 1024 a
    # busy machine once gave 48%, the per-call overhead weighing 8 times more against the product).
    linear = nn.Linear(2048, 2048)
    matmul_profile = profile.profile_outside_matmul(linear, torch.randn(2048, 2048))
    assert matmul_profile["percent"]["gemm"] > 50


def test_classify_operator():
    assert profile.classify_operator("aten::addmm") == "gemm"
    assert profile.classify_operator("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert profile.classify_operator("aten::mkldnn_convolution") == "convolution"
    assert profile.classify_operator("aten::linear") == "other"  # a wrapper: its self time is overhead
    assert profile.classify_operator("aten::gelu") == "other"
    assert profile.classify_operator("sm90_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x32") == "gemm"
    assert profile.classify_operator("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>") == "attention"


def test_peak_memory_of_a_fresh_process_sees_the_attention_matrix(tmp_path, monkeypatch):
    # The eager backbone materialises stage 1's attention: (512/4)^2 queries x (512/16)^2 keys of float32.
    case = {
        "variant": TEST_VARIANT,
        "implementation": EAGER,
        "task": "backbone",
        "mode": "inference",
        "batch_size": 1,
        "height": 512,
        "width": 512,
        "dtype": "float32",
        "gradient_checkpointing": False,
        "device": "cpu",
    }
    monkeypatch.chdir(tmp_path)  # the worker finds this process's code from any working directory
    assert memory.worker_environment()["PYTHONPATH"].split(os.pathsep)[0] == str(REPOSITORY_ROOT)
    measured = memory.measure_peak_memory_in_fresh_process(case)
    attention_matrix_mib = (128 * 128) * (32 * 32) * 4 / 2**20
    assert measured["peak_was_reset"]
    assert measured["peak_memory_mib"] >= measured["baseline_mib"] > 0
    assert measured["memory_increase_mib"] >= attention_matrix_mib
    assert measured["peak_memory_mib"] < 8 * 1024


def test_main_writes_table_json_and_plot(tmp_path, capsys):
    exit_code = command.main(
        ["--tiny", "--output_dir", str(tmp_path), "--rounds", "2", "--cases", "inference", "resolutions", "profile"]
        + ["--memory_cases"]  # none: the fresh-process worker has its own test
    )
    assert exit_code == 0
    stdout = capsys.readouterr().out
    assert "weight check test-tiny" in stdout and "top non-matmul" in stdout
    assert not re.search(r"(?i:target)|PASS|MISS", stdout)

    written = json.loads((tmp_path / "benchmark.json").read_text())
    assert written["weight_checks"][0]["max_abs_diff_vs_builtin"][OURS] < 1e-4
    comparisons = written["comparisons"]
    native, larger = sorted((c for c in comparisons if c["case"] == "resolutions"), key=lambda c: c["height"])
    assert (native["height"], larger["height"]) == (64, 96)
    assert set(native["results"]) == {OURS, EAGER, BUILTIN}
    assert set(larger["results"]) == {OURS, EAGER}  # the built-in only runs at its configured size
    ours, builtin = native["results"][OURS], native["results"][BUILTIN]
    assert len(ours["seconds_per_call"]) == 2
    assert ours["images_per_s"] == pytest.approx(native["batch_size"] / ours["median_s"])
    per_round = [b / a for a, b in zip(ours["seconds_per_call"], builtin["seconds_per_call"])]
    assert native["ratios"][BUILTIN]["speedup"] == pytest.approx(sum(per_round) / 2)
    assert {entry["implementation"] for entry in written["profiles"]} == {OURS, BUILTIN}

    # The summary: one row per inference comparison (the case summarised here), its label and its own ratio.
    inference = [c for c in comparisons if c["case"] == "inference"]
    assert len(inference) == 4  # batch 1 and 2, float32 and bfloat16
    assert len(written["summary"]) == len(inference)
    summary_text = stdout[stdout.index("Key ratios") :]
    for comparison, row in zip(inference, written["summary"]):
        label = (
            f"inference {TEST_VARIANT} {comparison['batch_size']}x{comparison['height']}x{comparison['width']} "
            f"{comparison['dtype']}"
        )
        speedup = comparison["ratios"][BUILTIN]["speedup"]
        per_round = [b / a for a, b in zip(*(comparison["results"][n]["seconds_per_call"] for n in (OURS, BUILTIN)))]
        assert speedup == pytest.approx(sum(per_round) / 2)
        assert (row["label"], row["reference"], row["speedup"]) == (label, BUILTIN, pytest.approx(speedup))
        assert re.search(rf"{label} +ours vs built-in +speed x{speedup:.2f}\n", summary_text + "\n")

    image = matplotlib.image.imread(tmp_path / "throughput_vs_resolution.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not list(tmp_path.glob(".*partial*"))


DEPLOYMENT_IMPLEMENTATIONS = [
    "builtin_eager_float32",
    "ours_eager_float32",
    "onnxruntime_float32_plain",
    "onnxruntime_float32",
    "onnxruntime_int8_matmul",
    "onnxruntime_int8_dynamic",
    "onnxruntime_int8_matmul_uint8",
]
DEPLOYMENT_ONNX_FILES = [name for name in DEPLOYMENT_IMPLEMENTATIONS if name.startswith("onnxruntime")]


def test_deployment_main_reports_what_it_measured(tmp_path, monkeypatch, capsys):
    measured = []  # (batch size, images/s) of every timed block, in the order they ran

    def recording_images_per_second(run, batch_size, min_seconds):
        value = measure(run, batch_size, min_seconds)
        measured.append((batch_size, value))
        return value

    measure = deployment.images_per_second
    monkeypatch.setattr(deployment, "images_per_second", recording_images_per_second)
    output, markdown = tmp_path / "deployment.json", tmp_path / "deployment.md"
    arguments = ["--variant", TEST_VARIANT, "--batch_sizes", "1", "2", "--image_size", "64", "--threads", "1"]
    arguments += ["--rounds", "2", "--min_seconds", "0", "--output", str(output), "--markdown", str(markdown)]
    threads = torch.get_num_threads()
    try:
        results = deployment.main(arguments)
    finally:
        torch.set_num_threads(threads)
    assert json.loads(output.read_text()) == results
    assert results["command"] == "python -m pvt_tools.benchmark.deployment " + " ".join(arguments)
    assert markdown.read_text() in capsys.readouterr().out

    # Each round times every implementation once, in the order above: 2 batch sizes x 2 rounds x 7.
    assert len(measured) == 2 * 2 * len(DEPLOYMENT_IMPLEMENTATIONS)
    timings = {}
    for index, (batch_size, value) in enumerate(measured):
        name = DEPLOYMENT_IMPLEMENTATIONS[index % len(DEPLOYMENT_IMPLEMENTATIONS)]
        timings.setdefault((name, batch_size), []).append(value)
    rows = {(row["implementation"], row["batch_size"]): row for row in results["rows"]}
    assert list(rows) == [(name, batch_size) for batch_size in (1, 2) for name in DEPLOYMENT_IMPLEMENTATIONS]
    table = markdown.read_text()
    for (name, batch_size), values in timings.items():
        row = rows[(name, batch_size)]
        reference = statistics.median(timings[("builtin_eager_float32", batch_size)])
        assert row["images_per_second"] == round(statistics.median(values), 2)
        assert (row["min"], row["max"]) == (round(min(values), 2), round(max(values), 2))
        assert row["ratio_vs_builtin_eager_float32"] == round(statistics.median(values) / reference, 3)
        best_reference = max(timings[("builtin_eager_float32", batch_size)])
        assert row["best_round_ratio_vs_builtin_eager_float32"] == round(max(values) / best_reference, 3)
        assert f"| {name} | {batch_size} | {row['images_per_second']:.1f} | " in table
    assert all(
        rows[("builtin_eager_float32", batch_size)]["ratio_vs_builtin_eager_float32"] == 1 for batch_size in (1, 2)
    )

    # The ONNX Runtime profile is taken at the largest batch; each is a share of the kernel time.
    profile_shares = results["onnxruntime_operator_time_share"]
    assert set(profile_shares) == {f"{name} batch 2" for name in DEPLOYMENT_ONNX_FILES}
    for shares in profile_shares.values():
        assert shares and all(0 < share <= 1 for share in shares.values()) and sum(shares.values()) <= 1.0001
    sizes = results["file_sizes_mb"]
    assert set(sizes) == set(DEPLOYMENT_ONNX_FILES)
    assert sizes["onnxruntime_int8_dynamic"] <= sizes["onnxruntime_int8_matmul"] < sizes["onnxruntime_float32"]
    assert set(results["environment"]["cpu_features"]) <= set(deployment.CPU_FEATURES)
