"""The model card of a run folder: ``README.md`` in the Hugging Face model-card format.

YAML metadata first (``library_name: rdfer``, tags, datasets, and the test WAR and UAR as
``model-index`` results with the dataset, split and DFEW fold), then text a person can act on:
what the model was trained on, the recipe (epochs, learning rate, batch, loss rule, locator) and
how to re-run it, how to load it, per-class recall, the confusion matrix, the agreement and flag
statistics, intended use and limitations. Everything comes from the run's ``results.json`` and
``config.yaml`` (and ``train_flags.csv``, ``train_data.json`` when present), so a card can be
written for any finished run folder, old ones included (``rdfer publish`` does).

``rdfer train`` writes the card at the end of a run (:func:`rdfer.engine.rundir.finish_run_folder`).
A card rdfer wrote carries a marker line (:data:`MARKER`); a ``README.md`` without it is the
user's own and is never replaced: rdfer train leaves it as it is, and rdfer publish uploads it as
it is. Deleting the marker line of rdfer's card therefore keeps one's own edits.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

__all__ = ["CARD_FILE", "MARKER", "model_card_text", "write_model_card", "is_rdfer_card", "card_metadata"]

PathLike = Union[str, "os.PathLike[str]"]
CARD_FILE = "README.md"
#: Begins the comment line that marks a card written by rdfer.
MARKER = "<!-- rdfer-model-card"
_DATASET_NAMES = {"synthetic": "SyntheticDFER (rdfer's built-in generator)", "dfew": "DFEW", "ferv39k": "FERV39K",
                  "csv": "videos listed in CSV files", "packed": "packed videos",
                  "webdataset": "videos in WebDataset shards"}
#: The ``datasets:`` entry of the metadata, for the datasets that have a name of their own.
_DATASET_IDS = {"synthetic": "rdfer-synthetic", "dfew": "dfew", "ferv39k": "ferv39k"}
_RULES = {
    "ce": "plain label-smoothed cross-entropy, no sample reweighted",
    "bigloss_up": "the largest-loss share of the videos weighted up (HARD)",
    "bigloss_down": "the small-loss trick: the largest-loss share of the videos weighted down (NOISY)",
    "hard_up": "the HARD half of the paper's agreement rule: videos whose clips disagree are learnt more",
    "noisy_down": "the NOISY half of the paper's agreement rule: videos whose clips agree confidently against a "
                  "high loss are learnt less",
    "agreement": "the paper's agreement rule: videos whose clips disagree are HARD (learnt more), videos whose "
                 "clips agree confidently against a high loss are NOISY (suspected label errors, learnt less)",
    "gce": "generalized cross-entropy in place of every cross-entropy term, no sample reweighted",
    "class_small_loss": "the small-loss trick ranked within each labelled class: the largest-loss share of each "
                        "class weighted down (NOISY)",
    "vote_small_loss": "NOISY (weighted down): the largest losses among videos whose clips agree on a class other "
                       "than the label",
    "hard_disagree": "HARD (weighted up): the largest losses among videos whose clips disagree",
    "consensus": "HARD among videos whose clips disagree, NOISY among videos whose clips agree on another class, "
                 "ranked by per-class loss",
    "clip_vote": "every video whose clips agree on a class other than its label is NOISY (weighted down, up to a "
                 "cap), HARD among videos whose clips disagree",
    "elr": "early-learning regularisation: each video's prediction is held near a running average of the model's "
           "earlier predictions, no sample reweighted",
    "clip_correct": "label correction: a video whose clips agree confidently on another class is trained toward "
                    "their consensus (NOISY: a report, no sample reweighted)",
    "mixture": "a two-component mixture on each class's losses splits clean from noisy videos; noisy ones are "
               "trained toward the clips' sharpened consensus (NOISY: a report, no sample reweighted)",
    "agreement_gmm": "a three-component mixture on each class's (loss, clip agreement against the label) learns "
                     "which videos are clean, HARD (learnt more) and NOISY (learnt less)",
    "coteaching": "two networks, each trained on the other's small-loss share of every batch (Co-teaching)",
    "dividemix": "two networks; each divides the training videos into labelled (probably clean) and unlabelled "
                 "(probably wrong labels) for the other, which learns with refined labels, co-guessed labels and "
                 "mixup (DivideMix)",
}
#: Rules whose flags choose each video's weight (from the start epoch on).
_REWEIGHTING = {"bigloss_up", "bigloss_down", "hard_up", "noisy_down", "agreement", "class_small_loss",
                "vote_small_loss", "hard_disagree", "consensus", "clip_vote", "agreement_gmm"}
#: Rules whose training targets change from the start epoch on.
_CORRECTING = {"clip_correct", "mixture", "dividemix"}
#: Rules that act only from the start epoch (``--start-epoch``, else ``--warmup-epochs``) on.
RULES_WITH_START_EPOCH = frozenset(_REWEIGHTING | _CORRECTING)


def _strategy(cfg: Dict[str, Any], results: Dict[str, Any]) -> str:
    return str(cfg.get("strategy") or results.get("strategy") or "agreement")


def _uses_clips(rule: str, options: Dict[str, Any]) -> bool:
    """Whether the loss rule reads what the clips of a video say (their agreement, vote or
    consensus); ce, gce, the big-loss rules and class_small_loss read only the losses."""
    if rule == "elr":
        return options.get("source") == "clips"
    return rule not in ("ce", "gce", "bigloss_up", "bigloss_down", "class_small_loss", "coteaching")


def _percent(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * float(x):.2f}%"


def _read_json(path: Path) -> Dict[str, Any]:
    from ..data.video_csv import read_utf8

    if not path.is_file():
        return {}
    data = json.loads(read_utf8(path, 64 << 20, path.name))
    return data if isinstance(data, dict) else {}


def _read_config(path: Path) -> Dict[str, Any]:
    from ..data.video_csv import read_utf8
    from .config import MAX_CONFIG_BYTES, plain_yaml

    if not path.is_file():
        return {}
    data = plain_yaml(read_utf8(path, MAX_CONFIG_BYTES, "run config"))
    return data if isinstance(data, dict) else {}


def _dataset_line(cfg: Dict[str, Any]) -> str:
    """The dataset and split, e.g. ``DFEW fold 2``, as the card's headings name it."""
    kind = cfg.get("dataset", "unknown")
    name = _DATASET_NAMES.get(kind, str(kind))
    return f"{name} fold {cfg.get('fold', 1)}" if kind == "dfew" else name


