"""Packed shards: same pixels as the folder loader, train jitter, checksums, resume after an
interruption, invalid samples, DataLoader workers and the `rdfer pack` command."""

import json
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from data_trees import DFEW_CLIPS, DFEW_DISK_NAMES, REPO_ROOT, corrupt, make_dfew, video_frame_numbers
from rdfer.data import DFEW, PackedDataset, collate_videos, eval_indices, pack_dataset
from rdfer.data.decode import BadInputWarning


@pytest.fixture
def dfew(tmp_path):
    return make_dfew(tmp_path / "DFEW", size=32)


def _source(root, **kw):
    return DFEW(root, 1, "train", num_frames=kw.pop("num_frames", 8), image_size=kw.pop("image_size", 16),
                train=False, **kw)


def test_pack_matches_folder_loader(dfew, tmp_path):
    src = _source(dfew)
    out = pack_dataset(src, tmp_path / "pack", num_frames=8, image_size=16, progress=False, shard_size=3)
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and index["num_samples"] == 4 and len(index["shards"]) == 2
    assert [r["n_frames"] for r in index["samples"]] == [8, 8, 3, 8]  # the 3-frame clip stores its 3
    pk = PackedDataset(out)
    assert pk.num_frames == 8 and pk.image_size == 16 and pk.train is False
    assert pk.classes == src.classes and pk.labels == src.labels and pk.samples == src.samples
    for i in range(len(src)):
        a, b = src[i], pk[i]
        assert set(b) == set(a)
        assert torch.equal(a["video"], b["video"]) and b["video"].is_contiguous()
        assert a["frame_index"].tolist() == b["frame_index"].tolist()
        assert (b["label"], b["index"], b["path"], b["valid"], b["fps"]) == (a["label"], i, a["path"], True, None)
    assert pk.bad_sample_report() == ""


def test_fewer_frames_and_train_jitter(dfew, tmp_path):
    out = pack_dataset(_source(dfew), tmp_path / "pack", num_frames=8, image_size=16, progress=False)
    stored = eval_indices(12, 8)  # clip "1": 12 frames, 8 stored
    pk = PackedDataset(out, num_frames=4)
    assert pk[0]["frame_index"].tolist() == stored[eval_indices(8, 4)].tolist()
    assert video_frame_numbers(pk[0]["video"]) == [p + 1 for p in pk[0]["frame_index"].tolist()]
    train = PackedDataset(out, num_frames=4, train=True)
    seen = set()
    for _ in range(12):
        item = train[0]
        idx = item["frame_index"].tolist()
        assert set(idx) <= set(stored.tolist()) and idx == sorted(idx)
        assert video_frame_numbers(item["video"]) == [p + 1 for p in idx]  # source frame numbers
        seen.add(tuple(idx))
    assert len(seen) > 1
    short = train[2]  # 3 stored frames, T=4: repeats
    assert short["video"].shape == (3, 4, 16, 16) and set(short["frame_index"].tolist()) <= {0, 1, 2}
    with pytest.raises(ValueError, match="stores up to 8 frames"):
        PackedDataset(out, num_frames=16)


def test_invalid_and_replaced_samples_survive_packing(dfew, tmp_path):
    clip7 = dfew / "Clip" / "clip_224x224" / DFEW_DISK_NAMES["7"]
    for p in clip7.iterdir():
        corrupt(p)
    corrupt(dfew / "Clip" / "clip_224x224" / "00001" / "1.jpg")
    with pytest.warns(BadInputWarning):
        out = pack_dataset(_source(dfew), tmp_path / "pack", num_frames=8, image_size=16, progress=False)
    with pytest.warns(BadInputWarning, match="1 unreadable video"):
        pk = PackedDataset(out)
    bad = pk[2]
    assert bad["valid"] is False and bad["video"].shape == (3, 8, 16, 16) and not bad["video"].any()
    assert str(clip7) in pk.bad_samples and "none of the 3 frames" in pk.bad_sample_report()
    assert pk[0]["frame_index"].tolist()[0] == 1  # frame 1.jpg was replaced by 2.jpg while packing
    assert "1.jpg -> " in pk.bad_sample_report()
    assert pk[1]["valid"] and pk[3]["valid"]


def test_checksum_corruption_is_detected(dfew, tmp_path):
    out = pack_dataset(_source(dfew), tmp_path / "pack", num_frames=8, image_size=16, progress=False, shard_size=2)
    shard = out / "shard_00001.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"shard_00001\.bin: corrupt shard \(sha256 mismatch\)"):
        PackedDataset(out)
    assert PackedDataset(out, verify=False)[0]["valid"]  # the user may still read it
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match=r"shard_00001\.bin: corrupt shard"):
        PackedDataset(out, verify=False)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"shard_00001\.bin"):
        PackedDataset(out, verify=False)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/../../outside.bin"])
def test_an_index_naming_a_file_outside_its_pack_is_refused(dfew, tmp_path, name):
    out = pack_dataset(_source(dfew), tmp_path / "pack", num_frames=8, image_size=16, progress=False, shard_size=2)
    index = json.loads((out / "index.json").read_text())
    (tmp_path / "outside.bin").write_bytes((out / index["shards"][0]["file"]).read_bytes())  # same size and hash
    index["shards"][0]["file"] = name
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="is not a plain name inside the index's own folder"):
        PackedDataset(out, verify=False)


