"""rdfer predict on generated and real videos, face handling, export to ONNX / TorchScript."""

import json
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

import rdfer
from conftest import REPO
from rdfer.inference.faces import crop_faces, fill_and_smooth, track_boxes
from rdfer.inference.predict import predict_frames, predict_video, read_video


def write_mp4(path, frames, fps=25):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_fill_and_smooth_interpolates_missing_boxes():
    boxes = np.array([[0, 0, 10, 10], [np.nan] * 4, [np.nan] * 4, [30, 0, 40, 10], [np.nan] * 4], dtype=float)
    filled = fill_and_smooth(boxes, window=1)
    assert filled[1].tolist() == [10, 0, 20, 10] and filled[2].tolist() == [20, 0, 30, 10]
    assert filled[4].tolist() == [30, 0, 40, 10]  # nearest at the end
    with pytest.raises(ValueError):
        fill_and_smooth(np.full((3, 4), np.nan))


def test_crop_faces_square_inside_frame():
    frame = np.zeros((100, 200, 3), np.uint8)
    (crop,) = crop_faces([frame], np.array([[180.0, 80.0, 199.0, 99.0]]), margin=0.5)
    assert crop.shape[0] == crop.shape[1] and crop.shape[0] > 0


def test_predict_generated_video_without_detection(trained_run, tmp_path):
    out, _ = trained_run
    model = rdfer.load_model(out)
    frames = [np.full((40, 40, 3), 10 * i, np.uint8) for i in range(20)]
    write_mp4(tmp_path / "clip.mp4", frames, fps=10)
    res = predict_video(tmp_path / "clip.mp4", model, detector=None)
    assert res.status == "ok" and res.emotion in rdfer.EMOTIONS
    assert sum(res.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert len(res.clip_predictions) == model.n_clips and res.agreement in (0.25, 0.5, 0.75, 1.0)
    assert res.fps == pytest.approx(10.0) and res.num_frames == 20
    a, b = res.key_window_seconds
    assert 0.0 <= a < b <= 2.0 + 1e-6  # inside the 2-second video


def test_predict_cli_no_face_and_unreadable(trained_run, tmp_path):
    out, _ = trained_run
    write_mp4(tmp_path / "blank.mp4", [np.full((64, 64, 3), 128, np.uint8)] * 10)
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    cmd = [sys.executable, "-m", "rdfer", "predict", str(tmp_path / "blank.mp4"), "--checkpoint", str(out), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 3, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "no_face"
    cmd[4] = str(tmp_path / "broken.mp4")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 4 and json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "unreadable"


def test_real_single_face(trained_run, real_clip):
    model = rdfer.load_model(trained_run[0])
    res = predict_video(real_clip("single_face.mp4"), model, detect_stride=2)
    assert res.status == "ok" and res.num_frames == 72 and res.fps == pytest.approx(30.0)
    examined = len(range(0, 72, 2))
    assert len(res.frames_without_face) < 0.2 * examined  # a box on most frames


def test_real_no_face(trained_run, real_clip):
    res = predict_video(real_clip("no_face.mp4"), rdfer.load_model(trained_run[0]), detect_stride=3)
    assert res.status == "no_face" and "no face" in res.message


def test_real_face_then_no_face(trained_run, real_clip):
    res = predict_video(real_clip("face_noface.mov"), rdfer.load_model(trained_run[0]), detect_stride=3)
    assert res.status == "ok" and res.emotion in rdfer.EMOTIONS
    assert res.frames_without_face and "without a face" in res.message
    assert res.num_frames == 169


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(trained_run, tmp_path, fmt):
    out, _ = trained_run
    suffix = "onnx" if fmt == "onnx" else "pt"
    cmd = [sys.executable, "-m", "rdfer", "export", "--checkpoint", str(out), "--format", fmt, "--output", str(tmp_path / f"m.{suffix}")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    model = rdfer.load_model(out).eval()
    video = torch.randn(3, 3, 8, 32, 32)  # batch 3: the batch axis is dynamic
    with torch.no_grad():
        ref = model(video)
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(tmp_path / "m.onnx"))
        got = [torch.from_numpy(g) for g in session.run(None, {"video": video.numpy()})]
        atol = 1e-4
    else:
        got = list(torch.jit.load(str(tmp_path / "m.pt"))(video))
        atol = 1e-5
    # Every output field, in RDFEROutput's order: logits, clip_logits, mu, delta, features, positions,
    # glimpse_logits (per-glimpse evidence of the default "peak" locator), centres ((B, 0) but for
    # the "keyinstance" locator).
    assert len(got) == len(ref) == 8
    for name, g, r in zip(type(ref)._fields, got, ref):
        assert g.shape == r.shape and torch.allclose(g, r, atol=atol), name


def test_predict_with_a_pluggable_detector_reports_faceless_frames(trained_run, tmp_path):
    # A detector that "finds" a face on the first 12 of 20 frames only: the video is still
    # predicted from the crops, the last 8 frames are reported without a face (boxes filled in).
    out, _ = trained_run
    frames = [np.full((48, 64, 3), 60 + 5 * i, np.uint8) for i in range(20)]
    for i, f in enumerate(frames):
        f[0, 0] = i  # the frame number, so the detector knows where it is
    write_mp4(tmp_path / "clip.mp4", frames, fps=10)
    seen = []

    def detector(rgb):
        seen.append(rgb.shape)
        return (8.0, 4.0, 40.0, 36.0) if len(seen) <= 12 else None

    res = predict_video(tmp_path / "clip.mp4", rdfer.load_model(out), detector=detector, detect_stride=1)
    assert len(seen) == 20 and seen[0] == (48, 64, 3)
    assert res.status == "ok" and res.emotion in rdfer.EMOTIONS
    assert res.frames_without_face == list(range(12, 20)) and "without a face" in res.message


def test_streamed_prediction_equals_the_in_memory_path(trained_run, tmp_path):
    """predict_video decodes twice instead of holding the video: same result as decoding every
    frame into memory, detecting, cropping and sampling there."""
    model = rdfer.load_model(trained_run[0])
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (192, 256, 3), dtype=np.uint8) for _ in range(150)]
    for i, f in enumerate(frames):
        f[:16, :16] = (i * 37) % 256  # what the detector reads: its box moves, some frames are "faceless"
    write_mp4(tmp_path / "long.mp4", frames, fps=25)

    def detector(rgb):  # a face box that drifts with the frame content, missing on some frames
        m = float(rgb[:8, :8].mean())
        return None if m < 40 else (m / 4, 20.0, m / 4 + 120.0, 140.0)

    res = predict_video(tmp_path / "long.mp4", model, detector=detector, detect_stride=2)
    decoded, fps = read_video(tmp_path / "long.mp4")
    track = track_boxes(decoded, detector, stride=2)
    crops = crop_faces(decoded, fill_and_smooth(track.boxes))
    ref, loaded = predict_frames(model, crops, model.data_config["classes"], model.data_config["num_frames"],
                                 model.data_config["image_size"])
    assert res.status == "ok" and res.num_frames == 150 and res.fps == pytest.approx(fps)
    assert np.allclose(list(res.probabilities.values()), ref.probs[0].numpy(), atol=1e-4)
    faceless = track.frames_without_face
    assert 5 < len(faceless) < 140 and res.frames_without_face == faceless


