"""DFEW's fold protocol from the command line: one run per fold on that fold's split, then the
mean and sample standard deviation of WAR and UAR."""

import json

import pytest
import yaml

from conftest import GN_OPTIONS
from data_trees import make_dfew
from rdfer.cli import main
from rdfer.engine.folds import parse_folds


def test_parse_folds():
    assert parse_folds("1-5") == [1, 2, 3, 4, 5]
    assert parse_folds("1,3") == [1, 3] and parse_folds(" 2 - 3 , 5") == [2, 3, 5]
    for bad in ("0-2", "6", "", "4-7"):
        with pytest.raises(ValueError, match="1..5"):
            parse_folds(bad)


def test_rdfer_train_dfew_folds(tmp_path):
    root = tmp_path / "DFEW"
    make_dfew(root, fold=1, test_clips={"1": (1, 12), "7": (5, 3)}, size=32)
    make_dfew(root, fold=2, test_clips={"00002": (3, 12), "7": (5, 3), "00012": (7, 10)}, size=32)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"model": "rdfer_small", "model_options": GN_OPTIONS, "num_frames": 8,
                                   "image_size": 32, "epochs": 1, "warmup_epochs": 0, "batch_size": 2,
                                   "workers": 0, "augment": False, "device": "cpu", "progress": False}))
    out = tmp_path / "runs"
    assert main(["train", "dfew", "--root", str(root), "--folds", "1-2", "--config", str(cfg), "--out", str(out)]) == 0
    summary = json.loads((out / "folds.json").read_text())
    runs = {k: json.loads((out / f"fold_{k}" / "results.json").read_text()) for k in (1, 2)}
    for k, run in runs.items():
        assert run["test_last_epoch"]["num_samples"] == {1: 2, 2: 3}[k]  # each fold tested on its own split
        assert summary["folds"][str(k)] == {m: run["test_last_epoch"][m] for m in ("war", "uar")}
    for m in ("war", "uar"):
        a, b = (runs[k]["test_last_epoch"][m] for k in (1, 2))
        assert summary[m] == pytest.approx({"mean": (a + b) / 2, "std": abs(a - b) / 2**0.5})  # sample std, n-1

    with pytest.raises(SystemExit, match="dfew"):
        main(["train", "synthetic", "--folds", "1-2", "--config", str(cfg), "--out", str(tmp_path / "x")])
