"""The benchmark's machinery on a tiny model: shared weights, alternating timing, fresh-process memory, the
profile's accounting, targets, and the written report."""

import json
import time

import matplotlib.image
import pytest
import torch
from torch import nn

from pvt_tools.benchmark import suite as benchmark
from pvt_tools.benchmark.suite import BUILTIN, COMPILED, EAGER, OURS, TEST_VARIANT, Comparison, Timing


@pytest.fixture(scope="module")
def tiny_models():
    return benchmark.build_models(TEST_VARIANT)


def tiny_pixels(batch_size: int = 2) -> torch.Tensor:
    config = benchmark.benchmark_config(TEST_VARIANT)
    return benchmark.make_inputs(config, batch_size, config.image_size, config.image_size, "cpu")[0]


def test_all_implementations_hold_the_same_weights(tiny_models):
    assert set(tiny_models) == {OURS, EAGER, BUILTIN}
    assert tiny_models[OURS].config._attn_implementation == "sdpa"
    assert tiny_models[EAGER].config._attn_implementation == "eager"
    assert type(tiny_models[BUILTIN]).__module__.startswith("transformers.models.pvt")
    pixel_values = tiny_pixels()
    differences = benchmark.check_same_outputs(tiny_models, pixel_values, reference=BUILTIN)
    assert set(differences) == {OURS, EAGER}
    with torch.no_grad():
        expected = tiny_models[BUILTIN](pixel_values).logits
        for name in (OURS, EAGER):
            torch.testing.assert_close(tiny_models[name](pixel_values).logits, expected, atol=1e-5, rtol=0)


def test_output_check_fails_when_weights_differ():
    models = benchmark.build_models(TEST_VARIANT, (OURS, BUILTIN))
    with torch.no_grad():
        models[OURS].classifier.bias.add_(1.0)
    with pytest.raises(AssertionError, match="outputs differ from built-in"):
        benchmark.check_same_outputs(models, tiny_pixels(), reference=BUILTIN)


