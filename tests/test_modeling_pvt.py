"""Behaviour of the PVT model classes against independent references: the authors' outputs, Transformers'
built-in Pvt, plain PyTorch maths and the paper's numbers."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification
from transformers.testing_utils import CaptureLogger

from configuration_pvt import PvtConfig
from modeling_pvt import PvtBackbone, PvtForImageClassification, PvtLayer, PvtModel
from pvt_tools.official import convert_official_state_dict, parity_failures
from tests.conftest import REPO_ROOT, builtin_tiny_classifier, config_from_official_architecture, tiny_config

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

BACKBONE_FIXTURE_SIZES = ("256x352", "225x301", "97x161")  # a multiple of 32, and two sizes that are not


def classifier_parity_failures(model: PvtForImageClassification, expected: dict) -> list[str]:
    """What differs between the classifier and the authors' logits (see `parity_failures`)."""
    with torch.no_grad():
        logits = model(expected["pixel_values_224"]).logits
    return parity_failures({"logits_224": logits}, {"logits_224": expected["logits_224"]})


def backbone_parity_failures(backbone: PvtBackbone, expected: dict) -> list[str]:
    """What differs between the backbone's four maps and the authors' at every fixture size."""
    outputs, references = {}, {}
    for size in BACKBONE_FIXTURE_SIZES:
        with torch.no_grad():
            feature_maps = backbone(expected[f"pixel_values_{size}"]).feature_maps
        for index in range(1, 5):
            name = f"feature_map_{index}_{size}"
            outputs[name] = feature_maps[index - 1] if index <= len(feature_maps) else None
            references[name] = expected[name]
    return parity_failures(outputs, references)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_classifier_matches_official_logits(official_fixture, attn_implementation):
    model = official_classifier(official_fixture, attn_implementation=attn_implementation)
    assert model.config._attn_implementation == attn_implementation
    assert classifier_parity_failures(model, official_fixture["expected"]) == []


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_backbone_matches_official_feature_maps_at_every_fixture_size(official_fixture, attn_implementation):
    """Four maps at 256x352 and at 225x301 and 97x161 (not multiples of 32: interpolated position embeddings,
    floored grids)."""
    backbone = official_backbone(official_fixture, attn_implementation=attn_implementation)
    assert backbone.config._attn_implementation == attn_implementation
    assert backbone_parity_failures(backbone, official_fixture["expected"]) == []


def test_parity_check_catches_a_one_percent_change_of_one_weight_matrix(official_fixture):
    """The tolerance bites: one stage-2 MLP matrix scaled by 1.01 fails the classifier's and the backbone's check."""
    expected = official_fixture["expected"]
    model = official_classifier(official_fixture)
    backbone = official_backbone(official_fixture)
    with torch.no_grad():
        model.pvt.stages[1].layers[0].mlp.fc1.weight.mul_(1.01)
        backbone.stages[1].layers[0].mlp.fc1.weight.mul_(1.01)
    assert [line.split(":")[0] for line in classifier_parity_failures(model, expected)] == ["logits_224"]
    failed = {line.split(":")[0] for line in backbone_parity_failures(backbone, expected)}
    # stage 1 comes before the change and still agrees; every later map at every size is caught
    assert failed == {f"feature_map_{index}_{size}" for index in (2, 3, 4) for size in BACKBONE_FIXTURE_SIZES}


def test_parity_failures_reports_shape_and_nan():
    reference = torch.ones(2, 3)
    assert parity_failures({"x": reference + 5e-6}, {"x": reference}) == []  # 1e-5 * 1 + 1e-6 = 1.1e-5
    assert parity_failures({"x": reference + 2e-5}, {"x": reference})[0].startswith("x: max |difference| 2.00e-05")
    assert parity_failures({"x": torch.full((2, 3), float("nan"))}, {"x": reference}) != []
    assert parity_failures({"x": torch.ones(3, 2)}, {"x": reference}) == ["x: shape (3, 2), reference (2, 3)"]
    assert parity_failures({}, {"x": reference}) == ["x: shape None, reference (2, 3)"]


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
    assert set(load_file(tmp_path / "ours" / "model.safetensors")) == set(classifier.state_dict())
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


def count_attention_calls(monkeypatch) -> dict[str, int]:
    """Count calls of PyTorch's SDPA kernel and of this model's eager attention from now on."""
    import modeling_pvt

    calls = {"sdpa": 0, "eager": 0}
    sdpa_kernel, eager_forward = torch.nn.functional.scaled_dot_product_attention, modeling_pvt.eager_attention_forward

    def counted_sdpa(*args, **kwargs):
        calls["sdpa"] += 1
        return sdpa_kernel(*args, **kwargs)

    def counted_eager(*args, **kwargs):
        calls["eager"] += 1
        return eager_forward(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted_sdpa)
    monkeypatch.setattr(modeling_pvt, "eager_attention_forward", counted_eager)
    return calls


