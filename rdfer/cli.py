"""The ``rdfer`` command line: thin wrappers that parse arguments and call the library.

Each subcommand is added by one ``_add_<name>(subparsers)`` function that sets ``func``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable, List, Optional


def _require_extra(extra: str, what: str, modules=()) -> None:
    """Stop with one line naming the extra to install (rdfer.extras), before any work is done."""
    from .extras import MissingExtraError, require_extra

    try:
        require_extra(extra, what, modules)
    except MissingExtraError as err:
        raise SystemExit(str(err)) from None


def _add_backbones(sub) -> None:
    p = sub.add_parser("backbones", help="list the registered backbones with their sizes")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'r*' or 'timm/resnet*'")
    p.set_defaults(func=_cmd_backbones)


def _cmd_backbones(args) -> int:
    from .backbones.table import backbone_table

    print(backbone_table(args.pattern))
    return 0


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

    from .engine.config import plain_yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:  # the value as YAML, as in a --config file: no tags, anchors or aliases
        return key.strip().replace("-", "_"), plain_yaml(value)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: not a plain YAML value ({' '.join(str(err).split())})") from None


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train and evaluate an RDFER model (paper recipe by default)",
        description="Train an RDFER model and evaluate its last epoch on the test split. Defaults follow "
        "the paper: AdamW lr 7e-4 (min 7e-6), weight decay 0.05, cosine schedule with 10 warm-up epochs, "
        "100 epochs, batch 128, label smoothing 0.1, hard 20% x1.5, noisy 10% x0, agreement loss from the "
        "end of the warm-up; `rdfer train synthetic` starts from CPU sizes instead (--recipe cpu: 14 epochs, "
        "16 frames of 32 px, batch 32), `--recipe paper` gives it the paper's. "
        "Options may also come from --config FILE.yaml (same names, dashes or "
        "underscores); flags on the command line override the file. A finished run's RUN/config.yaml holds "
        "every option of the run: `rdfer train --config RUN/config.yaml --out OTHER` re-runs it.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", help="YAML file of options (e.g. a run's config.yaml, which names the dataset too)")
    _add_dataset_args(p, dataset_required=False)
    p.add_argument("--folds", help="DFEW: train several folds, e.g. 1-5, and report mean and std")
    p.add_argument("--val-fraction", type=float, help="carve a stratified validation split from train for model selection")
    p.add_argument("--classes", type=_comma_list, metavar="A,B,...",
                   help="csv: the class names in order, when the labels are not (all) the 7 emotions")
    m = p.add_argument_group("model")
    m.add_argument("--model", help="a preset from `rdfer.list_models()` (default rdfer_small); frame_baseline = the "
                   "backbone alone, per frame, logits averaged, plain CE (combine with --backbone X)")
    m.add_argument("--backbone", help="a registry backbone wrapped with the paper's defaults, e.g. r3d_18, timm/resnet50")
    m.add_argument("--pretrained", nargs="?", const=True, help="upstream pretrained weights, or a local weights file")
    m.add_argument("--model-option", dest="model_option", action="append", type=_parse_model_option, metavar="KEY=VALUE",
                   help="wrap_with_rdfer option, repeatable: n_clips=4, clip_len=4, d_model=512, summary_dim=128, "
                   "num_glimpses=16, detector=tiny_cnn, locator=peak (keyinstance, saliency, mean, map), num_centres=4, "
                   "locator_warmup_epochs=0, sequence_model=bilstm, fusion=sum, delta_min_frac=0.25, "
                   "sampling=linear, resample=false, summary=false, dual_stream=false, hierarchical=false, "
                   "backbone_kwargs={norm: gn}")
    l = p.add_argument_group("loss")
    l.add_argument("--strategy", choices=list(_STRATEGIES),
                   help="loss reweighting: the paper's Table IV (ce, bigloss_up, bigloss_down = the small-loss "
                   "trick, hard_up, noisy_down, agreement = the paper's rule), a robust rule (gce, "
                   "class_small_loss, vote_small_loss, hard_disagree, consensus, clip_vote) or a label-correcting "
                   "rule (elr, clip_correct, mixture), a learnt clean / hard / noisy split (agreement_gmm) or two "
                   "networks trained crosswise (coteaching, dividemix: both saved in one model, averaged at "
                   "inference); default " + _DEFAULT_STRATEGY)
    l.add_argument("--strategy-option", dest="strategy_option", action="append", type=_parse_model_option,
                   metavar="KEY=VALUE", help="an option of the rule, repeatable: elr: lam=3, beta=0.7, source=clips; "
                   "clip_correct: min_confidence=0.5; mixture: temperature=0.5, threshold=0.5, min_class_size=8; agreement_gmm: "
                   "threshold=0.5; coteaching: forget_rate=0.2, num_gradual=3, plus=false; dividemix: divide=loss "
                   "(or agreement_gmm), p_threshold=0.5, alpha=4, lambda_u=25, rampup_epochs=5, confidence_penalty=1")
    l.add_argument("--mixup", type=float, metavar="ALPHA",
                   help="mixup on the video batch with any rule: inputs and targets mixed by Beta(ALPHA, ALPHA) "
                   "(0: off, the default)")
    l.add_argument("--agree-min", type=float, help="agreement from which clips count as agreeing (0.75; robust rules)")
    l.add_argument("--memory-momentum", type=float, help="history of each sample's loss/agreement across epochs, 0 = latest only")
    l.add_argument("--gce-q", type=float, help="q of the generalized cross-entropy (0.7; strategy gce)")
    l.add_argument("--noisy-class-guard", type=float, metavar="R",
                   help="flag a sample NOISY only when the model recognises its labelled class (training recall "
                   ">= R); an unlearned rare class is never dropped as 'wrong labels' (0: off, the paper's rule; 0.5 in "
                   "--recipe small)")
    l.add_argument("--noisy-max", type=float, help="largest share of samples flagged noisy (0.5; strategy clip_vote)")
    l.add_argument("--logit-adjustment", type=_tau, metavar="TAU",
                   help="logit-adjusted loss for class-imbalanced sets: train on logits + TAU*log(class prior); "
                   "auto (default): 1 when the largest training class has >= 3x the videos of the smallest, else 0; "
                   "0: off, the paper's loss")
    l.add_argument("--t-hard", type=float, help="share of samples flagged hard (0.2)")
    l.add_argument("--t-noisy", type=float, help="share of samples flagged noisy (0.1)")
    l.add_argument("--lambda-hard", type=float, help="weight of hard samples (1.5)")
    l.add_argument("--lambda-noisy", type=float, help="weight of noisy samples (0.0)")
    l.add_argument("--label-smoothing", type=float, help="(0.1)")
    l.add_argument("--aux-weight", type=float, help="weight of the per-clip CE term (0.1)")
    l.add_argument("--loss-scope", choices=["epoch", "batch"], help="flag over the whole set per epoch, or per batch")
    l.add_argument("--start-epoch", type=int, help="first epoch with reweighting (default: the warm-up length)")
    l.add_argument("--noisy-requires-mismatch", action="store_true", help="only flag noisy when the clips' vote contradicts the label")
    l.add_argument("--class-weighted", action="store_true", help="class-weighted CE (inverse frequency)")
    l.add_argument("--balanced-sampler", action="store_true", help="class-balanced sampling (single process)")
    r = p.add_argument_group("recipe")
    r.add_argument("--recipe", choices=["paper", "cpu", "small"],
                   help="starting values for the options not given: paper (section IV-B: 100 epochs, 64 frames of "
                   "112 px, batch 128; the default for dfew, ferv39k, csv, packed), small (for hundreds of "
                   "videos: 30 epochs, batch 16, lr 1e-3, 1 warm-up epoch) or cpu (the demo's sizes: 14 "
                   "epochs, 16 frames of 32 px, batch 32, 1200/600 videos; minutes on 2 cores; the default for "
                   "synthetic)")
    r.add_argument("--epochs", type=int, help="training epochs (100; train synthetic: 14)")
    r.add_argument("--warmup-epochs", type=int, help="linear warm-up epochs; the agreement loss starts after them (10)")
    r.add_argument("--accum-steps", type=int, help="gradient accumulation steps")
    r.add_argument("--lr", type=float, help="AdamW peak learning rate (7e-4)")
    r.add_argument("--min-lr", type=float, help="end of the cosine schedule (7e-6)")
    r.add_argument("--weight-decay", type=float, help="AdamW weight decay (0.05)")
    r.add_argument("--grad-clip", type=float, help="clip the gradient norm")
    r.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no data augmentation (random crop, flip, colour jitter; --scale-jitter is separate)")
    r.add_argument("--scale-jitter", type=float, metavar="S",
                   help="zoom each training video about its centre by a random factor in [1/(1+S), 1+S], so the "
                   "model sees its faces framed tighter and wider than the training crops (0: off, the default)")
    r.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    r.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="run folder (default runs/rdfer)")
    o.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    o.add_argument("--overwrite", action="store_true",
                   help="--out holds an earlier run: move it aside (to OUT.replaced-DATE) and start afresh")
    o.add_argument("--stop-after", type=int, help="end this invocation after N epochs (time-boxed jobs); continue with --resume")
    o.add_argument("--eval-test-every", type=int, help="also evaluate on test every N epochs (monitoring only)")
    o.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    o.add_argument("--verbose", action="store_true", help="also print the per-epoch lines (always in OUT/train.log)")
    p.set_defaults(func=_cmd_train)


def _recipe_text(name: str, overridden: Iterable[str] = ()) -> str:
    """The recipe's values as text, less those the user set (``overridden``: field names)."""
    from .engine.config import RECIPES

    items = dict(RECIPES[name])
    items.update(items.pop("model_options", {}))  # e.g. frame_head: shown beside the other values
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in items.items() if k not in set(overridden))