def card_metadata(results: Dict[str, Any], cfg: Dict[str, Any], name: str) -> Dict[str, Any]:
    """The card's YAML metadata: library, tags, datasets and the ``model-index`` results (test
    WAR and UAR in percent, two decimals, of the last-epoch model)."""
    kind = str(cfg.get("dataset") or results.get("dataset") or "unknown")
    test = results.get("test_last_epoch") or {}
    dataset: Dict[str, Any] = {"type": _DATASET_IDS.get(kind, kind), "name": _dataset_line(cfg), "split": "test"}
    if kind == "dfew":
        dataset["config"] = f"fold{cfg.get('fold', 1)}"
    metrics = [{"type": key, "name": f"{key.upper()} ({what} average recall, %)", "value": round(100 * float(test[key]), 2)}
               for key, what in (("war", "weighted"), ("uar", "unweighted")) if test.get(key) is not None]
    meta: Dict[str, Any] = {
        "library_name": "rdfer",
        "pipeline_tag": "video-classification",
        "tags": ["rdfer", "video-classification", "facial-expression-recognition", "pytorch", "safetensors"],
    }
    if kind in _DATASET_IDS:
        meta["datasets"] = [_DATASET_IDS[kind]]
    meta["metrics"] = ["war", "uar"]
    meta["model-index"] = [{"name": name, "results": [{
        "task": {"type": "video-classification", "name": "Dynamic facial expression recognition"},
        "dataset": dataset,
        "metrics": metrics,
    }]}]
    return meta


