"""Tables V and VII on hand cases; audit and analyze end to end on the synthetic set."""

import json
import subprocess
import sys

import torch
from PIL import Image

from conftest import REPO
from rdfer.analysis.tables import agreement_accuracy_table, agreement_distribution_table

PNG = b"\x89PNG\r\n\x1a\n"


def test_agreement_distribution_hand_case():
    agr = torch.tensor([1.0, 1.0, 0.5, 0.75, 1.0, 0.5])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    header, rows = agreement_distribution_table(agr, labels, ["a", "b"], n_clips=4)
    assert header == ["agreement", "a", "b", "sum"]
    assert rows[0] == ["0.25", 0.0, 0.0, 0.0]
    assert rows[1] == ["0.50", round(1 / 3, 4), round(1 / 3, 4), round(2 / 6, 4)]
    assert rows[2] == ["0.75", 0.0, round(1 / 3, 4), round(1 / 6, 4)]
    assert rows[3] == ["1.00", round(2 / 3, 4), round(1 / 3, 4), 0.5]
    assert rows[4] == ["num", 3, 3, 6]


def test_agreement_accuracy_hand_case():
    agr = torch.tensor([1.0, 1.0, 0.5, 0.75])
    labels = torch.tensor([0, 1, 0, 1])
    preds = torch.tensor([0, 0, 1, 1])
    _, rows = agreement_accuracy_table(agr, preds, labels, ["a", "b"], n_clips=4)
    assert rows[0] == ["0.25", None, None, None]
    assert rows[1] == ["0.50", 0.0, None, 0.0]
    assert rows[2] == ["0.75", None, 1.0, 1.0]
    assert rows[3] == ["1.00", 1.0, 0.0, 0.5]


def _common(out):
    return ["synthetic", "--checkpoint", str(out), "--num-frames", "8", "--image-size", "32", "--synthetic-train", "48",
            "--synthetic-test", "24", "--noise-rate", "0.25", "--device", "cpu", "--workers", "0"]


def test_audit_cli_on_synthetic(trained_run, tmp_path):
    out, _ = trained_run
    proc = subprocess.run([sys.executable, "-m", "rdfer", "audit", *_common(out), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "audit.json").read_text())
    assert summary["num_samples"] == 48
    gt = summary["noisy_vs_ground_truth"]
    assert gt["true"] == 12 and gt["random_precision"] == 0.25
    rows = (tmp_path / "audit.csv").read_text().splitlines()
    assert len(rows) == 49 and rows[0].startswith("index,path,label")
    errors = (tmp_path / "label_errors.csv").read_text().splitlines()[1:]
    assert len(errors) == summary["num_suspected_label_errors"] <= 5  # floor(0.1 * 48 + 0.5)
    for line in errors:  # suspected errors contradict their label
        _, _, label, _, vote, *_ = line.split(",")
        assert label != vote
    assert "Suspected label errors" in (tmp_path / "audit.md").read_text()


def test_analyze_cli_writes_tables_and_figures(trained_run, tmp_path):
    out, _ = trained_run
    proc = subprocess.run([sys.executable, "-m", "rdfer", "analyze", *_common(out), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for name in ("agreement_distribution.csv", "agreement_accuracy.csv", "analysis.md", "confusion.csv"):
        assert (tmp_path / name).is_file()
    for name in ("confusion.png", "tsne.png", "sample_strips.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    dist = (tmp_path / "agreement_distribution.csv").read_text().splitlines()
    assert dist[-1].startswith("num,") and dist[-1].split(",")[-1] == "24"
