"""WebDataset layouts: a video's frames as one Motion-JPEG member (``KEY.mjpeg``, the default), one
JPEG member per frame (``KEY.000.jpg``, ...: packs made before still read) or one uint8 ``.npy``
array. Every layout reads back the same frames; a damaged or inconsistent sample is excluded, never
fatal and never unpickled; frames asked smaller than stored are decoded at a reduced DCT scale."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

from rdfer.cli import main
from rdfer.data import (DFEW, PackedDataset, WebDatasetVideos, batch_videos, collate_videos, pack_dataset,
                        write_webdataset)
from rdfer.data.decode import Clip
from rdfer.data.webdataset import ShardError
from test_data_webdataset import _tree
from test_reliability_webdataset import _edit_index, _edit_json, _read_tar, _resize_in_index, _write_tar

LAYOUTS = ("clip", "frames", "npy")


class _Textured:
    """A source of ``n`` videos of textured frames (3-10 frames each, seeded per video and frame), so
    that comparisons between layouts see more than flat colours; ``read_clip`` as DFEW's."""

    classes = ["a", "b", "c"]

    def __init__(self, n: int = 7):
        self.samples = [(f"video{i}", i % 3) for i in range(n)]

    @staticmethod
    def frame(i: int, k: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([i, k])
        yy, xx = np.mgrid[0:size, 0:size]
        base = 128 + 60 * np.sin(xx[..., None] / (3 + k) + yy[..., None] / 5 + np.arange(3))
        return (base + rng.normal(0, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)

    def read_clip(self, index: int, select, size: int) -> Clip:
        n = 3 + (index * 3) % 8
        picked = select(n)
        frames = np.stack([self.frame(index, int(k), size) for k in picked.tolist()])
        return Clip(frames, picked.long(), n, 25.0)


def _write(out: Path, layout: str, size: int = 16, source=None, **kw) -> Path:
    return write_webdataset(source or _Textured(), out, num_frames=8, image_size=size, shard_size=3, progress=False,
                            layout=layout, **kw)


@pytest.fixture(scope="module")
def packs(tmp_path_factory) -> Dict[str, Path]:
    """The same 7 textured videos (3 shards) in each layout, at 16 px, and as an rdfer raw pack."""
    tmp = tmp_path_factory.mktemp("layouts")
    made = {layout: _write(tmp / layout, layout) for layout in LAYOUTS}
    made["raw"] = pack_dataset(_Textured(), tmp / "raw", num_frames=8, image_size=16, progress=False, shard_size=3)
    return made


def _videos(ds) -> Dict[str, torch.Tensor]:
    return {it["key"]: it["video"] for it in ds if it["valid"]}


def _member_offset(shard: Path, name: str) -> int:
    with tarfile.open(shard) as tar:
        return tar.getmember(name).offset_data


def _meta(shard: Path, key: str) -> dict:
    return json.loads(dict(_read_tar(shard))[f"{key}.json"])


# --------------------------------------------------------------------------- the layouts themselves

def test_each_layout_stores_what_it_says_and_records_it(packs):
    for layout in LAYOUTS:
        index = json.loads((packs[layout] / "index.json").read_text())["rdfer"]
        assert index["layout"] == layout and index["version"] == 2
    members = dict(_read_tar(packs["clip"] / "shard-000000.tar"))
    assert list(members) == ["00000000.json", "00000000.mjpeg", "00000001.json", "00000001.mjpeg", "00000002.json",
                             "00000002.mjpeg"]
    meta = json.loads(members["00000001.json"])
    assert len(meta["frame_bytes"]) == meta["n_frames"] == 6
    assert sum(meta["frame_bytes"]) == len(members["00000001.mjpeg"])
    # The JPEG layouts hold the very same bytes: the per-frame members are the .mjpeg's slices.
    frames = dict(_read_tar(packs["frames"] / "shard-000000.tar"))
    assert b"".join(frames[f"00000001.{j:03d}.jpg"] for j in range(6)) == members["00000001.mjpeg"]
    npy = dict(_read_tar(packs["npy"] / "shard-000000.tar"))
    assert sorted(npy) == ["00000000.json", "00000000.npy", "00000001.json", "00000001.npy", "00000002.json",
                           "00000002.npy"]
    array = np.load(io.BytesIO(npy["00000001.npy"]), allow_pickle=False)
    assert array.dtype == np.uint8 and array.shape == (6, 16, 16, 3)
    assert np.array_equal(array[2], _Textured.frame(1, 2, 16))  # the source frames, exactly


def test_every_layout_reads_back_the_same_frames_with_and_without_the_index(packs):
    import simplejpeg

    raw = PackedDataset(packs["raw"])
    read = {layout: WebDatasetVideos(str(packs[layout])) for layout in LAYOUTS}
    videos = {layout: _videos(ds) for layout, ds in read.items()}
    assert all(len(v) == 7 for v in videos.values())
    assert all(ds.layout == layout and (ds.image_size, ds.stored_size, ds.num_frames) == (16, 16, 8)
               for layout, ds in read.items())
    for key in videos["clip"]:
        assert torch.equal(videos["clip"][key], videos["frames"][key])  # same encoder, same bytes, same decoder
        assert torch.equal(videos["npy"][key], raw[int(key)]["video"])  # the source frames, undecoded
        for t in range(8):  # the JPEG layouts' frames are the npy frames through simplejpeg at quality 90
            frame = np.ascontiguousarray(videos["npy"][key][:, t].permute(1, 2, 0).numpy())
            jpeg = simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(frame, quality=90, colorspace="RGB"))
            assert np.array_equal(videos["clip"][key][:, t].permute(1, 2, 0).numpy(), jpeg)
    for layout in LAYOUTS:  # no index: one pass over the shards counts each layout's frames
        scanned = WebDatasetVideos(str(packs[layout] / "shard-{000000..000002}.tar"))
        assert (scanned.samples, scanned.image_size, scanned.layout) == (read[layout].samples, 16, layout)
        assert all(torch.equal(v, videos[layout][k]) for k, v in _videos(scanned).items())
    # Shards of different layouts read together (old shards keep working next to new ones).
    mixed = WebDatasetVideos("::".join(str(packs[layout] / f"shard-00000{k}.tar") for k, layout in enumerate(LAYOUTS)))
    assert mixed.layout is None and len(_videos(mixed)) == 7
    # Training picks (jittered, fewer frames) agree as well, frame for frame.
    picks = {}
    for layout in ("clip", "frames"):
        torch.manual_seed(0)  # the jitter draws from torch's generator
        picks[layout] = [(it["frame_index"].tolist(), it["video"]) for it in WebDatasetVideos(
            str(packs[layout]), num_frames=4, train=True, seed=5, shuffle_buffer=1)]
    assert [f for f, _ in picks["clip"]] == [f for f, _ in picks["frames"]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(picks["clip"], picks["frames"]))


def test_the_mjpeg_member_is_a_motion_jpeg_stream_that_pyav_plays(packs):
    av = pytest.importorskip("av")
    members = dict(_read_tar(packs["clip"] / "shard-000001.tar"))
    meta = json.loads(members["00000004.json"])
    with av.open(io.BytesIO(members["00000004.mjpeg"]), format="mjpeg") as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == meta["n_frames"] == 7 and frames[0].shape == (16, 16, 3)
    ours = WebDatasetVideos(str(packs["clip"]))[4]["video"]  # T = 8 of 7 frames: frame 0 first
    assert np.abs(frames[0].astype(int) - ours[:, 0].permute(1, 2, 0).numpy()).mean() < 3  # FFmpeg's own decoder


def test_decode_threads_and_loader_workers_give_the_same_videos(packs):
    one = _videos(WebDatasetVideos(str(packs["clip"]), decode_threads=1))
    three = _videos(WebDatasetVideos(str(packs["clip"]), decode_threads=3))
    assert one.keys() == three.keys() and all(torch.equal(one[k], three[k]) for k in one)
    ds = WebDatasetVideos(str(packs["clip"]))
    assert ds._threads() == max(1, min(4, len(os.sched_getaffinity(0))))  # in process: the folder loader's rule
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_videos)
    got = {k: v for b in loader for k, v in zip(b["key"], b["video"])}
    assert got.keys() == one.keys() and all(torch.equal(got[k], one[k]) for k in one)


