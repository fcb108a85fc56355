"""``rdfer predict``: the emotion of video files or frame folders."""

from __future__ import annotations

from .common import _CHECKPOINT_HELP, _add_network_arg, _require_extra


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="predict the emotion of video files or frame folders (face detection included)",
        description="Decode each video, detect and crop the face per frame (OpenCV Haar cascade, offline), "
        "sample frames as in evaluation and print the emotion, class probabilities, per-clip predictions, "
        "the agreement (a reliability score) and the key-expression window in seconds. Exit code: 0 when "
        "every video was predicted, 3 when some video had no face, 4 when some video could not be read "
        "(the others are still predicted).",
    )
    p.add_argument("videos", nargs="+", help="local video files (mp4, avi, mov, webm, mkv, ...) or folders of "
                   "numbered frames, each folder one video (CK+-style S005/001/S005_001_00000001.png ..., or "
                   "0.jpg, 1.jpg, ..., 10.jpg: numeric order; no frame rate, so no key window in seconds); URLs are "
                   "refused (rdfer works offline: download the video first)")
    p.add_argument("--checkpoint", required=True, help=_CHECKPOINT_HELP)
    _add_network_arg(p)
    p.add_argument("--no-detect", action="store_true", help="the videos are already cropped to the face")
    p.add_argument("--detect-stride", type=int, default=8,
                   help="detect on every n-th frame and interpolate the rest; on a box jump or a face appearing or "
                   "leaving, the frames in between are examined too (default 8; 1 = every frame)")
    p.add_argument("--detector", choices=["auto", "haar", "yunet"], default="auto",
                   help="face detector: auto (the one the model's training faces were framed with; haar when it records "
                   "none, the default), haar (OpenCV's cascade) or yunet (a CNN that finds turned, dark and covered "
                   "faces; Linux x86-64 and Windows x64, installed with rdfer[faces])")
    p.add_argument("--crop-margin", type=float,
                   help="the face crop: a square around the detector's box, enlarged by this share of the box's side "
                   "on each side (default: the framing the model's training faces had, recorded in its checkpoint; "
                   "0.25 for models that record none)")
    p.add_argument("--json", action="store_true", help="print one JSON object per video")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the logits of each video and its mirror image")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    import json

    from ..engine.checkpoint import load_model
    from ..inference.predict import EXIT_NO_FACE, EXIT_OK, EXIT_UNREADABLE, predict_videos

    from ..inference.predict import URL_REFUSED, is_url

    urls = [v for v in args.videos if is_url(v)]
    if urls:
        raise SystemExit(f"{urls[0]}: {URL_REFUSED}")
    if not args.no_detect:
        _require_extra("faces", "rdfer predict (face detection; --no-detect for cropped videos)")
    from ..engine.datasets import trained_data_config

    trained_data_config(args.checkpoint)  # frames, size and class names come from here: refuse malformed ones first
    model = load_model(args.checkpoint, map_location=args.device, network=args.network or "average").eval()
    if args.tta:
        from ..inference.tta import with_tta

        model = with_tta(model).eval()
    code = EXIT_OK
    # The face passes of the next videos run while the model predicts this one.
    for res in predict_videos(args.videos, model, detector=None if args.no_detect else args.detector,
                              detect_stride=args.detect_stride, device=args.device, crop_margin=args.crop_margin):
        print(json.dumps(res.to_dict()) if args.json else res.summary(), flush=True)
        if res.status == "unreadable":
            code = max(code, EXIT_UNREADABLE)
        elif res.status == "no_face":
            code = max(code, EXIT_NO_FACE)
    return code
