"""WebDataset shards (issue 26): `rdfer pack --format webdataset` writes standard tar shards that the
webdataset library reads; `WebDatasetVideos` streams them from disk, over loopback HTTP or a pipe,
each sample exactly once per epoch over ranks x workers, reshuffled by seed; training resumes
bit-identically; the JPEG bytes can be decoded on the training device instead of in the workers."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import GN_OPTIONS, REPO, assert_resume_is_bit_identical, tiny_config
from data_trees import corrupt, make_dfew, video_frame_numbers, write_dfew_csv, write_frames
from rdfer.data import DFEW, PackedDataset, WebDatasetVideos, batch_videos, collate_videos, pack_dataset, write_webdataset
from rdfer.data.decode import BadInputWarning
from rdfer.engine.datasets import split_validation
from rdfer.engine.distributed import DistInfo
from rdfer.engine.train import make_loader


def _tree(root: Path, n: int) -> Path:
    """A DFEW tree of ``n`` training clips (3-12 frames of 32 px, labels cycling over the 7 classes)
    and 3 test clips."""
    clip_root = root / "Clip" / "clip_224x224"
    rows = []
    for c in range(1, n + 4):
        write_frames(clip_root / f"{c:05d}", 3 + (c * 5) % 10, 32)
        rows.append(f"{c},{1 + c % 7}")
    write_dfew_csv(root, "train", 1, rows[:n])
    write_dfew_csv(root, "test", 1, rows[n:])
    return root


def _pack(root: Path, out: Path, split: str = "train", shard_size: int = 3, layout: str = "frames", **kw) -> Path:
    """A pack of 8 frames of 16 px. These tests (and test_reliability_webdataset.py) name frame
    members, so they use the per-frame layout; test_data_webdataset_layouts.py covers the others."""
    src = DFEW(root, 1, split, num_frames=8, image_size=16, train=False)
    return write_webdataset(src, out, num_frames=8, image_size=16, shard_size=shard_size, progress=False,
                            layout=layout, **kw)


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    """Train (11 videos in 4 shards) and test (3 videos in 1 shard) packs of one tree."""
    tmp = tmp_path_factory.mktemp("wds")
    root = _tree(tmp / "DFEW", 11)
    return root, _pack(root, tmp / "train"), _pack(root, tmp / "test", "test", shard_size=8)


def test_pack_writes_standard_shards_that_read_back_like_the_rdfer_pack(packs, tmp_path):
    root, train, _ = packs
    index = json.loads((train / "index.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and [s["nsamples"] for s in index["shardlist"]] == [3, 3, 3, 2]
    assert [s["url"] for s in index["shardlist"]] == [f"shard-00000{k}.tar" for k in range(4)]
    with tarfile.open(train / "shard-000000.tar") as tar:  # plain tar: KEY.json then KEY.000.jpg ...
        names = tar.getnames()
    assert names[:3] == ["00000000.json", "00000000.000.jpg", "00000000.001.jpg"]
    # The webdataset library itself reads them: one sample per video with its JSON and frames.
    import webdataset as wds

    first = next(iter(wds.WebDataset(str(train / "shard-000000.tar"), shardshuffle=False)))
    meta = json.loads(first["json"])
    assert first["__key__"] == "00000000" and meta["label"] == 1 and meta["class"] == "sad"
    assert meta["n_frames"] == 8 and sum(k.endswith(".jpg") for k in first) == 8

    src = DFEW(root, 1, "train", num_frames=8, image_size=16, train=False)
    packed = PackedDataset(pack_dataset(src, tmp_path / "rdfer_pack", num_frames=8, image_size=16, progress=False))
    ds = WebDatasetVideos(str(train))
    assert (len(ds), ds.classes, ds.labels, ds.samples) == (11, src.classes, src.labels, src.samples)
    assert (ds.num_frames, ds.image_size) == (8, 16)
    items = list(ds)
    assert [it["index"] for it in items] == list(range(11)) and not any(it["pad"] for it in items)
    for it in items:
        ref = packed[it["index"]]
        assert it["frame_index"].tolist() == ref["frame_index"].tolist()
        assert video_frame_numbers(it["video"]) == video_frame_numbers(ref["video"])
        assert (it["video"].int() - ref["video"].int()).abs().max() <= 2  # JPEG of flat frames
        assert (it["label"], it["path"], it["valid"], it["key"]) == (ref["label"], ref["path"], True, f"{it['index']:08d}")
    # Random access (the review page, analysis strips) reads the one shard up to the sample.
    assert ds[7]["key"] == "00000007" and torch.equal(ds[7]["video"], items[7]["video"])
    with pytest.raises(IndexError):
        ds[11]
    # A brace pattern (no index: one pass over the .json members) gives the same dataset.
    by_pattern = WebDatasetVideos(str(train / "shard-{000000..000003}.tar"))
    assert (by_pattern.samples, by_pattern.classes, by_pattern.image_size, by_pattern.keys) == (
        ds.samples, ds.classes, 16, ds.keys)
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(items, by_pattern))


def test_train_jitter_fewer_frames_and_a_too_large_num_frames(packs):
    _, train, _ = packs
    ds = WebDatasetVideos(str(train), num_frames=4, train=True, seed=1)
    item = next(iter(ds))
    assert item["video"].shape == (3, 4, 16, 16) and item["frame_index"].tolist() == sorted(item["frame_index"].tolist())
    with pytest.raises(ValueError, match="stores up to 8 frames"):
        WebDatasetVideos(str(train), num_frames=16)


def _keys_per_rank(dataset, world, workers, batch, epoch):
    """Keys each rank's real DataLoader yields in one epoch, and its batch count and len()."""
    out = []
    for rank in range(world):
        loader = make_loader(dataset, batch, DistInfo(rank=rank, world_size=world), True, 0, workers)
        loader.dataset.set_epoch(epoch)
        keys, batches = [], 0
        for b in loader:
            batches += 1
            assert torch.as_tensor(b["valid"]).any(), "a batch of padding only"
            keys += [k for k, pad in zip(b["key"], b["pad"].tolist()) if not pad]
        out.append((keys, batches, len(loader)))
    return out