def _count_training_videos(dataset: str, source: Optional[str]) -> Optional[int]:
    """Videos in a csv/packed/webdataset training set, read cheaply to pick the recipe (None:
    unknown). The same videos get the same recipe however they are named: a folder, an
    ``index.json``, a brace pattern or a URL."""
    import json
    from pathlib import Path

    try:
        if dataset == "csv" and source:
            from .data.video_csv import read_csv_rows

            return sum(1 for _ in read_csv_rows(source, ("path", "label")))
        if dataset == "packed" and source:
            return int(json.loads((Path(source) / "index.json").read_text())["num_samples"])
        if dataset == "webdataset" and source:
            from .data.webdataset import WebDatasetVideos

            return len(WebDatasetVideos(source))  # the index's sample list, or one pass over the .json members
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the dataset's own checks report a broken file, with its row, at start-up
    return None


def _check_config_out(out: str, config: str) -> None:
    """A config file (a published model's, say) chooses where its run is written only inside the
    working folder: an absolute path or one with ``..`` there must be given as ``--out``."""
    from pathlib import PurePath

    if PurePath(out).is_absolute() or ".." in PurePath(out).parts or out.startswith("~"):
        raise ValueError(f"{config}: out: {out!r} is outside the working folder; a config file writes its run "
                         f"inside it only: give --out (e.g. --out runs/{PurePath(out).name or 'rdfer'})")


