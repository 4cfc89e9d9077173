"""Stand-in for transformers' tests/utils/test_configuration_utils.py (not in the sdist).

ConfigTester.check_config_arguments_init imports `config_common_kwargs`: a value for every public attribute of a
default PreTrainedConfig, each different from its default, to check a config class accepts and keeps them all.
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",  # ConfigTester compares this one with torch.float16
    "chunk_size_feed_forward": 8,
    "architectures": ["PvtForImageClassification"],
    "id2label": {0: "cat", 1: "dog"},
    "label2id": {"cat": 0, "dog": 1},
    "problem_type": "single_label_classification",
}
