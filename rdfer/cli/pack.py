"""``rdfer pack``: a dataset split decoded once into shards."""

from __future__ import annotations

from .common import _require_extra


def _add_pack(sub) -> None:
    p = sub.add_parser(
        "pack", help="decode a dataset split once into uint8 shards for fast training (resumable)",
        description="Decode every video of a split once, keeping up to --num-frames frames spread uniformly, "
        "resized to --image-size, into shard files plus index.json. Training on the pack "
        "(`rdfer train packed --train DIR --test DIR`) does no image decoding. An interrupted pack resumes "
        "when the same command is run again.",
    )
    p.add_argument("dataset", choices=["dfew", "ferv39k", "csv"], help="the source format")
    p.add_argument("--format", choices=["rdfer", "webdataset"], default="rdfer",
                   help="rdfer: raw uint8 shards read by rdfer only, no decoding when training (default); webdataset: "
                   "standard WebDataset tar shards (per video a .json and its frames, see --layout) plus index.json, "
                   "streamable from disk, HTTP or object storage (`rdfer train webdataset`)")
    p.add_argument("--layout", choices=["clip", "frames", "npy"],
                   help="webdataset: how a video's frames are stored. clip (default): one KEY.mjpeg member, the "
                   "frames' JPEGs back to back (a Motion-JPEG stream: ffmpeg -f mjpeg plays it), the fastest JPEG "
                   "layout to read; frames: one KEY.000.jpg, KEY.001.jpg, ... member per frame, for tools that want "
                   "one image per file; npy: one uncompressed uint8 (n, S, S, 3) KEY.npy array, nothing to decode "
                   "but as large as --format rdfer (local disks)")
    p.add_argument("--quality", type=int, default=90,
                   help="webdataset clip and frames layouts: JPEG quality of the stored frames (default 90)")
    p.add_argument("--root", help="dfew, ferv39k: dataset root folder")
    p.add_argument("--fold", type=int, default=1, help="dfew: fold 1..5 (default 1)")
    p.add_argument("--split", choices=["train", "test"], help="dfew, ferv39k: which split to pack")
    p.add_argument("--csv", help="csv: a CSV of path,label (frame folders or video files)")
    p.add_argument("--classes", help="csv: comma-separated class names (e.g. the training CSV's, for a test CSV)")
    p.add_argument("--out", required=True, help="output folder of the pack")
    p.add_argument("--num-frames", type=int, default=64, help="frames kept per video, at most (default 64)")
    p.add_argument("--image-size", type=int, default=112, help="stored frame side in pixels (default 112)")
    p.add_argument("--shard-size", type=int, default=256, help="videos per shard file (default 256)")
    p.add_argument("--crop-faces", action="store_true",
                   help="raw videos in, face crops out: detect, track and crop the face as `rdfer predict` does (one "
                   "pipeline, so a model trained on the pack sees raw videos at prediction as it saw them in "
                   "training; the pack records the crop). Needs rdfer[faces]. Videos without a face are stored "
                   "unreadable; a per-video report of frames without a face goes to OUT/faces.csv")
    p.add_argument("--crop-margin", type=float,
                   help="with --crop-faces: the share of the face box's side added on each side (default 0.25)")
    p.add_argument("--detect-stride", type=int, default=8,
                   help="with --crop-faces: detect on every n-th frame, as `rdfer predict` does (default 8)")
    p.add_argument("--detector", choices=["haar", "yunet"], default="haar",
                   help="with --crop-faces: the face detector (haar, the default; yunet finds turned, dark and covered "
                   "faces, on Linux x86-64 and Windows x64); the pack and the models trained on it record it, and "
                   "`rdfer predict` uses it for them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pack)


def _cmd_pack(args) -> int:
    import json
    import shlex
    from pathlib import Path

    from .. import data

    size = dict(num_frames=args.num_frames, image_size=args.image_size, train=False)
    if args.crop_margin is not None and not args.crop_faces:
        raise SystemExit("--crop-margin applies with --crop-faces (raw videos whose faces rdfer crops)")
    if args.layout is not None and args.format != "webdataset":
        raise SystemExit("--layout applies with --format webdataset")
    if args.crop_faces:
        _require_extra("faces", "rdfer pack --crop-faces (face detection)")
    try:
        source, what = _pack_source(args, size)
        if args.crop_faces:
            from ..inference.face_crops import FaceCroppedSource

            source = FaceCroppedSource(source, args.crop_margin, args.detector, args.detect_stride)
            what += f", faces cropped ({source.framing.describe()})"
        if args.format == "webdataset":
            out = data.write_webdataset(source, args.out, num_frames=args.num_frames, image_size=args.image_size,
                                        shard_size=args.shard_size, quality=args.quality, progress=not args.quiet,
                                        layout=args.layout or "clip")
        else:
            out = data.pack_dataset(source, args.out, num_frames=args.num_frames, image_size=args.image_size,
                                    progress=not args.quiet, shard_size=args.shard_size)
    except (ValueError, FileNotFoundError) as exc:  # bad layout, CSV row, or a foreign pack in --out
        raise SystemExit(f"rdfer pack: {exc}") from None
    if args.crop_faces:
        _write_face_report(Path(out), source)
    if args.format == "webdataset":
        return _report_webdataset_pack(Path(out), what, getattr(args, "split", None))
    index = json.loads((Path(out) / "index.json").read_text())
    size_text = _size_text(sum(s["bytes"] for s in index["shards"]))
    bad = sum(not r["valid"] for r in index["samples"])
    replaced = sum(len(r.get("replaced", ())) for r in index["samples"])
    print(f"packed {index['num_samples']} videos of {what} (up to {index['num_frames']} frames of "
          f"{index['image_size']} px, {size_text} in {len(index['shards'])} shard file(s)) -> {out}")
    if bad or replaced:
        print(f"  {bad} unreadable videos (stored as valid=False), {replaced} unreadable frames replaced; "
              f"PackedDataset({str(out)!r}).bad_sample_report() lists them")
    here, n = shlex.quote(str(out)), index["num_frames"]
    train_dir, test_dir = (here, "<test pack>") if getattr(args, "split", None) != "test" else ("<train pack>", here)
    print(f"train on it (with a pack of the other split) with:\n"
          f"  rdfer train packed --train {train_dir} --test {test_dir} --num-frames {n}")
    return 0


def _write_face_report(out, source) -> None:
    """OUT/faces.csv: per video, its frames and those without a face (a resumed pack keeps the
    rows of the videos packed before), and a line saying how many videos had no face."""
    import csv
    import io

    from ..engine.checkpoint import atomic_write_text

    path = out / "faces.csv"
    rows = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = {r[0]: r for r in list(csv.reader(f))[1:] if r}
    rows.update({r[0]: r for r in list(csv.reader(io.StringIO(source.report_csv())))[1:] if r})
    text = io.StringIO()
    csv.writer(text).writerows([["path", "frames", "frames_without_face", "status"], *sorted(rows.values())])
    atomic_write_text(path, text.getvalue())
    no_face = sum(r[3] != "ok" for r in rows.values())
    partial = sum(r[3] == "ok" and r[2] != "0" for r in rows.values())
    print(f"faces: {no_face} video(s) without a face or unreadable (stored as valid=False), {partial} with some "
          f"frames without a face (boxes interpolated) -> {path}")


def _size_text(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _report_webdataset_pack(out, what: str, split) -> int:
    import json
    import shlex

    index = json.loads((out / "index.json").read_text())
    meta, shards = index["rdfer"], index["shardlist"]
    size_text = _size_text(sum(s["filesize"] for s in shards))
    bad = sum(not r["valid"] for r in meta["samples"])
    stored = {"clip": f"JPEG frames of {meta['image_size']} px, one Motion-JPEG member per video",
              "frames": f"JPEG frames of {meta['image_size']} px, one member per frame",
              "npy": f"uint8 frames of {meta['image_size']} px, one .npy array per video, uncompressed"}
    print(f"packed {meta['num_samples']} videos of {what} as WebDataset shards (up to {meta['num_frames']} "
          f"{stored[meta.get('layout', 'frames')]}; {size_text} in {len(shards)} tar file(s)) -> {out}")
    if bad:
        print(f"  {bad} unreadable videos (stored with valid: false; training reports and skips them)")
    last = len(shards) - 1
    pattern = shlex.quote(str(out / f"shard-{{000000..{last:06d}}}.tar") if last else str(out / "shard-000000.tar"))
    here = shlex.quote(str(out))
    train_src, test_src = (here, "<test pack>") if split != "test" else ("<train pack>", here)
    print(f"train on it (with a pack of the other split) with:\n"
          f"  rdfer train webdataset --train {train_src} --test {test_src} --num-frames {meta['num_frames']}\n"
          f"or stream the shards from anywhere, e.g. --train {pattern} (a brace pattern, http(s):// URLs, pipe:)")
    return 0


def _pack_source(args, size):
    from .. import data

    if args.dataset == "csv":
        if not args.csv:
            raise SystemExit("rdfer pack csv needs --csv FILE")
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        source = data.VideoCSV(args.csv, classes=classes, **size)
        what = args.csv
    else:
        if not args.root or not args.split:
            raise SystemExit(f"rdfer pack {args.dataset} needs --root R and --split train|test")
        if args.dataset == "dfew":
            source = data.DFEW(args.root, args.fold, args.split, **size)
            what = f"DFEW fold {args.fold} {args.split}"
        else:
            source = data.FERV39K(args.root, args.split, **size)
            what = f"FERV39K {args.split}"
    return source, what