def test_every_sample_once_per_epoch_over_two_ranks_and_two_workers_reshuffled_by_seed(packs):
    _, train, _ = packs
    ds = WebDatasetVideos(str(train), train=True, seed=3)
    epochs = {e: _keys_per_rank(ds, 2, 2, 2, e) for e in (0, 1)}
    for e, ranks in epochs.items():
        everything = [k for keys, _, _ in ranks for k in keys]
        assert Counter(everything) == Counter(ds.keys)  # each of the 11 samples exactly once
        assert all(batches == n == ranks[0][1] for _, batches, n in ranks)  # same step count on both ranks
    order = lambda ranks: [k for keys, _, _ in ranks for k in keys]
    assert order(epochs[0]) != order(epochs[1])  # a new shard order and shuffle each epoch
    assert order(_keys_per_rank(ds, 2, 2, 2, 1)) == order(epochs[1])  # the same epoch again: the same order
    other_seed = WebDatasetVideos(str(train), train=True, seed=4)
    assert order(_keys_per_rank(other_seed, 2, 2, 2, 1)) != order(epochs[1])
    # The plan cuts the shard sequence into runs of equal length; a shorter run starts with one pad.
    plan = ds.plan(4)
    lengths = [len(sum((idx for _, idx in parts), [])) + pad for pad, parts in plan]
    assert lengths == [3, 3, 3, 3] and [pad for pad, _ in plan] == [False, False, False, True]
    # Evaluation: no shuffle, shard order kept, and no rank is refused for a small split.
    test = WebDatasetVideos(str(train))
    assert sorted(k for keys, _, _ in _keys_per_rank(test, 2, 2, 4, 0) for k in keys) == ds.keys