def test_frames_asked_smaller_than_stored_are_decoded_at_a_reduced_dct_scale(tmp_path):
    import simplejpeg

    big = {layout: _write(tmp_path / layout, layout, size=32) for layout in ("clip", "npy")}
    small = WebDatasetVideos(str(big["clip"]), image_size=16)
    assert (small.image_size, small.stored_size) == (16, 32)
    members = dict(_read_tar(big["clip"] / "shard-000000.tar"))
    meta = json.loads(members["00000001.json"])
    first = members["00000001.mjpeg"][: meta["frame_bytes"][0]]
    item = small[1]
    assert item["video"].shape == (3, 8, 16, 16)
    half = simplejpeg.decode_jpeg(first, colorspace="RGB", fastdct=False, fastupsample=False, min_height=16,
                                  min_width=16)  # libjpeg-turbo's 1/2 scale: no resize
    assert half.shape == (16, 16, 3) and np.array_equal(item["video"][:, 0].permute(1, 2, 0).numpy(), half)
    from PIL import Image

    odd = WebDatasetVideos(str(big["clip"]), image_size=12)[1]["video"]  # 1/2 scale, then resized to 12 px
    assert odd.shape == (3, 8, 12, 12)
    assert np.array_equal(odd[:, 0].permute(1, 2, 0).numpy(),
                          np.asarray(Image.fromarray(half).resize((12, 12), Image.BILINEAR)))

    npy_small = WebDatasetVideos(str(big["npy"]), image_size=16)[1]["video"]
    resized = np.asarray(Image.fromarray(_Textured.frame(1, 0, 32)).resize((16, 16), Image.BILINEAR))
    assert np.array_equal(npy_small[:, 0].permute(1, 2, 0).numpy(), resized)
    with pytest.raises(ValueError, match="decode_on_device decodes the stored 32 px frames"):
        WebDatasetVideos(str(big["clip"]), image_size=16, decode_on_device=True)
    with pytest.raises(ValueError, match="image_size 0 is not in"):
        WebDatasetVideos(str(big["clip"]), image_size=0)


