"""WebDataset packs from a hostile or careless source (docs/reliability.md): data is never code, a
stalled server is a timeout, and a bad shard or index is one line naming it (exit 2), never a
shell command run, a connection made, a memory blow-up, a silent mislabel or a crash every epoch.

Every case uses real packs written by ``write_webdataset`` / ``rdfer pack``, real loopback
listeners that stop by themselves, and the real command line (``rdfer.cli.main``)."""

from __future__ import annotations

import http.server
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import torch

from conftest import GN_OPTIONS
from data_trees import write_dfew_csv
from rdfer.cli import main
from rdfer.data import WebDatasetVideos, batch_videos, collate_videos
from rdfer.data.webdataset import ShardError, _tar_add
from test_data_webdataset import _pack, packs  # noqa: F401  (packs: the module's pair of packs)

TRAIN_OPTS = ["--num-frames", "8", "--epochs", "1", "--warmup-epochs", "1", "--batch-size", "4", "--device", "cpu",
              "--quiet", "--logit-adjustment", "0", "--no-augment",
              *[f"--model-option={k}={json.dumps(v)}" for k, v in GN_OPTIONS.items()]]


# --------------------------------------------------------------------------- helpers

def _copy(pack: Path, dest: Path) -> Path:
    shutil.copytree(pack, dest)
    return dest


