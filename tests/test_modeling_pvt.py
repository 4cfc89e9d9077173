"""Behaviour of the PVT model classes against independent references: the authors' outputs, Transformers'
built-in Pvt, plain PyTorch maths and the paper's numbers."""

import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from tests.conftest import REPO_ROOT, config_from_official_architecture, tiny_config
from pvt_tools.official import convert_official_state_dict
from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

from configuration_pvt import PvtConfig
from modeling_pvt import PvtBackbone, PvtForImageClassification, PvtModel

ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def pixels(batch_size=2, height=64, width=64, seed=0) -> torch.Tensor:
    return torch.randn(batch_size, 3, height, width, generator=torch.Generator().manual_seed(seed))


def official_classifier(official_fixture, **config_overrides) -> PvtForImageClassification:
    config = config_from_official_architecture(official_fixture["architecture"], **config_overrides)
    model = PvtForImageClassification(config).eval()
    model.load_state_dict(convert_official_state_dict(official_fixture["state_dict"]), strict=True)
    return model


def official_backbone(official_fixture, **config_overrides) -> PvtBackbone:
    config = config_from_official_architecture(
        official_fixture["architecture"], out_features=ALL_STAGES, **config_overrides
    )
    backbone = PvtBackbone(config).eval()
    weights = convert_official_state_dict(official_fixture["state_dict"])
    weights = {key.removeprefix("pvt."): value for key, value in weights.items() if key.startswith("pvt.stages")}
    del weights["stages.3.cls_token"]  # the official detection backbone has no class token
    backbone.load_state_dict(weights, strict=True)
    return backbone


# --- numerical fidelity with the authors' code ---------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_classifier_matches_official_logits(official_fixture, attn_implementation):
    model = official_classifier(official_fixture, attn_implementation=attn_implementation)
    expected = official_fixture["expected"]
    with torch.no_grad():
        logits = model(expected["pixel_values_224"]).logits
    torch.testing.assert_close(logits, expected["logits_224"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_backbone_matches_official_feature_maps_at_non_native_size(official_fixture, attn_implementation):
    backbone = official_backbone(official_fixture, attn_implementation=attn_implementation)
    expected = official_fixture["expected"]
    with torch.no_grad():
        feature_maps = backbone(expected["pixel_values_256x352"]).feature_maps
    assert len(feature_maps) == 4
    for index, feature_map in enumerate(feature_maps, start=1):
        torch.testing.assert_close(feature_map, expected[f"feature_map_{index}_256x352"], atol=1e-4, rtol=0)


def test_classifier_trunk_equals_backbone_at_other_sizes(official_fixture):
    """Stages 1-3 are shared by the two official models, so at any size they must agree exactly."""
    model = official_classifier(official_fixture)
    backbone = official_backbone(official_fixture)
    pixel_values = pixels(1, 96, 160)
    with torch.no_grad():
        hidden_states = model(pixel_values, output_hidden_states=True).hidden_states
        feature_maps = backbone(pixel_values).feature_maps
    last_layer_of_stage3 = sum(model.config.depths[:3]) - 1
    stage3_tokens = feature_maps[2].flatten(2).transpose(1, 2)
    torch.testing.assert_close(hidden_states[last_layer_of_stage3], stage3_tokens, atol=1e-5, rtol=0)


# --- Transformers' built-in Pvt checkpoints -----------------------------------------------------------------


def builtin_tiny_classifier() -> transformers.PvtForImageClassification:
    config = transformers.PvtConfig(
        image_size=64,
        hidden_sizes=[16, 32, 40, 64],
        depths=[1, 1, 2, 1],
        num_attention_heads=[1, 2, 2, 4],
        mlp_ratios=[2, 2, 2, 2],
        num_labels=5,
    )
    torch.manual_seed(0)
    model = transformers.PvtForImageClassification(config).eval()
    with torch.no_grad():  # make every LayerNorm matter
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def test_builtin_checkpoint_loads_into_every_class_with_identical_outputs(tmp_path):
    builtin = builtin_tiny_classifier()
    builtin.save_pretrained(tmp_path / "builtin")
    pixel_values = pixels(2, 64, 64)
    with torch.no_grad():
        expected = builtin(pixel_values, output_hidden_states=True)

        classifier = PvtForImageClassification.from_pretrained(tmp_path / "builtin").eval()
        outputs = classifier(pixel_values, output_hidden_states=True)
        torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-5, rtol=0)
        assert len(outputs.hidden_states) == len(expected.hidden_states)
        for ours, theirs in zip(outputs.hidden_states, expected.hidden_states):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)

        base, loading_info = PvtModel.from_pretrained(tmp_path / "builtin", output_loading_info=True)
        assert loading_info["missing_keys"] == set() and not loading_info["mismatched_keys"]
        base.eval()
        torch.testing.assert_close(base(pixel_values).last_hidden_state, expected.hidden_states[-1], atol=1e-5, rtol=0)

        backbone = PvtBackbone.from_pretrained(tmp_path / "builtin", out_features=ALL_STAGES).eval()
        stage3_tokens = backbone(pixel_values).feature_maps[2].flatten(2).transpose(1, 2)
        torch.testing.assert_close(stage3_tokens, expected.hidden_states[3], atol=1e-5, rtol=0)

    # Saved again, it is a checkpoint in our own layout that loads without any renaming.
    classifier.save_pretrained(tmp_path / "ours")
    reloaded = PvtForImageClassification.from_pretrained(tmp_path / "ours").eval()
    assert reloaded.config.model_type == "pvt_v1"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, expected.logits, atol=1e-5, rtol=0)


