"""The metric sums that training and evaluation share, against NumPy."""

import numpy as np
import pytest

from keras_resnext.training import steps


def reference(labels, probs, top_k, weights):
    """Cross-entropy, top-1 and top-k hits and examples, each weighted and summed (NumPy)."""
    probs = probs.astype("float64")
    clipped = np.clip(probs / probs.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
    loss = -(labels * np.log(clipped)).sum(-1)
    targets = labels.argmax(-1)
    target_probs = probs[np.arange(len(probs)), targets]
    rank = (probs > target_probs[:, None]).sum(-1)  # classes scored strictly higher
    return {"loss": (loss * weights).sum(), "top1": ((rank < 1) * weights).sum(),
            "top5": ((rank < top_k) * weights).sum(), "count": weights.sum()}


@pytest.mark.parametrize("classes,top_k", [(10, 5), (3, 3)])
def test_sums_match_numpy_with_padding_weights(classes, top_k):
    rng = np.random.default_rng(classes)
    logits = rng.normal(size=(12, classes))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    labels = np.eye(classes, dtype="float32")[rng.integers(0, classes, 12)]
    weights = np.array([1.0] * 9 + [0.0] * 3, "float32")  # a padded last batch
    got = {k: float(v) for k, v in steps.metric_sums(
        labels, probs, top_k=top_k, weights=weights).items()}
    expected = reference(labels, probs, top_k, weights)
    assert got.keys() == steps.zero_sums().keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=1e-5), k
    unweighted = steps.metric_sums(labels, probs, top_k=top_k)
    assert float(unweighted["count"]) == 12
    assert float(unweighted["top1"]) == reference(labels, probs, top_k, np.ones(12))["top1"]
