"""How fast is ``rdfer predict``? Seconds of video per second of wall time, and peak memory.

    python benchmarks/predict_speed.py                      # full run: 640x360 and 1280x720, 10-60 s (a few minutes)
    python benchmarks/predict_speed.py --quick --out /tmp/p # smoke run: 3 s and 2 s videos

Videos are generated from a real face: the frames of ``single_face.mp4`` from the real test
clips (``../shared/data/real-video``, when present) played forwards and backwards in a loop,
scaled to 640x360 and 1280x720, 30 fps, H.264 (libx264, CRF 23). Without the real clips a
drawn face is used instead (the Haar cascade may not find it; the table says so). The real
clips themselves are measured too when present.

Each measurement runs in a fresh process: ``rdfer_small`` (random weights: speed does not depend
on them) saved with the training defaults (64 frames of 112 px), loaded once, one warm-up
prediction on a tiny video, then ``rdfer.predict_video`` on the video, timed (the default
setting 3 times, the median reported). Peak memory is the growth of the peak resident size
(``VmHWM``, reset before each call) over the resident size before it, the largest of the calls. Two settings:

* **default**: detection on every 8th frame at 320 px (``detect_stride=8``), near the last box
  (a quarter of its side around it, faces of 0.75-1.33 times its size) except every 6th time,
  boxes interpolated, every frame looked at only where the box jumps or a face appears or
  leaves; the video decoded in a background thread while the detector works;
* **per-frame** (the settings before issue #17): detection on every frame at 480 px
  (``detect_stride=1``, ``HaarFaceDetector(max_side=480)``), on the 10-second videos and the
  real clips only.

``rdfer predict`` from the command line (one video, process start and model load included) is
timed once per 10-second video. Many videos in one call: ``predict_videos`` over the real clips
(5 times each) with 1 and 2 face-pass workers. Writes ``<out>/predict_speed.{json,md}`` (``predict_speed_quick.*``
with --quick; default ``benchmarks/results``) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

REAL_DIR = ROOT.parent / "shared" / "data" / "real-video"
GOALS = {(640, 360): 5.0, (1280, 720): 2.0}  # x real time, issue #17
GOAL_20S = 30.0  # x real time on the 20 s 640x360 clip (2 cores), issue #36


def goal_for(size: tuple, seconds: float) -> float:
    return GOAL_20S if (size, seconds) == ((640, 360), 20.0) else GOALS[size]
STRIDE = 8  # predict_video's default detect_stride

WORKER = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[4]))
import rdfer
from rdfer.inference.faces import HaarFaceDetector
from rdfer.inference.predict import predict_video

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

device = sys.argv[6]
model = rdfer.load_model(sys.argv[1], map_location=device).eval()
stride, max_side = int(sys.argv[2]), int(sys.argv[3])
predict_video(sys.argv[5], model, detector=HaarFaceDetector(max_side=max_side), detect_stride=stride, device=device)  # warm-up
for video in sys.argv[7:]:
    detector = HaarFaceDetector(max_side=max_side)
    calls = []
    def counted(frame):
        calls.append(1)
        return detector(frame)
    def counted_track(frame, previous):
        calls.append(1)
        return detector.track(frame, previous)
    counted.max_side = detector.max_side
    if stride > 1:  # the per-frame baseline searches every whole frame, as before issue #17
        counted.track = counted_track
    runs = []
    for _ in range(3 if stride > 1 else 1):  # the default setting: the median of 3 calls (the slow baseline: 1)
        calls.clear()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current resident size
        before = status("VmRSS")
        t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        res = predict_video(video, model, detector=counted, detect_stride=stride, device=device)
        if device != "cpu":
            torch.cuda.synchronize()
        wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        runs.append((wall, cpu, (status("VmHWM") - before) / 2**20))
    wall, cpu = sorted(r[0] for r in runs)[len(runs) // 2], sorted(r[1] for r in runs)[len(runs) // 2]
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_growth_mib": max(r[2] for r in runs), "status": res.status,
                      "num_frames": res.num_frames, "fps": res.fps, "detector_calls": len(calls), "calls": len(runs),
                      "wall_runs_s": [r[0] for r in runs], "frames_without_face": len(res.frames_without_face)}), flush=True)
"""