# --------------------------------------------------------------------------- damaged and inconsistent samples

def test_a_damaged_frame_inside_a_mjpeg_excludes_only_its_sample(packs, tmp_path):
    pack = shutil.copytree(packs["clip"], tmp_path / "pack")
    shard = pack / "shard-000000.tar"
    at = _member_offset(shard, "00000001.mjpeg") + _meta(shard, "00000001")["frame_bytes"][0]  # frame 1's start
    data = bytearray(shard.read_bytes())
    data[at: at + 40] = bytes(40)  # no JPEG header left; the shard keeps its size, the index stays right
    shard.write_bytes(bytes(data))
    expect = {i: i != 1 for i in range(7)}
    assert {it["index"]: it["valid"] for it in WebDatasetVideos(str(pack))} == expect
    assert {it["index"]: it["valid"] for it in WebDatasetVideos(str(pack), decode_on_device=True)} == expect
    scanned = WebDatasetVideos(str(pack / "shard-{000000..000002}.tar"))
    assert {it["index"]: it["valid"] for it in scanned} == expect


@pytest.mark.parametrize("frame_bytes", ["short", "long", "empty", "one less", "zero", "negative", "bool",
                                         "not a list"])
def test_frame_bytes_that_do_not_describe_the_mjpeg_make_an_invalid_sample(packs, tmp_path, frame_bytes):
    pack = shutil.copytree(packs["clip"], tmp_path / "pack")
    shard = pack / "shard-000000.tar"
    sizes = _meta(shard, "00000001")["frame_bytes"]
    value = {"short": sizes[:-1] + [sizes[-1] - 1], "long": sizes[:-1] + [sizes[-1] + 1], "empty": [],
             "one less": sizes[:-2] + [sizes[-2] + sizes[-1]],  # the right total, 5 frames for 6
             "zero": [0] + sizes[:-2] + [sizes[-2] + sizes[-1]], "negative": [-1, sizes[0] + sizes[1] + 1] + sizes[2:],
             "bool": [True, sizes[0] + sizes[1] - 1] + sizes[2:], "not a list": "6"}[frame_bytes]
    _edit_json(shard, "00000001", frame_bytes=value)
    _resize_in_index(pack)
    items = {it["index"]: it["valid"] for it in WebDatasetVideos(str(pack))}
    assert items == {i: i != 1 for i in range(7)}


def test_a_scanned_mjpeg_claiming_more_frames_than_its_frame_bytes_is_a_shard_error(packs, tmp_path):
    pack = shutil.copytree(packs["clip"], tmp_path / "pack")
    shard = pack / "shard-000000.tar"
    _edit_json(shard, "00000001", n_frames=300_000_000)
    with pytest.raises(ShardError) as err:
        WebDatasetVideos(str(shard))
    assert str(err.value) == (f"{shard}: sample '00000001': its .json says n_frames=300000000 but the shard holds 6 "
                              f"frame(s) of it")


