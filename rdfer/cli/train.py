"""``rdfer train``: options, recipes and the training run."""

from __future__ import annotations

import argparse
import os
from typing import Iterable, Optional

from .common import _DEFAULT_STRATEGY, _STRATEGIES, _add_dataset_args, _comma_list, _parse_model_option, _tau


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
    r.add_argument("--amp", action="store_true", help="bf16 autocast: on a GPU, or on a CPU that computes bf16 natively "
                   "(AVX512-BF16 or AMX; refused on other CPUs, where it would be slower)")
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
    from ..engine.config import RECIPES

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
            from ..data.video_csv import read_csv_rows

            return sum(1 for _ in read_csv_rows(source, ("path", "label")))
        if dataset == "packed" and source:
            return int(json.loads((Path(source) / "index.json").read_text())["num_samples"])
        if dataset == "webdataset" and source:
            from ..data.webdataset import WebDatasetVideos

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
    from ..engine.config import RECIPES, TrainConfig, default_recipe, load_yaml_config

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
        from ..engine.folds import parse_folds, train_folds

        if cfg.dataset != "dfew":
            raise SystemExit("--folds applies to the dfew dataset")
        summary = train_folds(cfg, parse_folds(args.folds))
        print(json.dumps(summary, indent=2))
        return 0
    from ..engine.train import train

    res = train(cfg)
    # Under torchrun every process returns the results; one report is enough.
    if "test_last_epoch" not in res or int(os.environ.get("RANK", "0")) != 0:
        return 0
    t = res["test_last_epoch"]
    print(f"test (last epoch): WAR {100 * t['war']:.2f}%  UAR {100 * t['uar']:.2f}%  -> {cfg.out}/results.json")
    return 0