def _model_line(model: Dict[str, Any], cfg: Dict[str, Any]) -> str:
    what = model.get("preset") or cfg.get("model") or (f"rdfer around {model.get('backbone')}" if model.get("backbone")
                                                        else "rdfer")
    if model.get("networks") == 2:
        pair = ("two networks of this kind, trained crosswise, saved together; at inference their logits are "
                "averaged (twice the cost of one; `--network first` uses one)")
        return _model_line({k: v for k, v in model.items() if k != "networks"}, cfg) + f"; {pair}"
    if model.get("architecture") == "frame_baseline":
        return f"`{what}`: the frame baseline (backbone `{model.get('backbone')}` per frame, logits averaged; no rdfer)"
    return f"`{what}` (backbone `{model.get('backbone')}`, {model.get('n_clips', '?')} clips of {model.get('clip_len', '?')} frames)"


def _locator_line(model: Dict[str, Any]) -> str:
    if model.get("architecture") == "frame_baseline":
        return "none (the frame baseline reads uniformly spaced frames)"
    if model.get("resample") is False:
        return "off (uniformly spaced frames, no key-expression re-sampler)"
    return f"key-expression re-sampler on, locator `{model.get('locator', 'mean')}`"


def _rule_line(cfg: Dict[str, Any], rule: str) -> str:
    text = f"`{rule}`: {_RULES.get(rule, 'one of rdfer.list_strategies()')}"
    options = cfg.get("strategy_options") or {}
    if options:
        text += " (options " + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"
    if rule in ("agreement", "hard_up", "bigloss_up"):
        text += f"; HARD share {cfg.get('t_hard')}, weight {cfg.get('lambda_hard')}"
    if rule in ("agreement", "noisy_down", "bigloss_down"):
        text += f"; NOISY share {cfg.get('t_noisy')}, weight {cfg.get('lambda_noisy')}"
    start = cfg.get("start_epoch")
    start = cfg.get("warmup_epochs") if start is None else start
    if isinstance(start, int) and rule in RULES_WITH_START_EPOCH:
        what = "reweighting" if rule in _REWEIGHTING else "label correction"
        epochs = cfg.get("epochs")
        if isinstance(epochs, int) and start >= epochs:  # the warm-up outlasted the run: plain CE throughout
            text += f"; {what} never acted (it starts after epoch {start}; the run had {epochs}: plain cross-entropy)"
        else:
            text += f"; {what} from epoch {start + 1}"
    return text


def _data_text(cfg: Dict[str, Any], identity: Dict[str, Any], classes: List[str],
               framing: Optional[Dict[str, Any]] = None) -> List[str]:
    kind = cfg.get("dataset")
    lines: List[str] = []
    if kind == "synthetic":
        noise = float(cfg.get("noise_rate") or 0)
        lines.append(
            f"**SyntheticDFER**, rdfer's built-in generator of cartoon face videos (not real faces): "
            f"{cfg.get('synthetic_train')} training videos with {cfg.get('synthetic_distribution', 'uniform')} class "
            f"frequencies and {100 * noise:.0f}% {cfg.get('noise', 'symmetric')} label noise"
            + (", the expression in every frame" if cfg.get("synthetic_static") else "")
            + f"; {cfg.get('synthetic_test')} test videos with clean labels.")
    elif kind == "dfew":
        lines.append(f"**DFEW**, fold {cfg.get('fold', 1)} of its 5-fold protocol: in-the-wild movie clips, trained on "
                     f"the fold's training part, tested on its test part.")
    elif kind == "ferv39k":
        lines.append("**FERV39K**: in-the-wild video clips of 22 scenes, its train and test splits.")
    else:
        train = os.path.basename(str(cfg.get("train_source") or "?"))
        test = os.path.basename(str(cfg.get("test_source") or "?"))
        what = "the CSV files" if kind == "csv" else "the packs"
        lines.append(f"Your own data: {what} `{train}` (training) and `{test}` (test).")
    if identity.get("num_videos") and kind != "synthetic":
        lines.append(f"{identity['num_videos']} training videos (their paths, labels and fingerprint are listed in "
                     f"the run folder's `train_data.json`).")
    lines.append(f"Classes, in output order: {', '.join(classes)}.")
    lines.append(f"Input: {cfg.get('num_frames')} frames per video, resized to {cfg.get('image_size')} x "
                 f"{cfg.get('image_size')} px, of a face video (`rdfer predict` detects and crops the face in each "
                 f"frame; give `--no-detect` for videos already cropped).")
    try:
        from ..inference.faces import FaceFraming

        recorded = FaceFraming.from_dict(framing)
    except ValueError:
        recorded = None
    if recorded is not None:
        lines.append(f"Face crop: the training faces were framed as {recorded.describe()}; `rdfer predict` crops raw "
                     f"videos the same way (`--crop-margin` overrides).")
    return lines