def _train_config_from_args(args):
    from .engine.config import RECIPES, TrainConfig, default_recipe, load_yaml_config

    # Precedence: the recipe's sizes, then the YAML file, then the flags.
    from_file = load_yaml_config(args.config) if getattr(args, "config", None) else {}
    if getattr(args, "dataset", None) is None:  # e.g. `rdfer train --config RUN/config.yaml`: the file names it
        if not from_file.get("dataset"):
            raise SystemExit("rdfer train needs a dataset (synthetic, dfew, ferv39k, csv, packed or webdataset): give it on the "
                             "command line or as `dataset:` in the --config file")
        args.dataset = from_file["dataset"]
    skip = ("func", "command", "config", "folds", "model_option", "strategy_option", "recipe")
    cli = {k: v for k, v in vars(args).items() if k not in skip}
    if from_file.get("out") is not None and cli.get("out") is None:
        _check_config_out(str(from_file["out"]), args.config)
    cli_options = dict(getattr(args, "model_option", None) or [])
    recipe = getattr(args, "recipe", None)
    if recipe is None:
        num_train = _count_training_videos(args.dataset, getattr(args, "train_source", from_file.get("train_source")))
        recipe = default_recipe(args.dataset, num_train)
        if recipe == "small":
            # On stdout: stderr carries errors only, one line each. Only the values the recipe sets.
            given = {*from_file, *cli, *cli_options}
            if "model_options" in from_file:  # the file's model options replace the recipe's
                given |= set(RECIPES["small"].get("model_options", {}))
            print(f"rdfer: a small training set ({num_train} videos): the 'small' recipe "
                  f"({_recipe_text('small', given) or 'every value set by you'}); --recipe paper for the paper's",
                  flush=True)
    values = dict(RECIPES[recipe])
    values.update(from_file)
    options = {**values.get("model_options", {}), **cli_options}  # a file's model_options replace the recipe's
    values.update(cli)
    rule_options = dict(values.get("strategy_options", {}))
    rule_options.update(dict(getattr(args, "strategy_option", None) or []))
    if rule_options:
        values["strategy_options"] = rule_options
    if values.get("model") == "frame_baseline":
        # The baseline is what a user writes without rdfer: plain CE on the averaged logits.
        values.setdefault("strategy", "ce")
        values.setdefault("aux_weight", 0.0)
    if options:
        values["model_options"] = options
    return TrainConfig.from_dict(values)