def test_builtin_config_json_loads_unchanged():
    builtin = transformers.PvtConfig(depths=[2, 3, 4, 2], hidden_sizes=[32, 64, 160, 256], num_labels=7)
    config = PvtConfig.from_dict(builtin.to_dict())
    for field in ("depths", "hidden_sizes", "num_attention_heads", "sequence_reduction_ratios", "mlp_ratios"):
        assert getattr(config, field) == list(getattr(builtin, field))
    assert config.num_labels == 7
    # the built-in normalises with layer_norm_eps everywhere, and so does a config read from it
    assert config.patch_embedding_layer_norm_eps == config.sequence_reduction_layer_norm_eps == builtin.layer_norm_eps


# --- attention implementations and outputs -------------------------------------------------------------------


def test_sdpa_equals_eager_and_attentions_come_from_eager():
    torch.manual_seed(0)
    sdpa_model = PvtForImageClassification(tiny_config(attn_implementation="sdpa")).eval()
    eager_model = PvtForImageClassification(tiny_config(attn_implementation="eager")).eval()
    eager_model.load_state_dict(sdpa_model.state_dict())
    assert sdpa_model.config._attn_implementation == "sdpa"
    pixel_values = pixels(2, 64, 96)
    with torch.no_grad():
        sdpa_outputs = sdpa_model(pixel_values, output_attentions=True)
        eager_outputs = eager_model(pixel_values, output_attentions=True)
    torch.testing.assert_close(sdpa_outputs.logits, eager_outputs.logits, atol=1e-5, rtol=1e-5)
    assert all(attention is not None for attention in sdpa_outputs.attentions)
    for ours, reference in zip(sdpa_outputs.attentions, eager_outputs.attentions):
        torch.testing.assert_close(ours, reference)


