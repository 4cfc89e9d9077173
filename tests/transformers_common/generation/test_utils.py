# Copyright 2020 The HuggingFace Team Inc.
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
# Stand-in for huggingface/transformers `tests/generation/test_utils.py`, which the v5.24.0 sdist
# does not ship. `test_modeling_common.py` imports `GenerationTesterMixin` from here only for
# `ModelTesterMixin.test_generation_tester_mixin_inheritance`, an `issubclass` check. A model that
# cannot `generate` (a vision encoder/backbone) must NOT inherit it, so an empty class gives that
# test the same result as the real mixin. Do not inherit it expecting generation tests to run.


class GenerationTesterMixin:
    """Empty stand-in for transformers' GenerationTesterMixin (no generation tests are provided)."""