def test_a_split_that_would_leave_a_rank_only_padding_is_refused(packs):
    _, train, _ = packs
    ds = WebDatasetVideos(str(train), train=True)
    ds.shard_over(0, 2)
    with pytest.raises(ValueError, match="11 videos cannot be split evenly over 2 process"):
        ds.batches_per_rank(1, 2)  # batch 1: the padded run's pad would be a batch alone
    assert ds.batches_per_rank(2, 2) == 2 * 2  # 4 runs of 3: 2 batches per worker


def test_validation_carve_out_is_two_disjoint_streams(packs):
    _, train, _ = packs
    ds = WebDatasetVideos(str(train), train=True)
    fit, val = split_validation(ds, 0.3, seed=0)
    assert isinstance(fit, WebDatasetVideos) and isinstance(val, WebDatasetVideos)
    fit_keys = {it["key"] for it in fit}
    val_keys = {it["key"] for it in val}
    assert fit_keys.isdisjoint(val_keys) and fit_keys | val_keys == set(ds.keys)
    assert len(fit) == len(fit_keys) and len(val) == len(val_keys) >= 2
    assert val.labels == [ds.labels[ds.keys.index(k)] for k in sorted(val_keys)]


class _Crashing(DFEW):
    def read_clip(self, index, *args, **kw):
        if index == 4:
            raise KeyboardInterrupt("simulated crash")
        return super().read_clip(index, *args, **kw)


def test_interrupted_pack_resumes_to_the_same_bytes_and_a_foreign_pack_is_refused(packs, tmp_path):
    root, train, _ = packs
    with pytest.raises(KeyboardInterrupt):
        write_webdataset(_Crashing(root, 1, "train", num_frames=8, image_size=16), tmp_path / "p", num_frames=8,
                         image_size=16, shard_size=3, progress=False, layout="frames")
    assert sorted(p.name for p in (tmp_path / "p").glob("*.tar")) == ["shard-000000.tar"]
    _pack(root, tmp_path / "p")
    for k in range(4):
        name = f"shard-00000{k}.tar"
        assert (tmp_path / "p" / name).read_bytes() == (train / name).read_bytes()  # reproducible tars
    resumed, whole = (json.loads((d / "index.json").read_text()) for d in (tmp_path / "p", train))
    assert resumed.pop("name") == "p" and whole.pop("name") == "train" and resumed == whole
    with pytest.raises(ValueError, match="another source or settings .different image_size"):
        write_webdataset(DFEW(root, 1, "train", num_frames=8, image_size=24), tmp_path / "p", num_frames=8,
                         image_size=24, shard_size=3, progress=False)


def test_unreadable_video_and_damaged_frame_are_reported_not_fatal(tmp_path):
    root = make_dfew(tmp_path / "DFEW", size=32)
    for p in (root / "Clip" / "clip_224x224" / "00007").iterdir():
        corrupt(p)
    with pytest.warns(BadInputWarning):
        out = _pack(root, tmp_path / "pack")
    ds = WebDatasetVideos(str(out))
    items = {it["index"]: it for it in ds}
    assert items[2]["valid"] is False and not items[2]["video"].any() and items[2]["pad"] is False
    assert str(root / "Clip" / "clip_224x224" / "00007") in ds.bad_samples
    # A frame damaged inside a shard after packing: that sample is excluded, the others load.
    data = bytearray((out / "shard-000000.tar").read_bytes())
    with tarfile.open(out / "shard-000000.tar") as tar:
        member = tar.getmember("00000001.003.jpg")
    data[member.offset_data: member.offset_data + 40] = bytes(40)
    (out / "shard-000000.tar").write_bytes(bytes(data))
    again = {it["index"]: it["valid"] for it in WebDatasetVideos(str(out))}
    assert again == {0: True, 1: False, 2: False, 3: True}