def test_hidden_state_and_attention_shapes():
    config = tiny_config()
    model = PvtModel(config).eval()
    height, width = 64, 96
    with torch.no_grad():
        outputs = model(pixels(2, height, width), output_hidden_states=True, output_attentions=True)
    grids = [
        (height // 4, width // 4),
        (height // 8, width // 8),
        (height // 16, width // 16),
        (height // 32, width // 32),
    ]
    expected_hidden, expected_attention = [], []
    for stage, ((grid_h, grid_w), hidden_size, ratio, heads, depth) in enumerate(
        zip(grids, config.hidden_sizes, config.sequence_reduction_ratios, config.num_attention_heads, config.depths)
    ):
        tokens = grid_h * grid_w + (stage == 3)
        keys = (grid_h // ratio) * (grid_w // ratio) + (stage == 3)
        expected_hidden += [(2, tokens, hidden_size)] * depth
        expected_attention += [(2, heads, tokens, keys)] * depth
    expected_hidden.append((2, grids[-1][0] * grids[-1][1] + 1, config.hidden_sizes[-1]))
    assert [tuple(h.shape) for h in outputs.hidden_states] == expected_hidden
    assert [tuple(a.shape) for a in outputs.attentions] == expected_attention
    torch.testing.assert_close(outputs.hidden_states[-1], outputs.last_hidden_state)
    torch.testing.assert_close(outputs.pooler_output, outputs.last_hidden_state[:, 0])
    # attention rows are probability distributions
    torch.testing.assert_close(outputs.attentions[0].sum(-1), torch.ones(outputs.attentions[0].shape[:-1]))


def test_return_dict_false_gives_tuples():
    model = PvtForImageClassification(tiny_config()).eval()
    with torch.no_grad():
        as_dict = model(pixels(), output_hidden_states=True)
        as_tuple = model(pixels(), output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.logits)
    assert len(as_tuple[1]) == len(as_dict.hidden_states)


# --- input sizes and bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(32, 32), (37, 61), (64, 128), (97, 33), (224, 160)])
def test_any_size_from_32_pixels(height, width):
    torch.manual_seed(0)
    model = PvtForImageClassification(tiny_config()).eval()
    backbone = PvtBackbone(tiny_config(out_features=ALL_STAGES)).eval()
    backbone.load_state_dict(model.pvt.state_dict(), strict=False)
    pixel_values = pixels(2, height, width)
    with torch.no_grad():
        logits = model(pixel_values).logits
        feature_maps = backbone(pixel_values).feature_maps
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    for feature_map, stride, channels in zip(feature_maps, (4, 8, 16, 32), backbone.channels):
        assert feature_map.shape == (2, channels, height // stride, width // stride)  # floors as the official code


def test_position_embeddings_untouched_at_native_size_and_bilinear_elsewhere():
    model = PvtModel(tiny_config()).eval()
    stage = model.stages[1]  # native grid 8x8 for 64-pixel images
    table = stage.position_embeddings
    assert stage.interpolate_pos_encoding(8, 8).data_ptr() == table.data_ptr()
    grid = table.reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(5, 12), mode="bilinear").flatten(2).transpose(1, 2)
    torch.testing.assert_close(stage.interpolate_pos_encoding(5, 12), expected)


def test_large_detection_input_on_backbone():
    backbone = PvtBackbone(tiny_config(out_features=ALL_STAGES)).eval()
    with torch.no_grad():
        feature_maps = backbone(pixels(1, 800, 1216)).feature_maps
    assert [tuple(f.shape[-2:]) for f in feature_maps] == [(200, 304), (100, 152), (50, 76), (25, 38)]


def test_too_small_input_names_the_minimum():
    model = PvtModel(tiny_config())
    with pytest.raises(ValueError, match="at least 32x32"):
        model(pixels(1, 31, 64))
    with pytest.raises(ValueError, match="at least 32x32"):
        PvtBackbone(tiny_config())(pixels(1, 64, 16))


def test_wrong_channel_count_names_the_expected_count():
    model = PvtForImageClassification(tiny_config())
    with pytest.raises(ValueError, match="1 channels but the model expects 3"):
        model(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(depths=[1, 1, 1]), "depths"),
        (dict(hidden_sizes=[16, 32, 40]), "hidden_sizes"),
        (dict(num_attention_heads=[1, 2, 3, 4]), "hidden_sizes\\[2\\]=40 is not divisible by num_attention_heads"),
        (dict(depths=[1, 0, 1, 1]), "depths must hold positive"),
        (dict(mlp_ratios=[2, 2, 0, 2]), "mlp_ratios must hold positive"),
        (dict(sequence_reduction_ratios=[4, 2, -1, 1]), "sequence_reduction_ratios must hold positive"),
        (dict(sequence_reduction_type="stride"), "sequence_reduction_type must be one of"),
        (dict(sequence_reduction_ratios=[4, 2, 2, 2]), "sequence_reduction_ratios\\[-1\\] must be 1"),
    ],
)
def test_invalid_config_fails_at_construction(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_unknown_variant_lists_the_variants():
    with pytest.raises(ValueError, match="pvt-tiny"):
        PvtConfig.from_variant("pvt-huge")


# --- the paper's models ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, millions", [("pvt-tiny", 13.2), ("pvt-small", 24.5), ("pvt-medium", 44.2), ("pvt-large", 61.4)]
)
def test_paper_parameter_counts(variant, millions):
    with torch.device("meta"):
        model = PvtForImageClassification(PvtConfig.from_variant(variant))
    count = sum(parameter.numel() for parameter in model.parameters())
    assert round(count / 1e6, 1) == millions


# --- heads -----------------------------------------------------------------------------------------------------


def test_losses_for_every_problem_type():
    torch.manual_seed(0)
    pixel_values = pixels(3)
    model = PvtForImageClassification(tiny_config()).eval()
    labels = torch.tensor([0, 4, 2])
    outputs = model(pixel_values, labels=labels)
    torch.testing.assert_close(outputs.loss, torch.nn.functional.cross_entropy(outputs.logits, labels))
    assert model.config.problem_type == "single_label_classification"

    model.config.problem_type = "multi_label_classification"
    multi_hot = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.float)
    outputs = model(pixel_values, labels=multi_hot)
    torch.testing.assert_close(
        outputs.loss, torch.nn.functional.binary_cross_entropy_with_logits(outputs.logits, multi_hot)
    )

    regressor = PvtForImageClassification(tiny_config(num_labels=1)).eval()
    targets = torch.tensor([0.5, -1.0, 2.0])
    outputs = regressor(pixel_values, labels=targets)
    torch.testing.assert_close(outputs.loss, torch.nn.functional.mse_loss(outputs.logits.squeeze(-1), targets))


def test_batch_of_one_equals_slice_of_batch():
    model = PvtForImageClassification(tiny_config()).eval()
    pixel_values = pixels(2)
    with torch.no_grad():
        batched = model(pixel_values).logits
        single = model(pixel_values[1:]).logits
    torch.testing.assert_close(single, batched[1:], atol=1e-5, rtol=1e-5)


# --- backbone ---------------------------------------------------------------------------------------------------


def test_backbone_out_features_and_channels():
    backbone = PvtBackbone(tiny_config(out_features=["stage2", "stage4"])).eval()
    assert backbone.channels == [32, 64]
    assert backbone.out_indices == [1, 3]
    with torch.no_grad():
        outputs = backbone(pixels(1, 64, 96))
    assert [tuple(f.shape) for f in outputs.feature_maps] == [(1, 32, 8, 12), (1, 64, 2, 3)]
    assert outputs.hidden_states is None
    assert "cls_token" not in dict(backbone.named_parameters()).keys()
    default = PvtBackbone(tiny_config())
    assert default.out_features == ["stage4"]


def test_backbone_hidden_states_on_request():
    backbone = PvtBackbone(tiny_config(out_features=ALL_STAGES)).eval()
    with torch.no_grad():
        outputs = backbone(pixels(1), output_hidden_states=True)
    assert len(outputs.hidden_states) == sum(backbone.config.depths)


# --- sequence reduction variants --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reduction, pool", [("avg_pool", torch.nn.functional.avg_pool2d), ("max_pool", torch.nn.functional.max_pool2d)]
)
def test_pooling_sequence_reduction_is_pool_then_linear_then_norm(reduction, pool):
    torch.manual_seed(0)
    model = PvtModel(tiny_config(sequence_reduction_type=reduction)).eval()
    attention = model.stages[0].layers[0].attention
    reduction_module = attention.sequence_reduction
    assert isinstance(reduction_module.projection, torch.nn.Linear)
    tokens = torch.randn(2, 16 * 12, 16)
    feature_map = tokens.transpose(1, 2).reshape(2, 16, 16, 12)
    pooled = pool(feature_map, 4, 4).flatten(2).transpose(1, 2)
    expected = torch.nn.functional.layer_norm(
        reduction_module.projection(pooled),
        (16,),
        reduction_module.layer_norm.weight,
        reduction_module.layer_norm.bias,
        eps=model.config.sequence_reduction_layer_norm_eps,
    )
    torch.testing.assert_close(reduction_module(tokens, 16, 12), expected)
    with torch.no_grad():
        assert model(pixels(1, 64, 96)).last_hidden_state.shape == (1, 7, 64)


# --- training behaviour ----------------------------------------------------------------------------------------


def test_every_parameter_gets_a_gradient():
    for model in (PvtForImageClassification(tiny_config()), PvtBackbone(tiny_config(out_features=ALL_STAGES))):
        model.train()
        outputs = model(pixels(2))
        loss = outputs.logits.sum() if hasattr(outputs, "logits") else sum(f.sum() for f in outputs.feature_maps)
        loss.backward()
        missing = [name for name, p in model.named_parameters() if p.grad is None]
        assert missing == []


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = PvtForImageClassification(tiny_config(drop_path_rate=0.0))
    model.train()
    labels = torch.tensor([1, 3])

    def gradients():
        model.zero_grad()
        model(pixels(2), labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    reference = gradients()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checkpointed = gradients()
    for name, gradient in reference.items():
        torch.testing.assert_close(checkpointed[name], gradient, atol=1e-6, rtol=1e-5, msg=name)


def test_bfloat16_weights_run_and_stay_close_to_float32():
    torch.manual_seed(0)
    model = PvtForImageClassification(tiny_config()).eval()
    bf16 = PvtForImageClassification(tiny_config()).eval()
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    pixel_values = pixels(2)
    with torch.no_grad():
        reference = model(pixel_values).logits
        logits = bf16(pixel_values.to(torch.bfloat16)).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.05)


def test_official_initialisation():
    torch.manual_seed(0)
    model = PvtForImageClassification(PvtConfig.from_variant("pvt-tiny"))
    weight = model.pvt.stages[2].layers[0].mlp.fc1.weight
    assert abs(weight.std().item() - 0.0188) < 0.002  # trunc_normal(std=0.02) cut at +-2 has std 0.0176..0.02
    assert weight.abs().max().item() <= 2.0
    assert torch.count_nonzero(model.pvt.stages[2].layers[0].mlp.fc1.bias) == 0
    position_embeddings = model.pvt.stages[0].position_embeddings
    assert 0.015 < position_embeddings.std().item() < 0.021
    norm = model.pvt.stages[0].layers[0].layer_norm_1
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert 0.015 < model.pvt.stages[3].cls_token.std().item() < 0.03


# --- saving, loading, Auto classes and remote code ---------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    model = PvtForImageClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    saved = sorted(path.name for path in tmp_path.iterdir())
    assert saved == ["config.json", "configuration_pvt.py", "model.safetensors", "modeling_pvt.py"]
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.auto_map["AutoModelForImageClassification"] == "modeling_pvt.PvtForImageClassification"
    assert config.auto_map["AutoBackbone"] == "modeling_pvt.PvtBackbone"
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is PvtForImageClassification
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels()).logits, model(pixels()).logits)