def _cmd_train(args) -> int:
    import json

    cfg = _train_config_from_args(args)
    if getattr(args, "folds", None):
        from .engine.folds import parse_folds, train_folds

        if cfg.dataset != "dfew":
            raise SystemExit("--folds applies to the dfew dataset")
        summary = train_folds(cfg, parse_folds(args.folds))
        print(json.dumps(summary, indent=2))
        return 0
    from .engine.train import train

    res = train(cfg)
    # Under torchrun every process returns the results; one report is enough.
    if "test_last_epoch" not in res or int(os.environ.get("RANK", "0")) != 0:
        return 0
    t = res["test_last_epoch"]
    print(f"test (last epoch): WAR {100 * t['war']:.2f}%  UAR {100 * t['uar']:.2f}%  -> {cfg.out}/results.json")
    return 0


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

    from .engine.checkpoint import load_model
    from .engine.config import TrainConfig
    from .engine.datasets import (build_datasets, check_data_against_checkpoint, setting_from_checkpoint,
                                  trained_data_config)
    from .engine.hub import default_output_home
    from .engine.distributed import init_distributed
    from .engine.train import batch_transform, make_loader

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
        from .inference.tta import with_tta

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


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: WAR, UAR, per-class recall, confusion matrix",
                       argument_default=argparse.SUPPRESS)
    _add_checkpoint_dataset_args(p, "test")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
    import json

    from .engine.checkpoint import atomic_write_text
    from .engine.evaluate import evaluate, write_confusion

    model, _, loader, classes, device, tf, out, split = _inference_setup(args, "test", "eval")
    metrics = evaluate(model, loader, device, len(classes), classes, tf, progress=True)
    metrics["tta"] = "mirror" if getattr(args, "tta", False) else None  # how the numbers were made
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    write_confusion(metrics, classes, out)
    print(f"{split}: WAR {100 * metrics['war']:.2f}%  UAR {100 * metrics['uar']:.2f}%  "
          f"({metrics['num_samples']} videos, {metrics['excluded_invalid']} unreadable excluded)")
    for name, recall in metrics["per_class_recall"].items():
        print(f"  {name:>9}: " + ("-" if recall is None else f"{100 * recall:.2f}%"))
    print(f"-> {out}/metrics.json, confusion.csv, confusion.png")
    return 0


def _add_audit(sub) -> None:
    p = sub.add_parser("audit", help="rank suspected label errors and hard videos of a labelled dataset",
                       description="Run a model over a labelled dataset and write a ranked report of suspected "
                       "label errors (clips agree, loss high, vote contradicts the label) and hard videos (clips "
                       "disagree): audit.md, audit.csv, label_errors.csv, hard_samples.csv; with --html also review.html, a page "
                       "for looking at the flagged videos and exporting corrected labels.",
                       argument_default=argparse.SUPPRESS)
    _add_checkpoint_dataset_args(p, "train")
    p.add_argument("--t-hard", type=float, default=0.2, help="share flagged hard (0.2)")
    p.add_argument("--t-noisy", type=float, default=0.1, help="share flagged as suspected label errors (0.1)")
    p.add_argument("--allow-agreeing", action="store_true",
                   help="also flag samples whose clip vote equals the label (the paper's pure rank rule)")
    p.add_argument("--html", action="store_true",
                   help="also write review.html: the flagged videos' frames and evidence, keep/relabel choices and a "
                   "corrected-CSV export, in a static page that opens from disk")
    p.add_argument("--html-embed", action="store_true", help="with --html: embed the images in the page (one file)")
    p.set_defaults(func=_cmd_audit)


