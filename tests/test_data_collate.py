"""Batches: ``__getitems__`` writes videos straight into one batch tensor that collate_videos
hands on without copying, in-process and from DataLoader workers (where small fields travel
inside the pickle), with the same values as item-by-item loading; decoding threads change
nothing in the result."""

import gc
import os
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from data_trees import corrupt, make_dfew, video_frame_numbers
from rdfer.data import DFEW, PackedDataset, batch_buffer, collate_videos, pack_dataset
from rdfer.data import shm
from rdfer.data.collate import _WorkerBatch


@pytest.fixture
def dfew(tmp_path):
    return make_dfew(tmp_path / "DFEW", size=32)


def _assert_same_batch(a, b):
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert isinstance(b[key], torch.Tensor) and a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key].nan_to_num(-1) if a[key].is_floating_point() else a[key],
                               b[key].nan_to_num(-1) if b[key].is_floating_point() else b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("packed", [False, True])
def test_getitems_equals_items_and_is_not_copied(dfew, tmp_path, packed):
    ds = DFEW(dfew, 1, "train", num_frames=8, image_size=16, train=False)
    if packed:
        ds = PackedDataset(pack_dataset(ds, tmp_path / "pack", num_frames=8, image_size=16, progress=False))
    items = ds.__getitems__([3, 0, 2])
    one_by_one = collate_videos([ds[3], ds[0], ds[2]])
    batch = collate_videos(items)
    _assert_same_batch(batch, one_by_one)
    assert batch["video"].shape == (3, 3, 8, 16, 16) and batch["video"].is_contiguous()
    assert batch["video"].data_ptr() == items[0]["video"].data_ptr()  # the buffer itself, no stacking copy
    assert video_frame_numbers(batch["video"][0]) == [p + 1 for p in batch["frame_index"][0].tolist()]


def test_collate_copies_anything_but_a_whole_buffer_in_order():
    buf = batch_buffer((3, 2, 4))
    buf.copy_(torch.arange(24, dtype=torch.uint8).view(3, 2, 4))
    rows = [{"video": buf[k], "label": k} for k in range(3)]
    assert collate_videos(rows)["video"].data_ptr() == buf.data_ptr()
    for subset in ([rows[2], rows[0], rows[1]], rows[:2]):  # out of order, or part of the buffer
        out = collate_videos(subset)["video"]
        assert out.data_ptr() != buf.data_ptr()
        assert torch.equal(out, torch.stack([r["video"] for r in subset]))
    plain = torch.arange(24, dtype=torch.uint8).view(3, 2, 4)  # rows of a user's tensor: never aliased
    out = collate_videos([{"video": plain[k]} for k in range(3)])["video"]
    assert out.data_ptr() != plain.data_ptr() and torch.equal(out, plain)


def test_worker_batch_pickles_small_tensors_by_value():
    batch = {"video": torch.zeros(2, 3, 4, 8, 8, dtype=torch.uint8), "label": torch.tensor([1, 2]),
             "valid": torch.tensor([True, False]), "fps": torch.tensor([25.0, float("nan")], dtype=torch.float64),
             "path": ["a", "b"]}
    back = pickle.loads(pickle.dumps(_WorkerBatch(batch)))
    assert type(back) is dict and list(back) == list(batch)
    _assert_same_batch(back, batch)
    back["label"] += 1  # writable, like any batch tensor
    assert back["label"].tolist() == [2, 3]


def _through_pickle(batch):
    # What a DataLoader worker does with a batch, and the main process on receiving it.
    return pickle.loads(ForkingPickler.dumps(_WorkerBatch(batch)))