def test_auto_classes_build_our_models():
    config = tiny_config()
    assert type(AutoConfig.for_model("pvt_v1")) is PvtConfig
    assert type(AutoModel.from_config(config)) is PvtModel
    assert type(AutoModelForImageClassification.from_config(config)) is PvtForImageClassification
    assert type(AutoBackbone.from_config(config)) is PvtBackbone


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    # Hide an editable install of this project, if any: this process plays a machine without it.
    sys.meta_path[:] = [finder for finder in sys.meta_path if "__editable__" not in getattr(finder, "__module__", "")]
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder).lower()]
    import torch
    from transformers import AutoModel, AutoModelForImageClassification
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    try:
        import modeling_pvt
    except ImportError:
        pass
    else:
        raise SystemExit("the project is importable here; the test would prove nothing")
    model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    # AutoBackbone.from_pretrained cannot open local folders in Transformers 5.24 (it asks the Hub whether the
    # repo exists); the backbone class comes from the same remote module.
    backbone_class = get_class_from_dynamic_module("modeling_pvt.PvtBackbone", sys.argv[1])
    backbone = backbone_class.from_pretrained(sys.argv[1], out_features=["stage1", "stage4"])
    for loaded in (model, base, backbone):
        assert type(loaded).__module__.startswith("transformers_modules"), type(loaded).__module__
    torch.testing.assert_close(backbone.stages[0].position_embeddings, base.stages[0].position_embeddings)
    pixel_values = torch.load(sys.argv[2], weights_only=True)
    with torch.no_grad():
        torch.save(model(pixel_values).logits, sys.argv[3])
    print(backbone.channels)
    """
)


def test_remote_code_loads_where_the_project_is_not_installed(tmp_path):
    model = PvtForImageClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path / "repo")
    pixel_values = pixels()
    torch.save(pixel_values, tmp_path / "pixels.pt")
    script = tmp_path / "load.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    env = {
        "PATH": "/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "PYTHONNOUSERSITE": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            str(script),
            str(tmp_path / "repo"),
            str(tmp_path / "pixels.pt"),
            str(tmp_path / "out.pt"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[16, 64]"
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), model(pixel_values).logits)


def test_model_files_import_only_torch_and_transformers():
    import ast

    for name in ("configuration_pvt.py", "modeling_pvt.py"):
        tree = ast.parse((REPO_ROOT / name).read_text())
        roots = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
        assert roots <= {
            "torch",
            "transformers",
            "huggingface_hub",
            "contextlib",
            "math",
            "collections",
            "configuration_pvt",
        }, roots


def test_bfloat16_autocast_emulation_matches_pytorchs_bfloat16_kernels(monkeypatch):
    """On CPUs without bfloat16 instructions the model multiplies bfloat16-rounded operands in float32: same
    dtypes, same numbers (to bfloat16 rounding) as PyTorch's own, much slower, bfloat16 kernels."""
    import modeling_pvt

    torch.manual_seed(0)
    model = PvtForImageClassification(tiny_config()).eval()
    pixel_values = pixels(2, 64, 96)

    def run(emulate: bool):
        monkeypatch.setattr(modeling_pvt, "CPU_HAS_BFLOAT16_MATMUL", not emulate)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert modeling_pvt.emulates_bfloat16(pixel_values) is emulate
            return model(pixel_values, output_hidden_states=True)

    native, emulated = run(emulate=False), run(emulate=True)
    assert emulated.logits.dtype == native.logits.dtype == torch.bfloat16
    assert [h.dtype for h in emulated.hidden_states] == [h.dtype for h in native.hidden_states]
    torch.testing.assert_close(emulated.logits.float(), native.logits.float(), atol=0.05, rtol=0.02)

    # and it trains: gradients reach every parameter in float32
    monkeypatch.setattr(modeling_pvt, "CPU_HAS_BFLOAT16_MATMUL", False)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(pixel_values, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_torch_compile_fullgraph_gives_the_same_outputs():
    """No graph breaks in the forward (fullgraph=True would raise), and the compiled model computes the same."""
    torch.manual_seed(0)
    model = PvtForImageClassification(tiny_config()).eval()
    backbone = PvtBackbone(tiny_config(out_features=ALL_STAGES)).eval()
    pixel_values = pixels(2, 64, 96)
    with torch.no_grad():
        logits = torch.compile(model, fullgraph=True)(pixel_values).logits
        torch.testing.assert_close(logits, model(pixel_values).logits, atol=1e-5, rtol=1e-5)
        compiled_maps = torch.compile(backbone, fullgraph=True)(pixel_values).feature_maps
        for compiled, eager in zip(compiled_maps, backbone(pixel_values).feature_maps):
            torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_pip_install_provides_both_modules(tmp_path):
    """`pip install .` installs configuration_pvt and modeling_pvt as top-level modules, the pvt_tools package and
    its console commands (nothing else of ours)."""
    target = tmp_path / "site"
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
    ours = sorted(
        path.name
        for path in target.iterdir()
        if path.suffix == ".py"
        or path.is_dir()
        and path.name != "__pycache__"
        and not path.name.endswith(".dist-info")
        and path.name != "bin"
    )
    assert ours == ["configuration_pvt.py", "modeling_pvt.py", "pvt_tools"]
    assert (target / "bin" / "pvt-train").is_file()
    assert (target / "pvt_tools" / "training" / "metrics" / "top_k_accuracy" / "top_k_accuracy.py").is_file()
    check = textwrap.dedent(
        f"""
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, {str(target)!r})
        import modeling_pvt
        from transformers import AutoConfig
        assert modeling_pvt.__file__.startswith({str(target)!r}), modeling_pvt.__file__
        print(type(AutoConfig.for_model("pvt_v1")).__module__)
        """
    )
    result = subprocess.run([sys.executable, "-I", "-c", check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "configuration_pvt"


def test_chunked_feed_forward_computes_the_same():
    """The MLP is token-wise: over chunks (`chunk_size_feed_forward`, or by default at inference) or in one piece,
    the numbers are the same."""
    torch.manual_seed(0)
    whole = PvtForImageClassification(tiny_config(chunk_size_feed_forward=10**9)).eval()
    chunked = PvtForImageClassification(tiny_config(chunk_size_feed_forward=7)).eval()
    default = PvtForImageClassification(tiny_config()).eval()  # chunks of INFERENCE_MLP_CHUNK_TOKENS without gradients
    chunked.load_state_dict(whole.state_dict())
    default.load_state_dict(whole.state_dict())
    pixel_values = pixels(2, 160, 256)  # 2 x 2560 stage-1 tokens: more than one default chunk
    reference = whole(pixel_values, output_hidden_states=True)
    with torch.no_grad():
        for model in (chunked, default):
            outputs = model(pixel_values, output_hidden_states=True)
            for ours, theirs in zip(outputs.hidden_states, reference.hidden_states):
                torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