def test_clear_errors_for_missing_changed_and_foreign_shards(packs, tmp_path):
    _, train, _ = packs
    with pytest.raises(FileNotFoundError, match=r"1 shard\(s\) of .* not found, e.g. .*shard-000009.tar"):
        WebDatasetVideos(str(train / "shard-{000000..000001}.tar") + "::" + str(train / "shard-000009.tar"))
    foreign = tmp_path / "foreign.tar"
    with tarfile.open(foreign, "w") as tar:
        info = tarfile.TarInfo("a.json")
        info.size = 2
        tar.addfile(info, __import__("io").BytesIO(b"{}"))
    with pytest.raises(ValueError, match=r"foreign.tar: cannot read the shard: sample 'a': its .json has no integer"):
        WebDatasetVideos(str(foreign))
    changed = tmp_path / "changed"
    shutil.copytree(train, changed)
    shutil.copy(changed / "shard-000000.tar", changed / "shard-000001.tar")  # other samples under shard 1's name
    with pytest.raises(ValueError, match="shard-000001.tar: 40960 bytes but its index says 30720: the shard changed"):
        WebDatasetVideos(str(changed))  # a local shard of another size than its index records: before training
    index = json.loads((changed / "index.json").read_text())
    for shard in index["shardlist"]:
        del shard["filesize"]  # an index without sizes: the change is found when the shard is read
    (changed / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="shard-000001.tar: 3 sample.s. listed for this shard are not in it"):
        list(WebDatasetVideos(str(changed)))


def test_decode_on_device_gives_the_worker_decoded_videos(packs):
    _, train, _ = packs
    a = WebDatasetVideos(str(train))
    b = WebDatasetVideos(str(train), decode_on_device=True)
    batch_a = collate_videos(list(a)[:5])
    batch_b = collate_videos(list(b)[:5])
    assert "video" not in batch_b and batch_b["jpeg_offsets"].shape == (5, 9)
    keep = torch.tensor([True, False, True, True, True])
    decoded, kept = batch_videos(batch_b, keep, "cpu")  # torchvision.io.decode_jpeg, one call for the batch
    assert torch.equal(kept, keep)
    assert decoded.shape == (4, 3, 8, 16, 16) and decoded.dtype == torch.uint8
    assert (decoded.int() - batch_a["video"][keep].int()).abs().max() <= 1  # two libjpeg-turbo builds


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvJPEG)")
def test_decode_on_the_gpu(packs):
    _, train, _ = packs
    batch = collate_videos(list(WebDatasetVideos(str(train), decode_on_device=True)))
    ref = collate_videos(list(WebDatasetVideos(str(train))))["video"]
    video, kept = batch_videos(batch, torch.ones(len(ref), dtype=torch.bool), "cuda")
    assert kept.all()
    assert video.is_cuda and video.shape == ref.shape
    assert (video.cpu().int() - ref.int()).abs().max() <= 2


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root():
    """``serve(folder) -> base URL``: a static HTTP server on 127.0.0.1, stopped after the test."""
    servers = []

    def serve(folder: Path) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_stream_over_loopback_http_and_a_pipe(packs, http_root):
    root, train, _ = packs
    url = http_root(train.parent)
    local = [(it["key"], it["video"]) for it in WebDatasetVideos(str(train))]
    for spec in (f"{url}/train/shard-{{000000..000003}}.tar", f"{url}/train/index.json"):
        remote = WebDatasetVideos(spec)
        assert remote.urls[0] == f"{url}/train/shard-000000.tar" and remote.samples == WebDatasetVideos(str(train)).samples
        got = [(it["key"], it["video"]) for it in remote]
        assert [k for k, _ in got] == [k for k, _ in local] and all(torch.equal(v, lv) for (_, v), (_, lv) in zip(got, local))
    piped = WebDatasetVideos(f"pipe:cat {train}/shard-{{000000..000003}}.tar")
    assert [it["key"] for it in piped] == [k for k, _ in local]
    with pytest.raises(ValueError, match="cannot read the shard"):
        WebDatasetVideos(f"{url}/train/shard-000077.tar")  # 404


