"""Inference over a dataset and its metrics (WAR, UAR, per-class recall, confusion matrix)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..data.webdataset import batch_videos
from ..losses import agreement_stats
from .checkpoint import atomic_path
from .distributed import all_gather_objects
from .metrics import classification_metrics

__all__ = ["Predictions", "run_inference", "evaluate", "write_confusion", "progress_bar"]


@dataclass
class Predictions:
    """Per-sample outputs of a model over a dataset, ordered by dataset index."""

    index: torch.Tensor  # (N,) dataset indices
    labels: torch.Tensor  # (N,)
    logits: torch.Tensor  # (N, K)
    clip_logits: torch.Tensor  # (N, n_clips, K)
    features: torch.Tensor  # (N, d)
    positions: torch.Tensor  # (N, n) sampled frame positions in loaded-frame units
    frame_index: torch.Tensor  # (N, T) source frame numbers that were loaded
    paths: List[str] = field(default_factory=list)
    invalid_paths: List[str] = field(default_factory=list)  # samples excluded (valid=False)

    @property
    def preds(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    @property
    def agreement(self) -> torch.Tensor:
        return agreement_stats(self.clip_logits).agreement

    def __len__(self) -> int:
        return int(self.index.numel())


def progress_bar(loader: Iterable, **kwargs):
    """A tqdm bar over one pass of ``loader``.

    The iterator is made here, once: ``tqdm.auto``'s asyncio class calls ``iter()`` on what it
    is given in its constructor and again when iterated, and each ``iter()`` of a DataLoader
    with workers starts a new set of worker processes that prefetch batches.
    """
    from tqdm.auto import tqdm

    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:  # an iterable-style dataset without a length
        total = None
    return tqdm(iter(loader), total=total, **kwargs)


def padding(batch: Dict[str, Any]) -> torch.Tensor:
    """Bool ``(B,)``: the items that only pad a WebDataset run (:class:`~rdfer.data.WebDatasetVideos`)."""
    pad = batch.get("pad")
    return torch.zeros(len(batch["valid"]), dtype=torch.bool) if pad is None else torch.as_tensor(pad, dtype=torch.bool)


@torch.no_grad()
def run_inference(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    progress: bool = False,
    desc: str = "eval",
) -> Predictions:
    """Run ``model`` in eval mode over ``loader``; samples with ``valid=False`` are excluded and
    listed. Under torchrun each process runs its shard and the results are merged (duplicates
    that DistributedSampler pads with are dropped by index)."""
    was_training = model.training
    model.eval()
    keys = ("index", "labels", "logits", "clip_logits", "features", "positions", "frame_index")
    parts: Dict[str, list] = {k: [] for k in keys}
    paths: List[str] = []
    invalid: List[str] = []
    try:
        for batch in progress_bar(loader, desc=desc, disable=not progress, leave=False):
            valid = torch.as_tensor(batch["valid"], dtype=torch.bool)
            video, valid = batch_videos(batch, valid, device)  # a video whose frames fail to decode is excluded
            batch_paths = list(batch["path"])
            pad = padding(batch)  # WebDataset runs of equal length: not a sample, never reported
            invalid += [p for p, ok, filler in zip(batch_paths, valid.tolist(), pad.tolist()) if not ok and not filler]
            if not valid.any():
                continue
            video = transform(video) if transform is not None else video.float()
            out = model(video)
            parts["index"].append(torch.as_tensor(batch["index"])[valid])
            parts["labels"].append(torch.as_tensor(batch["label"])[valid])
            parts["logits"].append(out.logits.float().cpu())
            parts["clip_logits"].append(out.clip_logits.float().cpu())
            parts["features"].append(out.features.float().cpu())
            parts["positions"].append(out.positions.float().cpu())
            parts["frame_index"].append(torch.as_tensor(batch["frame_index"])[valid])
            paths += [p for p, ok in zip(batch_paths, valid.tolist()) if ok]
    finally:
        model.train(was_training)
    local = {k: (torch.cat(v) if v else None) for k, v in parts.items()}
    gathered = all_gather_objects((local, paths, invalid))
    merged: Dict[str, list] = {k: [] for k in keys}
    all_paths: List[str] = []
    all_invalid: List[str] = []
    for loc, p, inv in gathered:
        if loc["index"] is not None:
            for k in keys:
                merged[k].append(loc[k])
            all_paths += p
        all_invalid += inv
    if not merged["index"]:
        raise RuntimeError("no valid sample to evaluate: every sample of the split was unreadable")
    cat = {k: torch.cat(v) for k, v in merged.items()}
    # Sort by index and drop DistributedSampler's padding duplicates.
    order = torch.argsort(cat["index"], stable=True)
    idx_sorted = cat["index"][order]
    keep = torch.ones_like(idx_sorted, dtype=torch.bool)
    keep[1:] = idx_sorted[1:] != idx_sorted[:-1]
    order = order[keep]
    return Predictions(
        **{k: cat[k][order] for k in keys},
        paths=[all_paths[i] for i in order.tolist()],
        invalid_paths=sorted(set(all_invalid)),
    )


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    num_classes: int,
    class_names: Optional[Sequence[str]] = None,
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    progress: bool = False,
) -> Dict[str, object]:
    """WAR, UAR, per-class recall, confusion matrix and the number of excluded samples."""
    preds = run_inference(model, loader, device, transform, progress)
    metrics = classification_metrics(preds.preds, preds.labels, num_classes, class_names)
    metrics["excluded_invalid"] = len(preds.invalid_paths)
    metrics["mean_agreement"] = float(preds.agreement.mean())
    return metrics


def write_confusion(metrics: Dict[str, object], class_names: Sequence[str], out_dir: Path, stem: str = "confusion") -> List[Path]:
    """``<stem>.csv`` always; ``<stem>.png`` (a heatmap of row-normalised recall) when
    matplotlib is installed."""
    from .checkpoint import atomic_write_text

    cm = torch.tensor(metrics["confusion"])
    lines = ["true\\pred," + ",".join(class_names)]
    lines += [f"{name}," + ",".join(str(int(v)) for v in row) for name, row in zip(class_names, cm.tolist())]
    out_dir = Path(out_dir)
    written = [out_dir / f"{stem}.csv"]
    atomic_write_text(written[0], "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    norm = cm.float() / cm.sum(dim=1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(class_names), 0.8 + 0.7 * len(class_names)))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(f"WAR {metrics['war']:.3f}  UAR {metrics['uar']:.3f}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    png = out_dir / f"{stem}.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    written.append(png)
    return written
