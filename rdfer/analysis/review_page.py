"""A static HTML page for reviewing an audit: look at the flagged videos, decide keep or
relabel, export a corrected CSV. No server, no network: it opens from disk in any browser.

The page lists the suspected label errors and then the hard videos (each group in the audit's
order, most suspicious first). Per video it shows the frames the model read, grouped by clip,
a timeline of the whole video with the read window (and, on synthetic data, the true key
window), the given label, each clip's vote and probability, the agreement, the loss and its
rank. Rows are rendered a page at a time, so a few thousand flagged videos stay responsive.
Decisions are kept in the browser's local storage and exported as ``path,label`` CSV of the
whole audited set, the format ``rdfer train csv`` reads, with absolute paths (so it works
wherever it is saved).

The page's template, style and script are package data in ``review_assets/`` (``page.html``,
``page.css``, ``page.js``), inlined into the one page with the data; the data is embedded as
JSON that cannot end its ``<script>`` element (:func:`script_json`), and the script puts it
into the page with ``textContent`` and ``setAttribute`` only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["review_rows", "render_strip", "write_review_page", "render_page", "script_json"]


def _loss_ranks(preds) -> Dict[int, int]:
    """Dataset index -> rank of its loss against the given label (1 = highest)."""
    loss = torch.nn.functional.cross_entropy(preds.logits, preds.labels, reduction="none")
    order = torch.argsort(loss, descending=True, stable=True)
    return {int(preds.index[i]): r + 1 for r, i in enumerate(order.tolist())}


def review_rows(report: Dict[str, Any], preds, class_names: Sequence[str], max_rows: Optional[int] = None) -> List[Dict[str, Any]]:
    """The flagged rows of :func:`rdfer.analysis.audit.audit_predictions`' ``report``, suspected
    label errors first, then hard videos, enriched from ``preds`` with each clip's vote and
    probability, the read positions and the loss rank. ``max_rows`` keeps the first rows."""
    pos_of = {int(i): k for k, i in enumerate(preds.index.tolist())}
    unknown = [r["index"] for r in report["suspected_label_errors"] + report["hard_samples"] if int(r["index"]) not in pos_of]
    if unknown:
        raise ValueError(f"the audit report lists samples {unknown[:5]} that are not in the predictions it is paired with; "
                         "pass the Predictions the report was made from")
    ranks = _loss_ranks(preds)
    probs = preds.clip_logits.float().softmax(-1)  # (N, n_clips, K)
    rows = []
    for base in report["suspected_label_errors"] + report["hard_samples"]:
        k = pos_of[int(base["index"])]
        votes = probs[k].argmax(-1)
        rows.append({
            **base,
            "loss_rank": ranks[int(base["index"])],
            "clip_votes": [class_names[int(c)] for c in votes],
            "clip_probs": [round(float(probs[k, j, c]), 3) for j, c in enumerate(votes.tolist())],
            "positions": [round(float(p), 2) for p in preds.positions[k].tolist()],
            "frame_index": [int(f) for f in preds.frame_index[k].tolist()],
        })
    return rows[:max_rows] if max_rows is not None else rows


def render_strip(video: torch.Tensor, positions: Sequence[float], n_clips: int, height: int = 64,
                 max_per_clip: int = 4, gap: int = 6) -> bytes:
    """JPEG of the frames a model read: ``video`` uint8 ``(C, T, H, W)`` at the (rounded)
    ``positions``, grouped into ``n_clips`` clips separated by a white gap, at most
    ``max_per_clip`` frames each (spread over the clip), ``height`` pixels high. JPEG: a few
    KB a video, so a page of thousands of rows stays light."""
    from PIL import Image

    if video.dim() != 4 or video.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 (C, T, H, W) video, got {tuple(video.shape)} {video.dtype}")
    c, t, h, w = video.shape
    width = max(1, round(w * height / h))
    per_clip = max(1, len(positions) // n_clips)
    show = min(per_clip, max_per_clip)
    strip = Image.new("RGB", (n_clips * show * width + (n_clips - 1) * gap, height), "white")
    for clip in range(n_clips):
        picks = np.linspace(clip * per_clip, (clip + 1) * per_clip - 1, show).round().astype(int)
        for j, p in enumerate(picks):
            frame = video[:, min(max(int(round(float(positions[p]))), 0), t - 1)].permute(1, 2, 0).numpy()
            img = Image.fromarray(frame.squeeze(-1) if c == 1 else frame[..., :3]).convert("RGB")
            strip.paste(img.resize((width, height), Image.BILINEAR), (clip * (show * width + gap) + j * width, 0))
    buf = io.BytesIO()
    strip.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def write_review_page(
    report: Dict[str, Any],
    preds,
    dataset,
    class_names: Sequence[str],
    out_dir: Path,
    embed_images: bool = False,
    max_rows: Optional[int] = None,
    thumb_height: int = 64,
    title: Optional[str] = None,
) -> Path:
    """Write ``review.html`` (and its strips in ``review_files/``, or embedded as data URIs with
    ``embed_images=True``) into ``out_dir``; returns the page's path.

    Args:
        report: the output of :func:`rdfer.analysis.audit.audit_predictions`.
        preds: the :class:`rdfer.engine.evaluate.Predictions` the report was made from.
        dataset: the audited dataset (``dataset[index]`` gives the loaded ``video``; synthetic
            items also give ``clean_label``, ``is_noisy``, ``is_hard`` and ``key_window``, shown
            as ground truth).
        class_names: class names in index order (also the labels of the exported CSV).
        max_rows: review only the first rows (suspected label errors first).
    """
    from ..engine.checkpoint import atomic_path
    from .audit import _write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files_dir = out_dir / "review_files"
    if not embed_images:
        files_dir.mkdir(exist_ok=True)
    n_clips = int(preds.clip_logits.shape[1])
    rows = review_rows(report, preds, class_names, max_rows)
    for row in rows:
        item = dataset[int(row["index"])]
        if "video" not in item or not isinstance(item["video"], torch.Tensor):
            raise ValueError(f"{type(dataset).__name__}[{row['index']}] ({row['path']}) has no 'video' tensor to draw the strip from")
        if "frame_index" in item and [int(f) for f in item["frame_index"]] != row["frame_index"]:
            raise ValueError(f"{type(dataset).__name__}[{row['index']}] ({row['path']}) loads other frames than the audited "
                             "pass did (random frame sampling?); build the dataset with train=False for the audit and the page")
        jpg = render_strip(item["video"], row["positions"], n_clips, height=thumb_height)
        if embed_images:
            row["strip"] = "data:image/jpeg;base64," + base64.b64encode(jpg).decode("ascii")
        else:
            name = f"{int(row['index']):07d}.jpg"
            with atomic_path(files_dir / name) as tmp:
                Path(tmp).write_bytes(jpg)
            row["strip"] = f"review_files/{name}"
        row["num_loaded"] = int(item["video"].shape[1])
        if "clean_label" in item:  # synthetic data: the generator's ground truth
            start, end = (int(v) for v in item["key_window"])
            frame_index = row["frame_index"]
            # Source-frame key window -> loaded-frame units, as the read positions are.
            loaded = [k for k, f in enumerate(frame_index) if start <= f < end]
            row["truth"] = {
                "label": class_names[int(item["clean_label"])], "is_noisy": bool(item["is_noisy"]),
                "is_hard": bool(item["is_hard"]), "difficulty": str(item.get("difficulty", "")),
                "key_window": [loaded[0], loaded[-1]] if loaded else None,
            }
        del row["frame_index"]
    data = {
        "title": title or f"rdfer audit review ({report['num_samples']} videos)",
        "classes": list(class_names),
        "num_samples": report["num_samples"],
        "per_class": report["per_class"],
        "ground_truth": {k: report[k] for k in ("noisy_vs_ground_truth", "hard_vs_ground_truth") if k in report},
        "rows": rows,
        # The whole audited set, so the export is a complete training CSV with the corrections
        # applied (by dataset index). Paths are absolute where they name files (audit_predictions).
        "all": [[r["path"], r["label"], int(r["index"])] for r in report["all"]],
    }
    # Decisions are stored in the browser under this key: the same audit reopened finds them, another does not.
    data["key"] = hashlib.sha1(json.dumps([data["all"], [r["index"] for r in rows]]).encode()).hexdigest()[:16]
    page = out_dir / "review.html"
    _write_text(page, render_page(data))
    return page


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe as the text of a ``<script type="application/json">``
    element: no ``<``, ``>`` or ``&`` (a path holding ``</script>`` or ``<!--<script`` would
    otherwise end the element early or swallow the page's own script), and no U+2028/U+2029.
    ``JSON.parse(element.textContent)`` gives ``data`` back unchanged."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True)  # ASCII: U+2028/9 and lone surrogates escaped
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    # Package data next to this module (shipped in the wheel, see pyproject.toml's package-data).
    return (resources.files(__package__) / "review_assets" / name).read_text(encoding="utf-8")


def render_page(data: Dict[str, Any]) -> str:
    """The review page's HTML for the page ``data`` (its ``title`` and rows): the template,
    style and script from ``rdfer/analysis/review_assets/``, with the data embedded by
    :func:`script_json`."""
    parts = {"TITLE": html.escape(str(data["title"])), "CSS": _asset("page.css"), "JS": _asset("page.js"),
             "DATA": script_json(data)}
    # One pass, so a placeholder-like string inside the data or the title is never substituted.
    return re.sub(r"__(TITLE|CSS|JS|DATA)__", lambda m: parts[m.group(1)], _asset("page.html"))
