"""``rdfer demo`` (the main job) and ``rdfer synth-preview``."""

from __future__ import annotations

def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job: CE, the small-loss trick and rdfer's default loss on noisy long-tail "
                       "synthetic data (CPU, minutes)")
    p.add_argument("--out", default="runs/demo",
                   help="output folder (default runs/demo); the runs of an earlier demo there are moved aside")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    p.add_argument("--synthetic-train", type=int, default=None, help="override the number of training videos")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from ..engine.demo import run_demo

    overrides = {k: v for k, v in (("epochs", args.epochs), ("synthetic_train", args.synthetic_train)) if v is not None}
    # A demo is re-run as a whole: its run folders replace (move aside) the last demo's.
    run_demo(args.out, progress=not args.quiet, overwrite=True, **overrides)
    return 0


def _add_synth_preview(sub) -> None:
    p = sub.add_parser("synth-preview", help="save a PNG grid (expressions x time) of the built-in synthetic videos")
    p.add_argument("--out", default="synthetic_preview.png", help="PNG file to write")
    p.add_argument("--image-size", type=int, default=48, help="frame side in pixels (default 48)")
    p.add_argument("--num-frames", type=int, default=16, help="frames per video (default 16)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--hard", action="store_true", help="show hard videos (low intensity, blends, distractors)")
    p.set_defaults(func=_cmd_synth_preview)


def _cmd_synth_preview(args) -> int:
    from ..data.synthetic import render_preview

    out = render_preview(args.out, image_size=args.image_size, num_frames=args.num_frames, seed=args.seed,
                         hard=args.hard)
    print(f"wrote {out} (rows: expressions, columns: frames; red bar = key-expression window)")
    return 0
