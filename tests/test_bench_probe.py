"""The harm probe's measures (bench/harm_probe.py) against values worked out by hand."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from harm_probe import fit_logistic, recall_at_fpr, roc_auc  # noqa: E402


def test_auc_and_recall_by_hand():
    scores = torch.tensor([0.9, 0.4, 0.6, 0.1])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # pairs (pos, neg): 0.9>0.6, 0.9>0.1, 0.4<0.6, 0.4>0.1 -> 3 of 4
    assert roc_auc(scores, y) == 0.75
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])) == 0.5  # a tie counts half
    # no safe prompt may be flagged: threshold at the top negative (0.6) -> only 0.9 is caught
    assert recall_at_fpr(scores, y, fpr=0.10) == 0.5
    # one of two negatives may be flagged: threshold at 0.1 -> both positives caught
    assert recall_at_fpr(scores, y, fpr=0.5) == 1.0


def test_logistic_probe_separates_a_separable_set():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = (x[:, 0] - 0.5 * x[:, 2] > 0).float()
    w, b = fit_logistic(x * 10 + 3, y)  # scale and shift: the standardisation must undo them
    assert (((x * 10 + 3) @ w + b > 0).float() == y).float().mean() >= 0.95
    assert abs(w[1]) < abs(w[0])  # the irrelevant feature gets the smaller weight