def _cmd_audit(args) -> int:
    from .analysis.audit import audit_predictions, write_audit
    from .engine.evaluate import run_inference

    model, dataset, loader, classes, device, tf, out, _ = _inference_setup(args, "train", "audit")
    preds = run_inference(model, loader, device, tf, progress=True, desc="audit")
    base = getattr(dataset, "dataset", dataset)
    report = audit_predictions(preds, classes, args.t_hard, args.t_noisy, not getattr(args, "allow_agreeing", False),
                               getattr(base, "is_noisy", None), getattr(base, "is_hard", None))
    files = write_audit(report, out)
    print(f"{len(report['suspected_label_errors'])} suspected label errors, {len(report['hard_samples'])} hard videos "
          f"of {report['num_samples']}")
    for name in ("noisy", "hard"):
        gt = report.get(f"{name}_vs_ground_truth")
        if gt:
            print(f"  {name} flags vs ground truth: precision {gt['precision']:.1%} (random {gt['random_precision']:.1%}), "
                  f"recall {gt['recall']:.1%}")
    print(f"-> {files['md']}")
    if getattr(args, "html", False) or getattr(args, "html_embed", False):
        from .analysis.review_page import write_review_page

        page = write_review_page(report, preds, dataset, classes, out, embed_images=getattr(args, "html_embed", False))
        print(f"-> {page} (open it in a browser to review the flagged videos)")
    return 0


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="the paper's analyses: Tables V and VII, confusion matrix, t-SNE, sample strips",
                       argument_default=argparse.SUPPRESS)
    _add_checkpoint_dataset_args(p, "test")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args) -> int:
    from .analysis.report import write_analysis
    from .engine.evaluate import run_inference

    _require_extra("viz", "rdfer analyze")  # before anything is written: the figures and the t-SNE need both
    model, dataset, loader, classes, device, tf, out, _ = _inference_setup(args, "test", "analyze")
    preds = run_inference(model, loader, device, tf, progress=True, desc="analyze")
    summary = write_analysis(preds, dataset, classes, model.n_clips, out)
    print(f"WAR {summary['war']:.2%}  UAR {summary['uar']:.2%} -> {out}/analysis.md")
    return 0


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
    from .engine.checkpoint import load_model
    from .engine.datasets import setting_from_checkpoint, trained_data_config
    from .engine.hub import default_output_home
    from .inference.export import export_model

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
    from .engine.demo import run_demo

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
    from .data.synthetic import render_preview

    out = render_preview(args.out, image_size=args.image_size, num_frames=args.num_frames, seed=args.seed,
                         hard=args.hard)
    print(f"wrote {out} (rows: expressions, columns: frames; red bar = key-expression window)")
    return 0


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

    from .engine.checkpoint import load_model
    from .inference.predict import EXIT_NO_FACE, EXIT_OK, EXIT_UNREADABLE, predict_video

    from .inference.predict import URL_REFUSED, is_url

    urls = [v for v in args.videos if is_url(v)]
    if urls:
        raise SystemExit(f"{urls[0]}: {URL_REFUSED}")
    if not args.no_detect:
        _require_extra("faces", "rdfer predict (face detection; --no-detect for cropped videos)")
    from .engine.datasets import trained_data_config

    trained_data_config(args.checkpoint)  # frames, size and class names come from here: refuse malformed ones first
    model = load_model(args.checkpoint, map_location=args.device, network=args.network or "average").eval()
    if args.tta:
        from .inference.tta import with_tta

        model = with_tta(model).eval()
    code = EXIT_OK
    for video in args.videos:
        res = predict_video(video, model, detector=None if args.no_detect else args.detector,
                            detect_stride=args.detect_stride, device=args.device, crop_margin=args.crop_margin)
        print(json.dumps(res.to_dict()) if args.json else res.summary(), flush=True)
        if res.status == "unreadable":
            code = max(code, EXIT_UNREADABLE)
        elif res.status == "no_face":
            code = max(code, EXIT_NO_FACE)
    return code


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
                   "standard WebDataset tar shards (per video a .json and its frames as JPEG) plus index.json, "
                   "streamable from disk, HTTP or object storage (`rdfer train webdataset`)")
    p.add_argument("--quality", type=int, default=90, help="webdataset: JPEG quality of the stored frames (default 90)")
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

    from . import data

    size = dict(num_frames=args.num_frames, image_size=args.image_size, train=False)
    if args.crop_margin is not None and not args.crop_faces:
        raise SystemExit("--crop-margin applies with --crop-faces (raw videos whose faces rdfer crops)")
    if args.crop_faces:
        _require_extra("faces", "rdfer pack --crop-faces (face detection)")
    try:
        source, what = _pack_source(args, size)
        if args.crop_faces:
            from .inference.face_crops import FaceCroppedSource

            source = FaceCroppedSource(source, args.crop_margin, args.detector, args.detect_stride)
            what += f", faces cropped ({source.framing.describe()})"
        if args.format == "webdataset":
            out = data.write_webdataset(source, args.out, num_frames=args.num_frames, image_size=args.image_size,
                                        shard_size=args.shard_size, quality=args.quality, progress=not args.quiet)
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

    from .engine.checkpoint import atomic_write_text

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
    print(f"packed {meta['num_samples']} videos of {what} as WebDataset shards (up to {meta['num_frames']} JPEG "
          f"frames of {meta['image_size']} px, {size_text} in {len(shards)} tar file(s)) -> {out}")
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
    from . import data

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


