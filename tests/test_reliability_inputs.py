"""Reliability (issue 27, part A): bounded input, regular files only, and no network.

Real inputs throughout: YAML "billion laughs" and oversized configs, a real FIFO named like a
video, a real HLS playlist pointing at a real listening socket, a crafted checkpoint asking for
pretrained weights. docs/reliability.md lists each case with the test that proves it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import rdfer
from conftest import REPO
from rdfer.cli import main
from rdfer.data.decode import UnreadableClip, read_clip
from rdfer.engine.config import MAX_CONFIG_BYTES, load_yaml_config
from rdfer.inference.predict import predict_video


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rdfer: error: "), err
    return err[0]


def _laughs(levels: int = 9) -> str:
    """Nine anchors of nine aliases each: under 500 bytes, 9**9 values once expanded."""
    lines = ["model_options:", "  backbone_kwargs:", "    a: &a [x, x, x, x, x, x, x, x, x]"]
    prev = "a"
    for name in "bcdefghij"[: levels - 1]:
        lines.append(f"    {name}: &{name} [{', '.join(['*' + prev] * 9)}]")
        prev = name
    return "\n".join(lines) + "\n"


def _write_video(path: Path, frames: int = 12, size: int = 32) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 20 * i, np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


# ---- YAML and CSV: bounded ------------------------------------------------------------------------


def test_yaml_config_with_aliases_is_refused_before_it_expands(tmp_path, capsys):
    cfg = tmp_path / "laughs.yaml"
    cfg.write_text(_laughs())
    assert cfg.stat().st_size < 500
    with pytest.raises(SystemExit) as info:  # before: std::bad_alloc after eating all memory
        main(["train", "synthetic", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert info.value.code == 2 and not (tmp_path / "run").exists()
    line = _one_error_line(capsys)
    assert line.startswith(f"rdfer: error: {cfg}: not a plain YAML mapping of options (anchors and aliases "
                           f"(&name, *name) are not allowed: write each value out")
    # A single anchor is refused too (a config spells every value out), and so is deep nesting.
    (tmp_path / "one.yaml").write_text("epochs: &e 3\nwarmup_epochs: *e\n")
    with pytest.raises(ValueError, match=r"one\.yaml: not a plain YAML mapping .*anchors and aliases"):
        load_yaml_config(tmp_path / "one.yaml")
    (tmp_path / "deep.yaml").write_text("classes: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ValueError, match=r"deep\.yaml: not a plain YAML mapping of options \(nested too deeply"):
        load_yaml_config(tmp_path / "deep.yaml")
    # --model-option values are YAML too: the same rules, as argparse's own error.
    with pytest.raises(SystemExit) as info:
        main(["train", "synthetic", "--model-option", "backbone_kwargs={a: &a [1], b: *a}",
              "--out", str(tmp_path / "run")])
    assert info.value.code == 2 and not (tmp_path / "run").exists()
    assert "not a plain YAML value (anchors and aliases" in capsys.readouterr().err


def test_oversized_fifo_and_folder_configs_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1) + "epochs: 3\n")
    with pytest.raises(ValueError, match=rf"^{big} is 1\.0 MiB, more than the 1 MiB a YAML config may have"):
        load_yaml_config(big)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    with pytest.raises(ValueError, match=rf"^{fifo} is a named pipe \(FIFO\), not a regular file; rdfer reads "
                                         r"regular files only$"):
        load_yaml_config(fifo)
    with pytest.raises(ValueError, match=r"is a folder, not a regular file"):
        load_yaml_config(tmp_path)
    assert load_yaml_config(_small(tmp_path / "ok.yaml")) == {"epochs": 3}


def _small(path: Path) -> Path:
    path.write_text("epochs: 3\n")
    return path


def test_csv_fields_are_bounded_and_broken_rows_name_the_row(tmp_path):
    from rdfer.data.video_csv import MAX_CSV_FIELD, VideoCSV, read_csv_rows

    clip = tmp_path / "clip"
    clip.mkdir()
    long = tmp_path / "long.csv"
    long.write_text(f"path,label\nclip,happy\n{'x' * (MAX_CSV_FIELD + 1)},sad\n")
    with pytest.raises(ValueError, match=rf"^{long}, row 3: a field of 4097 characters, more than the 4096 a path "
                                         r"or label may have; is a quote left open\?$"):
        VideoCSV(long, num_frames=4, image_size=16)
    # An unclosed quote swallows the rest of the file into one field, past csv's own limit:
    # before, an unexpected `_csv.Error` naming neither the file nor the row.
    broken = tmp_path / "broken.csv"
    broken.write_text('path,label\n"clip,happy\n' + "clip,sad\n" * 20000)
    with pytest.raises(ValueError, match=rf"^{broken}, row \d+: (not a readable CSV row \(field larger than field "
                                         r"limit|a field of \d+ characters)"):
        VideoCSV(broken, num_frames=4, image_size=16)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pipe\.csv is a named pipe \(FIFO\), not a regular file"):
        next(read_csv_rows(fifo, ["path", "label"]))  # DFEW, FERV39K and CSV lists alike


# ---- media: regular files only --------------------------------------------------------------------


class _WriterWatchdog:
    """Opens ``fifo`` for writing (non-blocking) as soon as a reader waits on it, which lets a
    reader that wrongly opened the FIFO go on (it then reads EOF) instead of hanging the suite;
    ``blocked`` says whether that happened."""

    def __init__(self, fifo: Path) -> None:
        self.fifo, self.blocked, self._stop = fifo, False, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: no reader yet
                assert exc.errno == errno.ENXIO
                time.sleep(0.05)
                continue
            self.blocked = True
            os.close(fd)
            return

    def __enter__(self) -> "_WriterWatchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_fifo_named_like_a_video_is_refused_not_waited_on(trained_run, tmp_path, capsys):
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    with _WriterWatchdog(fifo) as watchdog:
        with pytest.raises(UnreadableClip, match=r"^a named pipe \(FIFO\), not a regular file; rdfer reads video "
                                                 r"files and frame folders only$"):
            read_clip(fifo, lambda n: torch.arange(min(n, 4)), 16)  # training, eval, pack: one reader
        model = rdfer.load_model(trained_run[0])
        res = predict_video(fifo, model, detector=None)
        assert res.status == "unreadable" and res.message == (
            f"{fifo}: a named pipe (FIFO), not a regular file; rdfer reads video files and frame folders only")
        code = main(["predict", str(fifo), "--checkpoint", str(trained_run[0]), "--no-detect", "--json"])
        assert code == 4  # exit 4: a video could not be read
        assert json.loads(capsys.readouterr().out.strip())["status"] == "unreadable"
    assert not watchdog.blocked  # nobody ever opened the FIFO to read it
    char_device = Path("/dev/zero")  # never ends
    with pytest.raises(UnreadableClip, match="^a character device, not a regular file"):
        read_clip(char_device, lambda n: torch.arange(n), 16)


def test_checkpoint_search_looks_one_level_down_only(trained_run, tmp_path, capsys):
    deep = tmp_path / "a" / "b" / "run"
    deep.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(trained_run[0] / "checkpoints", deep / "checkpoints")
    with pytest.raises(FileNotFoundError, match=rf"^no model\.safetensors in {tmp_path} \(looked in it, its "
                                                r"checkpoints/ and best_val/, and its direct subfolders\); give a run "
                                                r"folder or a model\.safetensors file$"):
        rdfer.load_model(tmp_path)  # the run three levels down is not searched for
    assert rdfer.load_model(tmp_path / "a" / "b").num_classes == 7  # one level down: found
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as info:  # before: a walk of the whole file system
        main(["predict", str(tmp_path / "x.mp4"), "--checkpoint", "/", "--no-detect"])
    assert info.value.code == 2 and time.monotonic() - t0 < 30
    assert _one_error_line(capsys).startswith("rdfer: error: no model.safetensors in / (looked in it")


# ---- no network, ever ------------------------------------------------------------------------------


class _Listener:
    """A real listening socket on 127.0.0.1: :meth:`attempts` counts the connections made to it
    so far (what FFmpeg's C code does is invisible to a Python-level socket guard)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def attempts(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1


@pytest.fixture
def listener():
    srv = _Listener()
    yield srv
    srv.sock.close()


def test_ffmpeg_may_open_local_files_only(trained_run, tmp_path, listener, monkeypatch):
    import av

    port = listener.port
    _write_video(tmp_path / "seg.mp4")
    playlist = tmp_path / "remote.m3u8"  # a local playlist whose segment and key are on the network
    playlist.write_text(f'#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n'
                        f'#EXT-X-KEY:METHOD=AES-128,URI="http://127.0.0.1:{port}/key"\n'
                        f'#EXTINF:1,\nhttp://127.0.0.1:{port}/seg.mp4\n#EXT-X-ENDLIST\n')
    # The listener sees FFmpeg when FFmpeg is allowed out (so "no attempt" below means something).
    with pytest.raises(Exception):
        with av.open(str(playlist), format="hls", timeout=2,
                     container_options={"protocol_whitelist": "file,http,tcp,crypto"}) as c:
            next(c.decode(video=0))
    assert listener.attempts() >= 1
    model = rdfer.load_model(trained_run[0])
    assert predict_video(playlist, model, detector=None).status == "unreadable"
    with pytest.raises(UnreadableClip):
        read_clip(playlist, lambda n: torch.arange(n), 16)
    for target in (f"tcp://127.0.0.1:{port}", f"tcp:127.0.0.1:{port}", f"async:tcp://127.0.0.1:{port}",
                   f"cache:tcp://127.0.0.1:{port}", f"subfile,,start,0,end,9,,:tcp://127.0.0.1:{port}",
                   f"concat:tcp://127.0.0.1:{port}|x", f"crypto:tcp://127.0.0.1:{port}", "pipe:0", "fd:0",
                   "data:video/mp4;base64,AAAA"):
        assert predict_video(target, model, detector=None).status == "unreadable", target
        with pytest.raises(UnreadableClip):
            read_clip(target, lambda n: torch.arange(n), 16)
    assert listener.attempts() == 0
    # A local file whose name looks like a protocol is a file name: it opens as the file.
    _write_video(tmp_path / "concat:clip.mp4")
    monkeypatch.chdir(tmp_path)
    assert predict_video("concat:clip.mp4", model, detector=None).status == "ok"
    assert read_clip("concat:clip.mp4", lambda n: torch.arange(n), 16).num_source == 12


@pytest.fixture
def no_network(monkeypatch):
    """Every Python-level way out (DNS, connect) raises and is recorded in the returned list."""
    attempts = []

    def refuse(what):
        def blocked(*args, **kwargs):
            attempts.append((what, args[1:] if what.startswith("socket.") else args))
            raise OSError(errno.ENETUNREACH, f"network blocked by the test ({what})")

        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def _crafted_checkpoint(tmp_path: Path) -> Path:
    """A real rdfer checkpoint whose config asks for pretrained weights everywhere it can: the
    detector is a timm model (weights on the Hugging Face Hub)."""
    from safetensors.torch import load_file, save_file

    model = rdfer.wrap_with_rdfer("tiny_cnn", num_classes=3, backbone_kwargs={"widths": [4, 8, 8, 8]},
                                  detector="timm/test_resnet", d_model=8, summary_dim=4, num_glimpses=4,
                                  n_clips=2, clip_len=2)
    path = rdfer.save_model(model, tmp_path / "crafted" / "model.safetensors")
    config = {**model.config, "pretrained": True,
              "backbone_kwargs": {**model.config["backbone_kwargs"], "pretrained": True},
              "detector_kwargs": {"pretrained": True}}
    save_file(load_file(str(path)), str(path), metadata={"rdfer_config": json.dumps(config), "format": "rdfer"})
    return path


def test_loading_a_checkpoint_and_predicting_never_touch_the_network(tmp_path, no_network, capsys):
    ckpt = _crafted_checkpoint(tmp_path)
    saved = {k: v.clone() for k, v in rdfer.load_model(ckpt).state_dict().items()}
    model = rdfer.load_model(ckpt)  # before: timm went to the Hub for test_resnet's weights
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())  # the weights are the file's
    video = _write_video(tmp_path / "face.mp4", frames=8)
    code = main(["predict", str(video), "--checkpoint", str(ckpt), "--no-detect", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out.strip())["status"] == "ok"
    assert no_network == []


def test_predict_runs_in_a_process_without_network(trained_run, tmp_path):
    """The same, one level lower: `rdfer predict` in a network namespace with no interface
    (``unshare -rn``), where any connection fails; it predicts as usual."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"]).returncode != 0:
        pytest.skip("cannot make a network namespace here")
    video = _write_video(tmp_path / "face.mp4", frames=8)
    env = dict(os.environ, PYTHONPATH=str(REPO), RDFER_DEBUG="")
    proc = subprocess.run(["unshare", "-rn", sys.executable, "-m", "rdfer", "predict", str(video), "--checkpoint",
                           str(trained_run[0]), "--no-detect", "--json"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "ok"
