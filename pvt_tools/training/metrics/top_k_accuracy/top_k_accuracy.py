# Copyright 2026 The PVT-for-Transformers authors. Licensed under the Apache License, Version 2.0.
"""Top-1 and top-k accuracy as an `evaluate` metric module.

`evaluate`'s Hub-hosted metrics cannot be fetched offline, so the training scripts ship this one and load it by
path:

    metric = evaluate.load("scripts/metrics/top_k_accuracy")
    metric.add_batch(predictions=logits.topk(5).indices, references=labels)
    metric.compute()  # {"accuracy": 0.97, "top5_accuracy": 0.998}
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-k accuracy: the fraction of examples whose true class is among the k classes the model ranks highest.
"accuracy" is top-1 (the first ranked class); "top{k}_accuracy" is added when each prediction ranks k > 1 classes.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): For each example, class indices ranked from most to least likely
        (e.g. `logits.topk(k).indices`); every example ranks the same number k of classes.
    references (`list` of `int`): The true class of each example.

Returns:
    accuracy (`float`): Top-1 accuracy, between 0 and 1.
    top{k}_accuracy (`float`): Top-k accuracy, only when k > 1.

Examples:
    >>> metric = evaluate.load("scripts/metrics/top_k_accuracy")
    >>> metric.compute(predictions=[[2, 0], [1, 2], [0, 1]], references=[2, 2, 1])
    {'accuracy': 0.3333333333333333, 'top2_accuracy': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.List(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        ranked = np.asarray(predictions, dtype=np.int64).reshape(len(references), -1)  # (N, k)
        references = np.asarray(references, dtype=np.int64)[:, None]  # (N, 1)
        if ranked.shape[0] == 0:
            raise ValueError("top_k_accuracy got no examples: the evaluation split is empty.")
        results = {"accuracy": float((ranked[:, :1] == references).any(axis=1).mean())}
        k = ranked.shape[1]
        if k > 1:
            results[f"top{k}_accuracy"] = float((ranked == references).any(axis=1).mean())
        return results
