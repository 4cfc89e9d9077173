"""Stand-in for transformers' tests/exporters/test_export.py (not in the sdist).

ModelTesterMixin inherits ExportTesterMixin, which upstream adds torch.export / ONNX / ExecuTorch / OpenVINO
export checks; the mixin itself calls nothing on it. An empty base keeps the import working: those export checks
do not run here (torch.export of PvtModel is covered by our own tests).
"""


class ExportTesterMixin:
    """No export checks."""