def _read_tar(shard: Path) -> List[Tuple[str, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _write_tar(shard: Path, members: Sequence[Tuple[str, bytes]]) -> None:
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            _tar_add(tar, name, data)


def _edit_json(shard: Path, key: str, drop: Sequence[str] = (), **changes) -> None:
    """Rewrite ``shard`` with sample ``key``'s .json changed (``drop``: keys removed)."""
    members = []
    for name, data in _read_tar(shard):
        if name == f"{key}.json":
            meta = {k: v for k, v in json.loads(data).items() if k not in drop}
            data = json.dumps({**meta, **changes}, separators=(",", ":")).encode()
        members.append((name, data))
    _write_tar(shard, members)


def _patch_in_place(shard: Path, member: str, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (the same length) inside one member: the tar keeps its size."""
    assert len(old) == len(new)
    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tar:
        info = tar.getmember(member)
    body = bytes(data[info.offset_data: info.offset_data + info.size])
    assert body.count(old) == 1, body
    data[info.offset_data: info.offset_data + info.size] = body.replace(old, new)
    shard.write_bytes(bytes(data))


def _damage_jpeg(shard: Path, member: str) -> None:
    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tar:
        info = tar.getmember(member)
    data[info.offset_data: info.offset_data + 40] = bytes(40)  # no JPEG header left
    shard.write_bytes(bytes(data))


def _edit_index(pack: Path, edit) -> None:
    index = json.loads((pack / "index.json").read_text())
    edit(index)
    (pack / "index.json").write_text(json.dumps(index))


def _resize_in_index(pack: Path) -> None:
    """Record the shards' current sizes in the index (an index re-written after a shard was edited)."""
    def edit(index):
        for s in index["shardlist"]:
            s["filesize"] = (pack / s["url"]).stat().st_size
    _edit_index(pack, edit)


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _cli(capsys, *argv) -> Tuple[int, str, str]:
    """``(exit status, the error line, stderr)`` of ``rdfer ARGV`` run in this process."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rdfer: error:")]
    assert len(lines) <= 1 and "Traceback" not in err, err
    return code, (lines[0] if lines else ""), err


class _Loopback:
    """An HTTP server on 127.0.0.1 for one test. It counts the connections it accepts and serves
    ``files`` (URL path -> bytes); for a path in ``stall`` it sends only the headers and the first
    ``stall_after`` bytes (None: not even a status line) and then holds the connection silently
    until the test ends (at most 30 s)."""

    def __init__(self, files: Optional[Dict[str, bytes]] = None, stall: Sequence[str] = (),
                 stall_after: Optional[int] = None):
        self.connections = 0
        self.release = threading.Event()
        outer, files = self, dict(files or {})

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self):
                outer.connections += 1
                super().setup()

            def do_GET(self):
                path = self.path.lstrip("/")
                data = files.get(path)
                if path in stall:
                    if stall_after is not None:
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data[:stall_after])
                        self.wfile.flush()
                    outer.release.wait(30)
                    return
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback():
    made: List[_Loopback] = []

    def make(**kw) -> _Loopback:
        made.append(_Loopback(**kw))
        return made[-1]

    yield make
    for server in made:
        server.close()


# --------------------------------------------------------------------------- 1, 10: data is never code

@pytest.mark.parametrize("name", ["pipe:touch {marker}", "file://{shard}", "{shard}", "../train/shard-000001.tar",
                                  "{url}/shard-000001.tar", "hf://datasets/someone/pack/shard-000001.tar"])
def test_index_shard_name_outside_the_pack_is_refused_before_anything_is_opened(packs, tmp_path, loopback, name):
    """A local index naming a program, a file:// URL, an absolute path, '..', a loopback URL or
    hf://: refused in one line naming the index; the program never ran, the listener saw nothing."""
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    marker, listener = tmp_path / "MARKER", loopback()
    bad = name.format(marker=marker, shard=train / "shard-000001.tar", url=listener.url)
    _edit_index(pack, lambda index: index["shardlist"][1].update(url=bad))
    with pytest.raises(ValueError) as err:
        list(WebDatasetVideos(str(pack)))
    assert str(pack / "index.json") in _one_line(err.value) and "not a plain name" in str(err.value)
    assert not marker.exists() and listener.connections == 0


def test_local_pack_never_reaches_the_network(packs, tmp_path, loopback, capsys):
    """A local index whose every shard is an http URL: refused by the library and by the command
    line (exit 2), and the listener those URLs name records no connection."""
    _, train, test = packs
    pack, listener = _copy(train, tmp_path / "pack"), loopback()
    _edit_index(pack, lambda index: [s.update(url=f"{listener.url}/{s['url']}") for s in index["shardlist"]])
    with pytest.raises(ValueError, match="index.json: the shard name 'http://127.0.0.1"):
        WebDatasetVideos(str(pack))
    code, line, _ = _cli(capsys, "train", "webdataset", "--train", pack, "--test", test, "--workers", "0",
                         "--out", tmp_path / "run", *TRAIN_OPTS)
    assert code == 2 and str(pack / "index.json") in line
    assert listener.connections == 0


def test_cli_refuses_a_pipe_in_a_local_index_with_exit_2(packs, tmp_path, capsys):
    _, train, test = packs
    pack, marker = _copy(train, tmp_path / "pack"), tmp_path / "MARKER"
    _edit_index(pack, lambda index: index["shardlist"][0].update(url=f"pipe:touch {marker}"))
    code, line, _ = _cli(capsys, "train", "webdataset", "--train", pack, "--test", test, "--workers", "0",
                         "--out", tmp_path / "run", *TRAIN_OPTS)
    assert code == 2 and str(pack / "index.json") in line and "pipe:touch" in line
    assert not marker.exists() and not (tmp_path / "run" / "model.safetensors").exists()


def test_http_index_names_only_shards_under_its_own_url_prefix(packs, tmp_path, loopback):
    _, train, _ = packs
    other = loopback()
    index = json.loads((train / "index.json").read_text())
    files = {f"train/{s['url']}": (train / s["url"]).read_bytes() for s in index["shardlist"]}
    files["train/index.json"] = json.dumps(index).encode()
    for bad in (f"{other.url}/shard-000001.tar", "../elsewhere/shard-000001.tar"):
        index["shardlist"][1]["url"] = bad
        files[f"train/bad{len(files)}.json"] = json.dumps(index).encode()
    server = loopback(files=files)
    good = WebDatasetVideos(f"{server.url}/train/index.json")
    assert good.urls == [f"{server.url}/train/shard-00000{k}.tar" for k in range(4)] and len(list(good)) == 11
    for name in [n for n in files if "/bad" in n]:
        with pytest.raises(ValueError, match="not a plain name inside the index's own folder"):
            WebDatasetVideos(f"{server.url}/{name}")
    assert other.connections == 0


def test_user_pipe_still_works(packs):
    """The user's own pipe: (typed for this run) is honoured; only files may not name programs."""
    _, train, _ = packs
    piped = WebDatasetVideos(f"pipe:cat {train}/shard-{{000000..000003}}.tar")
    assert [it["key"] for it in piped] == WebDatasetVideos(str(train)).keys
    with pytest.raises(ValueError, match="would run a program"):
        WebDatasetVideos(f"pipe:cat {train}/shard-000000.tar", origin="config")
    with pytest.raises(ShardError) as err:  # a command that fails: one line naming it
        WebDatasetVideos("pipe:false")
    assert _one_line(err.value).startswith("pipe:false: cannot read the shard: ")


# --------------------------------------------------------------------------- 2: a server that never answers

@pytest.mark.parametrize("what", ["index", "shard"])
def test_server_that_never_answers_is_a_timeout_naming_the_url(packs, loopback, monkeypatch, what):
    monkeypatch.setenv("RDFER_NETWORK_TIMEOUT", "1")
    server = loopback(stall=["train/index.json", "train/shard-000000.tar"])  # accepts, never says a word
    url = f"{server.url}/train/{'index.json' if what == 'index' else 'shard-000000.tar'}"
    t0 = time.monotonic()
    with pytest.raises(OSError if what == "index" else ValueError) as err:
        WebDatasetVideos(url)
    assert time.monotonic() - t0 < 10
    assert url in _one_line(err.value) and "RDFER_NETWORK_TIMEOUT" in str(err.value)
    assert server.connections == 1


@pytest.mark.parametrize("indexed", [False, True])
def test_server_that_stalls_inside_a_shard_is_a_timeout_naming_the_url(packs, loopback, monkeypatch, indexed):
    """Headers and the first members arrive, then nothing: the read inside the tar iteration
    times out and becomes one line naming the shard URL (when scanning, or when streaming from
    an index)."""
    monkeypatch.setenv("RDFER_NETWORK_TIMEOUT", "1")
    _, train, _ = packs
    files = {f"train/{p.name}": p.read_bytes() for p in train.iterdir()}
    server = loopback(files=files, stall=["train/shard-000001.tar"], stall_after=1536)
    t0 = time.monotonic()
    with pytest.raises(ShardError) as err:
        list(WebDatasetVideos(f"{server.url}/train/" + ("index.json" if indexed else "shard-{000000..000001}.tar")))
    assert time.monotonic() - t0 < 10
    assert _one_line(err.value).startswith(f"{server.url}/train/shard-000001.tar: cannot read the shard: the server "
                                           f"stopped answering for 1 s (RDFER_NETWORK_TIMEOUT")


# --------------------------------------------------------------------------- 3: brace bombs

def test_brace_pattern_of_a_hundred_million_shards_is_refused_at_once(packs, tmp_path, capsys):
    _, _, test = packs
    pattern = str(tmp_path / "shard-{00000000..99999999}.tar")
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="expands to more than 100000 shards"):
        WebDatasetVideos(pattern)
    code, line, _ = _cli(capsys, "train", "webdataset", "--train", pattern, "--test", test, "--workers", "0",
                         "--out", tmp_path / "run", *TRAIN_OPTS)
    assert code == 2 and "expands to more than 100000 shards" in line
    assert time.monotonic() - t0 < 10


# --------------------------------------------------------------------------- 4: rdfer pack never overwrites others' files

@pytest.mark.parametrize("fmt, shard", [("webdataset", "shard-000000.tar"), ("rdfer", "shard_00000.bin")])
def test_pack_refuses_an_out_folder_with_foreign_files_named_like_its_shards(packs, tmp_path, capsys, fmt, shard):
    root, _, _ = packs
    out = tmp_path / "mine"
    out.mkdir()
    (out / shard).write_bytes(b"the user's own data, not a shard")
    (out / "notes.tmp").write_bytes(b"the user's notes")
    code, line, _ = _cli(capsys, "pack", "dfew", "--root", root, "--split", "train", "--format", fmt, "--num-frames",
                         "8", "--image-size", "16", "--shard-size", "3", "--quiet", "--out", out)
    assert code == 2 and shard in line and "not rdfer's to overwrite" in line
    assert (out / shard).read_bytes() == b"the user's own data, not a shard"
    assert (out / "notes.tmp").read_bytes() == b"the user's notes"
    assert sorted(p.name for p in out.iterdir()) == sorted([shard, "notes.tmp"])


@pytest.mark.parametrize("fmt", ["webdataset", "rdfer"])
def test_pack_refuses_an_index_json_that_is_not_a_pack(packs, tmp_path, capsys, fmt):
    root, _, _ = packs
    out = tmp_path / "mine"
    out.mkdir()
    (out / "index.json").write_text('["a list, not a pack index"]')
    code, line, _ = _cli(capsys, "pack", "dfew", "--root", root, "--split", "train", "--format", fmt, "--num-frames",
                         "8", "--image-size", "16", "--quiet", "--out", out)
    assert code == 2 and str(out) in line and "another source or settings" in line
    assert (out / "index.json").read_text() == '["a list, not a pack index"]'


# --------------------------------------------------------------------------- 5: edited shard, stale index

def test_relabelled_shard_with_a_stale_index_is_an_error_naming_shard_and_key(packs, tmp_path):
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    label = json.loads(dict(_read_tar(pack / "shard-000001.tar"))["00000004.json"])["label"]
    _patch_in_place(pack / "shard-000001.tar", "00000004.json", f'"label":{label},'.encode(),
                    f'"label":{(label + 1) % 7},'.encode())
    assert (pack / "shard-000001.tar").stat().st_size == (train / "shard-000001.tar").stat().st_size
    ds = WebDatasetVideos(str(pack))
    with pytest.raises(ShardError) as err:
        list(ds)
    assert _one_line(err.value) == (f"{pack / 'shard-000001.tar'}: sample '00000004': its .json label "
                                    f"'{(label + 1) % 7}' is not the index's '{label}': the shard changed since its "
                                    f"index was written: pack again")
    assert ds[3]["valid"] and ds[5]["valid"]  # the untouched samples of that shard still read


# --------------------------------------------------------------------------- 6: memory bombs bounded

def _scanned(tmp_path: Path, train: Path, **changes) -> str:
    """A copy of shard 0 with sample 00000001's .json changed, as a pattern read without an index."""
    pack = _copy(train, tmp_path / "pack")
    _edit_json(pack / "shard-000000.tar", "00000001", **changes)
    return str(pack / "shard-000000.tar")


def test_frame_count_bomb_in_a_shard_without_index_is_refused(packs, tmp_path):
    _, train, _ = packs
    shard = _scanned(tmp_path, train, n_frames=300_000_000)
    with pytest.raises(ShardError) as err:
        WebDatasetVideos(shard)
    assert _one_line(err.value) == (f"{shard}: sample '00000001': its .json says n_frames=300000000 but the shard "
                                    f"holds 3 frame(s) of it")  # video 2 of the tree has 3 frames


def test_frame_count_bomb_in_an_indexed_shard_is_refused_when_streamed(packs, tmp_path):
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    _edit_json(pack / "shard-000000.tar", "00000001", n_frames=300_000_000)
    _resize_in_index(pack)
    with pytest.raises(ShardError, match=r"shard-000000.tar: sample '00000001': its .json n_frames '300000000' is not "
                                         r"the index's '3': the shard changed"):
        list(WebDatasetVideos(str(pack)))


@pytest.mark.parametrize("field, value", [("num_frames", 300_000_000), ("image_size", 1_000_000),
                                          ("num_frames", True)])
def test_size_bombs_in_an_index_are_refused(packs, tmp_path, field, value):
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    _edit_index(pack, lambda index: index["rdfer"].update({field: value}))
    with pytest.raises(ShardError) as err:
        WebDatasetVideos(str(pack))
    assert _one_line(err.value).startswith(f"{pack / 'index.json'}: malformed shard index: {field}")


@pytest.mark.parametrize("label", [10 ** 9, -1, True, "1"])
def test_index_record_with_a_label_outside_its_classes_is_refused(packs, tmp_path, label):
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    _edit_index(pack, lambda index: index["rdfer"]["samples"][5].update(label=label))
    with pytest.raises(ShardError) as err:
        WebDatasetVideos(str(pack))
    assert _one_line(err.value).startswith(f"{pack / 'index.json'}: malformed shard index: sample '00000005' has ")


def test_huge_label_without_a_class_list_is_refused(packs, tmp_path):
    """Labels of shards without a class list are class numbers 0..999 (as in a CSV): a label of 10^9
    would otherwise make a billion class names."""
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    members = []
    for name, data in _read_tar(pack / "shard-000000.tar"):
        if name.endswith(".json"):
            meta = {k: v for k, v in json.loads(data).items() if k not in ("classes", "class")}
            if name == "00000002.json":
                meta["label"] = 10 ** 9
            data = json.dumps(meta).encode()
        members.append((name, data))
    _write_tar(pack / "shard-000000.tar", members)
    shard = str(pack / "shard-000000.tar")
    with pytest.raises(ShardError) as err:
        WebDatasetVideos(shard)
    assert _one_line(err.value).startswith(f"{shard}: cannot read the shard: sample '00000002': its .json has label "
                                           f"1000000000, not in 0..999")


@pytest.mark.parametrize("label", [True, 1.7, "1", None])
def test_label_that_is_not_an_integer_is_refused_not_coerced(packs, tmp_path, label):
    _, train, _ = packs
    shard = _scanned(tmp_path, train, label=label)
    with pytest.raises(ShardError) as err:
        WebDatasetVideos(shard)
    assert _one_line(err.value).startswith(f"{shard}: cannot read the shard: sample '00000001': its .json has no "
                                           f"integer 'label'")


def test_label_outside_the_class_list_is_refused(packs, tmp_path):
    _, train, _ = packs
    shard = _scanned(tmp_path, train, label=7)
    with pytest.raises(ShardError, match=r"sample '00000001': its .json has label 7, not in the 7 classes of its class list"):
        WebDatasetVideos(shard)


# --------------------------------------------------------------------------- 7: duplicate keys

def test_duplicate_key_in_a_shard_without_index_is_refused(packs, tmp_path):
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    members = _read_tar(pack / "shard-000000.tar")
    _write_tar(pack / "shard-000000.tar", members + [m for m in members if m[0].startswith("00000000.")])
    shard = str(pack / "shard-000000.tar")
    with pytest.raises(ShardError) as err:
        WebDatasetVideos(shard)
    assert _one_line(err.value).startswith(f"{shard}: the sample key '00000000' appears twice in the shard")


def test_duplicate_key_in_an_index_is_refused(packs, tmp_path):
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    _edit_index(pack, lambda index: index["rdfer"]["samples"][1].update(key="00000000"))
    with pytest.raises(ShardError, match=r"index.json: the sample key '00000000' is listed twice for .*shard-000000.tar"):
        WebDatasetVideos(str(pack))


def test_duplicate_key_in_an_indexed_shard_is_refused_when_streamed(packs, tmp_path):
    """The index lists each key once but the shard holds one twice: the second copy is an error,
    never a second training step on the same sample."""
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    members = _read_tar(pack / "shard-000000.tar")
    _write_tar(pack / "shard-000000.tar", members + [m for m in members if m[0].startswith("00000000.")])
    _resize_in_index(pack)
    with pytest.raises(ShardError, match=r"shard-000000.tar: the sample key '00000000' appears twice in the shard"):
        list(WebDatasetVideos(str(pack)))


# --------------------------------------------------------------------------- 8: damaged JPEG, frames decoded on the device

def test_decode_on_device_excludes_a_damaged_jpeg_like_the_cpu_path(packs, tmp_path):
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    _damage_jpeg(pack / "shard-000000.tar", "00000001.002.jpg")
    on_cpu = {it["index"]: it["valid"] for it in WebDatasetVideos(str(pack))}
    on_device = {it["index"]: it["valid"] for it in WebDatasetVideos(str(pack), decode_on_device=True)}
    assert on_device == on_cpu == {i: i != 1 for i in range(11)}


def test_batch_videos_excludes_a_video_whose_frame_fails_to_decode(packs):
    """A frame that passed the worker's header check but fails on the device: its video is
    excluded (``kept``), the batch's others decode."""
    _, train, _ = packs
    batch = collate_videos(list(WebDatasetVideos(str(train), decode_on_device=True))[:4])
    reference, _ = batch_videos(batch, torch.ones(4, dtype=torch.bool), "cpu")
    start = int(batch["jpeg_offsets"][2, 5])
    batch["jpeg"][2][start: start + 4] = 0  # frame 5 of item 2: no JPEG start marker
    keep = torch.tensor([True, False, True, True])
    video, kept = batch_videos(batch, keep, "cpu")
    assert kept.tolist() == [True, False, False, True]
    assert video.shape == (2, 3, 8, 16, 16) and torch.equal(video, reference[[0, 3]])
    empty, none_kept = batch_videos(batch, torch.tensor([False, False, True, False]), "cpu")
    assert empty.shape[0] == 0 and not none_kept.any()


def test_batch_videos_raises_when_the_device_cannot_decode_readable_frames(packs, monkeypatch):
    """A device that fails on frames the CPU reads (e.g. torchvision built without nvJPEG) is an
    error, never every video of every batch excluded quietly."""
    import torchvision.io

    _, train, _ = packs
    batch = collate_videos(list(WebDatasetVideos(str(train), decode_on_device=True))[:2])
    real = torchvision.io.decode_jpeg

    def no_device_decoder(data, mode=torchvision.io.ImageReadMode.UNCHANGED, device="cpu"):
        if str(device) != "cpu":
            raise RuntimeError("decode_jpegs_cuda: torchvision not compiled with nvJPEG support")
        return real(data, mode=mode)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", no_device_decoder)
    with pytest.raises(RuntimeError, match="not compiled with nvJPEG"):
        batch_videos(batch, torch.ones(2, dtype=torch.bool), "cuda:0")


def test_damaged_first_jpeg_of_a_shard_without_index_is_skipped_when_probing_the_size(packs, tmp_path):
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    _damage_jpeg(pack / "shard-000000.tar", "00000000.000.jpg")
    ds = WebDatasetVideos(str(pack / "shard-{000000..000003}.tar"))
    assert ds.image_size == 16
    assert [it["valid"] for it in ds][:2] == [False, True]


def test_training_with_decode_on_device_reports_a_damaged_video_and_goes_on(packs, tmp_path, capsys):
    _, train, test = packs
    pack = _copy(train, tmp_path / "pack")
    _damage_jpeg(pack / "shard-000002.tar", "00000007.002.jpg")
    code, line, _ = _cli(capsys, "train", "webdataset", "--train", pack, "--test", test, "--workers", "0",
                         "--decode-on-device", "--out", tmp_path / "run", *TRAIN_OPTS)
    assert code == 0, line
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["excluded_invalid"] == 1


# --------------------------------------------------------------------------- 9: data errors are user errors

def _swap_with_a_shard_of_another_pack(root: Path, pack: Path, tmp_path: Path) -> None:
    """Replace shard 1 by shard 1 of a pack of the same videos labelled otherwise: same keys, same size."""
    other = tmp_path / "other_tree"
    shutil.copytree(root, other)
    write_dfew_csv(other, "train", 1, [f"{c},{1 + (c + 1) % 7}" for c in range(1, 12)])
    other_pack = _pack(other, tmp_path / "other_pack")
    shutil.copy(other_pack / "shard-000001.tar", pack / "shard-000001.tar")
    assert (pack / "shard-000001.tar").stat().st_size == json.loads((pack / "index.json").read_text())[
        "shardlist"][1]["filesize"]


def _break(how: str, root: Path, pack: Path, tmp_path: Path) -> str:
    """Break ``pack`` in one way; the file the error must name."""
    if how == "missing shard":
        (pack / "shard-000002.tar").unlink()
        return str(pack / "shard-000002.tar")
    if how == "truncated shard":
        data = (pack / "shard-000001.tar").read_bytes()
        (pack / "shard-000001.tar").write_bytes(data[: len(data) // 2])
        return str(pack / "shard-000001.tar")
    if how == "swapped shard":
        _swap_with_a_shard_of_another_pack(root, pack, tmp_path)
        return str(pack / "shard-000001.tar")
    if how == "malformed index":
        (pack / "index.json").write_text('{"__kind__": "wids-shard-index-v1", "shardlist": [')
    elif how == "index is a list":
        (pack / "index.json").write_text("[]")
    elif how == "index without samples":
        _edit_index(pack, lambda index: index["rdfer"].pop("samples"))
    return str(pack / "index.json")


BROKEN = ["missing shard", "truncated shard", "swapped shard", "malformed index", "index is a list",
          "index without samples"]


@pytest.mark.parametrize("how", BROKEN)
def test_rdfer_train_on_a_broken_pack_exits_2_with_one_line_naming_the_file(packs, tmp_path, capsys, how):
    root, train, test = packs
    pack = _copy(train, tmp_path / "pack")
    named = _break(how, root, pack, tmp_path)
    code, line, err = _cli(capsys, "train", "webdataset", "--train", pack, "--test", test, "--workers", "0",
                           "--out", tmp_path / "run", *TRAIN_OPTS)
    assert code == 2 and named in line, err
    assert "unexpected" not in line


def test_a_shard_error_in_a_loader_worker_is_still_one_line(packs, tmp_path, capsys):
    """PyTorch re-raises a worker's exception with its traceback in the message: the command line
    still shows the shard's one line, exit 2."""
    root, train, test = packs
    pack = _copy(train, tmp_path / "pack")
    named = _break("swapped shard", root, pack, tmp_path)
    code, line, err = _cli(capsys, "train", "webdataset", "--train", pack, "--test", test, "--workers", "1",
                           "--out", tmp_path / "run", *TRAIN_OPTS)
    assert code == 2 and line.startswith(f"rdfer: error: {named}: sample '0000000") and "changed since its index" in line
    assert "Caught ShardError" not in err and "Original Traceback" not in err


def test_a_truncated_shard_read_by_pattern_is_one_line(packs, tmp_path):
    _, train, _ = packs
    pack = _copy(train, tmp_path / "pack")
    data = (pack / "shard-000001.tar").read_bytes()
    (pack / "shard-000001.tar").write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(ShardError) as err:
        WebDatasetVideos(str(pack / "shard-{000000..000003}.tar"))
    assert _one_line(err.value).startswith(f"{pack / 'shard-000001.tar'}: cannot read the shard: ")


@pytest.fixture(scope="module")
def trained_on_packs(packs, tmp_path_factory):
    """A tiny model trained one epoch on the packs (a checkpoint for rdfer eval)."""
    _, train, test = packs
    out = tmp_path_factory.mktemp("wds_run") / "run"
    assert main(["train", "webdataset", "--train", str(train), "--test", str(test), "--workers", "0", "--out",
                 str(out), *TRAIN_OPTS]) == 0
    return out


@pytest.mark.parametrize("how", ["swapped shard", "index is a list"])
def test_rdfer_eval_on_a_broken_pack_exits_2_with_one_line_naming_the_file(packs, trained_on_packs, tmp_path, capsys,
                                                                          how):
    root, train, _ = packs
    pack = _copy(train, tmp_path / "pack")  # evaluated as the test split
    named = _break(how, root, pack, tmp_path)
    code, line, err = _cli(capsys, "eval", "webdataset", "--train", train, "--test", pack, "--checkpoint",
                           trained_on_packs, "--workers", "0", "--out", tmp_path / "eval")
    assert code == 2 and named in line, err


def test_shard_error_keeps_only_the_original_line_when_pytorch_rewraps_it():
    wrapped = ("Caught ShardError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nrdfer.data.webdataset.ShardError: a.tar: sample \'k\': it changed: '
               "pack again\n")
    assert str(ShardError(wrapped)) == "a.tar: sample 'k': it changed: pack again"


# --------------------------------------------------------------------------- 11: --classes

def test_train_webdataset_classes_other_than_the_packs_are_refused(packs, tmp_path, capsys):
    from rdfer.engine.config import TrainConfig
    from rdfer.engine.datasets import build_datasets

    _, train, test = packs
    code, line, _ = _cli(capsys, "train", "webdataset", "--train", train, "--test", test, "--classes", "a,b",
                         "--workers", "0", "--out", tmp_path / "run", *TRAIN_OPTS)
    assert code == 2 and "a pack carries its class list and order" in line and "['a', 'b']" in line
    classes = WebDatasetVideos(str(train)).classes
    for given in (classes[::-1], classes[:3]):
        cfg = TrainConfig(dataset="webdataset", train_source=str(train), test_source=str(test), num_frames=8,
                          classes=given)
        with pytest.raises(ValueError, match="not the pack's own"):
            build_datasets(cfg)
    cfg = TrainConfig(dataset="webdataset", train_source=str(train), test_source=str(test), num_frames=8,
                      classes=list(classes))
    assert build_datasets(cfg)[2] == classes  # the pack's own list, given: accepted
    # An rdfer pack (--format rdfer) likewise: before, --classes was ignored for it too.
    from rdfer.data import DFEW, pack_dataset

    root = packs[0]
    packed = {split: pack_dataset(DFEW(root, 1, split, num_frames=8, image_size=16), tmp_path / f"p_{split}",
                                  num_frames=8, image_size=16, progress=False) for split in ("train", "test")}
    cfg = TrainConfig(dataset="packed", train_source=str(packed["train"]), test_source=str(packed["test"]),
                      num_frames=8, classes=classes[::-1])
    with pytest.raises(ValueError, match="not the pack's own"):
        build_datasets(cfg)