def _torchrun_train(packs_dir, train_spec, test_spec, out, epochs=2):
    opts = [f"--model-option={k}={json.dumps(v)}" for k, v in GN_OPTIONS.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rdfer",
           "train", "webdataset", "--train", train_spec, "--test", test_spec, "--num-frames", "8",
           "--epochs", str(epochs), "--warmup-epochs", "1", "--batch-size", "4", "--workers", "2", "--no-augment",
           "--device", "cpu", "--quiet", "--out", str(out), "--logit-adjustment", "0"] + opts
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "http"])
def test_torchrun_two_ranks_two_workers_train_on_every_sample_once_per_epoch(packs, http_root, tmp_path, where):
    _, train, test = packs
    base = http_root(train.parent) if where == "http" else str(train.parent)
    rows = _torchrun_train(train.parent, f"{base}/train/shard-{{000000..000003}}.tar",
                           f"{base}/test/index.json" if where == "http" else str(test), tmp_path / "run")
    assert [r["train_videos"] for r in rows] == [11, 11]  # summed over both ranks: no sample lost or repeated
    assert [r["excluded_invalid"] for r in rows] == [0, 0]  # the padding items are not reported as bad
    flags = (tmp_path / "run" / "train_flags.csv").read_text().splitlines()[1:]
    assert sorted(int(line.split(",")[0]) for line in flags) == list(range(11))  # each index in the loss memory
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_last_epoch"]["num_samples"] == 3 and "bad_samples" not in results


def test_resume_at_an_epoch_boundary_is_bit_identical(packs, tmp_path):
    _, train_dir, test_dir = packs
    assert_resume_is_bit_identical(tmp_path, dataset="webdataset", train_source=str(train_dir),
                                   test_source=str(test_dir), batch_size=4, workers=2, augment=True)


def test_cli_pack_format_webdataset_then_train_and_eval(packs, tmp_path):
    root, _, _ = packs
    run = lambda *a: subprocess.run([sys.executable, "-m", "rdfer", *a], capture_output=True, text=True, cwd=REPO,
                                    timeout=300)
    for split in ("train", "test"):
        proc = run("pack", "dfew", "--root", str(root), "--split", split, "--format", "webdataset", "--num-frames",
                   "8", "--image-size", "16", "--shard-size", "4", "--quality", "95", "--quiet",
                   "--out", str(tmp_path / split))
        assert proc.returncode == 0, proc.stderr
    assert "packed 11 videos of DFEW fold 1 train as WebDataset shards" in run(
        "pack", "dfew", "--root", str(root), "--split", "train", "--format", "webdataset", "--num-frames", "8",
        "--image-size", "16", "--shard-size", "4", "--quality", "95", "--quiet", "--out", str(tmp_path / "train")).stdout
    assert json.loads((tmp_path / "train" / "index.json").read_text())["rdfer"]["quality"] == 95
    opts = [f"--model-option={k}={json.dumps(v)}" for k, v in GN_OPTIONS.items()]
    proc = run("train", "webdataset", "--train", str(tmp_path / "train" / "shard-{000000..000002}.tar"), "--test",
               str(tmp_path / "test"), "--num-frames", "8", "--epochs", "1", "--warmup-epochs", "1", "--batch-size", "4", "--workers", "1",
               "--device", "cpu", "--quiet", "--decode-on-device", "--out", str(tmp_path / "run"), *opts)
    assert proc.returncode == 0, proc.stderr
    assert "**videos in WebDataset shards test split**" in (tmp_path / "run" / "README.md").read_text()  # model card
    proc = run("eval", "webdataset", "--train", str(tmp_path / "train" / "index.json"), "--test", str(tmp_path / "test"),
               "--checkpoint", str(tmp_path / "run"), "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "eval_test" / "metrics.json").read_text())["num_samples"] == 3
    proc = run("train", "webdataset", "--train", str(tmp_path / "nowhere-{0..3}.tar"), "--test", str(tmp_path / "test"),
               "--device", "cpu", "--out", str(tmp_path / "bad"))
    assert proc.returncode != 0 and "4 shard(s) of" in proc.stderr and "not found" in proc.stderr
    proc = run("train", "synthetic", "--decode-on-device", "--device", "cpu", "--out", str(tmp_path / "bad2"))
    assert proc.returncode != 0 and "--decode-on-device applies to webdataset shards" in proc.stderr