class _Mkdir:
    """Unpickling this runs ``os.mkdir(path)``: the marker that an .npy member was unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


@pytest.mark.parametrize("bad", ["float32", "object array", "4 channels", "one frame short", "truncated", "not npy",
                                 "zip"])
def test_an_npy_member_that_is_not_the_uint8_frames_makes_an_invalid_sample_and_is_never_unpickled(packs, tmp_path,
                                                                                                  bad):
    pack = shutil.copytree(packs["npy"], tmp_path / "pack")
    shard, marker = pack / "shard-000000.tar", tmp_path / "UNPICKLED"
    members = _read_tar(shard)
    good = np.load(io.BytesIO(dict(members)["00000001.npy"]), allow_pickle=False)  # (6, 16, 16, 3)
    if bad == "object array":
        payload = good.astype(object)
        payload[0, 0, 0, 0] = _Mkdir(marker)
        data = _npy(payload, allow_pickle=True)
    elif bad == "zip":  # np.load would hand back an NpzFile
        buf = io.BytesIO()
        np.savez(buf, frames=good)
        data = buf.getvalue()
    else:
        data = {"float32": lambda: _npy(good.astype(np.float32)),
                "4 channels": lambda: _npy(np.concatenate([good, good[..., :1]], axis=3)),
                "one frame short": lambda: _npy(good[:-1]),
                "truncated": lambda: _npy(good)[:-10],
                "not npy": lambda: b"\x93NUMPY garbage" + bytes(100)}[bad]()
    _write_tar(shard, [(n, data if n == "00000001.npy" else d) for n, d in members])
    _resize_in_index(pack)
    assert {it["index"]: it["valid"] for it in WebDatasetVideos(str(pack))} == {i: i != 1 for i in range(7)}
    try:  # without the index, the frames are counted from the header (when there is one to read)
        scanned = {it["index"]: it["valid"] for it in WebDatasetVideos(str(pack / "shard-{000000..000002}.tar"))}
    except ShardError as err:
        assert bad in ("one frame short", "truncated", "not npy", "zip") and "00000001" in str(err)
    else:
        assert scanned == {i: i != 1 for i in range(7)}
    assert not marker.exists()
    if bad == "object array":  # the payload is live: unpickling it would have made the marker
        np.load(io.BytesIO(data), allow_pickle=True)
        assert marker.is_dir()


# --------------------------------------------------------------------------- decoding on the device

def test_decode_on_device_ships_the_mjpeg_frames_that_torchvision_decodes_to_the_cpu_frames(packs):
    from torchvision.io import ImageReadMode, decode_jpeg

    cpu = list(WebDatasetVideos(str(packs["clip"])))
    shipped = list(WebDatasetVideos(str(packs["clip"]), decode_on_device=True))
    assert [it["key"] for it in shipped] == [it["key"] for it in cpu] and all(it["valid"] for it in shipped)
    item = shipped[3]
    offsets = item["jpeg_offsets"].tolist()
    frames = decode_jpeg([item["jpeg"][a:b] for a, b in zip(offsets, offsets[1:])], mode=ImageReadMode.RGB)
    assert (torch.stack(frames, 1).int() - cpu[3]["video"].int()).abs().max() <= 1  # two libjpeg-turbo builds
    video, kept = batch_videos(collate_videos(shipped), torch.ones(7, dtype=torch.bool), "cpu")
    assert kept.all() and (video.int() - torch.stack([it["video"] for it in cpu]).int()).abs().max() <= 1


def test_decode_on_device_refuses_npy_shards_and_excludes_an_npy_sample_among_others(packs):
    with pytest.raises(ValueError, match="npy shards hold decoded frames: nothing to decode on the device"):
        WebDatasetVideos(str(packs["npy"]), decode_on_device=True)
    with pytest.raises(ValueError, match="npy shards hold decoded frames"):
        WebDatasetVideos(str(packs["npy"] / "shard-{000000..000002}.tar"), decode_on_device=True)
    mixed = WebDatasetVideos(f"{packs['clip']}/shard-000000.tar::{packs['npy']}/shard-000001.tar",
                             decode_on_device=True)
    assert {it["index"]: it["valid"] for it in mixed} == {0: True, 1: True, 2: True, 3: False, 4: False, 5: False}


# --------------------------------------------------------------------------- old packs, resuming, the command line

def test_a_version_1_per_frame_pack_still_reads_trains_and_resumes(tmp_path):
    from conftest import tiny_config
    from rdfer.engine.train import train

    root = _tree(tmp_path / "DFEW", 11)
    packs = {}
    for split in ("train", "test"):
        src = DFEW(root, 1, split, num_frames=8, image_size=16, train=False)
        packs[split] = write_webdataset(src, tmp_path / split, num_frames=8, image_size=16, shard_size=4,
                                        progress=False, layout="frames")
        _edit_index(packs[split], lambda index: (index["rdfer"].pop("layout"), index["rdfer"].update(version=1)))
    ds = WebDatasetVideos(str(packs["train"]))
    assert ds.layout == "frames" and len(_videos(ds)) == 11
    result = train(tiny_config(tmp_path / "run", dataset="webdataset", train_source=str(packs["train"]),
                               test_source=str(packs["test"]), epochs=1, batch_size=4))
    assert result["test_last_epoch"]["num_samples"] == 3
    # An unfinished version-1 pack resumes as the per-frame layout it is (and only as that).
    unfinished = shutil.copytree(packs["train"], tmp_path / "unfinished")
    (unfinished / "shard-000002.tar").unlink()
    _edit_index(unfinished, lambda index: (index["shardlist"].pop(), index["rdfer"].update(
        complete=False, samples=index["rdfer"]["samples"][:8])))
    src = DFEW(root, 1, "train", num_frames=8, image_size=16, train=False)
    with pytest.raises(ValueError, match=r"another source or settings \(different layout\)"):
        write_webdataset(src, unfinished, num_frames=8, image_size=16, shard_size=4, progress=False)
    write_webdataset(src, unfinished, num_frames=8, image_size=16, shard_size=4, progress=False, layout="frames")
    assert (unfinished / "shard-000002.tar").read_bytes() == (packs["train"] / "shard-000002.tar").read_bytes()
    assert json.loads((unfinished / "index.json").read_text())["rdfer"]["layout"] == "frames"


class _Crashing(_Textured):
    def read_clip(self, index, *args, **kw):
        if index == 4:
            raise KeyboardInterrupt("simulated crash")
        return super().read_clip(index, *args, **kw)


def test_resuming_a_pack_with_another_layout_is_refused(packs, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "p", "clip", source=_Crashing())
    for other in ("frames", "npy"):
        with pytest.raises(ValueError, match=r"another source or settings \(different layout\)"):
            _write(tmp_path / "p", other)
    _write(tmp_path / "p", "clip")  # the same layout resumes, to the same bytes
    assert all((tmp_path / "p" / f"shard-00000{k}.tar").read_bytes() == (packs["clip"] / f"shard-00000{k}.tar")
               .read_bytes() for k in range(3))
    with pytest.raises(ValueError, match=r"\(different layout\)"):  # a finished pack likewise
        _write(packs["clip"], "npy")
    with pytest.raises(ValueError, match="layout 'mp4' is not one of clip, frames, npy"):
        _write(tmp_path / "q", "mp4")
    with pytest.raises(ValueError, match="layout npy: 64 frames of 1024 px are 192 MB per video"):
        write_webdataset(_Textured(), tmp_path / "r", num_frames=64, image_size=1024, layout="npy")


def test_an_index_with_an_unknown_layout_is_refused(packs, tmp_path):
    pack = shutil.copytree(packs["clip"], tmp_path / "pack")
    _edit_index(pack, lambda index: index["rdfer"].update(layout="h264"))
    with pytest.raises(ShardError, match=r"index.json: malformed shard index: layout 'h264' is not one of clip, "
                                         r"frames, npy"):
        WebDatasetVideos(str(pack))


def test_cli_pack_layout_npy_then_read(tmp_path, capsys):
    root = _tree(tmp_path / "DFEW", 5)
    base = ["pack", "dfew", "--root", str(root), "--split", "train", "--format", "webdataset", "--num-frames", "8",
            "--image-size", "16", "--shard-size", "2", "--quiet"]
    assert main(base + ["--layout", "npy", "--out", str(tmp_path / "npy")]) == 0
    out = capsys.readouterr().out
    assert "packed 5 videos of DFEW fold 1 train as WebDataset shards (up to 8 uint8 frames of 16 px, one .npy" in out
    assert json.loads((tmp_path / "npy" / "index.json").read_text())["rdfer"]["layout"] == "npy"
    assert main(base + ["--out", str(tmp_path / "clip")]) == 0  # the default layout
    assert "one Motion-JPEG member per video" in capsys.readouterr().out
    npy, clip = (_videos(WebDatasetVideos(str(tmp_path / d))) for d in ("npy", "clip"))
    assert len(npy) == 5 and all((npy[k].int() - clip[k].int()).abs().max() <= 3 for k in npy)  # flat frames
    with pytest.raises(SystemExit) as exit_:
        main(["pack", "dfew", "--root", str(root), "--split", "train", "--layout", "npy", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "--layout applies with --format webdataset" in capsys.readouterr().err
