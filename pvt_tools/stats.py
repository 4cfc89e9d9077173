"""Parameters and FLOPs of the paper's PVT models, counted with torch's own FLOP counter.

    python scripts/model_stats.py [--image_size 224] [--variants pvt-tiny pvt-small] [--device meta] [--json]

GFLOPs are reported as the paper reports them: billions of multiply-adds (MACs). torch.utils.flop_counter counts
a multiply-add as 2 FLOPs, so MACs = FLOPs / 2. It counts convolutions and matrix products: patch embeddings,
spatial reductions, the q/k/v/output projections, MLPs, the classifier, and the two attention products (scores
and weighted sum). LayerNorm, softmax, GELU, additions and position-embedding interpolation are not counted.
The authors' own counter (classification/get_flops.py of whai362/PVT: mmcv's get_model_complexity_info on the
modules, plus 2*h*w*(h/R)*(w/R)*C per layer for the attention products, which mmcv cannot see) counts the same
products (it leaves out the class token's row and column in stage 4, and adds LayerNorm's few elementwise
operations); both agree with the paper's table to its rounding.

Attention runs "eager" while counting: PyTorch's fused CPU SDPA kernel is not known to the counter, which would
silently drop the attention products (1.857 instead of 1.933 GMACs for PVT-Tiny). On the meta device nothing is
computed, so every variant counts in about a second.
"""

from dataclasses import dataclass

import torch
from huggingface_hub.errors import StrictDataclassError
from torch.utils.flop_counter import FlopCounterMode

from configuration_pvt import PvtConfig
from modeling_pvt import PvtForImageClassification
from pvt_tools.variants import PAPER_TABLE


@dataclass(frozen=True)
class ModelStats:
    name: str
    image_size: int
    parameters: int
    macs: int
    macs_by_operator: dict[str, int]

    @property
    def params_millions(self) -> float:
        return self.parameters / 1e6

    @property
    def gflops(self) -> float:
        """Billions of multiply-adds, the paper's "GFLOPs"."""
        return self.macs / 1e9


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def count_macs(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Multiply-adds of one forward pass, in total and per aten operator (FlopCounterMode FLOPs / 2)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(pixel_values)
    by_operator = {str(operator): flops // 2 for operator, flops in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops() // 2, by_operator


def model_stats(config: PvtConfig, name: str, image_size: int = 224, device: str = "meta") -> ModelStats:
    """Parameters and MACs of a PvtForImageClassification with `config` on one image_size x image_size image."""
    config = PvtConfig.from_dict({**config.to_dict(), "attn_implementation": "eager"})
    with torch.device(device):
        model = PvtForImageClassification(config).eval()
        pixel_values = torch.zeros(1, config.num_channels, image_size, image_size)
    macs, by_operator = count_macs(model, pixel_values)
    return ModelStats(name, image_size, count_parameters(model), macs, by_operator)


def variant_stats(variant: str, image_size: int = 224, device: str = "meta") -> ModelStats:
    return model_stats(PvtConfig.from_variant(variant), variant, image_size, device)


def pretrained_model_stats(model_name_or_path: str, image_size: int | None = None, device: str = "meta") -> ModelStats:
    """Parameters and MACs of the PVT classifier saved in a folder or Hub repo (its config is enough: the weights
    are not read), on its own image size unless `image_size` is given."""
    try:
        config_dict, _ = PvtConfig.get_config_dict(model_name_or_path)
        config = PvtConfig.from_dict(config_dict) if config_dict.get("model_type") == PvtConfig.model_type else None
    except (OSError, ValueError, TypeError, KeyError, StrictDataclassError) as error:  # a config.json it cannot use
        raise ValueError(
            f"--model {model_name_or_path}: no usable config.json there ({str(error).splitlines()[0][:160]}). Give "
            "a folder written by save_pretrained or a training run, or a Hub repo id."
        ) from None
    if config_dict.get("model_type") != PvtConfig.model_type:
        raise ValueError(
            f"--model {model_name_or_path} holds a {config_dict.get('model_type')!r} model, not a PVT "
            f"({PvtConfig.model_type!r}): count a PVT classifier or backbone folder."
        )
    native = config.image_size if isinstance(config.image_size, int) else min(config.image_size)
    return model_stats(config, model_name_or_path, image_size or native, device)


def format_table(rows: list[ModelStats], with_paper: bool = True) -> str:
    """A markdown table; the paper's figures alongside when the resolution is the paper's 224."""
    header = "| model | params (M) | GFLOPs (MACs) |"
    rule = "|---|---:|---:|"
    if with_paper:
        header += " paper params (M) | paper GFLOPs |"
        rule += "---:|---:|"
    lines = [header, rule]
    for row in rows:
        line = f"| {row.name} @{row.image_size} | {row.params_millions:.2f} | {row.gflops:.3f} |"
        if with_paper:
            paper = PAPER_TABLE.get(row.name)
            line += f" {paper['params_millions']} | {paper['gflops']} |" if paper else " - | - |"
        lines.append(line)
    return "\n".join(lines)