def _add_publish(sub) -> None:
    p = sub.add_parser(
        "publish", help="upload a finished run to the Hugging Face Hub (weights, config, model card, figures)",
        description="Upload a finished run folder to the Hugging Face Hub as ORG/NAME, in one commit: config.json "
        "(model config and data settings), model.safetensors (the last-epoch model), README.md (the model card; "
        "the run's own README.md when it is not rdfer's card), config.yaml, results.json and the run's PNG figures. "
        "Anyone then loads it with rdfer.load_model('hf-hub:ORG/NAME') or --checkpoint hf-hub:ORG/NAME. "
        "The folder is staged first: --dry-run DIR writes it to DIR and stops, nothing is sent (`hf upload ORG/NAME "
        "DIR` or this command without --dry-run uploads it later). "
        "Token: a write token from https://huggingface.co/settings/tokens, in the HF_TOKEN environment variable or "
        "stored by `hf auth login` (`huggingface-cli login` before huggingface_hub 1.0).",
    )
    p.add_argument("run_dir", help="a run folder that rdfer train finished (model.safetensors and results.json)")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="the Hub repository (created when missing)")
    p.add_argument("--revision", metavar="BRANCH", help="the branch to commit to (created when missing; default main)")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps its "
                   "visibility)")
    p.add_argument("--dry-run", metavar="DIR", help="write the folder that would be uploaded to DIR (new or empty) "
                   "and stop: nothing is sent; rdfer.load_model(DIR) loads it")
    p.set_defaults(func=_cmd_publish)


def _cmd_publish(args) -> int:
    from .engine.publish import publish

    publish(args.run_dir, args.repo, revision=args.revision, private=args.private, dry_run=args.dry_run)
    return 0


# -- subcommands: add new `_add_<name>` functions above this line, and call them in build_parser --


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdfer",
        description="Robust dynamic facial expression recognition: train, evaluate and inspect RDFER models.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"rdfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in [_add_demo, _add_synth_preview, _add_train, _add_eval, _add_predict, _add_audit, _add_analyze, _add_export,
                _add_publish, _add_backbones, _add_pack]:
        add(sub)
    debug_help = "show the full traceback of an error (also RDFER_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    for command in sub.choices.values():  # accepted after the subcommand too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


# User errors: bad input, options, files, the machine (disk, memory). One line, exit 2.
EXIT_USAGE, EXIT_INTERNAL = 2, 1


