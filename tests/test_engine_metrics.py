"""WAR / UAR / confusion matrix on hand-made predictions with known values."""

import pytest
import torch

from rdfer.engine.metrics import classification_metrics, confusion_matrix, mean_std


def test_confusion_matrix_hand_case():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 1, 0, 1, 0, 2])
    assert confusion_matrix(preds, targets, 3).tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_war_uar_hand_case():
    # class 0: 3 samples, 2 right (2/3); class 1: 2 samples, 1 right (1/2); class 2: 1/1.
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 1, 0, 1, 0, 2])
    m = classification_metrics(preds, targets, 3, ["a", "b", "c"])
    assert m["war"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["per_class_recall"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})
    assert m["num_samples"] == 6


def test_uar_ignores_absent_classes_and_reports_none():
    m = classification_metrics(torch.tensor([0, 1]), torch.tensor([0, 0]), 3)
    assert m["war"] == 0.5 and m["uar"] == 0.5
    assert m["per_class_recall"]["1"] is None and m["per_class_recall"]["2"] is None


def test_mean_std_sample_std():
    r = mean_std([0.6, 0.7, 0.8])
    assert r["mean"] == pytest.approx(0.7) and r["std"] == pytest.approx(0.1)
