"""rdfer.flops: every extra handle against a hand count (in fvcore's unit, 1 per multiply-add),
and benchmarks/scalability.py --quick end to end (JSON schema, full >= fvcore)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

import rdfer
from rdfer.flops import ELEMENTWISE_OPS, count_flops

REPO = Path(__file__).resolve().parents[1]


class _Out0(nn.Module):
    """Return only the output sequence of a recurrent layer (tensors only, for the tracer)."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def test_lstm_bidirectional_two_layers_hand_count():
    # Per token, per direction: 4 gates x hidden x (input + hidden) MACs.
    # layer 0: 4*6*(10+6) = 384; layer 1 reads both directions (12): 4*6*(12+6) = 432.
    # 2 directions, 3 x 5 = 15 tokens: 15 * 2 * (384 + 432) = 24480. Biases are not counted.
    model = _Out0(nn.LSTM(10, 6, num_layers=2, batch_first=True, bidirectional=True))
    report = count_flops(model, torch.randn(3, 5, 10))
    assert report.full_total == 24480
    assert report.fvcore_total == 0  # fvcore alone sees nothing
    assert report.by_operator == {"lstm": 24480}
    assert report.extra_by_operator == {"lstm": 24480}
    assert report.missed_share == 1.0
    assert "aten::lstm" not in report.uncounted_ops


def test_lstm_projection_no_bias_sequence_first_hand_count():
    # proj_size=4: W_ih (24, 10) = 240, W_hh (24, 4) = 96, W_hr (4, 6) = 24 -> 360 per token;
    # input (T=7, N=2, 10) sequence-first -> 14 tokens.
    model = _Out0(nn.LSTM(10, 6, proj_size=4, bias=False))
    assert count_flops(model, torch.randn(7, 2, 10)).full_total == 14 * 360


def test_gru_hand_count():
    # 3 gates x 6 x (10 + 6) = 288 per token, 2 x 5 tokens.
    model = _Out0(nn.GRU(10, 6, batch_first=True))
    report = count_flops(model, torch.randn(2, 5, 10))
    assert report.full_total == 2880
    assert report.by_operator == {"gru": 2880}


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_plain_rnn_hand_count(nonlinearity):
    # 1 gate x 6 x (10 + 6) = 96 per token, 4 x 3 tokens, bidirectional: x2.
    model = _Out0(nn.RNN(10, 6, nonlinearity=nonlinearity, bidirectional=True, batch_first=True))
    report = count_flops(model, torch.randn(4, 3, 10))
    assert report.by_operator == {f"rnn_{nonlinearity}": 2 * 12 * 96}


def test_packed_sequence_counts_real_tokens_only():
    # Lengths 5 and 3: 8 real tokens (not 2 x 5 padded ones), 4*6*(10+6) = 384 each.
    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(10, 6, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            packed = pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
            return self.rnn(packed)[0].data

    assert count_flops(Packed(), torch.randn(2, 5, 10)).full_total == 8 * 384


def test_scaled_dot_product_attention_hand_count():
    # Q (2, 4, L=5, E=8), K (2, 4, S=7, 8), V (2, 4, 7, Ev=3): QK^T 2*4*5*7*8, AV 2*4*5*7*3.
    class Attn(nn.Module):
        def forward(self, q, k, v):
            return nn.functional.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 3)
    report = count_flops(Attn(), (q, k, v))
    assert report.by_operator == {"scaled_dot_product_attention": 2 * 4 * 5 * 7 * (8 + 3)}


def test_baddbmm_hand_count():
    class Bmm(nn.Module):
        def forward(self, c, a, b):
            return torch.baddbmm(c, a, b)

    report = count_flops(Bmm(), (torch.randn(2, 3, 5), torch.randn(2, 3, 4), torch.randn(2, 4, 5)))
    assert report.by_operator == {"baddbmm": 2 * 3 * 4 * 5}