@pytest.mark.skipif(not shm.AVAILABLE, reason="needs memfd_create (Linux)")
def test_video_slots_are_reused_only_once_every_view_is_gone():
    video = torch.arange(2 * 3 * 8 * 64 * 64, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 8, 64, 64)
    nbytes = video.numel()
    pool = shm._POOL.setdefault((os.getpid(), nbytes), [])
    pool.clear()
    got = _through_pickle({"video": video, "label": torch.tensor([1, 2])})
    assert torch.equal(got["video"], video) and got["video"].dtype == torch.uint8 and len(pool) == 1
    assert not pool[0].free  # the main process may still read it
    view = got["video"][1, 2]  # a view keeps the storage, so the slot, busy
    del got
    gc.collect()
    assert not pool[0].free and torch.equal(view, video[1, 2])
    del view
    gc.collect()
    assert pool[0].free
    again = _through_pickle({"video": video.flip(0).contiguous()})
    assert len(pool) == 1 and torch.equal(again["video"], video.flip(0))  # the same slot, refilled
    # Batches kept by the main process: after MAX_SLOTS busy slots PyTorch's own path takes over.
    kept = [_through_pickle({"video": video + k}) for k in range(shm.MAX_SLOTS + 2)]
    assert len(pool) == shm.MAX_SLOTS
    assert all(torch.equal(b["video"], video + k) for k, b in enumerate(kept))
    assert sum(b["video"].is_shared() for b in kept) == 3  # again's slot stays busy: 7 new + 3 fallbacks
    del again, kept
    gc.collect()
    assert all(slot.free for slot in pool)
    pool.clear()
    features = torch.randn(4, 50_000, dtype=torch.float64)  # any dtype, not only uint8 videos
    back = _through_pickle({"features": features})["features"]
    assert back.dtype == torch.float64 and torch.equal(back, features) and not back.is_shared()


@pytest.mark.parametrize("packed", [False, True])
def test_dataloader_workers_give_the_in_process_batches(dfew, tmp_path, packed):
    # 64 px: a batch's video (196 KB) is over the by-value limit and goes through shared memory
    ds = DFEW(dfew, 1, "train", num_frames=8, image_size=64, train=False)
    if packed:
        ds = PackedDataset(pack_dataset(ds, tmp_path / "pack", num_frames=8, image_size=64, progress=False))
    subset = Subset(ds, [3, 1, 0, 2])  # Subset forwards __getitems__
    expected = list(DataLoader(subset, batch_size=2, collate_fn=collate_videos))
    got = list(DataLoader(subset, batch_size=2, num_workers=2, collate_fn=collate_videos))
    assert len(got) == len(expected) == 2
    for a, b in zip(got, expected):
        assert type(a) is dict
        _assert_same_batch(a, b)
        assert not a["label"].is_shared()  # small fields came inside the pickle
        assert a["video"].is_shared() is not shm.AVAILABLE  # the video through a reusable slot (Linux)


def _threads_in_worker(worker_id):
    ds = torch.utils.data.get_worker_info().dataset
    assert ds._threads() == 1, "DataLoader workers decode with one thread each"


def test_decode_threads_same_result_and_defaults(dfew):
    clip = dfew / "Clip" / "clip_224x224" / "00001"
    corrupt(clip / "4.jpg")  # the replacement logic must not depend on the threads
    kw = dict(num_frames=12, image_size=16, train=False)
    one = DFEW(dfew, 1, "train", decode_threads=1, **kw)
    four = DFEW(dfew, 1, "train", decode_threads=4, **kw)
    with pytest.warns(Warning):
        a = [one[i] for i in range(len(one))]
    with pytest.warns(Warning):
        b = [four[i] for i in range(len(four))]
    _assert_same_batch(collate_videos(a), collate_videos(b))
    assert one.replaced_frames == four.replaced_frames and len(one.replaced_frames) == 1
    auto = DFEW(dfew, 1, "train", **kw)
    assert auto.decode_threads is None and 1 <= auto._threads() <= 4
    list(DataLoader(auto, batch_size=2, num_workers=1, collate_fn=collate_videos, worker_init_fn=_threads_in_worker))
    with pytest.raises(ValueError, match="decode_threads"):
        DFEW(dfew, 1, "train", decode_threads=0)
