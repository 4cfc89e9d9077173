# Copyright 2019 HuggingFace Inc.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
#
# Excerpt of huggingface/transformers `tests/utils/test_configuration_utils.py` (v5 line): only the
# `config_common_kwargs` dict, which `test_configuration_common.ConfigTester.check_config_arguments_init`
# imports. The upstream file's test classes are omitted: they need the Hugging Face Hub and the
# transformers repository's `utils/test_module` package. The nine keys below are exactly the public
# attributes of transformers 5.24.0's `PreTrainedConfig()` (checked against the installed package).

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