def test_sdpa_equals_eager(monkeypatch):
    """Without attention outputs the two models really run different attention code, and agree."""
    torch.manual_seed(0)
    sdpa_model = PvtForImageClassification(tiny_config(attn_implementation="sdpa")).eval()
    eager_model = PvtForImageClassification(tiny_config(attn_implementation="eager")).eval()
    eager_model.load_state_dict(sdpa_model.state_dict())
    assert (sdpa_model.config._attn_implementation, eager_model.config._attn_implementation) == ("sdpa", "eager")
    num_layers = sum(sdpa_model.config.depths)
    calls = count_attention_calls(monkeypatch)
    pixel_values = pixels(2, 64, 96)
    with torch.no_grad():
        sdpa_outputs = sdpa_model(pixel_values, output_hidden_states=True)
        assert calls == {"sdpa": num_layers, "eager": 0}
        eager_outputs = eager_model(pixel_values, output_hidden_states=True)
        assert calls == {"sdpa": num_layers, "eager": num_layers}
    assert parity_failures({"logits": sdpa_outputs.logits}, {"logits": eager_outputs.logits}) == []
    for index, (ours, reference) in enumerate(zip(sdpa_outputs.hidden_states, eager_outputs.hidden_states)):
        assert parity_failures({f"hidden_states[{index}]": ours}, {f"hidden_states[{index}]": reference}) == []


def test_attentions_come_from_eager_on_an_sdpa_model(monkeypatch):
    """Only eager attention materialises the weights: asked for them, an sdpa model switches, with equal results."""
    torch.manual_seed(0)
    sdpa_model = PvtForImageClassification(tiny_config(attn_implementation="sdpa")).eval()
    eager_model = PvtForImageClassification(tiny_config(attn_implementation="eager")).eval()
    eager_model.load_state_dict(sdpa_model.state_dict())
    calls = count_attention_calls(monkeypatch)
    pixel_values = pixels(2, 64, 96)
    with torch.no_grad():
        sdpa_outputs = sdpa_model(pixel_values, output_attentions=True)
        eager_outputs = eager_model(pixel_values, output_attentions=True)
    assert calls == {"sdpa": 0, "eager": 2 * sum(sdpa_model.config.depths)}
    torch.testing.assert_close(sdpa_outputs.logits, eager_outputs.logits, atol=0, rtol=0)
    assert len(sdpa_outputs.attentions) == sum(sdpa_model.config.depths)
    for ours, reference in zip(sdpa_outputs.attentions, eager_outputs.attentions):
        torch.testing.assert_close(ours, reference, atol=0, rtol=0)


def test_hidden_state_and_attention_shapes():
    config = tiny_config()
    torch.manual_seed(0)
    model = PvtModel(config).eval()
    with torch.no_grad():  # a final LayerNorm that is not 1 / 0
        model.layernorm.weight.uniform_(0.5, 1.5)
        model.layernorm.bias.uniform_(-0.5, 0.5)
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
    # the final entry is the last layer's output through the final LayerNorm, and is what the model returns
    last_layer_output = outputs.hidden_states[-2]
    final_norm = torch.nn.functional.layer_norm(
        last_layer_output, (64,), model.layernorm.weight, model.layernorm.bias, eps=config.layer_norm_eps
    )
    assert (final_norm - last_layer_output).abs().max() > 0.1  # the norm is not the identity here
    torch.testing.assert_close(outputs.hidden_states[-1], final_norm)
    torch.testing.assert_close(outputs.last_hidden_state, final_norm)
    torch.testing.assert_close(outputs.pooler_output, final_norm[:, 0])
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
        (dict(inference_mlp_chunk_size=-1), "inference_mlp_chunk_size must be a whole number of tokens >= 0"),
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


def test_backbone_loads_a_classifier_checkpoint_quietly_but_reports_a_stray_key(tmp_path):
    """The class token, final norm and classifier are dropped on purpose (`_keys_to_ignore_on_load_unexpected`);
    any other key that fits nowhere is still reported."""
    classifier = PvtForImageClassification(tiny_config())
    classifier.save_pretrained(tmp_path)
    logger = transformers.utils.logging.get_logger("transformers.modeling_utils")

    def load():
        with CaptureLogger(logger) as captured:
            backbone, loading_info = PvtBackbone.from_pretrained(tmp_path, output_loading_info=True)
        return backbone, loading_info, captured.out

    backbone, loading_info, log = load()
    assert loading_info["unexpected_keys"] == set() and loading_info["missing_keys"] == set()
    assert "UNEXPECTED" not in log and "LOAD REPORT" not in log
    torch.testing.assert_close(backbone.stages[3].position_embeddings, classifier.pvt.stages[3].position_embeddings)

    weights = load_file(tmp_path / "model.safetensors")
    assert {"pvt.stages.3.cls_token", "pvt.layernorm.weight", "classifier.weight"} <= set(weights)
    weights["pvt.stages.0.layers.0.attention.qkv.weight"] = torch.zeros(3)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    _, loading_info, log = load()
    assert loading_info["unexpected_keys"] == {"pvt.stages.0.layers.0.attention.qkv.weight"}
    assert "pvt.stages.0.layers.0.attention.qkv.weight | UNEXPECTED" in log and "cls_token" not in log