def _recipe_rows(cfg: Dict[str, Any], results: Dict[str, Any], model: Dict[str, Any]) -> List[List[str]]:
    rows = [
        ["model", _model_line(model, cfg)],
        ["locator", _locator_line(model)],
        ["loss rule", _rule_line(cfg, _strategy(cfg, results))],
        ["epochs", f"{cfg.get('epochs')} ({cfg.get('warmup_epochs')} warm-up)"],
        ["optimizer", f"AdamW, lr {cfg.get('lr')} cosine to {cfg.get('min_lr')}, weight decay {cfg.get('weight_decay')}"
                      + (f", gradient clip {cfg.get('grad_clip')}" if cfg.get("grad_clip") else "")],
        ["batch", f"{cfg.get('batch_size')}" + (f" x {cfg.get('accum_steps')} accumulation steps"
                                                  if (cfg.get("accum_steps") or 1) > 1 else "")],
        ["label smoothing", str(cfg.get("label_smoothing"))],
        ["augmentation", ("on" if cfg.get("augment", True) else "off")
         + (f", scale jitter {cfg['scale_jitter']}" if cfg.get("scale_jitter") else "")
         + (f", mixup (alpha {cfg['mixup']})" if cfg.get("mixup") else "")],
        # A weights file by its name only: its folders would publish the user's name and layout.
        ["pretrained backbone", os.path.basename(str(cfg["pretrained"])) if isinstance(cfg.get("pretrained"), str)
                                else str(cfg.get("pretrained") or "no")],
        ["seed", str(cfg.get("seed"))],
    ]
    extras = {"logit adjustment (tau)": results.get("logit_adjustment", cfg.get("logit_adjustment")),
              "NOISY class guard": cfg.get("noisy_class_guard"), "class-weighted loss": cfg.get("class_weighted"),
              "class-balanced sampler": cfg.get("balanced_sampler"), "validation share": cfg.get("val_fraction")}
    rows += [[k, str(v)] for k, v in extras.items() if v not in (None, 0, 0.0, False, "0")]
    return rows


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


