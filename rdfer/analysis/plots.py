"""Figures of the paper's analysis: t-SNE of features (Fig. 4) and sample strips with per-clip
predictions (Fig. 3). matplotlib and scikit-learn are imported here only (``rdfer[viz]``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch

__all__ = ["plot_tsne", "plot_sample_strips"]


def _plt():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("figures need matplotlib: pip install 'rdfer[viz]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from ..engine.checkpoint import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def plot_tsne(features: torch.Tensor, agreement: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
              path: Path, seed: int = 0, max_points: int = 3000) -> Path:
    """2-D t-SNE of ``features`` (N, d): left coloured by agreement, right by class (Fig. 4)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:
        raise ImportError("t-SNE needs scikit-learn: pip install 'rdfer[viz]'") from err
    plt = _plt()
    n = features.shape[0]
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points] if n > max_points else torch.arange(n)
    x = features[keep].double().numpy()
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    sc = axes[0].scatter(emb[:, 0], emb[:, 1], c=agreement[keep].numpy(), cmap="viridis", s=8, vmin=0, vmax=1)
    fig.colorbar(sc, ax=axes[0], label="agreement")
    axes[0].set_title("features coloured by agreement")
    cmap = plt.get_cmap("tab10")
    lab = labels[keep].numpy()
    for c, name in enumerate(class_names):
        sel = lab == c
        if sel.any():
            axes[1].scatter(emb[sel, 0], emb[sel, 1], s=8, color=cmap(c % 10), label=name)
    axes[1].legend(markerscale=2, fontsize=8)
    axes[1].set_title("features coloured by class")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def plot_sample_strips(videos: List[torch.Tensor], positions: torch.Tensor, clip_preds: torch.Tensor, labels: Sequence[int],
                       agreements: Sequence[float], class_names: Sequence[str], n_clips: int, path: Path,
                       frames_per_clip_shown: int = 2) -> Path:
    """One row per video: frames read at the sampled positions, grouped by clip, each clip
    titled with its prediction (Fig. 3). ``videos`` are uint8 (C, T, H, W)."""
    plt = _plt()
    rows = len(videos)
    n = positions.shape[1]
    clip_len = n // n_clips
    cols = n_clips * frames_per_clip_shown
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows + 0.3), squeeze=False)
    for r, video in enumerate(videos):
        t = video.shape[1]
        for k in range(n_clips):
            pick = np.linspace(k * clip_len, (k + 1) * clip_len - 1, frames_per_clip_shown).round().astype(int)
            for j, p in enumerate(pick):
                ax = axes[r, k * frames_per_clip_shown + j]
                frame = video[:, int(round(float(positions[r, p]))) if t > 1 else 0].permute(1, 2, 0).numpy()
                ax.imshow(frame.squeeze(-1) if frame.shape[-1] == 1 else frame, cmap="gray" if frame.shape[-1] == 1 else None)
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_title(class_names[int(clip_preds[r, k])], fontsize=7)
        axes[r, 0].set_ylabel(f"{class_names[int(labels[r])]}\nagr {agreements[r]:.2f}", fontsize=7)
    fig.suptitle("sampled frames per clip, titled with each clip's prediction (row: label, agreement)", fontsize=8)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
