"""What several commands share: the dataset and checkpoint options, option parsers, the inference set-up."""

from __future__ import annotations

import argparse
import sys
from typing import List


def _require_extra(extra: str, what: str, modules=()) -> None:
    """Stop with one line naming the extra to install (rdfer.extras), before any work is done."""
    from ..extras import MissingExtraError, require_extra

    try:
        require_extra(extra, what, modules)
    except MissingExtraError as err:
        raise SystemExit(str(err)) from None


# rdfer.losses.ALL_STRATEGIES and TrainConfig.strategy, spelt out so that parsing needs no torch
# import (tests/test_robust_losses.py checks they agree).
_STRATEGIES = ("ce", "bigloss_up", "bigloss_down", "hard_up", "noisy_down", "agreement", "gce", "class_small_loss",
               "vote_small_loss", "hard_disagree", "consensus", "clip_vote", "elr", "clip_correct", "mixture",
               "agreement_gmm", "coteaching", "dividemix")


_DEFAULT_STRATEGY = "agreement"


_DATASETS = ("synthetic", "dfew", "ferv39k", "csv", "packed", "webdataset")  # = rdfer.engine.datasets.DATASETS


_DATASET_HELP = (
    "synthetic (built in, no download) | dfew --root R --fold F | ferv39k --root R | "
    "csv --train A.csv --test B.csv | packed --train DIR --test DIR | webdataset --train SHARDS --test SHARDS"
)


def _add_dataset_args(p, defaults_suppressed: bool = True, dataset_required: bool = True) -> None:
    g = p.add_argument_group("data")
    if dataset_required:
        g.add_argument("dataset", choices=_DATASETS, help=_DATASET_HELP)
    else:  # rdfer train: the --config file may name it (a run's config.yaml does)
        g.add_argument("dataset", choices=_DATASETS, nargs="?", default=None,
                       help=_DATASET_HELP + " (may come from --config instead)")
    g.add_argument("--root", help="dataset root folder (dfew, ferv39k)")
    g.add_argument("--fold", type=int, help="DFEW fold 1..5 (default 1)")
    g.add_argument("--train", dest="train_source",
                   help="csv: training CSV of path,label; packed: training pack folder; webdataset: training shards "
                   "(a brace pattern such as 'shards/train-{000000..000009}.tar', http(s):// URLs, pipe:COMMAND, "
                   "'::'-separated lists, or a pack folder / index.json)")
    g.add_argument("--test", dest="test_source", help="csv: test CSV; packed: test pack folder; webdataset: test shards")
    g.add_argument("--num-frames", type=int, help="frames loaded per video, T (default 64; train synthetic: 16)")
    g.add_argument("--image-size", type=int, help="frame side in pixels after resizing (default 112; train synthetic: 32)")
    g.add_argument("--synthetic-train", type=int, help="synthetic: training videos (default 1200)")
    g.add_argument("--synthetic-test", type=int, help="synthetic: test videos (default 400; train synthetic: 600)")
    g.add_argument("--noise-rate", type=float, help="synthetic: share of training labels replaced (default 0)")
    g.add_argument("--noise", choices=["symmetric", "asymmetric"], help="synthetic: noise model")
    g.add_argument("--synthetic-distribution", choices=["uniform", "long_tail"],
                   help="synthetic: class frequencies (uniform, or long_tail: DFEW-like, 18.9x, disgust rarest)")
    g.add_argument("--synthetic-static", action="store_true",
                   help="synthetic: the expression in every frame, no hard videos or distractors")
    g.add_argument("--workers", type=int, help="DataLoader worker processes, exactly (default min(4, available cores))")
    g.add_argument("--decode-on-device", action="store_true",
                   help="webdataset: the loader workers ship JPEG bytes and the frames are decoded on the training "
                   "device by torchvision.io.decode_jpeg (nvJPEG on a GPU), when the CPU cores cannot keep up")
    g.add_argument("--batch-size", type=int, help="global batch size (default 128; train synthetic: 32)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")