class CommandError(SystemExit):
    """Raised by :func:`main` after printing ``rdfer: error: <message>``, like argparse's own
    errors: exit status 2 (1 for an unexpected error); ``str()`` is the message."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


# Options of one command whose range differs from the training option of the same name
# (rdfer.engine.config.OPTION_RANGES holds the others): checked by main before the command runs.
_COMMAND_RANGES = {
    "predict": {"detect_stride": dict(low=1, integer=True), "crop_margin": dict(low=-0.4, high=4.0, optional=True)},
    "pack": {"shard_size": dict(low=1, integer=True), "quality": dict(low=1, high=100, integer=True),
             "detect_stride": dict(low=1, integer=True), "crop_margin": dict(low=-0.4, high=4.0, optional=True)},
    # One PNG of 7 rows x num_frames columns at twice the size: bounded so that it stays viewable.
    "synth-preview": {"num_frames": dict(low=4, high=64, integer=True), "image_size": dict(low=16, high=256, integer=True)},
}


def _check_option_values(args) -> None:
    """Every numeric option of the command in its range, and ``--device`` a device this machine
    has: a one-line ValueError naming the option, the value and what is allowed, before the
    command reads or writes anything."""
    from .engine.config import OPTION_RANGES, Range, check_option

    ranges = {**OPTION_RANGES, **{k: Range(**v) for k, v in _COMMAND_RANGES.get(args.command, {}).items()}}
    from .engine.config import AUTO_VALUES

    for name, value in vars(args).items():
        if value is not None and name in ranges and value != AUTO_VALUES.get(name):
            setattr(args, name, check_option(name, value, ranges))
    if getattr(args, "device", None) not in (None, "auto"):
        from .engine.distributed import check_device

        check_device(args.device)


def _error_message(exc: BaseException) -> str:
    """One line for an exception: its message without Python's decorations."""
    import errno

    if isinstance(exc, SystemExit):
        text = str(exc.code)
    elif isinstance(exc, MemoryError):
        text = (f"out of memory{': ' + str(exc) if str(exc) else ''}; use a smaller --batch-size, --num-frames or "
                f"--image-size")
    elif isinstance(exc, OSError) and exc.strerror:
        from .engine.checkpoint import DiskFullError

        if isinstance(exc, DiskFullError) or not exc.filename:
            text = exc.strerror
        elif exc.errno == errno.EROFS:
            text = f"cannot write {exc.filename}: it is on a read-only file system; choose a writable location"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            text = (f"permission denied: {exc.filename} (this user may not use it); check its permissions or choose "
                    f"another location")
        else:
            text = f"{exc.strerror}: {exc.filename}"
    else:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _is_user_error(exc: BaseException) -> bool:
    import torch

    from .engine.rundir import RunFolderError

    # ValueError covers bad options and data (CheckpointError, UnreadableVideo, bad CSV bytes);
    # OSError covers missing files, permissions and a full disk.
    # An unknown --model or --backbone is a ValueError too (rdfer.registry.UnknownNameError), an
    # unavailable --device as well (rdfer.engine.distributed.DeviceError).
    oom = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),) if t is not None)
    return isinstance(exc, (ValueError, OSError, ImportError, FloatingPointError, MemoryError, RunFolderError) + oom)


def _fail(message: str, code: int = EXIT_USAGE) -> CommandError:
    print(f"rdfer: error: {message}", file=sys.stderr, flush=True)
    return CommandError(message, code)


def main(argv: Optional[List[str]] = None) -> int:
    """``rdfer ...``: run one command and return its exit status.

    Errors are one line on stderr, ``rdfer: error: ...``, then :class:`CommandError` (a
    ``SystemExit``) with status 2 for a user error (bad option, input, file; full disk), 1 for an
    unexpected one, as argparse does for bad options. ``--debug`` or ``RDFER_DEBUG=1`` lets the
    original exception through, with its traceback.
    """
    args = build_parser().parse_args(argv)
    debug = bool(vars(args).pop("debug", False)) or os.environ.get("RDFER_DEBUG", "") not in ("", "0")
    try:
        _check_option_values(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        raise _fail("interrupted", 130) from None
    except SystemExit as exc:  # a command's own `raise SystemExit("message")`
        if debug or not isinstance(exc.code, str):
            raise
        raise _fail(_error_message(exc)) from None
    except Exception as exc:
        if debug:
            raise
        if _is_user_error(exc):
            raise _fail(_error_message(exc)) from None
        raise _fail(f"{type(exc).__name__}: {_error_message(exc)} (unexpected: rerun with --debug for the "
                    f"traceback, and please report it)", EXIT_INTERNAL) from None


if __name__ == "__main__":
    sys.exit(main())