def test_fvcore_part_is_fvcore_and_missed_share():
    # Linear(10, 3) on 15 tokens: fvcore counts 15*10*3 = 450; the LSTM (24480 above) is extra.
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(10, 6, num_layers=2, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(10, 3)

        def forward(self, x):
            return self.lstm(x)[0].sum() + torch.sigmoid(self.fc(x)).sum()

    model = Mixed().train()
    report = count_flops(model, torch.randn(3, 5, 10))
    assert model.training  # mode restored
    assert (report.fvcore_total, report.full_total) == (450, 450 + 24480)
    assert report.missed_share == pytest.approx(24480 / 24930)
    assert report.by_module["lstm"] == {"fvcore": 0, "full": 24480}
    assert report.by_module["fc"] == {"fvcore": 450, "full": 450}
    assert set(report.elementwise_uncounted) == {"aten::sigmoid", "aten::sum", "aten::add"}
    assert report.unknown_uncounted == {}
    d = report.to_dict()
    assert d["added"] == 24480 and "multiply-add" in d["unit"]
    json.dumps(d)


def test_wrapped_model_sequence_models_hand_count():
    # Frame-level backbone, n1 = n2 = 4, d = 32, BiLSTM(32, hidden 16): per token 2 x 4*16*(32+16) = 6144.
    # Algorithm 1 tokens: S_m on 4 clips x 4 frames (16) + S_e on the 4 clip tokens (4)
    # + S_e on the strided view (16) + S_m on its 4 pooled tokens (4) = 40 tokens.
    model = rdfer.wrap_with_rdfer("tiny_cnn", d_model=32, summary_dim=8)
    report = count_flops(model, torch.randn(1, 3, 16, 32, 32))
    temporal = report.by_module["temporal"]
    assert temporal == {"fvcore": 0, "full": 40 * 6144}
    assert report.full_total == report.fvcore_total + 40 * 6144
    assert "aten::lstm" not in report.uncounted_ops
    assert report.unknown_uncounted == {}, report.unknown_uncounted


def test_cannot_override_fvcore_handles():
    with pytest.raises(ValueError, match="fvcore already has"):
        count_flops(nn.Linear(2, 2), torch.randn(1, 2), extra_handles={"aten::linear": lambda i, o: 0})


def test_elementwise_list_is_not_matrix_work():
    assert not {"aten::lstm", "aten::gru", "aten::linear", "aten::matmul", "aten::bmm"} & ELEMENTWISE_OPS


def test_scalability_quick_end_to_end(tmp_path):
    """The --quick benchmark runs, writes both files, and its numbers are self-consistent."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scalability.py"), "--quick", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "scalability_quick.json").read_text())
    md = (tmp_path / "scalability_quick.md").read_text()
    assert "fvcore GFLOPs (1 per multiply-add)" in md and "full GFLOPs (same unit)" in md
    assert "fvcore GFLOPs (1 per multiply-add)" in proc.stdout

    assert result["schema"] == "rdfer.benchmarks.scalability/1"
    for key in ("command", "date", "machine", "versions", "settings", "units", "rows", "overhead", "notes"):
        assert key in result, key
    assert "--quick" in result["command"]
    assert {"cpu", "cpu_count", "device", "torch_threads"} <= set(result["machine"])
    assert result["versions"]["torch"] and result["versions"]["fvcore"]
    assert result["paper_comparable"] is False  # 8 x 32 px is not the paper's input

    rows = {(r["backbone"], r["variant"]): r for r in result["rows"]}
    assert set(rows) == {(b, v) for b in ("cnn_lstm", "mc3_18") for v in ("plain", "rdfer")}
    for (name, variant), row in rows.items():
        assert "error" not in row
        for key in ("params_m", "fvcore_gflops", "full_gflops", "missed_share", "flops", "latency", "training", "paper"):
            assert key in row, key
        assert row["full_gflops"] >= row["fvcore_gflops"] > 0
        has_lstm = row["flops"]["by_operator"].get("lstm", 0) > 0
        if name == "cnn_lstm" or variant == "rdfer":  # cnn_lstm's own BiLSTM; rdfer's S_e BiLSTM
            assert has_lstm and row["full_gflops"] > row["fvcore_gflops"]
            assert 0 < row["missed_share"] < 1
        else:
            assert not has_lstm and row["full_gflops"] == row["fvcore_gflops"] and row["missed_share"] == 0
        assert row["flops"]["full_total"] - row["flops"]["fvcore_total"] == sum(row["flops"]["extra_by_operator"].values())
        assert row["latency"]["median_ms"] > 0 and row["training"]["clips_per_s"] > 0
        assert row["paper"] is not None and row["vs_paper"]["fvcore_gflops_ratio"] is None
    assert rows[("mc3_18", "plain")]["params_m"] == pytest.approx(11.5, abs=0.05)  # Table VI's MC3 size
    for o in result["overhead"]:
        assert o["params_m"] > 0 and o["full_gflops"] > o["fvcore_gflops"] - 1e-12
        assert o["paper"]["params_m"] == pytest.approx(11.8, abs=0.05)


def test_import_rdfer_does_not_import_fvcore():
    code = "import sys, rdfer, rdfer.flops; sys.exit('fvcore' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == 0


def test_dropping_a_handle_reports_the_op_as_uncounted():
    report = count_flops(_Out0(nn.GRU(4, 3)), torch.randn(2, 1, 4), extra_handles={"aten::gru": None})
    assert report.full_total == 0 and report.unknown_uncounted == {"aten::gru": 1}