def test_backbones_load_the_same_weights_as_the_classifier(tiny_models, tmp_path):
    checkpoint = benchmark.save_builtin_checkpoint(TEST_VARIANT, tmp_path / "checkpoint")
    backbones = benchmark.build_models(TEST_VARIANT, (OURS, EAGER), task="backbone", checkpoint_dir=checkpoint)
    builtin = benchmark.build_models(TEST_VARIANT, (BUILTIN,), checkpoint_dir=checkpoint)[BUILTIN]
    pixel_values = tiny_pixels()
    with torch.no_grad():
        hidden_states = builtin(pixel_values, output_hidden_states=True).hidden_states
        feature_maps = backbones[OURS](pixel_values).feature_maps
    assert len(feature_maps) == 4
    first_stage_tokens = feature_maps[0].flatten(2).transpose(1, 2)  # stage 1 has one layer in the tiny model
    torch.testing.assert_close(first_stage_tokens, hidden_states[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no backbone class"):
        benchmark.load_implementation(checkpoint, BUILTIN, task="backbone")


def test_time_alternating_alternates_and_times_known_durations():
    calls = []

    def sleeper(name: str, seconds: float):
        def run():
            calls.append(name)
            time.sleep(seconds)

        return run

    durations = {"fast": 0.01, "slow": 0.03}
    timings = benchmark.time_alternating({name: sleeper(name, s) for name, s in durations.items()}, rounds=4)
    assert set(timings) == set(durations)
    for name, timing in timings.items():
        assert len(timing.seconds_per_call) == 4
        assert timing.minimum >= durations[name] * 0.99
        assert timing.median < durations[name] + 0.5
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


def test_targets_report_pass_miss_and_not_measured():
    comparisons = [
        synthetic_comparison("inference", "pvt-small", 8, (224, 224), "float32", [1.0] * 3, BUILTIN, [1.5] * 3),
        synthetic_comparison("inference", "pvt-tiny", 8, (224, 224), "float32", [1.0] * 3, BUILTIN, [1.0] * 3),
        synthetic_comparison("inference", "pvt-small", 8, (224, 224), "bfloat16", [1.0] * 3, BUILTIN, [1.5] * 3),
        synthetic_comparison(
            "backbone", "pvt-small", 1, (800, 1216), "float32", [0.7] * 3, EAGER, [1.0] * 3,
            memory={OURS: (1100.0, 100.0), EAGER: (1900.0, 900.0)},
        ),
    ]
    profiles = [{"implementation": OURS, "variant": "pvt-small", "batch_size": 8, "height": 224, "width": 224,
                 "outside_matmul_percent": 30.0, "outside_matmul_conv_attention_percent": 20.0}]
    rows = benchmark.evaluate_targets(comparisons, profiles, benchmark.BenchmarkPlan())
    assert rows[0]["status"] == "PASS" and rows[0]["measured"] == pytest.approx(1.5)  # pvt-small picked, not tiny
    assert rows[1]["status"] == "MISS"  # bfloat16 needs 2x
    assert rows[2]["status"] == "NOT MEASURED"  # no training step
    assert rows[3]["status"] == "PASS" and rows[3]["measured"] == pytest.approx(100 / 900)
    assert rows[4]["status"] == "PASS" and rows[4]["measured"] == pytest.approx(0.7)
    assert rows[5]["status"] == "MISS" and rows[6]["status"] == "PASS"
    assert rows[7]["status"] == "NOT MEASURED"  # no compile case

    def compile_target(comparison):
        return benchmark.evaluate_targets(comparisons + [comparison], profiles, benchmark.BenchmarkPlan())[7]

    failed = Comparison("compile", "pvt-small", "classification", "inference", 8, 224, 224, error="changed outputs")
    assert compile_target(failed)["status"] == "MISS" and compile_target(failed)["measured_on"] == "changed outputs"
    for compiled_seconds, status in ((1.0, "MISS"), (0.8, "PASS")):  # compiled must be strictly faster
        timed = Comparison("compile", "pvt-small", "classification", "inference", 8, 224, 224, subject=COMPILED)
        timed.record_timings({COMPILED: Timing([compiled_seconds] * 3), OURS: Timing([1.0] * 3)})
        assert compile_target(timed)["status"] == status


def test_profile_accounts_for_the_whole_forward(tiny_models):
    pixel_values = tiny_pixels()
    ours = benchmark.profile_outside_matmul(tiny_models[OURS], pixel_values)
    builtin = benchmark.profile_outside_matmul(tiny_models[BUILTIN], pixel_values)
    for profile in (ours, builtin):
        assert profile["percent_sum"] == pytest.approx(100.0, abs=1.0)
        assert profile["percent"]["gemm"] > 0 and profile["percent"]["convolution"] > 0
        assert profile["outside_matmul_percent"] == pytest.approx(
            profile["percent"]["convolution"] + profile["percent"]["other"]
        )
    assert ours["percent"]["attention"] > 0  # the fused SDPA kernel
    assert builtin["percent"]["attention"] == 0  # the built-in materialises scores and softmax
    assert "aten::_softmax" in {op["name"] for op in builtin["other_operators"]}
    assert "aten::_softmax" not in {op["name"] for op in ours["other_operators"]}

    # A single large matrix product spends most of its time in the GEMM.
    linear = nn.Linear(1024, 1024)
    matmul_profile = benchmark.profile_outside_matmul(linear, torch.randn(1024, 1024))
    assert matmul_profile["percent"]["gemm"] > 50


def test_classify_operator():
    assert benchmark.classify_operator("aten::addmm") == "gemm"
    assert benchmark.classify_operator("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert benchmark.classify_operator("aten::mkldnn_convolution") == "convolution"
    assert benchmark.classify_operator("aten::linear") == "other"  # a wrapper: its self time is overhead
    assert benchmark.classify_operator("aten::gelu") == "other"
    assert benchmark.classify_operator("sm90_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x32") == "gemm"
    assert benchmark.classify_operator("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>") == "attention"


def test_peak_memory_of_a_fresh_process_sees_the_attention_matrix():
    # The eager backbone materialises stage 1's attention: (512/4)^2 queries x (512/16)^2 keys of float32.
    case = {"variant": TEST_VARIANT, "implementation": EAGER, "task": "backbone", "mode": "inference",
            "batch_size": 1, "height": 512, "width": 512, "dtype": "float32", "gradient_checkpointing": False,
            "device": "cpu"}
    memory = benchmark.measure_peak_memory_in_fresh_process(case)
    attention_matrix_mib = (128 * 128) * (32 * 32) * 4 / 2**20
    assert memory["peak_was_reset"]
    assert memory["peak_memory_mib"] >= memory["baseline_mib"] > 0
    assert memory["memory_increase_mib"] >= attention_matrix_mib
    assert memory["peak_memory_mib"] < 8 * 1024


def test_main_writes_table_json_and_plot(tmp_path, capsys):
    exit_code = benchmark.main(
        ["--tiny", "--output_dir", str(tmp_path), "--rounds", "2", "--cases", "resolutions", "profile"]
        + ["--memory_cases"]  # none: the fresh-process worker has its own test
    )
    assert exit_code == 0
    stdout = capsys.readouterr().out
    assert "weight check test-tiny" in stdout and "Targets:" in stdout and "top non-matmul" in stdout

    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["weight_checks"][0]["max_abs_diff_vs_builtin"][OURS] < 1e-4
    native, larger = sorted(report["comparisons"], key=lambda comparison: comparison["height"])
    assert (native["height"], larger["height"]) == (64, 96)
    assert set(native["results"]) == {OURS, EAGER, BUILTIN}
    assert set(larger["results"]) == {OURS, EAGER}  # the built-in only runs at its configured size
    ours, builtin = native["results"][OURS], native["results"][BUILTIN]
    assert len(ours["seconds_per_call"]) == 2
    assert ours["images_per_s"] == pytest.approx(native["batch_size"] / ours["median_s"])
    per_round = [b / a for a, b in zip(ours["seconds_per_call"], builtin["seconds_per_call"])]
    assert native["ratios"][BUILTIN]["speedup"] == pytest.approx(sum(per_round) / 2)
    assert {profile["implementation"] for profile in report["profiles"]} == {OURS, BUILTIN}
    assert len(report["targets"]) == 8

    image = matplotlib.image.imread(tmp_path / "throughput_vs_resolution.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not list(tmp_path.glob(".*partial*"))