def _comma_list(text: str) -> List[str]:
    items = [c.strip() for c in text.split(",") if c.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return items


def _tau(text: str):
    """``--logit-adjustment``: a number, or ``auto``."""
    return "auto" if text.strip().lower() == "auto" else float(text)


def _parse_model_option(text: str):
    import yaml

    from ..engine.config import plain_yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:  # the value as YAML, as in a --config file: no tags, anchors or aliases
        return key.strip().replace("-", "_"), plain_yaml(value)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: not a plain YAML value ({' '.join(str(err).split())})") from None


_CHECKPOINT_HELP = ("model.safetensors, a run folder, a folder laid out as a Hugging Face Hub repository, or "
                    "hf-hub:ORG/NAME[@REVISION] (from huggingface_hub's cache; downloaded once when missing)")


_NETWORK_HELP = ("a model of two networks (trained with coteaching or dividemix): average (default: both, twice the "
                 "inference cost), first or second (one network); a single-network model ignores it")


def _add_network_arg(p) -> None:
    p.add_argument("--network", choices=("average", "first", "second"), help=_NETWORK_HELP)


def _add_checkpoint_dataset_args(p, default_split: str) -> None:
    p.add_argument("--checkpoint", required=True, help=_CHECKPOINT_HELP)
    _add_network_arg(p)
    _add_dataset_args(p)
    # What training fixed comes from the checkpoint (_inference_setup): say so in --help.
    trained = {"num_frames": "frames loaded per video, T (default: as trained, from the checkpoint; another value "
                             "is an error)",
               "image_size": "frame side in pixels (default: as trained, from the checkpoint; another value is an "
                             "error)"}
    for action in p._actions:
        action.help = trained.get(action.dest, action.help)
    p.add_argument("--split", choices=["test", "train"], help=f"which split to use (default {default_split})")
    p.add_argument("--out", help="output folder (default: next to the checkpoint; for hf-hub:ORG/NAME in "
                   "runs/hf-hub/ORG--NAME/)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the logits of each video and its mirror image")


def _inference_setup(args, default_split: str, what: str):
    """Checkpoint + dataset split + loader + batch transform, shared by eval/audit/analyze.

    What training fixed is read from the checkpoint: the class list and its order (a CSV's labels
    are mapped to it, never re-inferred), the frames per video and the frame size. A flag that
    contradicts it, or data of other classes or size, is an error naming both.
    """
    import dataclasses
    from pathlib import Path

    from ..engine.checkpoint import load_model
    from ..engine.config import TrainConfig
    from ..engine.datasets import (build_datasets, check_data_against_checkpoint, setting_from_checkpoint,
                                  trained_data_config)
    from ..engine.hub import default_output_home
    from ..engine.distributed import init_distributed
    from ..engine.train import batch_transform, make_loader

    opts = {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    trained = trained_data_config(args.checkpoint)  # cheap: the metadata only, no model yet
    for key, flag in (("num_frames", "--num-frames"), ("image_size", "--image-size")):
        value = setting_from_checkpoint(flag, opts.get(key), trained.get(key))
        if value is not None:
            opts[key] = value
    if "classes" in trained:
        opts["classes"] = trained["classes"]  # a CSV's labels map to the trained order, not a re-inferred one
    cfg = TrainConfig.from_dict({"batch_size": 32, **opts})
    info = init_distributed(cfg.device)
    train_set, test_set, classes = build_datasets(cfg)  # a wrong root fails here, before the model loads
    split = getattr(args, "split", default_split)
    dataset = test_set if split == "test" else train_set
    warning = check_data_against_checkpoint(trained, dataset, classes, f"the {cfg.dataset} {split} split")
    if warning:
        print(f"rdfer: warning: {warning}", file=sys.stderr, flush=True)
    model = load_model(args.checkpoint, map_location=info.device, network=getattr(args, "network", None) or "average")
    if model.num_classes != len(classes):
        raise SystemExit(f"{args.checkpoint} predicts {model.num_classes} classes but the dataset has {len(classes)}")
    if getattr(args, "tta", False):
        from ..inference.tta import with_tta

        model = with_tta(model)
    base = getattr(dataset, "dataset", dataset)  # a validation carve-out wraps it in a Subset
    if getattr(base, "train", False):  # read frames as evaluation does (uniform, centred), not with training jitter
        base.train = False
    loader = make_loader(dataset, cfg.batch_size, info, False, cfg.seed, cfg.workers)
    # TTA results are other numbers: a folder of their own, never the plain evaluation's.
    tta = "_tta" if getattr(args, "tta", False) else ""
    out = Path(getattr(args, "out", None) or default_output_home(args.checkpoint) / f"{what}_{split}{tta}")
    out.mkdir(parents=True, exist_ok=True)
    return model, dataset, loader, classes, info.device, batch_transform(False, False), out, split
