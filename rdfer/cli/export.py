"""``rdfer export``: a checkpoint to ONNX or TorchScript."""

from __future__ import annotations

from .common import _CHECKPOINT_HELP, _add_network_arg, _require_extra


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript")
    p.add_argument("--checkpoint", required=True, help=_CHECKPOINT_HELP)
    _add_network_arg(p)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="onnx (default) or torchscript")
    p.add_argument("--output", help="output file (default: model.onnx / model.pt next to the checkpoint)")
    p.add_argument("--num-frames", type=int, help="T of the exported input (default: as trained, from the "
                   "checkpoint, where another value is an error; 16 for a checkpoint that does not record it)")
    p.add_argument("--image-size", type=int, help="frame size of the exported input (default: as trained, from the "
                   "checkpoint, where another value is an error; 112 for a checkpoint that does not record it)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from ..engine.checkpoint import load_model
    from ..engine.datasets import setting_from_checkpoint, trained_data_config
    from ..engine.hub import default_output_home
    from ..inference.export import export_model

    if args.format == "onnx":
        _require_extra("export", "rdfer export --format onnx", ("onnx",))
    trained = trained_data_config(args.checkpoint)  # a contradicting flag fails before the model is built
    t = setting_from_checkpoint("--num-frames", args.num_frames, trained.get("num_frames"))
    size = setting_from_checkpoint("--image-size", args.image_size, trained.get("image_size"))
    t, size = (16 if t is None else t), (112 if size is None else size)
    if t < 1 or size < 1:
        raise SystemExit(f"--num-frames and --image-size must be >= 1, got {t} and {size}")
    model = load_model(args.checkpoint, network=args.network or "average")
    default = default_output_home(args.checkpoint) / ("model.onnx" if args.format == "onnx" else "model.torchscript.pt")
    path = export_model(model, args.output or default, args.format, num_frames=t, image_size=size)
    print(f"exported {args.format} for input (B, 3, {t}, {size}, {size}) -> {path}")
    return 0
