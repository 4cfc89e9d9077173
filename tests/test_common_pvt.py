"""Transformers' own common model checks (ModelTesterMixin, BackboneTesterMixin, ConfigTester), the bar every
built-in model meets, run against the PVT classes. The mixins come from the transformers source distribution of the
installed version, fetched and cached by tests/transformers_tests.py (skipped, or failed in CI, when it cannot be
had)."""

import unittest

import torch
from transformers.testing_utils import torch_device

from configuration_pvt import PvtConfig
from modeling_pvt import PvtBackbone, PvtForImageClassification, PvtModel
from tests.transformers_tests import import_common_tests_or_skip

modeling_common, backbone_common, configuration_common = import_common_tests_or_skip()
ModelTesterMixin, floats_tensor, ids_tensor = (
    modeling_common.ModelTesterMixin,
    modeling_common.floats_tensor,
    modeling_common.ids_tensor,
)
BackboneTesterMixin = backbone_common.BackboneTesterMixin
ConfigTester = configuration_common.ConfigTester


class PvtModelTester:
    def __init__(self, parent, batch_size=2, image_size=64, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.num_channels = 3
        self.is_training = is_training
        self.hidden_sizes = [16, 32, 40, 64]
        self.depths = [1, 1, 1, 1]
        self.num_attention_heads = [1, 2, 2, 4]
        self.sequence_reduction_ratios = [4, 2, 2, 1]
        self.num_labels = 3
        self.out_features = ["stage1", "stage2", "stage3", "stage4"]
        # The common checks count layers by this attribute.
        self.num_hidden_layers = sum(self.depths)

    def get_config(self) -> PvtConfig:
        return PvtConfig(
            image_size=self.image_size,
            num_channels=self.num_channels,
            hidden_sizes=self.hidden_sizes,
            depths=self.depths,
            num_attention_heads=self.num_attention_heads,
            sequence_reduction_ratios=self.sequence_reduction_ratios,
            mlp_ratios=[2, 2, 2, 2],
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            num_labels=self.num_labels,
            out_features=self.out_features,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}

    def create_and_check_model(self, config, pixel_values, labels):
        model = PvtModel(config).to(torch_device).eval()
        with torch.no_grad():
            result = model(pixel_values)
        last_grid = (self.image_size // 32) ** 2
        self.parent.assertEqual(result.last_hidden_state.shape, (self.batch_size, last_grid + 1, self.hidden_sizes[-1]))

    def create_and_check_for_image_classification(self, config, pixel_values, labels):
        model = PvtForImageClassification(config).to(torch_device).eval()
        with torch.no_grad():
            result = model(pixel_values, labels=labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels))
        self.parent.assertTrue(torch.isfinite(result.loss))

    def create_and_check_backbone(self, config, pixel_values, labels):
        model = PvtBackbone(config).to(torch_device).eval()
        with torch.no_grad():
            result = model(pixel_values)
        self.parent.assertEqual(len(result.feature_maps), 4)
        for feature_map, channels, stride in zip(result.feature_maps, self.hidden_sizes, (4, 8, 16, 32)):
            side = self.image_size // stride
            self.parent.assertEqual(feature_map.shape, (self.batch_size, channels, side, side))
        self.parent.assertEqual(model.channels, self.hidden_sizes)


class PvtConfigTest(unittest.TestCase):
    def test_config(self):
        ConfigTester(
            self,
            config_class=PvtConfig,
            has_text_modality=False,
            common_properties=["hidden_sizes", "num_attention_heads", "num_encoder_blocks", "num_channels"],
            hidden_sizes=[16, 32, 40, 64],
        ).run_common_tests()


class PvtModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (PvtModel, PvtForImageClassification)
    test_resize_embeddings = False
    has_attentions = True
    test_torch_exportable = True

    def setUp(self):
        self.model_tester = PvtModelTester(self)

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    def test_for_image_classification(self):
        self.model_tester.create_and_check_for_image_classification(*self.model_tester.prepare_config_and_inputs())

    def test_hidden_states_output(self):
        """Every layer's output tokens, then the final normalised output (the built-in Pvt's meaning)."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**inputs_dict, output_hidden_states=True)
            self.assertEqual(len(outputs.hidden_states), self.model_tester.num_hidden_layers + 1)
            first_grid = (self.model_tester.image_size // 4) ** 2
            self.assertEqual(outputs.hidden_states[0].shape[1:], (first_grid, self.model_tester.hidden_sizes[0]))

    def test_attention_outputs(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**inputs_dict, output_attentions=True)
            self.assertEqual(len(outputs.attentions), self.model_tester.num_hidden_layers)
            queries = (self.model_tester.image_size // 4) ** 2
            keys = queries // self.model_tester.sequence_reduction_ratios[0] ** 2
            self.assertEqual(outputs.attentions[0].shape[1:], (1, queries, keys))

    def test_model_get_set_embeddings(self):
        """Vision variant of the common check: the input embedding is the first patch projection; no output
        embedding to tie."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            embeddings = model.get_input_embeddings()
            self.assertIsInstance(embeddings.projection, torch.nn.Conv2d)
            self.assertEqual(embeddings.projection.in_channels, config.num_channels)
            self.assertIsNone(model.get_output_embeddings())

    def test_num_layers_is_small(self):
        """The common check allows 2 layers; PVT has 4 stages of at least one layer: the models built from the
        tester's config must have that minimum, one layer per stage, and nothing more."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            layers_per_stage = [len(stage.layers) for stage in model.base_model.stages]
            self.assertEqual(layers_per_stage, [1] * config.num_encoder_blocks)
            self.assertEqual(config.num_hidden_layers, config.num_encoder_blocks)


class PvtBackboneTest(BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (PvtBackbone,)
    has_attentions = True
    config_class = PvtConfig

    def setUp(self):
        self.model_tester = PvtModelTester(self)

    def test_config(self):
        """The common check with PVT's stage names: four stages, no stem (as the upstream PvtV2 backbone test)."""
        config = PvtConfig()
        self.assertEqual(config.stage_names, ["stage1", "stage2", "stage3", "stage4"])
        self.assertEqual(PvtConfig(out_features=None, out_indices=None).out_features, ["stage4"])
        config = PvtConfig(out_features=["stage1", "stage2"], out_indices=[0, 1])
        self.assertEqual((config.out_features, config.out_indices), (["stage1", "stage2"], [0, 1]))
        config = PvtConfig(out_features=["stage2", "stage4"])
        self.assertEqual(config.out_indices, [1, 3])
        config = PvtConfig(out_indices=[0, 2])
        self.assertEqual(config.out_features, ["stage1", "stage3"])
        config = PvtConfig(out_indices=[-2, -1])
        self.assertEqual(config.out_features, ["stage3", "stage4"])
        with self.assertRaises(ValueError):
            PvtConfig(out_features=["stage1", "stage2"], out_indices=[0, 2])
        with self.assertRaises(ValueError):
            PvtConfig(out_features=["stem"])

    def test_backbone(self):
        self.model_tester.create_and_check_backbone(*self.model_tester.prepare_config_and_inputs())
