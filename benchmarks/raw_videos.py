"""Train on tight face crops, predict on raw videos: is the face framed as in training? (issue 35)

    python benchmarks/raw_videos.py            # the full protocol: 2 settings x 3 seeds (~10 min on 2 cores)
    python benchmarks/raw_videos.py --quick    # a smoke run under a minute (writes raw_videos_quick.*)

Issue 35: a model trained on tight 48 px face crops (CK+ style), then ``rdfer predict`` on the raw
640x490 videos, which cropped a square 1.5x the Haar box (margin 0.25), fell to chance (20% WAR
against 70% on tight crops). rdfer now records the training faces' framing (measured on the
training frames) and crops raw videos the same way. The held-out real data is not here; this is
a stand-in with drawn faces that OpenCV's Haar cascade finds.

Data (generated, seeded; the same for every run). Each video is one "person" (an independent
random draw: skin, hair, background texture and colours, face size 80-130 px tall, position in a
320x240 frame, mouth width, brow height, eye spacing, head motion, film grain) showing one of 4
expressions in its **dynamics**, neutral -> apex as in CK+: 16-24 frames, the expression starts at a
random onset (10-40% of the video), ramps up over 25-45% of it and holds its apex, of random
strength (0.3-1.0). surprise: brows up, eyes wide, mouth opens (narrower); happy: mouth wider,
corners up; angry: brows down and slanted inwards, eyes narrow, mouth narrow and thin; neutral:
only the small random movement every face has (brows, mouth width and opening drift). The first
frames of every video are neutral, so one frame does not tell the class. Splits of other people
(disjoint random draws, balanced classes): train 160, validation 40, test 60 videos.

* Training data = **tight crops**: the generator's known face box (the bounding square of the
  face, hair to chin: about the Haar box, margin ~0), cropped from the rendered frames and saved
  as 48 px PNG frame folders + CSV (as a CK+ crop set).
* Validation and test = the **raw videos** (H.264 mp4, 30 fps, CRF 23, written with PyAV) and
  their tight crops (the reference).

Training: ``rdfer train csv`` with its defaults (the automatic ``small`` recipe), ``--num-frames 16
--image-size 48 --workers 0``, the validation crops as ``--test`` (monitoring only: nothing is
selected on it; the last epoch is kept). Two settings, seeds 0, 1, 2 each: ``--scale-jitter 0``
(the recipe as it was) and ``--scale-jitter 0.25`` (issue 35 item 2: each training video zoomed
by a random factor in [1/1.25, 1.25]). The scale jitter is passed explicitly in both, so the
runs mean the same whatever the recipe's default becomes.

Evaluation of every run on validation and test (WAR; UAR = mean per-class recall; a video in
which no face is found counts as wrong):

1. ``predict_video`` on the raw videos with its defaults: the recorded (measured) framing -- the fix;
2. a square 1.5x the Haar box (margin 0.25, no centre offset): the behaviour before the fix
   (``predict_video`` with a model that records no framing);
3. ``predict_video(..., detector=None)`` (``--no-detect``) on the tight crops: the reference;
4. framing robustness: ``crop_margin`` in {0.0, 0.1, 0.25, 0.5} (a square 1.0x, 1.2x, 1.5x, 2.0x
   the Haar box; the training crops measure ~0.04, so 0.1, 0.25 and 0.5 are the *wrong* framings),
   plain, with the mirror test-time augmentation (``--tta``: identity + horizontal flip), and with
   a **multi-scale TTA** implemented here only: the mean of the probabilities at crop margins
   {m - 0.1, m, m + 0.15} around the framing m the prediction would use (the recorded framing,
   offsets kept; or the sweep's margin).
   The sweep's margins are forced with no centre offset (dx, dy = 0: what ``crop_margin`` did
   when this benchmark was written); it is also run with the recorded offset kept (scale
   alone), plain and with multi-scale TTA: rows added after the timing run (one seed, no scale
   jitter) showed that dropping the offset (~0.06 box sides, 3 px at 48 px) alone costs most of
   the accuracy. The decision rules below were not changed: they read the no-offset rows. Since
   then ``crop_margin`` (``--crop-margin``) keeps the recorded offset: the "offset kept" rows.

Condition 1 calls ``predict_video`` itself on every video. The others crop the same tracked boxes
of the same frames (``scan_video`` + ``fill_and_smooth`` + ``crop_faces``, predict's own steps,
decoded once per video; the tight folders read as ``--no-detect`` reads them) and run the model
on batches (``predict_video`` costs ~0.3 s a call here, mostly detection and a batch of one); that
path is checked against ``predict_video``: on every video for condition 1, on the first 4 videos
of each split for conditions 2 and 3 (largest probability difference in the JSON). Haar is also run on
every rendered frame of the validation and test videos: the share of frames with a face found,
per class, is reported (the detector must find the faces).

Pre-registered decisions (written before any full run):

* **Scale jitter becomes the ``small`` recipe's default** (``RECIPES["small"]["scale_jitter"] =
  0.25``) only if, on **validation** (never test), means over the 3 seeds: (a) the validation WAR
  under the wrong framings, averaged over margins {0.1, 0.25, 0.5} (plain prediction), is at least
  3.0 points higher with ``--scale-jitter 0.25`` than with 0, and (b) the validation WAR at the
  recorded framing (condition 1) is not lower by 1.0 point or more. Otherwise no default changes.
* **Multi-scale TTA** stays in this benchmark unless it clearly helps: for *both* settings, on
  validation, +3.0 points or more of WAR averaged over the wrong framings and no loss of 1.0
  point or more at the recorded framing; even then it is only recommended here (not built into
  ``rdfer predict`` by this benchmark).

Writes ``<out>/raw_videos.{json,md}`` (``raw_videos_quick.*`` with --quick; default
``benchmarks/results``), atomically, and prints the Markdown. Data and run folders go to
``--work`` (default /tmp/rdfer-raw-videos[-quick]); finished runs are reused (``--fresh`` retrains).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

W, H, FPS = 320, 240, 30
CLASSES = ["neutral", "happy", "surprise", "angry"]
SWEEP = (0.0, 0.1, 0.25, 0.5)  # crop margins of the framing-robustness sweep
WRONG = (0.1, 0.25, 0.5)  # the sweep's wrong framings (tight training crops measure ~0.0)
OLD_MARGIN = 0.25  # rdfer's crop before the fix (issue 35)
MULTI_SCALE = (-0.1, 0.0, 0.15)  # multi-scale TTA: margins around the framing used
#: The sweep's rows: key suffix -> how the prediction is made.
SUFFIXES = {"": "plain", "_mirror_tta": "mirror TTA", "_multiscale_tta": "multi-scale TTA",
            "_keep_offsets": "plain, recorded offset kept", "_keep_offsets_multiscale_tta": "multi-scale TTA, offset kept"}
GENERATOR = 1  # the drawing's version: data made by another is regenerated
EVAL_VERSION = 2  # the evaluation's version: runs evaluated by another are trained and evaluated again
SETTINGS = (0.0, 0.25)  # --scale-jitter of the two training settings
FULL = dict(classes=CLASSES, train=160, val=40, test=60, seeds=3, num_frames=16, image_size=48, epochs=None)
QUICK = dict(classes=["neutral", "surprise"], train=8, val=4, test=4, seeds=1, num_frames=8, image_size=32, epochs=1)


# --------------------------------------------------------------------------- the drawn faces

def face_spec(rng: np.random.Generator, label: str) -> Dict[str, Any]:
    """One person showing ``label``: every random choice of a video, drawn once."""
    yy, xx = np.mgrid[0:H, 0:W]
    base = rng.uniform(40, 200, size=3)
    angle = rng.uniform(0, np.pi)
    wave = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] / rng.uniform(12, 45)
    background = (base[None, None] + rng.uniform(20, 50) * np.sin(wave)
                  + rng.normal(0, 10, (H, W, 3))).clip(0, 255).astype(np.uint8)
    s = float(rng.uniform(0.4, 0.65))  # the face is 202 s px tall (hair to chin): 80-130 px
    cx = float(rng.uniform(80 * s + 6, W - 80 * s - 6))
    cy = float(rng.uniform(104 * s + 6, H - 98 * s - 6))
    skin = tuple(int(v) for v in rng.uniform([150, 100, 80], [240, 190, 160]))
    return dict(label=label, background=background, s=s, cx=cx, cy=cy, skin=skin,
                hair=float(rng.uniform(0.25, 0.5)), frames=int(rng.integers(16, 25)),
                apex=float(rng.uniform(0.3, 1.0)), onset=float(rng.uniform(0.1, 0.4)), ramp=float(rng.uniform(0.25, 0.45)),
                motion=float(rng.uniform(1, 4)), phase=float(rng.uniform(0, 2 * np.pi)),
                mouth=float(rng.uniform(0.8, 1.2)), brow=float(rng.uniform(-3, 3)), eyes=float(rng.uniform(30, 38)),
                # the small random movement of every face: brow, mouth width, mouth opening
                drift_amp=rng.uniform(0, 1, 3), drift_freq=rng.uniform(0.5, 2.5, 3), drift_phase=rng.uniform(0, 6.3, 3),
                grain=rng.normal(0, 6, (H + 32, W + 32, 3)).astype(np.int16))


def intensity(spec: Dict[str, Any], t: float) -> float:
    """Expression strength at time ``t`` in [0, 1]: 0 until the onset, a smooth ramp, then the apex held."""
    x = float(np.clip((t - spec["onset"]) / spec["ramp"], 0, 1))
    return spec["apex"] * (3 * x ** 2 - 2 * x ** 3)


def render(spec: Dict[str, Any], k: int, rng: np.random.Generator) -> Tuple[np.ndarray, Tuple[int, int, int]]:
    """Frame ``k`` of the video (H, W, 3) uint8 RGB and the face's tight box ``(left, top, side)``:
    the bounding square of the face, hair to chin, in whole pixels."""
    from PIL import Image, ImageDraw, ImageFilter

    t = k / (spec["frames"] - 1)
    e = intensity(spec, t)
    label = spec["label"]
    surprise, happy, angry = (e if label == name else 0.0 for name in ("surprise", "happy", "angry"))
    drift = spec["drift_amp"] * np.sin(2 * np.pi * spec["drift_freq"] * t + spec["drift_phase"])
    s = spec["s"]
    im = Image.fromarray(spec["background"])
    d = ImageDraw.Draw(im)
    cx = spec["cx"] + spec["motion"] * np.sin(2 * np.pi * t + spec["phase"])
    cy = spec["cy"] + 0.5 * spec["motion"] * np.cos(2 * np.pi * t + spec["phase"])
    skin = spec["skin"]

    def shade(f: float) -> tuple:
        return tuple(int(c * f) for c in skin)

    # Face: a darker rim (the cascade wants shading), hair, eye sockets darker than the cheeks.
    d.ellipse((cx - 78 * s, cy - 98 * s, cx + 78 * s, cy + 98 * s), fill=shade(0.8))
    d.ellipse((cx - 66 * s, cy - 90 * s, cx + 66 * s, cy + 92 * s), fill=skin)
    hair = shade(spec["hair"])
    d.chord((cx - 80 * s, cy - 104 * s, cx + 80 * s, cy + 20 * s), 180, 360, fill=hair)
    brow_up = (14 * surprise - 8 * angry + 2 * drift[0] + spec["brow"]) * s
    slant = 10 * angry * s
    eye_open = 1 + 0.4 * surprise - 0.3 * angry - 0.15 * happy
    for side in (-1, 1):
        ex = cx + side * spec["eyes"] * s
        d.ellipse((ex - 22 * s, cy - 24 * s, ex + 22 * s, cy - 2 * s), fill=shade(0.72))
        d.ellipse((ex - 15 * s, cy - 13 * s - 6 * eye_open * s, ex + 15 * s, cy - 13 * s + 6 * eye_open * s),
                  fill=(190, 190, 190))
        r = 8 * s
        d.ellipse((ex - r, cy - 13 * s - r, ex + r, cy - 13 * s + r), fill=(50, 35, 25))
        inner, outer = ex - side * 20 * s, ex + side * 18 * s
        by = cy - 33 * s - brow_up
        d.line((inner, by + slant, outer, by - 0.3 * slant), fill=hair, width=max(2, int(round(8 * s))))
    d.polygon([(cx, cy - 5 * s), (cx - 10 * s, cy + 25 * s), (cx + 10 * s, cy + 25 * s)], fill=shade(0.85))
    # Mouth: upper and lower lip curves; corners lifted for a smile.
    half_width = 30 * s * spec["mouth"] * (1 + 0.4 * happy - 0.2 * surprise - 0.35 * angry + 0.06 * drift[1])
    opening = s * (5 + 18 * surprise + 3 * happy - 3 * angry + 1.5 * abs(drift[2]))
    lift = 12 * happy * s
    my = cy + 50 * s
    u = np.linspace(-1, 1, 13)
    upper = [(cx + a * half_width, my - lift * a * a - 0.3 * opening * (1 - a * a)) for a in u]
    lower = [(cx + a * half_width, my - lift * a * a + opening * (1 - a * a)) for a in u[::-1]]
    d.polygon(upper + lower, fill=(150, 60, 60))
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.int16)
    oy, ox = rng.integers(0, 32, size=2)
    frame = (arr + spec["grain"][oy: oy + H, ox: ox + W]).clip(0, 255).astype(np.uint8)
    side = 202 * s
    return frame, (int(round(cx - side / 2)), int(round(cy - 3 * s - side / 2)), max(1, int(round(side))))


def write_mp4(path: Path, frames: Sequence[np.ndarray]) -> None:
    """H.264 (libx264, CRF 23, yuv420p) at 30 fps, as a camera would store it."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_split(root: Path, split: str, count: int, classes: Sequence[str], seed: int, size: int,
               raw: bool, check_detector) -> Dict[str, Any]:
    """``count`` videos of other people (seeded draw), classes balanced: tight crops (``size`` px
    PNG folders) and ``crops.csv``; with ``raw`` the mp4s and ``raw.csv`` too, and the share of
    frames where ``check_detector`` finds the face."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    crop_rows, raw_rows, found = [], [], {c: [0, 0] for c in classes}
    no_face_videos = 0
    for i in range(count):
        label = classes[i % len(classes)]
        spec = face_spec(rng, label)
        name = f"{split}_{i:03d}_{label}"
        folder = root / "crops" / name
        folder.mkdir(parents=True, exist_ok=True)
        frames = []
        hits = 0
        for k in range(spec["frames"]):
            frame, (left, top, side) = render(spec, k, rng)
            crop = frame[max(0, top): top + side, max(0, left): left + side]
            Image.fromarray(crop).resize((size, size), Image.BILINEAR).save(folder / f"{k:03d}.png")
            if raw:
                frames.append(frame)
                hit = check_detector(frame) is not None
                hits += hit
                found[label][0] += hit
                found[label][1] += 1
        crop_rows.append(f"crops/{name},{label}")
        if raw:
            no_face_videos += hits == 0
            write_mp4(root / "raw" / f"{name}.mp4", frames)
            raw_rows.append(f"raw/{name}.mp4,{label}")
    (root / f"{split}_crops.csv").write_text("path,label\n" + "\n".join(crop_rows) + "\n")
    out: Dict[str, Any] = {"videos": count}
    if raw:
        (root / f"{split}_raw.csv").write_text("path,label\n" + "\n".join(raw_rows) + "\n")
        out["haar_found_share"] = {c: round(h / max(n, 1), 3) for c, (h, n) in found.items()}
        out["haar_found_share_all"] = round(sum(h for h, _ in found.values()) / max(1, sum(n for _, n in found.values())), 3)
        out["videos_without_any_face_found"] = no_face_videos
    return out


def make_data(root: Path, p: Dict[str, Any], fresh: bool) -> Dict[str, Any]:
    """The three splits under ``root`` (reused when made with the same settings)."""
    import shutil

    from rdfer.inference.faces import HaarFaceDetector

    settings = {**{k: p[k] for k in ("classes", "train", "val", "test", "image_size")}, "generator": GENERATOR}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    marker = root / "data.json"
    if marker.is_file() and not fresh:
        info = json.loads(marker.read_text())
        if info.get("key") == key:
            return info
    if root.exists():
        shutil.rmtree(root)
    (root / "raw").mkdir(parents=True)
    t0 = time.time()
    detector = HaarFaceDetector()
    # Seeds of the splits: disjoint random draws ("other people").
    info = {"key": key, "splits": {
        "train": make_split(root, "train", p["train"], p["classes"], 1000, p["image_size"], False, detector),
        "val": make_split(root, "val", p["val"], p["classes"], 2000, p["image_size"], True, detector),
        "test": make_split(root, "test", p["test"], p["classes"], 3000, p["image_size"], True, detector)}}
    info["seconds"] = round(time.time() - t0, 1)
    marker.write_text(json.dumps(info, indent=2))
    return info


# --------------------------------------------------------------------------- training

def train_run(data: Path, run: Path, seed: int, jitter: float, p: Dict[str, Any]) -> Tuple[List[str], float]:
    """``rdfer train csv`` (the recipe it picks itself) into ``run``; returns the command and seconds."""
    cmd = [sys.executable, "-m", "rdfer", "train", "csv", "--train", str(data / "train_crops.csv"),
           "--test", str(data / "val_crops.csv"), "--num-frames", str(p["num_frames"]), "--image-size",
           str(p["image_size"]), "--seed", str(seed), "--scale-jitter", str(jitter), "--workers", "0", "--quiet",
           "--overwrite", "--out", str(run)]
    if p["epochs"]:
        cmd += ["--epochs", str(p["epochs"]), "--warmup-epochs", "0"]
    t0 = time.time()
    with open(run.parent / f"{run.name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"training failed ({proc.returncode}): see {run.parent / f'{run.name}.log'}")
    return cmd, time.time() - t0


# --------------------------------------------------------------------------- evaluation

def read_rows(csv: Path) -> List[Tuple[Path, str]]:
    lines = csv.read_text().splitlines()[1:]
    return [(csv.parent / line.rsplit(",", 1)[0], line.rsplit(",", 1)[1]) for line in lines if line]


class Tracked:
    """One raw video as ``predict_video`` sees it, decoded once: the frames it samples and their
    smoothed face boxes (``scan_video`` + ``fill_and_smooth``, predict's defaults), so that any
    framing can be cropped from them."""

    def __init__(self, path: Path, num_frames: int):
        from rdfer.data.sampling import eval_indices
        from rdfer.inference.faces import HaarFaceDetector, fill_and_smooth
        from rdfer.inference.predict import read_video, scan_video

        n, _, track = scan_video(path, HaarFaceDetector(), 8)
        self.face = bool(track.has_face.any())
        idx = np.asarray(eval_indices(n, num_frames)).astype(int)
        frames, _ = read_video(path)
        self.frames = [frames[i] for i in idx]
        self.boxes = fill_and_smooth(track.boxes)[idx] if self.face else None
        self._clips: Dict[tuple, np.ndarray] = {}

    def clip(self, framing, size: int) -> Optional[np.ndarray]:
        """(T, size, size, 3) crops with ``framing`` (as ``_read_clip`` makes them), None without a face."""
        from rdfer.inference.faces import crop_faces
        from rdfer.inference.predict import _resize

        if not self.face:
            return None
        key = (round(framing.margin, 6), round(framing.dx, 6), round(framing.dy, 6), size)
        if key not in self._clips:
            crops = [crop_faces([f], self.boxes[k: k + 1], framing=framing)[0] for k, f in enumerate(self.frames)]
            self._clips[key] = np.stack([_resize(c, size) for c in crops])
        return self._clips[key]


def batch_probs(model, clips: List[Optional[np.ndarray]], num_classes: int) -> np.ndarray:
    """Class probabilities ``(N, K)`` of ``model.predict`` on the clips (NaN rows where None)."""
    import torch

    from rdfer.data.transforms import VideoBatchTransform

    out = np.full((len(clips), num_classes), np.nan)
    todo = [i for i, c in enumerate(clips) if c is not None]
    norm = VideoBatchTransform(train=False)
    with torch.no_grad():
        for start in range(0, len(todo), 32):
            rows = todo[start: start + 32]
            video = torch.from_numpy(np.stack([clips[i] for i in rows])).permute(0, 4, 1, 2, 3)
            out[rows] = model.predict(norm(video)).probs.numpy()
    return out


def scores(probs: np.ndarray, labels: Sequence[int], num_classes: int) -> Dict[str, float]:
    """WAR and UAR; a row of NaN (no face) is a wrong answer."""
    pred = np.where(np.isnan(probs).any(1), -1, np.nan_to_num(probs, nan=-1).argmax(1))
    labels = np.asarray(labels)
    correct = pred == labels
    recalls = [correct[labels == c].mean() for c in range(num_classes) if (labels == c).any()]
    return {"war": round(float(correct.mean()), 4), "uar": round(float(np.mean(recalls)), 4)}


def tight_clip(folder: Path, num_frames: int, size: int) -> np.ndarray:
    """The frames ``predict_video(folder, detector=None)`` reads from a tight-crop folder."""
    from rdfer.data.sampling import eval_indices
    from rdfer.inference.predict import _resize, read_video

    frames, _ = read_video(folder)
    return np.stack([_resize(frames[i], size) for i in np.asarray(eval_indices(len(frames), num_frames)).astype(int)])


def evaluate_run(run: Path, videos: Dict[str, List[Tracked]], tight: Dict[str, List[np.ndarray]],
                 rows: Dict[str, List[Tuple[Path, str]]], crops: Dict[str, List[Tuple[Path, str]]], size: int,
                 check: int = 4) -> Dict[str, Any]:
    """Every condition of the protocol for one trained model, on validation and test.

    Condition 1 is ``predict_video`` itself on every video; the others run the model on batches
    of the crops predict's own steps make (:class:`Tracked`, :func:`tight_clip`), checked against
    ``predict_video`` on the first ``check`` videos of each split (and on every video for
    condition 1): the largest probability difference is reported (predict rounds to 4 digits)."""
    import rdfer
    from rdfer.inference.faces import FaceFraming
    from rdfer.inference.predict import model_framing, predict_video
    from rdfer.inference.tta import with_tta

    model = rdfer.load_model(run).eval()
    names = list(model.data_config["classes"])
    recorded = model_framing(model)
    mirror = with_tta(model)
    old = FaceFraming(OLD_MARGIN, source="option")
    out: Dict[str, Any] = {"framing": recorded.to_dict(), "splits": {}}
    diffs: List[float] = []
    for split in ("val", "test"):
        labels = [names.index(label) for _, label in rows[split]]
        res: Dict[str, Any] = {}

        def literal(items, net=model, **kwargs) -> np.ndarray:
            probs = np.full((len(items), len(names)), np.nan)
            for i, (path, _) in enumerate(items):
                pred = predict_video(path, net, **kwargs)
                if pred.status == "ok":
                    probs[i] = [pred.probabilities[c] for c in names]
            return probs

        def at(framing, net=model) -> np.ndarray:
            return batch_probs(net, [v.clip(framing, size) for v in videos[split]], len(names))

        def differ(a: np.ndarray, b: np.ndarray) -> None:
            if (np.isnan(a) != np.isnan(b)).any():
                raise AssertionError("the batched path and predict_video disagree on which videos have a face")
            if np.isfinite(a).any():
                diffs.append(float(np.nanmax(np.abs(a - b))))

        p_recorded = literal(rows[split])
        differ(at(recorded), p_recorded)
        p_old, p_tight = at(old), batch_probs(model, tight[split], len(names))
        unrecorded = copy.copy(model)  # a model from before the fix: no framing recorded, predict's default
        unrecorded.data_config = {k: v for k, v in model.data_config.items() if k != "face_framing"}
        differ(p_old[:check], literal(rows[split][:check], unrecorded))
        differ(p_tight[:check], literal(crops[split][:check], detector=None))
        res["recorded"] = scores(p_recorded, labels, len(names))
        res["old_margin_0.25"] = scores(p_old, labels, len(names))
        res["tight_no_detect"] = scores(p_tight, labels, len(names))

        def multi(centre) -> np.ndarray:
            views = [at(FaceFraming(centre.margin + d, centre.dx, centre.dy, "option")) for d in MULTI_SCALE]
            return np.mean(views, axis=0)

        res["recorded_mirror_tta"] = scores(at(recorded, mirror), labels, len(names))
        res["recorded_multiscale_tta"] = scores(multi(recorded), labels, len(names))
        for m in SWEEP:
            framing = FaceFraming(m, source="option")
            res[f"margin_{m}"] = scores(at(framing), labels, len(names))
            res[f"margin_{m}_mirror_tta"] = scores(at(framing, mirror), labels, len(names))
            res[f"margin_{m}_multiscale_tta"] = scores(multi(framing), labels, len(names))
            # The same margin with the recorded centre offset kept (as --crop-margin now does): scale alone.
            kept = FaceFraming(m, recorded.dx, recorded.dy, "option")
            res[f"margin_{m}_keep_offsets"] = scores(at(kept), labels, len(names))
            res[f"margin_{m}_keep_offsets_multiscale_tta"] = scores(multi(kept), labels, len(names))
        res["no_face_videos"] = int(np.isnan(p_recorded).any(1).sum())
        out["splits"][split] = res
    out["cached_path_max_prob_diff"] = round(max(diffs, default=0.0), 6)
    return out


# --------------------------------------------------------------------------- summary

def _ms(values: List[float]) -> Dict[str, float]:
    return {"mean": round(statistics.fmean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "n": len(values)}


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """mean and sd over seeds of every (setting, split, condition, metric), plus the wrong-framing means."""
    out: Dict[str, Any] = {}
    for jitter in sorted({r["scale_jitter"] for r in runs}):
        rs = [r for r in runs if r["scale_jitter"] == jitter]
        setting: Dict[str, Any] = {"seeds": [r["seed"] for r in rs],
                                   "framing_margin": _ms([r["eval"]["framing"]["margin"] for r in rs]),
                                   "framing_dy": _ms([r["eval"]["framing"]["dy"] for r in rs]),
                                   "train_seconds": _ms([r["train_seconds"] for r in rs])}
        for split in ("val", "test"):
            conds = [c for c in rs[0]["eval"]["splits"][split] if c != "no_face_videos"]
            table = {c: {m: _ms([r["eval"]["splits"][split][c][m] for r in rs]) for m in ("war", "uar")} for c in conds}
            for suffix in SUFFIXES:
                table[f"wrong_mean{suffix}"] = {m: _ms([statistics.fmean(r["eval"]["splits"][split][f"margin_{w}{suffix}"][m]
                                                                         for w in WRONG) for r in rs]) for m in ("war", "uar")}
            setting[split] = table
        out[str(jitter)] = setting
    return out


def decide(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The pre-registered rules (module docstring), on validation WAR."""
    off, on = summary.get("0.0"), summary.get("0.25")
    out: Dict[str, Any] = {}
    if off and on:
        d_wrong = on["val"]["wrong_mean"]["war"]["mean"] - off["val"]["wrong_mean"]["war"]["mean"]
        d_right = on["val"]["recorded"]["war"]["mean"] - off["val"]["recorded"]["war"]["mean"]
        adopt = d_wrong >= 0.03 and d_right > -0.01
        out["scale_jitter"] = {
            "val_war_gain_wrong_framings": round(d_wrong, 4), "val_war_gain_recorded_framing": round(d_right, 4),
            "adopt": adopt,
            "verdict": (f"scale jitter 0.25 {'becomes' if adopt else 'does not become'} the small recipe's default: "
                        f"validation WAR under the wrong framings {100 * d_wrong:+.1f} points (rule: >= +3.0), at the "
                        f"recorded framing {100 * d_right:+.1f} (rule: > -1.0)")}
    gains = {}
    for key, s in summary.items():
        gains[key] = (s["val"]["wrong_mean_multiscale_tta"]["war"]["mean"] - s["val"]["wrong_mean"]["war"]["mean"],
                      s["val"]["recorded_multiscale_tta"]["war"]["mean"] - s["val"]["recorded"]["war"]["mean"])
    helps = bool(gains) and all(w >= 0.03 and r > -0.01 for w, r in gains.values())
    out["multiscale_tta"] = {
        "val_war_gain": {k: {"wrong_framings": round(w, 4), "recorded_framing": round(r, 4)} for k, (w, r) in gains.items()},
        "clearly_helps": helps,
        "verdict": ("multi-scale TTA clearly helps (recommended for rdfer predict)" if helps else
                    "multi-scale TTA does not clearly help: it stays in this benchmark") + ": " + "; ".join(
            f"scale jitter {k}: wrong framings {100 * w:+.1f}, recorded {100 * r:+.1f} points" for k, (w, r) in gains.items())}
    return out


def to_markdown(result: Dict[str, Any]) -> str:
    meta, summary = result["meta"], result["summary"]

    def pm(entry: Dict[str, float]) -> str:
        return f"{100 * entry['mean']:.1f}" + (f" ± {100 * entry['sd']:.1f}" if entry["n"] > 1 else "")

    settings = list(summary)
    lines = [f"# Raw videos: a model trained on tight face crops, predicting on raw video{' (quick)' if meta['quick'] else ''}",
             "", f"Command: `{meta['command']}`  ",
             f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} threads; {meta['date']}; "
             f"the work {meta['work_seconds'] / 60:.1f} min (data, {len(result['runs'])} training runs and their "
             f"evaluation; this invocation {meta['wall_seconds'] / 60:.1f} min, {meta['runs_reused']} runs reused)  ",
             f"Training: `{meta['train_command_example']}` (seed and `--scale-jitter` per run)  ",
             f"Data: {meta['data']}  ", f"Haar finds the face on {meta['haar']}", "",
             "WAR / UAR (%), mean ± sd over seeds "
             f"({', '.join(str(s) for s in summary[settings[0]]['seeds'])}); `--scale-jitter` of the training run in "
             "the first column. A video without any face found counts as wrong. UAR = WAR when the classes are "
             "balanced and every video has a face, as here.", ""]
    for split, title in (("test", "Test"), ("val", "Validation (the decisions are taken here)")):
        lines += [f"## {title}: {meta['videos'][split]} raw videos", "",
                  "| scale jitter | 1. recorded framing (the fix) | 2. margin 0.25 (before the fix) | 3. tight crops, "
                  "--no-detect (reference) | recorded + mirror TTA | recorded + multi-scale TTA |",
                  "|---|---|---|---|---|---|"]
        for key in settings:
            t = summary[key][split]
            lines.append(f"| {key} | " + " | ".join(f"{pm(t[c]['war'])} / {pm(t[c]['uar'])}" for c in (
                "recorded", "old_margin_0.25", "tight_no_detect", "recorded_mirror_tta", "recorded_multiscale_tta")) + " |")
        lines += ["", f"Framing robustness ({split}), WAR: crop margin forced as `crop_margin` does it (the "
                  "recorded centre offset dropped), or with the recorded offset kept (scale alone; the last two "
                  "rows of each setting); 'wrong' = the mean over margins 0.1, 0.25, 0.5.", "",
                  "| scale jitter | test-time | " + " | ".join(f"margin {m} ({1 + 2 * m:.1f}x box)" for m in SWEEP)
                  + " | wrong (mean) |", "|---|---|" + "---|" * (len(SWEEP) + 1)]
        for key in settings:
            t = summary[key][split]
            for suffix, how in SUFFIXES.items():
                lines.append(f"| {key} | {how} | " + " | ".join(pm(t[f"margin_{m}{suffix}"]["war"]) for m in SWEEP)
                             + f" | {pm(t[f'wrong_mean{suffix}']['war'])} |")
        lines.append("")
    lines += ["## Recorded framing", "",
              "| scale jitter | margin | dy (box sides) | s/training run |", "|---|---|---|---|"]
    for key in settings:
        s = summary[key]
        lines.append(f"| {key} | {s['framing_margin']['mean']:.3f} ± {s['framing_margin']['sd']:.3f} | "
                     f"{s['framing_dy']['mean']:+.3f} | {s['train_seconds']['mean']:.0f} |")
    lines += ["", "Per run: " + "; ".join(f"jitter {r['scale_jitter']} seed {r['seed']}: "
                                         f"{r['eval']['framing']['margin']:.3f} ({r['eval']['framing']['source']}, "
                                         f"{r['eval']['framing']['measured']} frames)" for r in result["runs"]), ""]
    lines += ["## Decisions (pre-registered, validation only)", ""]
    for item in result["decision"].values():
        lines.append(f"* {item['verdict']}.")
    lines += ["", "## Reading", "", result.get("reading", ""), ""]
    return "\n".join(lines)


