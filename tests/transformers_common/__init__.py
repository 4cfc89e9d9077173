# Vendored test mixins from huggingface/transformers v5.24.0 (Apache-2.0).
#
# test_modeling_common.py, test_configuration_common.py and test_backbone_common.py are byte-for-byte
# copies of `tests/` from the transformers-5.24.0 source distribution on PyPI
# (transformers-5.24.0.tar.gz). The sub-packages `exporters/`, `generation/` and `utils/` hold the
# three sibling modules those files import, which the sdist does not ship; see the header of each.
#
# Keep this file free of side effects: test_configuration_common.py runs
# `direct_transformers_import(Path(__file__).parent)`, which executes this `__init__.py`.
