"""Cheap face finding for predict: strided detection with interpolation, exhaustive look on a
jump, detection at reduced resolution by the decoder, and the boxes on the real clips against
the per-frame boxes of the implementation before issue #17 (tests/data/real_video_haar_boxes.json)."""

import json

import av
import numpy as np
import pytest

from conftest import REPO
from rdfer.inference.faces import HaarFaceDetector, box_iou, fill_and_smooth, track_boxes
from rdfer.inference.predict import scan_video


def moving_box(k):
    """A face box gliding right 2 px a frame, jumping at frame 23, gone from frame 40 on."""
    if k >= 40:
        return None
    x = 10 + 2 * k + (100 if k >= 23 else 0)
    return (float(x), 20.0, x + 50.0, 70.0)


def test_track_boxes_examines_few_frames_and_places_changes_exactly():
    calls = []

    def detector(frame):
        calls.append(int(frame[0, 0]))
        return moving_box(int(frame[0, 0]))

    converted = []

    def thunk(k):
        def make():
            converted.append(k)
            return np.full((4, 4), k, np.uint8)
        return make

    track = track_boxes((thunk(k) for k in range(60)), detector, stride=5)
    # Keyframes 0, 5, ..., 55 and the last frame, plus every frame of the two intervals with a change.
    expected = set(range(0, 60, 5)) | {59} | set(range(21, 25)) | set(range(36, 40))
    assert set(calls) == expected and len(calls) == len(expected) and converted == calls
    assert track.examined.sum() == len(expected)
    assert track.has_face.tolist() == [k < 40 for k in range(60)]
    assert track.frames_without_face == list(range(40, 60))
    filled = fill_and_smooth(track.boxes, window=1)
    for k in range(40):  # interpolation between keyframes is exact for linear motion, the jump is not smeared
        assert filled[k].tolist() == pytest.approx(moving_box(k)), k


def test_track_boxes_stride_one_is_per_frame_detection():
    track = track_boxes([np.full((2, 2), k, np.uint8) for k in range(30)], lambda f: moving_box(int(f[0, 0])), stride=1)
    assert track.examined.all()
    assert [None if np.isnan(b[0]) else tuple(b) for b in track.boxes] == [moving_box(k) for k in range(30)]


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def write_square_video(path, n=24, size=(320, 240)):
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(n):
            frame = np.zeros((h, w, 3), np.uint8)
            frame[60:140, 100 + 2 * k:180 + 2 * k] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class SquareDetector:
    """Finds the bright square; declares a working size, so the decoder hands it small frames."""

    max_side = 80

    def __init__(self):
        self.shapes = []

    def __call__(self, frame):
        self.shapes.append(frame.shape)
        ys, xs = np.nonzero(frame[..., 0] > 128)
        return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else None


def test_scan_video_detects_at_the_detectors_size_and_returns_full_frame_boxes(tmp_path):
    write_square_video(tmp_path / "sq.mp4")
    det = SquareDetector()
    n, fps, track = scan_video(tmp_path / "sq.mp4", det, stride=4)
    assert n == 24 and fps == pytest.approx(25.0)
    assert set(det.shapes) == {(60, 80, 3)} and len(det.shapes) == len(range(0, 24, 4)) + 1
    boxes = fill_and_smooth(track.boxes, window=1)
    for k in range(24):  # within a downscaled pixel (4 full-size pixels) of the true square
        assert boxes[k] == pytest.approx([100 + 2 * k, 60, 180 + 2 * k, 140], abs=6), k


REFERENCE = json.loads((REPO / "tests" / "data" / "real_video_haar_boxes.json").read_text())["clips"]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_real_clip_boxes_match_per_frame_detection(real_clip, name):
    """The default (stride 8, 320 px) finds a face on the same frames as per-frame detection at
    480 px did before, with boxes of IoU >= 0.8 on every frame where both find one."""
    path = real_clip(name)
    ref = REFERENCE[name]
    old = np.array([[np.nan] * 4 if b is None else b for b in ref["boxes"]], dtype=float)
    det = HaarFaceDetector()
    n, _, track = scan_video(path, det)
    assert n == ref["num_frames"]
    old_face = ~np.isnan(old[:, 0])
    assert (track.has_face == old_face).mean() >= 0.97
    assert track.examined.sum() <= 0.45 * n  # far fewer detections than frames
    both = np.flatnonzero(old_face & track.has_face)
    if len(both):
        new = fill_and_smooth(track.boxes)
        ious = [box_iou(new[k], old[k]) for k in both]
        assert min(ious) >= 0.8 and np.mean(ious) >= 0.9, (min(ious), np.mean(ious))