def _agreement_lines(run_dir: Path, results: Dict[str, Any], cfg: Dict[str, Any]) -> List[str]:
    """What the loss flagged in the last epoch, against the ground truth when known, and the
    clips' agreement over the training set (``train_flags.csv``)."""
    lines: List[str] = []
    flags = results.get("train_flags") or {}
    path = run_dir / "train_flags.csv"
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows:
            agreement = [float(r["agreement"]) for r in rows]
            vote = sum(r["mode_class"] == r["label"] for r in rows) / len(rows)
            lines.append(f"- Clip agreement on the {len(rows)} training videos: mean {sum(agreement) / len(rows):.3f}; "
                         f"the clips' majority vote equals the given label for {100 * vote:.1f}% of them "
                         f"(per video: `train_flags.csv`).")
    if flags:
        if _strategy(cfg, results) in _REWEIGHTING:
            lines.append(f"- Flagged in the last epoch: {flags.get('hard', 0)} HARD (learnt more), "
                         f"{flags.get('noisy', 0)} NOISY (suspected label errors, learnt less).")
        else:
            lines.append(f"- Flagged in the last epoch: {flags.get('hard', 0)} HARD, {flags.get('noisy', 0)} NOISY "
                         f"(a report: the loss rule weights no video by its flag).")
    for kind in ("noisy", "hard"):
        quality = results.get(f"{kind}_flag_quality")
        if quality:
            lines.append(f"- {kind.upper()} flags against the generator's ground truth: precision "
                         f"{_percent(quality.get('precision'))}, recall {_percent(quality.get('recall'))} "
                         f"({quality.get('flagged')} flagged, {quality.get('true')} truly {kind}).")
    if results.get("bad_samples"):
        lines.append(f"- {results['bad_samples']} unreadable videos were left out (`bad_samples.txt`).")
    return lines


def _limitations(cfg: Dict[str, Any], recall: Dict[str, Optional[float]]) -> List[str]:
    lines: List[str] = []
    if cfg.get("dataset") == "synthetic":
        lines.append("- **Not for real faces.** It was trained on cartoon faces from the built-in generator, not for "
                     "real faces: a demonstration and test model, whose predictions on real videos mean nothing.")
    else:
        lines.append("- Intended use: research on dynamic facial expression recognition, and as a starting point for "
                     "fine-tuning on data like its training data. The training data's licence applies (DFEW and "
                     "FERV39K are released for non-commercial research).")
    lines.append("- It predicts the expression label annotators would give a face video, not what a person feels. Do "
                 "not use it for decisions about people (hiring, education, policing, health, border control).")
    weak = [f"{name} ({_percent(r)})" for name, r in recall.items() if r is None or r < 0.5]
    if weak:
        lines.append(f"- Weak classes (test recall under 50%): {', '.join(weak)}; expect them to be missed.")
    lines.append("- One training run, one seed, one test split: the numbers above vary between seeds by about a "
                 "point or more, and more on small test sets.")
    lines.append("- Faces that are small, turned away or hidden for most of the video, several people, and "
                 "recording conditions unlike the training data all lower the accuracy.")
    return lines