def test_freeze_stages_keeps_the_first_stages_fixed_through_an_optimizer_step():
    torch.manual_seed(0)
    backbone = PvtBackbone(tiny_config(out_features=ALL_STAGES, hidden_dropout_prob=0.1, drop_path_rate=0.1))
    backbone.freeze_stages(2)
    backbone.train()
    assert [stage.training for stage in backbone.stages] == [False, False, True, True]  # no dropout where frozen
    frozen = {f"stages.{index}." for index in (0, 1)}
    before = {name: parameter.detach().clone() for name, parameter in backbone.named_parameters()}
    assert {name for name, p in backbone.named_parameters() if not p.requires_grad} == {
        name for name in before if name[:9] in frozen
    }
    # weight decay would move even a parameter without gradient, were it handed to the optimizer
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-2, weight_decay=0.1)
    loss = sum(feature_map.square().mean() for feature_map in backbone(pixels(2)).feature_maps)
    loss.backward()
    optimizer.step()
    for name, parameter in backbone.named_parameters():
        if name[:9] in frozen:
            assert parameter.grad is None and torch.equal(parameter, before[name]), name
        else:
            assert not torch.equal(parameter, before[name]), name
    assert {name[:9] for name in before if name[:9] in frozen} == frozen  # patch and position embeddings included
    assert "stages.0.patch_embeddings.projection.weight" in before and "stages.1.position_embeddings" in before


@pytest.mark.parametrize("num_stages", [-1, 5, 1.5, True])
def test_freeze_stages_rejects_a_count_outside_the_stages(num_stages):
    with pytest.raises(ValueError, match="num_stages must be a whole number from 0 to 4"):
        PvtBackbone(tiny_config()).freeze_stages(num_stages)


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


