"""`--amp` (bf16 autocast) on the CPU: used where the CPU computes bf16 natively, refused in one line
where it would be emulated and slower (before it was silently ignored on the CPU)."""

import pytest
import torch

from conftest import tiny_config
from rdfer.engine.train import amp_autocast, cpu_has_native_bf16, train


def test_off_is_a_plain_context():
    with amp_autocast(False, torch.device("cpu"))():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
def test_amp_trains_in_bf16_on_a_native_bf16_cpu(tmp_path):
    with amp_autocast(True, torch.device("cpu"))():
        assert torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4)).dtype == torch.bfloat16
    import json

    import rdfer

    results = train(tiny_config(tmp_path / "run", epochs=2, amp=True))
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [e["train_loss"] for e in epochs]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses))) and losses[1] < losses[0]
    assert results["test_last_epoch"]["num_samples"] == 24
    model = rdfer.load_model(tmp_path / "run")  # the weights stay float32 under autocast
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_amp_is_refused_on_a_cpu_without_native_bf16(tmp_path, monkeypatch):
    import rdfer.engine.train as engine

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)  # the CPU's answer, not our code, replaced
    with pytest.raises(ValueError, match="no native bfloat16"):
        train(tiny_config(tmp_path / "run", epochs=1, amp=True))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