def model_card_text(run_dir: PathLike, repo_id: Optional[str] = None) -> str:
    """The model card of a finished run folder (from its ``results.json`` and ``config.yaml``).

    ``repo_id``: the Hub repository the card is published as (its usage lines then name
    ``hf-hub:ORG/NAME``); without it they name the run folder.
    """
    import yaml

    from .. import __version__

    run_dir = Path(run_dir)
    results = _read_json(run_dir / "results.json")
    cfg = _read_config(run_dir / "config.yaml")
    identity = _read_json(run_dir / "train_data.json")
    test = results.get("test_last_epoch") or {}
    recall: Dict[str, Optional[float]] = dict(test.get("per_class_recall") or {})
    classes = list(recall) or list(identity.get("classes") or [])
    model = dict(results.get("model") or {})
    name = repo_id.split("/")[-1] if repo_id else run_dir.resolve().name
    source = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    where = _dataset_line(cfg) + " test split"

    meta = card_metadata(results, cfg, name)
    out: List[str] = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---",
                      f"{MARKER}: written by rdfer {__version__} from results.json and config.yaml; rdfer train and "
                      f"rdfer publish rewrite this file. Delete this line to keep your own edits: they then leave "
                      f"the file as it is. -->", ""]
    out += [f"# {name}", "",
            f"A dynamic facial expression recognition model trained with "
            f"[rdfer](https://arxiv.org/abs/2502.16129) (robust dynamic facial expression recognition): it reads a face "
            f"video and predicts one of {len(classes)} expressions ({', '.join(classes)}).", ""]
    if test:
        out += [f"**{where}** ({test.get('num_samples', '?')} videos, last-epoch model): **WAR {_percent(test.get('war'))}**, "
                f"**UAR {_percent(test.get('uar'))}** (WAR: accuracy over all videos; UAR: the mean of the per-class "
                f"recalls).", ""]
    out += ["## Use it", "", "```python", "import rdfer", "",
            f"model = rdfer.load_model({json.dumps(source)}).eval()",
            "result = rdfer.predict_video(\"face_video.mp4\", model)  # face detection: pip install 'rdfer[faces]'",
            "print(result.summary())", "```", "", "```bash",
            f"rdfer predict face_video.mp4 --checkpoint {source}", "```", ""]
    if repo_id:
        out += [f"`hf-hub:{repo_id}` loads from huggingface_hub's cache, downloading it once; offline, fetch it "
                f"beforehand with `hf download {repo_id}`.", ""]
    out += ["## Training data", ""] + [f"- {line}" for line in _data_text(cfg, identity, classes, results.get("face_framing"))] + [""]
    out += ["## Recipe", ""] + _table(["setting", "value"], _recipe_rows(cfg, results, model))
    out += ["", "Every option of the run is in `config.yaml`; the same data and this command re-run it (bit for bit "
            "on the same machine and software):", "", "```bash", "rdfer train --config config.yaml --out runs/rerun",
            "```", ""]
    out += ["## Results", ""]
    if recall:
        confusion = test.get("confusion") or []
        counts = [sum(row) for row in confusion] if len(confusion) == len(recall) else [None] * len(recall)
        out += _table(["class", "test videos", "recall"],
                      [[c, "-" if n is None else str(n), _percent(r)] for (c, r), n in zip(recall.items(), counts)])
        out += [""]
    if (run_dir / "confusion.png").is_file():
        out += ["![Confusion matrix on the test split (rows: true class, normalised)](confusion.png)", ""]
    note = str(results.get("note", ""))
    notes = [note[:1].upper() + note[1:] + ("." if note and not note.endswith(".") else "")]
    selected = results.get("test_selected_on_validation")
    if selected:
        notes.append(f"The model selected on the validation split (`best_val/`, not published) reaches WAR "
                     f"{_percent(selected.get('war'))}, UAR {_percent(selected.get('uar'))}.")
    out += [" ".join(n for n in notes if n).strip() or "", ""]
    flags = _agreement_lines(run_dir, results, cfg)
    if flags:
        rule = _strategy(cfg, results)
        what = {"clip_correct": "consensus", "mixture": "consensus", "elr": "mean prediction"}.get(rule, "agreement")
        uses = (f"the loss rule (`{rule}`) uses their {what}" if _uses_clips(rule, cfg.get("strategy_options") or {})
                else f"the loss rule (`{rule}`) does not use them: the lines below are a report")
        out += ["## Agreement and flags (training set)", "",
                f"rdfer splits each video into clips and compares their predictions; {uses}.", ""] + flags + [""]
    out += ["## Intended use and limitations", ""] + _limitations(cfg, recall) + [""]
    out += ["## Citation", "", "Liu, Wang, Shen: Robust Dynamic Facial Expression Recognition, arXiv 2502.16129 (2025).",
            ""]
    return "\n".join(out)


def is_rdfer_card(path: PathLike) -> bool:
    """Whether the file at ``path`` is a card rdfer wrote (its marker line is there)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARKER in f.read(1 << 16)
    except OSError:
        return False


def write_model_card(run_dir: PathLike, repo_id: Optional[str] = None) -> Optional[Path]:
    """Write ``README.md`` (:func:`model_card_text`) into the run folder, atomically; returns its
    path, or None when a ``README.md`` of the user's own (no rdfer marker) is there: it is kept."""
    from .files import atomic_write_text

    path = Path(run_dir) / CARD_FILE
    if os.path.lexists(path) and not is_rdfer_card(path):
        return None
    atomic_write_text(path, model_card_text(run_dir, repo_id))
    return path
