"""Toolchain check: fvcore's tracer (torch.jit.trace underneath) handles every built-in backbone
and the wrapped model on this torch."""

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

import rdfer

NAMES = [n for n in rdfer.list_backbones() if not n.endswith("*")] + ["timm/resnet18"]


def _flops(model, x):
    analysis = FlopCountAnalysis(model.eval(), x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


@pytest.mark.parametrize("name", NAMES)
def test_fvcore_traces_backbone(name):
    analysis = _flops(rdfer.create_backbone(name), torch.randn(1, 3, 4, 32, 32))
    assert analysis.total() > 0


@pytest.mark.parametrize("backbone", ["tiny_cnn", "mc3_18", "cnn_lstm"])
def test_fvcore_traces_wrapped_model(backbone):
    model = rdfer.wrap_with_rdfer(backbone, d_model=32, summary_dim=8)
    analysis = _flops(model, torch.randn(1, 3, 16, 32, 32))
    assert analysis.total() > 0
    # fvcore has no handle for LSTMs: the sequence models are invisible to it.
    assert "aten::lstm" in analysis.unsupported_ops()