def reading(summary: Dict[str, Any], meta: Dict[str, Any]) -> str:
    """A short plain reading of the test numbers, written from them."""
    off = summary.get("0.0") or next(iter(summary.values()))
    t = off["test"]
    w = lambda c: 100 * t[c]["war"]["mean"]  # noqa: E731
    text = (f"Without scale jitter, the recorded framing gives {w('recorded'):.1f}% test WAR on the raw videos against "
            f"{w('tight_no_detect'):.1f}% on the tight crops (the reference) and {w('old_margin_0.25'):.1f}% with the old "
            f"fixed margin 0.25 (chance: {100 / meta['classes']:.0f}%). Across forced margins (`crop_margin`) WAR goes "
            + ", ".join(f"{w(f'margin_{m}'):.1f}% ({m})" for m in SWEEP) + ".")
    if "0.25" in summary and "0.0" in summary:
        on = summary["0.25"]["test"]
        v = lambda c: 100 * on[c]["war"]["mean"]  # noqa: E731
        text += (f" With --scale-jitter 0.25: recorded {v('recorded'):.1f}%, reference {v('tight_no_detect'):.1f}%, "
                 f"old margin {v('old_margin_0.25'):.1f}%, wrong-framing mean {v('wrong_mean'):.1f}% "
                 f"(vs {w('wrong_mean'):.1f}%).")
    kept = statistics.fmean(w(f"margin_{m}_keep_offsets") for m in (0.0, 0.1))
    dropped = statistics.fmean(w(f"margin_{m}") for m in (0.0, 0.1))
    lead = ("The centre offset matters more than the scale near the training framing" if kept - dropped >= 10
            else "Keeping the recorded centre offset")
    text += (f" {lead}: with the recorded offset (dy {off['framing_dy']['mean']:+.2f} box sides, a few pixels at "
             f"{meta['image_size']} px) kept, margins 0.0 and 0.1 give {w('margin_0.0_keep_offsets'):.1f}% and "
             f"{w('margin_0.1_keep_offsets'):.1f}% (vs {w('margin_0.0'):.1f}% and {w('margin_0.1'):.1f}% with the offset "
             f"dropped); 0.25 and 0.5 give {w('margin_0.25_keep_offsets'):.1f}% and {w('margin_0.5_keep_offsets'):.1f}% "
             f"with it kept. Hence `--crop-margin` now replaces the margin only and keeps the recorded offset.")
    text += (" Multi-scale TTA at the wrong framings: " + ", ".join(
        f"jitter {k} {100 * s['test']['wrong_mean_multiscale_tta']['war']['mean']:.1f}% "
        f"(plain {100 * s['test']['wrong_mean']['war']['mean']:.1f}%)" for k, s in summary.items()) + ".")
    n_test, n_val = meta["videos"]["test"], meta["videos"]["val"]
    seeds = len(off["seeds"])
    text += (f" Caveats: drawn faces, not people; {n_test} test and {n_val} validation videos (one video is "
             f"{100 / n_test:.1f} and {100 / n_val:.1f} points); the Haar box of a drawn face is not that of a real one; "
             f"{seeds} seed{'s' if seeds > 1 else ''}.")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny: 2 classes, 16 videos, 1 seed, 1 epoch (< 1 min)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--work", default=None, help="data and run folders (default /tmp/rdfer-raw-videos[-quick])")
    parser.add_argument("--settings", type=float, nargs="*", default=list(SETTINGS), help="--scale-jitter values")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per setting (3; quick 1)")
    parser.add_argument("--fresh", action="store_true", help="regenerate the data and retrain every run")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t_start = time.time()
    p = dict(QUICK if args.quick else FULL)
    if args.seeds:
        p["seeds"] = args.seeds
    work = Path(args.work or f"/tmp/rdfer-raw-videos{'-quick' if args.quick else ''}")
    data_dir, runs_dir = work / "data", work / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    data = make_data(data_dir, p, args.fresh)
    print(f"data: {json.dumps(data['splits'])} ({data['seconds']} s)", flush=True)
    rows = {s: read_rows(data_dir / f"{s}_raw.csv") for s in ("val", "test")}
    crops = {s: read_rows(data_dir / f"{s}_crops.csv") for s in ("val", "test")}
    t0 = time.time()
    videos = {s: [Tracked(path, p["num_frames"]) for path, _ in rows[s]] for s in rows}
    tight = {s: [tight_clip(path, p["num_frames"], p["image_size"]) for path, _ in crops[s]] for s in crops}
    track_seconds = time.time() - t0
    runs: List[Dict[str, Any]] = []
    command, reused = None, 0
    for jitter in args.settings:
        for seed in range(p["seeds"]):
            name = f"jitter{jitter}-s{seed}"
            run_key = f"{data['key']}-eval{EVAL_VERSION}"
            record = runs_dir / f"{name}.json"
            if record.is_file() and not args.fresh and json.loads(record.read_text()).get("key") == run_key:
                runs.append(json.loads(record.read_text()))
                reused += 1
                print(f"{name}: reused", flush=True)
                continue
            cmd, seconds = train_run(data_dir, runs_dir / name, seed, jitter, p)
            t0 = time.time()
            ev = evaluate_run(runs_dir / name, videos, tight, rows, crops, p["image_size"])
            r = {"key": run_key, "scale_jitter": jitter, "seed": seed, "train_seconds": round(seconds, 1),
                 "eval_seconds": round(time.time() - t0, 1), "train_command": "rdfer " + shlex.join(cmd[3:]), "eval": ev}
            record.write_text(json.dumps(r, indent=2))
            runs.append(r)
            v = ev["splits"]["test"]
            print(f"{name}: framing {ev['framing']['margin']:.3f}; test WAR recorded {100 * v['recorded']['war']:.1f}, "
                  f"margin 0.25 {100 * v['old_margin_0.25']['war']:.1f}, tight {100 * v['tight_no_detect']['war']:.1f} "
                  f"({seconds:.0f} s training, {r['eval_seconds']:.0f} s evaluation)", flush=True)
        command = command or runs[-1]["train_command"]
    summary = summarise(runs)
    splits = data["splits"]
    haar = "; ".join(f"{s}: {100 * splits[s]['haar_found_share_all']:.0f}% of the rendered frames ("
                     + ", ".join(f"{c} {100 * v:.0f}%" for c, v in splits[s]["haar_found_share"].items())
                     + f"), {splits[s]['videos_without_any_face_found']} videos with none" for s in ("val", "test"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    meta = {"command": shlex.join(["python", "benchmarks/raw_videos.py", *(argv if argv is not None else sys.argv[1:])]),
            "quick": args.quick, "machine": f"{platform.machine()} {platform.processor() or ''} CPU, {cores} cores".replace("  ", " "),
            "cores": cores, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": datetime.datetime.now().isoformat(timespec="minutes"), "wall_seconds": round(time.time() - t_start, 1),
            "runs_reused": reused,
            # the whole benchmark's work, reused runs included: data, tracking, training and evaluation
            "work_seconds": round(data["seconds"] + track_seconds + sum(r["train_seconds"] + r["eval_seconds"] for r in runs), 1),
            "data_seconds": data["seconds"], "track_seconds": round(track_seconds, 1),
            "train_command_example": command,
            "data": (f"{len(p['classes'])} classes ({', '.join(p['classes'])}); train {p['train']} tight {p['image_size']} px "
                     f"crops; validation {p['val']} and test {p['test']} raw {W}x{H} mp4 + their tight crops; "
                     f"{p['num_frames']} frames sampled" + (f"; {p['epochs']} epoch(s)" if p["epochs"] else "")),
            "videos": {s: len(rows[s]) for s in rows}, "image_size": p["image_size"], "classes": len(p["classes"]), "haar": haar, "splits": splits,
            "cached_path_max_prob_diff": max(r["eval"]["cached_path_max_prob_diff"] for r in runs),
            "protocol": __doc__}
    result = {"meta": meta, "summary": summary, "decision": decide(summary), "runs": runs}
    result["reading"] = reading(summary, meta)
    from dataloading import write_results  # the benchmarks' shared report writer

    write_results(Path(args.out), "raw_videos_quick" if args.quick else "raw_videos", result, to_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