def test_every_parameter_gets_a_finite_nonzero_gradient():
    """Every parameter receives a finite gradient that is not zero, except the key projections' biases: adding
    the same vector to every key shifts all of a query's scores equally, which softmax ignores, so their gradient
    is zero in exact arithmetic (float32 leaves rounding noise)."""
    generator = torch.Generator().manual_seed(1)
    for model in (PvtForImageClassification(tiny_config()), PvtBackbone(tiny_config(out_features=ALL_STAGES))):
        model.train()
        outputs = model(pixels(2))
        results = [outputs.logits] if hasattr(outputs, "logits") else list(outputs.feature_maps)
        loss = sum((result * torch.randn(result.shape, generator=generator)).sum() for result in results)
        loss.backward()
        gradients = {name: parameter.grad for name, parameter in model.named_parameters()}
        assert [name for name, grad in gradients.items() if grad is None] == []
        assert [name for name, grad in gradients.items() if not torch.isfinite(grad).all()] == []
        key_biases = {name for name in gradients if name.endswith("attention.k_proj.bias")}
        assert len(key_biases) == sum(model.config.depths)
        zero = [name for name, grad in gradients.items() if name not in key_biases and not grad.abs().max() > 0]
        assert zero == []
        largest = max(grad.abs().max() for grad in gradients.values())
        for name in key_biases:
            assert gradients[name].abs().max() < 1e-4 * largest, name


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = PvtForImageClassification(tiny_config(drop_path_rate=0.0))
    model.train()
    labels = torch.tensor([1, 3])

    def gradients():
        model.zero_grad()
        model(pixels(2), labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    layer_calls = []  # counted through each layer's attention (checkpointing re-runs the layer's forward itself)
    for layer in (module for module in model.modules() if isinstance(module, PvtLayer)):
        layer.attention.register_forward_hook(lambda *_: layer_calls.append(1))
    reference = gradients()
    assert len(layer_calls) == sum(model.config.depths)
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    layer_calls.clear()
    checkpointed = gradients()
    assert len(layer_calls) == 2 * sum(model.config.depths)  # every layer ran again during the backward pass
    for name, gradient in reference.items():
        torch.testing.assert_close(checkpointed[name], gradient, atol=1e-6, rtol=1e-5, msg=name)


def test_bfloat16_weights_run_and_stay_close_to_float32():
    """model.to(torch.bfloat16) runs in bfloat16 throughout, within bfloat16 precision of float32: bfloat16 keeps
    8 significant bits (rounding error 2**-9 = 0.2% per value, 2**-8 at worst); allowing 4 * 2**-8 (1.6%) of the
    logits' scale covers the rounding that accumulates over the layers (measured: 0.3-0.8%), while a wrong
    computation moves them by far more (the check below also needs the logits to differ across the batch by more
    than ten times that)."""
    torch.manual_seed(0)
    model = PvtForImageClassification(tiny_config()).eval()
    bf16 = PvtForImageClassification(tiny_config()).eval()
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    assert {parameter.dtype for parameter in bf16.parameters()} == {torch.bfloat16}
    pixel_values = pixels(2)
    with torch.no_grad():
        reference = model(pixel_values).logits
        outputs = bf16(pixel_values.to(torch.bfloat16), output_hidden_states=True)
    assert outputs.logits.dtype == torch.bfloat16
    assert {hidden_state.dtype for hidden_state in outputs.hidden_states} == {torch.bfloat16}
    tolerance = 4 * 2**-8 * reference.abs().max().item()
    assert (reference[0] - reference[1]).abs().max() > 10 * tolerance
    assert (outputs.logits.float() - reference).abs().max() <= tolerance


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


def test_saved_config_names_every_auto_class_and_saving_leaves_the_config_alone(tmp_path):
    model = PvtBackbone(tiny_config(out_features=["stage2", "stage4"]))
    before = model.config.to_dict()
    model.save_pretrained(tmp_path / "first")
    model.save_pretrained(tmp_path / "second")
    after = model.config.to_dict()
    # Transformers' save_pretrained stamps these two on every model's config; nothing else may change
    stamped = {"architectures": ["PvtBackbone"], "dtype": "float32"}
    assert {key: after[key] for key in stamped} == stamped
    assert {key: value for key, value in after.items() if key not in stamped} == {
        key: value for key, value in before.items() if key not in stamped
    }
    assert json.loads((tmp_path / "first" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_pvt.PvtConfig",
        "AutoModel": "modeling_pvt.PvtModel",
        "AutoModelForImageClassification": "modeling_pvt.PvtForImageClassification",
        "AutoBackbone": "modeling_pvt.PvtBackbone",
    }
    assert (tmp_path / "first" / "config.json").read_text() == (tmp_path / "second" / "config.json").read_text()


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


def test_chunked_mlp_computes_the_same_as_the_whole_mlp():
    """The MLP runs over chunks of the sequence with `chunk_size_feed_forward` (always) or `inference_mlp_chunk_size`
    (default 2048 tokens, only without gradients), and then gives the outputs of the MLP run in one piece."""
    torch.manual_seed(0)
    whole = PvtForImageClassification(tiny_config(inference_mlp_chunk_size=0)).eval()
    by_feed_forward_chunks = PvtForImageClassification(tiny_config(chunk_size_feed_forward=7)).eval()
    by_default = PvtForImageClassification(tiny_config()).eval()
    assert by_default.config.inference_mlp_chunk_size == 2048 and by_default.config.chunk_size_feed_forward == 0
    for model in (by_feed_forward_chunks, by_default):
        model.load_state_dict(whole.state_dict())
    pixel_values = pixels(2, 160, 256)  # 40 x 64 = 2560 stage-1 tokens per image: two default chunks

    def run(model, with_gradients: bool):
        mlp_calls = [0] * len(model.pvt.stages)
        for index, stage in enumerate(model.pvt.stages):
            for layer in stage.layers:
                layer.mlp.register_forward_hook(
                    lambda *_, index=index: mlp_calls.__setitem__(index, mlp_calls[index] + 1)
                )
        with torch.set_grad_enabled(with_gradients):
            outputs = model(pixel_values, output_hidden_states=True)
        return outputs, mlp_calls

    depths = whole.config.depths
    reference, calls = run(whole, with_gradients=False)
    assert calls == depths
    tokens_per_stage = [40 * 64, 20 * 32, 10 * 16, 5 * 8 + 1]
    for model, with_gradients, chunk_size in (
        (by_feed_forward_chunks, True, 7),
        (by_feed_forward_chunks, False, 7),
        (by_default, False, 2048),
    ):
        outputs, calls = run(model, with_gradients)
        assert calls == [depth * -(-tokens // chunk_size) for depth, tokens in zip(depths, tokens_per_stage)]
        assert len(outputs.hidden_states) == len(reference.hidden_states)
        for index, (ours, theirs) in enumerate(zip(outputs.hidden_states, reference.hidden_states)):
            assert parity_failures({f"hidden_states[{index}]": ours}, {f"hidden_states[{index}]": theirs}) == []
        assert parity_failures({"logits": outputs.logits}, {"logits": reference.logits}) == []
    # with gradients the default runs the MLP whole: chunks would save nothing, backward keeps every activation
    _, calls = run(by_default, with_gradients=True)
    assert calls == depths