MEMORY_SCRIPT = """
import sys
import rdfer
from rdfer.inference.predict import predict_video

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

model = rdfer.load_model(sys.argv[1])
predict_video(sys.argv[3], model, detector=None)  # warm-up: lazy initialisation of torch and FFmpeg
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS")
res = predict_video(sys.argv[2], model, detector=None)
assert res.status == "ok", res
print(status("VmHWM") - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak resident size from /proc")
def test_predict_memory_does_not_grow_with_the_video(trained_run, tmp_path):
    """A video is never held whole: the peak memory of a prediction stays far below the size of
    the decoded frames (here 300 x 480 x 640 x 3 = 276 MB)."""
    x = np.arange(640)[None, :, None]
    frames = [np.broadcast_to((x + 3 * i) % 256, (480, 640, 3)).astype(np.uint8) for i in range(300)]
    write_mp4(tmp_path / "big.mp4", frames, fps=30)
    write_mp4(tmp_path / "small.mp4", [f[:48, :64] for f in frames[:10]], fps=30)
    held = sum(f.nbytes for f in frames)
    del frames
    script = tmp_path / "measure.py"
    script.write_text(MEMORY_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(trained_run[0]), str(tmp_path / "big.mp4"),
                           str(tmp_path / "small.mp4")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    growth = int(proc.stdout.split()[-1])
    print(f"growth {growth / 2**20:.1f} MiB for {held / 2**20:.0f} MiB of frames")
    assert growth < held / 4, f"prediction grew the process by {growth / 2**20:.0f} MiB"
