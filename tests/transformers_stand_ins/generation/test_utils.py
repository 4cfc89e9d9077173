"""Stand-in for transformers' tests/generation/test_utils.py (not in the sdist).

ModelTesterMixin imports GenerationTesterMixin only for an issubclass check: a model that cannot generate must not
inherit it. PVT is a vision encoder, so an empty class gives that check the same answer as the real mixin.
"""


class GenerationTesterMixin:
    """No generation checks (PVT does not generate)."""