def _source_frames(quick: bool) -> tuple:
    """RGB frames of a real face (the real test clip), or of a drawn one when it is absent."""
    import av

    clip = REAL_DIR / "single_face.mp4"
    if clip.is_file():
        with av.open(str(clip)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return frames + frames[::-1], "real face (single_face.mp4, looped forwards and backwards)"
    from dataloading import _face_frame  # the drawn face of the data-loading benchmark

    rng = np.random.default_rng(0)
    spec = {"background": rng.integers(90, 140, (224, 224, 3), dtype=np.uint8), "shift": 8.0, "skin": (205, 160, 130),
            "expression": 0.8, "grain": rng.normal(0, 7, (256, 256, 3)).astype(np.int16)}
    faces = [np.asarray(_face_frame(rng, spec, t / 30)) for t in range(30)]
    frames = [np.pad(f, ((68, 68), (208, 208), (0, 0)), constant_values=120) for f in faces]  # 360 x 640
    return frames, "drawn face (real clips absent)"


def make_video(path: Path, frames: List[np.ndarray], size: tuple, seconds: float, fps: int = 30) -> Path:
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for k in range(int(round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(frames[k % len(frames)], format="rgb24")
            if (frame.width, frame.height) != (w, h):
                frame = frame.reformat(width=w, height=h)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def measure(model_dir: Path, videos: List[Path], warm: Path, stride: int, max_side: int, threads: int,
            device: str = "cpu") -> List[Dict[str, Any]]:
    """``predict_video`` on each of ``videos`` in one fresh process (model loaded and warmed up once)."""
    if not videos:
        return []
    proc = subprocess.run([sys.executable, "-c", WORKER, str(model_dir), str(stride), str(max_side), str(threads), str(warm),
                           device, *map(str, videos)], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {videos} failed:\n{proc.stderr[-3000:]}")
    out = []
    for line in proc.stdout.strip().splitlines()[-len(videos):]:
        res = json.loads(line)
        seconds = res["num_frames"] / res["fps"]
        res.update(video_s=round(seconds, 2), x_realtime=round(seconds / res["wall_s"], 2), wall_s=round(res["wall_s"], 3),
                   cpu_s=round(res["cpu_s"], 3), x_realtime_per_cpu_s=round(seconds / max(res["cpu_s"], 1e-9), 2),
                   peak_growth_mib=round(res["peak_growth_mib"], 1))
        out.append(res)
    return out


WORKER_MANY = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
import rdfer
from rdfer.inference.predict import predict_videos

model = rdfer.load_model(sys.argv[1], map_location="cpu").eval()
videos = sys.argv[4:]
list(predict_videos([sys.argv[3]], model))  # warm-up
for workers in (1, 2, 1, 2):
    t0 = time.perf_counter()
    results = list(predict_videos(videos, model, workers=workers))
    wall = time.perf_counter() - t0
    seconds = sum(r.num_frames / r.fps for r in results if r.fps)
    print(json.dumps({"workers": workers, "wall_s": wall, "video_s": seconds, "videos": len(videos)}), flush=True)
"""


def measure_many(model_dir: Path, videos: List[Path], warm: Path, threads: int) -> List[Dict[str, Any]]:
    """``predict_videos`` over ``videos`` with 1 and with 2 face-pass workers (two rounds each, the
    faster kept), in one fresh process."""
    proc = subprocess.run([sys.executable, "-c", WORKER_MANY, str(model_dir), str(threads), str(warm), *map(str, videos)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring predict_videos failed:\n{proc.stderr[-3000:]}")
    best: Dict[int, Dict[str, Any]] = {}
    for line in proc.stdout.strip().splitlines():
        r = json.loads(line)
        if r["workers"] not in best or r["wall_s"] < best[r["workers"]]["wall_s"]:
            best[r["workers"]] = r
    return [{**r, "x_realtime": r["video_s"] / r["wall_s"]} for _, r in sorted(best.items())]


def cli_wall(model_dir: Path, video: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rdfer", "predict", str(video), "--checkpoint", str(model_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"rdfer predict {video} failed:\n{proc.stderr[-3000:]}")
    return round(time.perf_counter() - t0, 2)


def box_agreement() -> Dict[str, Any]:
    """Default settings vs the per-frame boxes saved before issue #17 (tests/data), real clips."""
    from rdfer.inference.faces import HaarFaceDetector, box_iou, fill_and_smooth
    from rdfer.inference.predict import scan_video

    ref = json.loads((ROOT / "tests" / "data" / "real_video_haar_boxes.json").read_text())["clips"]
    out = {}
    for name, r in ref.items():
        if not (REAL_DIR / name).is_file():
            continue
        _, _, track = scan_video(REAL_DIR / name, HaarFaceDetector(), STRIDE)
        old = np.array([[np.nan] * 4 if b is None else b for b in r["boxes"]], dtype=float)
        old_face = ~np.isnan(old[:, 0])
        both = np.flatnonzero(old_face & track.has_face)
        row = {"frames": len(old), "face_frames_before": int(old_face.sum()), "face_frames_now": int(track.has_face.sum()),
               "same_face_decision": round(float((old_face == track.has_face).mean()), 4),
               "detector_calls": int(track.examined.sum())}
        if len(both):
            new = fill_and_smooth(track.boxes)
            ious = [box_iou(new[k], old[k]) for k in both]
            row.update(iou_min=round(float(min(ious)), 3), iou_mean=round(float(np.mean(ious)), 3))
        out[name] = row
    return out


def to_markdown(result: Dict[str, Any]) -> str:
    lines = [f"# rdfer predict speed{' (quick)' if result['quick'] else ''}", "",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}  ",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, {result['threads']} torch threads; "
             f"load average before/after: {result['load_before']} / {result['load_after']}  ",
             f"Model: rdfer_small (64 frames of 112 px); videos: {result['source']}, 30 fps, H.264  ",
             "x real time = video seconds / wall seconds of `predict_video` (model loaded; default setting: the median of 3 calls, all in the JSON). CPU (s) = user + system time "
             "of the process during the call: on a shared machine the wall time also counts waiting for a core, the CPU "
             "time does not (both torch threads and OpenCV's may run at once, so CPU can exceed wall).", "",
             "| video | size | length (s) | setting | detector calls | wall (s) | x real time | goal | CPU (s) | video s per CPU s | peak memory growth (MiB) | `rdfer predict` CLI wall (s) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        goal = r.get("goal")
        lines.append(f"| {r['video']} | {r['size']} | {r['video_s']} | {r['setting']} | {r['detector_calls']} | {r['wall_s']} | "
                     f"**{r['x_realtime']}** | {'-' if goal is None else f'>= {goal}x ' + ('met' if r['x_realtime'] >= goal else 'NOT met')} | "
                     f"{r['cpu_s']} | {r['x_realtime_per_cpu_s']} | {r['peak_growth_mib']} | {r.get('cli_wall_s', '-')} |")
    if result["boxes"]:
        lines += ["", "Face boxes of the default settings vs per-frame detection before issue #17 (real clips; IoU on frames "
                  "where both find a face, after the same interpolation and smoothing):", "",
                  "| clip | frames | face frames before / now | same face decision | detector calls | IoU min | IoU mean |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, b in result["boxes"].items():
            lines.append(f"| {name} | {b['frames']} | {b['face_frames_before']} / {b['face_frames_now']} | {b['same_face_decision']:.1%} | "
                         f"{b['detector_calls']} | {b.get('iou_min', '-')} | {b.get('iou_mean', '-')} |")
    if result.get("many"):
        n = result["many"][0]["videos"]
        lines += ["", f"Many videos in one call (`predict_videos`, as `rdfer predict a.mp4 b.mp4 ...` runs them): the "
                  f"real clips above, {n} videos in all ({result['many'][0]['video_s']:.0f} s of video), the next "
                  "videos' face passes in `workers` threads while the model predicts:", "",
                  "| workers | wall (s) | x real time |", "|---:|---:|---:|"]
        for m in result["many"]:
            lines.append(f"| {m['workers']} | {m['wall_s']:.2f} | **{m['x_realtime']:.1f}** |")
    lines += ["", result["verdict"], ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: short videos, no per-frame baseline on long ones")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON and Markdown")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="where the model runs (decoding and face detection stay on the CPU); cuda writes "
                         "predict_speed_cuda.*")
    args = ap.parse_args(argv)

    from dataloading import machine
    from rdfer import EMOTIONS, create_model
    from rdfer.engine.checkpoint import atomic_write_text, save_model

    plan = ([((640, 360), 2.0, False), ((1280, 720), 1.0, False)] if args.quick else
            [((640, 360), 10.0, True), ((640, 360), 20.0, False), ((640, 360), 60.0, False),
             ((1280, 720), 10.0, True), ((1280, 720), 60.0, False)])
    load_before = round(os.getloadavg()[0], 2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rdfer_predict_speed_") as tmp:
        tmp = Path(tmp)
        model = create_model("rdfer_small", num_classes=len(EMOTIONS))
        save_model(model, tmp / "model" / "model.safetensors",
                   {"rdfer_data": json.dumps({"num_frames": 64, "image_size": 112, "classes": list(EMOTIONS)})})
        frames, source = _source_frames(args.quick)
        warm = make_video(tmp / "warm.mp4", frames, (320, 180), 0.5)
        videos = []
        for size, seconds, baseline in plan:
            name = f"generated_{size[0]}x{size[1]}_{int(seconds)}s.mp4"
            videos.append((make_video(tmp / name, frames, size, seconds), f"{size[0]}x{size[1]}", baseline,
                           goal_for(size, seconds)))
        if REAL_DIR.is_dir() and not args.quick:
            import av

            for clip in sorted(f for f in REAL_DIR.iterdir() if f.suffix.lower() in (".mp4", ".mov", ".avi", ".mkv", ".webm")):
                with av.open(str(clip)) as c:
                    s = c.streams.video[0]
                    videos.append((clip, f"{s.width}x{s.height}", True, None))
        for setting, stride, side in [(f"default (stride {STRIDE}, 320 px)", STRIDE, 320), ("per-frame, 480 px (before)", 1, 480)]:
            todo = [v for v in videos if stride == STRIDE or v[2]]  # the slow per-frame baseline on short videos only
            for (video, size, baseline, goal), r in zip(todo, measure(tmp / "model", [v[0] for v in todo], warm, stride,
                                                                      side, args.threads, args.device)):
                r.update(video=video.name, size=size, setting=setting, goal=goal if stride == STRIDE else None)
                if baseline and stride == STRIDE and video.name.startswith("generated") and not args.quick:
                    r["cli_wall_s"] = cli_wall(tmp / "model", video)
                rows.append(r)
                print(f"{video.name} {setting}: {r['x_realtime']}x real time, {r['peak_growth_mib']} MiB", file=sys.stderr)
        order = {v[0].name: k for k, v in enumerate(videos)}
        rows.sort(key=lambda r: (order[r["video"]], r["setting"]))
        real = [v[0] for v in videos if not v[0].name.startswith("generated")]
        many = measure_many(tmp / "model", real * 5, warm, args.threads) if real else []
    boxes = box_agreement() if REAL_DIR.is_dir() and not args.quick else {}
    goal_rows = [r for r in rows if r.get("goal") is not None]
    missed = [f"{r['video']} ({r['x_realtime']}x < {r['goal']}x)" for r in goal_rows if r["x_realtime"] < r["goal"]]
    gen = [r for r in rows if r["video"].startswith("generated") and r["setting"].startswith("default")]
    mem = ", ".join(f"{r['size']} {r['video_s']:.0f} s: {r['peak_growth_mib']} MiB" for r in gen)
    verdict = (("All speed goals met" if not missed else "Goals NOT met for " + "; ".join(missed))
               + f" (>= {GOAL_20S:g}x real time on the 20 s 640x360 clip; >= 5x at 640x360 and >= 2x at 1280x720 "
               f"otherwise; in-process). Peak memory growth by length: {mem}.")
    result = {
        "quick": args.quick, "command": "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{Path(__file__).name}", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
        "threads": args.threads, "device": args.device, "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
        "source": source, "rows": rows, "boxes": boxes, "many": many, "verdict": verdict,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "predict_speed" + ("_quick" if args.quick else "") + ("_cuda" if args.device == "cuda" else "")
    md = to_markdown(result)
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=2))
    atomic_write_text(out / f"{stem}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