class Crashing:
    """A source that dies (like a killed process) after ``k`` videos."""

    def __init__(self, dataset, k):
        self.dataset, self.k, self.calls = dataset, k, 0
        self.samples, self.classes = dataset.samples, dataset.classes

    def read_clip(self, index, select, size):
        if self.calls >= self.k:
            raise RuntimeError("simulated crash")
        self.calls += 1
        return self.dataset.read_clip(index, select, size)


def test_resume_after_interruption_equals_uninterrupted_pack(dfew, tmp_path):
    ref = pack_dataset(_source(dfew), tmp_path / "ref", num_frames=8, image_size=16, progress=False, shard_size=1)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        pack_dataset(Crashing(_source(dfew), 2), out, num_frames=8, image_size=16, progress=False, shard_size=1)
    partial = json.loads((out / "index.json").read_text())
    assert not partial["complete"] and len(partial["samples"]) == 2
    assert (out / "shard_00002.bin.tmp").exists()  # the shard in progress never got its final name
    with pytest.raises(ValueError, match="incomplete"):
        PackedDataset(out)
    with pytest.raises(ValueError, match="another source or settings"):
        pack_dataset(_source(dfew), out, num_frames=4, image_size=16, progress=False, shard_size=1)
    counting = Crashing(_source(dfew), 99)
    pack_dataset(counting, out, num_frames=8, image_size=16, progress=False, shard_size=1)
    assert counting.calls == 2  # only the two remaining videos were decoded
    resumed, whole = (json.loads((d / "index.json").read_text()) for d in (out, ref))
    assert resumed.pop("source") == "Crashing" and whole.pop("source") == "DFEW"  # informational only
    assert resumed == whole
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in ref.iterdir()) and not any(f.endswith(".tmp") for f in files)
    for f in (f for f in files if f.startswith("shard_")):
        assert (out / f).read_bytes() == (ref / f).read_bytes()
    again = Crashing(_source(dfew), 0)
    pack_dataset(again, out, num_frames=8, image_size=16, progress=False, shard_size=1)  # complete: no work


KILL_SCRIPT = """
import os, signal, sys
from rdfer.data import DFEW, pack_dataset

src = DFEW(sys.argv[1], 1, "train", num_frames=8, image_size=16, train=False)
read, calls = src.read_clip, []

def read_then_die(index, select, size):
    if len(calls) == 2:  # mid-way through the third shard, after two shards and their index
        os.kill(os.getpid(), signal.SIGKILL)
    calls.append(index)
    return read(index, select, size)

src.read_clip = read_then_die
pack_dataset(src, sys.argv[2], num_frames=8, image_size=16, progress=False, shard_size=1)
"""


def test_resume_after_kill_9(dfew, tmp_path):
    """A real ``kill -9`` (no exception handlers, no ``finally``) leaves a pack that resumes to the
    same bytes as an uninterrupted one."""
    ref = pack_dataset(_source(dfew), tmp_path / "ref", num_frames=8, image_size=16, progress=False, shard_size=1)
    out = tmp_path / "killed"
    script = tmp_path / "pack_and_die.py"
    script.write_text(KILL_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(dfew), str(out)], cwd=REPO_ROOT, timeout=120,
                         capture_output=True, text=True)
    assert res.returncode == -9, res.stderr
    partial = json.loads((out / "index.json").read_text())
    assert not partial["complete"] and len(partial["samples"]) == 2
    assert (out / "shard_00002.bin.tmp").exists()
    pack_dataset(_source(dfew), out, num_frames=8, image_size=16, progress=False, shard_size=1)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in ref.iterdir())
    for f in files:
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
    assert torch.equal(PackedDataset(out)[2]["video"], PackedDataset(ref)[2]["video"])


def test_dataloader_workers(dfew, tmp_path):
    out = pack_dataset(_source(dfew), tmp_path / "pack", num_frames=8, image_size=16, progress=False)
    pk = PackedDataset(out, num_frames=4, train=True)
    pk[0]  # opens a memory map in this process; workers must open their own
    loader = DataLoader(pk, batch_size=2, num_workers=2, collate_fn=collate_videos)
    batches = list(loader)
    assert [b["video"].shape for b in batches] == [(2, 3, 4, 16, 16)] * 2
    assert torch.cat([b["index"] for b in batches]).tolist() == [0, 1, 2, 3]


def test_rdfer_pack_cli(dfew, tmp_path):
    out = tmp_path / "cli_pack"
    cmd = [sys.executable, "-m", "rdfer", "pack", "dfew", "--root", str(dfew), "--fold", "1", "--split", "train",
           "--out", str(out), "--num-frames", "8", "--image-size", "16"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "packed 4 videos of DFEW fold 1 train" in res.stdout
    assert f"rdfer train packed --train {out} --test <test pack> --num-frames 8" in res.stdout
    pk = PackedDataset(out)
    src = _source(dfew)
    assert len(pk) == len(DFEW_CLIPS) and torch.equal(pk[3]["video"], src[3]["video"])
    from rdfer.cli import main

    with pytest.raises(SystemExit, match="--split"):
        main(cmd[3:7] + ["--out", str(tmp_path / "x")])  # dfew without --split
    assert main(cmd[3:] + ["--quiet"]) == 0  # the finished pack: nothing left to do
