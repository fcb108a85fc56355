"""What a newcomer meets on the command line: recipes sized for the machine, a run-time estimate,
quiet output with the per-epoch lines in train.log, --version, one-line errors for missing extras,
and exports without the tracer's known-harmless warnings."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest
import torch
import yaml

import rdfer
from conftest import tiny_config
from rdfer.cli import _train_config_from_args, build_parser, main


def _cfg(*argv):
    args = build_parser().parse_args(["train", *argv])
    vars(args).pop("debug", None)  # main()'s own option
    return _train_config_from_args(args)


def test_train_synthetic_starts_from_cpu_sizes_and_real_data_from_the_paper():
    cpu, paper = _cfg("synthetic"), _cfg("synthetic", "--recipe", "paper")
    assert (cpu.num_frames, cpu.image_size, cpu.epochs, cpu.warmup_epochs, cpu.batch_size, cpu.workers) == (16, 32, 14, 3, 32, 0)
    assert (cpu.synthetic_train, cpu.synthetic_test, cpu.lr) == (1200, 600, 2e-3)
    assert (paper.num_frames, paper.image_size, paper.epochs, paper.warmup_epochs, paper.batch_size, paper.lr) == (64, 112, 100, 10, 128, 7e-4)
    for dataset in (["dfew", "--root", "x"], ["ferv39k", "--root", "x"], ["csv", "--train", "a", "--test", "b"],
                    ["packed", "--train", "a", "--test", "b"]):
        cfg = _cfg(*dataset)
        assert (cfg.num_frames, cfg.image_size, cfg.epochs, cfg.batch_size) == (64, 112, 100, 128), dataset
    assert _cfg("dfew", "--root", "x", "--recipe", "cpu").epochs == 14


def test_config_file_and_flags_override_the_recipe(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump({"epochs": 3, "image_size": 48}))
    cfg = _cfg("synthetic", "--config", str(path), "--image-size", "40")
    assert (cfg.epochs, cfg.image_size, cfg.num_frames) == (3, 40, 16)  # file > recipe, flag > file


def test_time_estimate_text():
    from rdfer.engine.train import time_estimate

    assert time_estimate(14, 38, 0.1) == ("estimated training time: 14 epochs x 38 steps x 0.10 s/step = 0.9 min "
                                          "(evaluation not included)")
    long = time_estimate(100, 10, 27.6)
    assert "= 7.7 h" in long and "--stop-after" in long  # the 7.7 hours, announced


def test_quiet_run_prints_the_estimate_and_logs_epochs(tmp_path, capsys, monkeypatch):
    import rdfer.engine.train as train_mod

    monkeypatch.setattr(train_mod, "_ESTIMATE_MIN_SECONDS", 0.0)  # a tiny run is announced too
    results = train_mod.train(tiny_config(tmp_path / "quiet", epochs=2, progress=True))
    out = capsys.readouterr().out
    m = re.search(r"estimated training time: 2 epochs x 6 steps x ([\d.]+) s/step = ([\d.]+) min", out)
    assert m, out
    assert float(m.group(2)) == pytest.approx(2 * 6 * float(m.group(1)) / 60, abs=0.06)
    assert "epoch=" not in out  # quiet by default
    log = (tmp_path / "quiet" / "train.log").read_text().splitlines()
    rows = [json.loads(line) for line in (tmp_path / "quiet" / "metrics.jsonl").read_text().splitlines()]
    assert [line.split()[0] for line in log] == ["epoch=1", "epoch=2"]
    assert f"train_loss={rows[1]['train_loss']:.4g}" in log[1]
    assert results["epochs"] == 2


def test_verbose_prints_the_epoch_lines(tmp_path, capsys):
    from rdfer.engine.train import train

    train(tiny_config(tmp_path / "v", epochs=1, verbose=True))
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (tmp_path / "v" / "train.log").read_text().splitlines()[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"rdfer {rdfer.__version__}"


def _without(monkeypatch, *modules):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


@pytest.mark.parametrize("argv, missing, extra, written", [
    (["export", "--format", "onnx"], "onnx", "export", "model.onnx"),
    (["analyze", "synthetic", "--num-frames", "8", "--image-size", "32"], "sklearn", "viz", "analyze_test"),
    (["predict", "clip.mp4"], "cv2", "faces", None),
])
def test_missing_extra_is_one_line_naming_it(trained_run, monkeypatch, capsys, argv, missing, extra, written):
    run_dir = trained_run[0]
    _without(monkeypatch, missing)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--checkpoint", str(run_dir)])
    text = (exc.value.code if isinstance(exc.value.code, str) else "") + capsys.readouterr().err
    lines = [line for line in text.splitlines() if f"needs {missing}" in line]
    assert lines and f"pip install 'rdfer[{extra}]'" in lines[0] and "Traceback" not in text
    if written:
        assert not (run_dir / written).exists()  # stopped before writing anything


def test_export_prints_no_tracer_warnings(trained_run, tmp_path):
    """As a user runs it (a fresh process, Python's default warning filters): the exported files
    and one line on stdout, nothing on stderr."""
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.pt")):
        proc = subprocess.run([sys.executable, "-m", "rdfer", "export", "--checkpoint", str(trained_run[0]),
                               "--format", fmt, "--output", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stderr == "", (fmt, proc.stderr[-3000:])
        assert proc.stdout.startswith(f"exported {fmt}") and (tmp_path / name).stat().st_size > 0
    torch.jit.load(str(tmp_path / "m.pt"))
