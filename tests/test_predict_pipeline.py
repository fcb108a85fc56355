"""`rdfer predict` pipelines its work: a video's face pass decodes in a background thread while
the detector works (`rdfer.inference.predict._in_background`), and the face passes of the next
videos run while the model predicts (`predict_videos`). The same items in the same order, errors
raised where the results are used, and no thread left behind however a pass ends (a container
must never be closed under a thread still decoding from it)."""

import threading

import numpy as np
import pytest

from data_trees import write_video
from rdfer.inference.faces import create_face_detector
from rdfer.inference.predict import UnreadableVideo, _in_background, scan_video


def _decoding_threads():
    return [t for t in threading.enumerate() if t.name == "rdfer-decode"]


def test_items_in_order_and_thread_gone():
    with _in_background(iter(range(1000)), depth=4) as stream:
        assert list(stream) == list(range(1000))
    assert _decoding_threads() == []


def test_producer_error_is_raised_to_the_consumer():
    def items():
        yield 1
        yield 2
        raise UnreadableVideo("broken.mp4: a broken packet")

    seen = []
    with pytest.raises(UnreadableVideo, match="broken.mp4"):
        with _in_background(items(), depth=1) as stream:
            for x in stream:
                seen.append(x)
    assert seen == [1, 2] and _decoding_threads() == []


def test_consumer_stopping_early_stops_the_producer():
    produced = []

    def items():
        for k in range(10_000):
            produced.append(k)
            yield k

    kept = []
    with pytest.raises(RuntimeError, match="consumer broke"):
        with _in_background(items(), depth=3) as stream:
            for x in stream:
                kept.append(stream)  # a reference that outlives the block, as a traceback's would
                if x == 4:
                    raise RuntimeError("consumer broke")
    assert _decoding_threads() == []
    assert len(produced) <= 5 + 3 + 2  # stopped at once, not decoded to the end


def test_a_failing_detector_leaves_no_thread(tmp_path):
    video = write_video(tmp_path / "v.mp4", 20, size=48)  # frames 0, 4, 8 ... are examined

    def detector(frame):
        if detector.calls == 2:  # the third keyframe, while later frames are being decoded
            raise RuntimeError("detector broke")
        detector.calls += 1
        return None

    detector.calls = 0
    with pytest.raises(RuntimeError, match="detector broke"):
        scan_video(video, detector, stride=4)
    assert _decoding_threads() == []


def test_a_truncated_video_is_unreadable_not_a_hang(tmp_path, real_clip):
    data = real_clip("single_face.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index says more frames than the file holds
    try:
        n, _, track = scan_video(cut, create_face_detector("haar"), stride=8)
    except UnreadableVideo:
        pass
    else:  # FFmpeg may decode what is there: then the count and boxes cover exactly that
        assert 0 < n == len(track.boxes) and np.isfinite(track.boxes[track.examined & track.has_face]).all()
    assert _decoding_threads() == []


def test_predict_videos_gives_predict_video_results_in_order(trained_run, real_clip, tmp_path):
    """Pipelined over videos (face passes in threads) and one at a time: the same results, in the
    given order, bad files included."""
    import rdfer
    from rdfer.inference.predict import predict_video, predict_videos

    model = rdfer.load_model(trained_run[0]).eval()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    videos = [real_clip("single_face.mp4"), broken, real_clip("no_face.mp4"), real_clip("face_noface.mov"),
              real_clip("single_face.mp4")]
    alone = [predict_video(v, model).to_dict() for v in videos]
    together = [r.to_dict() for r in predict_videos(videos, model, workers=2)]
    assert [r["status"] for r in together] == ["ok", "unreadable", "no_face", "ok", "ok"]
    assert together == alone
    assert _decoding_threads() == []


def test_predict_videos_runs_a_callable_detector_in_one_thread(trained_run, real_clip):
    """A user's detector need not be thread-safe: it is never called from two threads at once."""
    import rdfer
    from rdfer.inference.faces import create_face_detector
    from rdfer.inference.predict import predict_videos

    model = rdfer.load_model(trained_run[0]).eval()
    haar, busy, overlaps, threads = create_face_detector("haar"), [], [], set()

    def detector(frame):
        overlaps.append(bool(busy))
        busy.append(1)
        threads.add(threading.get_ident())
        try:
            return haar(frame)
        finally:
            busy.pop()

    clips = [real_clip("single_face.mp4")] * 3
    results = list(predict_videos(clips, model, detector=detector, workers=4))
    assert [r.status for r in results] == ["ok"] * 3 and len(overlaps) > 10
    assert not any(overlaps) and len(threads) == 1
