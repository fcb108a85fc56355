"""`rdfer predict` and `rdfer pack --crop-faces` decode a video once when its header says how many
frames it has: the frames to sample are kept while the face is tracked. The result must be the
two-pass result, byte for byte; a header without a frame count (Matroska) or a budget too small
falls back to two passes. Speed: benchmarks/predict_speed.py."""

import av
import numpy as np
import pytest

from data_trees import write_video
from rdfer.data.sampling import eval_indices
from rdfer.inference.faces import create_face_detector
from rdfer.inference.predict import ONE_PASS_BYTES, _expected_frames, read_face_clip


def _both(path, detector):
    select = lambda n: eval_indices(n, 16)  # noqa: E731
    one = read_face_clip(path, select, 48, None, detector, 4, one_pass_bytes=ONE_PASS_BYTES)
    two = read_face_clip(path, select, 48, None, detector, 4, one_pass_bytes=0)
    return one, two


def _same(one, two):
    assert np.array_equal(one.frames, two.frames) and np.array_equal(one.frame_index, two.frame_index)
    assert (one.num_frames, one.fits, one.frames_without_face) == (two.num_frames, two.fits, two.frames_without_face)


@pytest.mark.parametrize("name", ["single_face.mp4", "face_noface.mov"])
def test_one_pass_equals_two_passes_on_real_faces(real_clip, name):
    path = real_clip(name)
    assert _expected_frames(path)[0] > 0  # these headers give the count: the one-pass path is taken
    _same(*_both(path, create_face_detector("haar")))


def test_whole_frames_and_headers_without_a_count(tmp_path):
    mp4 = write_video(tmp_path / "gray.mp4", 19, size=40)
    assert _expected_frames(mp4) == (19, 40, 40)
    _same(*_both(mp4, None))  # --no-detect: whole frames, one pass
    mkv = tmp_path / "gray.mkv"
    with av.open(str(mp4)) as src, av.open(str(mkv), "w") as dst:  # the same frames, a header without a count
        stream = dst.add_stream("ffv1", rate=10)
        stream.width = stream.height = 40
        for frame in src.decode(video=0):
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    assert _expected_frames(mkv)[0] == 0
    one, two = _both(mkv, None)  # falls back to two passes
    _same(one, two)
    assert one.num_frames == 19
