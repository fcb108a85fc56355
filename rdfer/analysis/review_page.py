"""A static HTML page for reviewing an audit: look at the flagged videos, decide keep or
relabel, export a corrected CSV. No server, no network: it opens from disk in any browser.

The page lists the suspected label errors and then the hard videos (each group in the audit's
order, most suspicious first). Per video it shows the frames the model read, grouped by clip,
a timeline of the whole video with the read window (and, on synthetic data, the true key
window), the given label, each clip's vote and probability, the agreement, the loss and its
rank. Rows are rendered a page at a time, so a few thousand flagged videos stay responsive.
Decisions are kept in the browser's local storage and exported as ``path,label`` CSV of the
whole audited set, the format ``rdfer train csv`` reads.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["review_rows", "render_strip", "write_review_page"]


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
    from ..engine.checkpoint import atomic_path, atomic_write_text

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
        # The whole audited set, so the export is a complete training CSV with the corrections applied.
        "all": [[r["path"], r["label"]] for r in report["all"]],
    }
    # Decisions are stored in the browser under this key: the same audit reopened finds them, another does not.
    data["key"] = hashlib.sha1(json.dumps([data["all"], [r["index"] for r in rows]]).encode()).hexdigest()[:16]
    # "</" inside the JSON would end the <script> element early.
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = out_dir / "review.html"
    atomic_write_text(page, _TEMPLATE.replace("__TITLE__", _html_escape(data["title"])).replace("__DATA__", blob))
    return page


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
  header { background: #fff; padding: 8px 16px 0; }
  .bar { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ddd; padding: 4px 16px 6px; z-index: 2; }
  h1 { font-size: 18px; margin: 0 0 6px; }
  table.counts { border-collapse: collapse; font-size: 12px; margin: 4px 0; }
  table.counts td, table.counts th { border: 1px solid #ddd; padding: 1px 6px; text-align: right; }
  table.counts th:first-child, table.counts td:first-child { text-align: left; }
  .controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin-top: 4px; }
  .help { color: #666; font-size: 12px; }
  main { padding: 8px 16px; }
  .row { background: #fff; border: 1px solid #ddd; border-left: 6px solid #bbb; margin: 8px 0; padding: 8px; display: grid;
         grid-template-columns: 1fr 300px; gap: 8px; scroll-margin-top: 90px; }
  .strip { display: inline-block; max-width: 100%; }
  .row.noisy { border-left-color: #d9534f; } .row.hard { border-left-color: #f0ad4e; }
  .row.focus { outline: 3px solid #337ab7; }
  .row.decided-keep { background: #f3faf3; } .row.decided-relabel { background: #f3f6fd; }
  .row img { display: block; max-width: 100%; image-rendering: pixelated; }
  .clips { display: flex; gap: 6px; font-size: 12px; margin-top: 2px; }
  .clips span { flex: 1; text-align: center; background: #eee; border-radius: 3px; }
  .clips span.against { background: #f8d7da; }
  .timeline { position: relative; height: 12px; background: #e5e5e5; margin-top: 6px; border-radius: 2px; }
  .timeline .read { position: absolute; top: 0; height: 6px; background: #d9534f; }
  .timeline .truth { position: absolute; bottom: 0; height: 6px; background: #5cb85c; }
  .timeline .tick { position: absolute; top: 0; width: 1px; height: 12px; background: #333; }
  .meta { font-size: 13px; }
  .meta .path { font-family: monospace; word-break: break-all; color: #555; }
  .flag { font-weight: bold; text-transform: uppercase; font-size: 11px; }
  .decision label { margin-right: 8px; }
  textarea { width: 100%; height: 120px; font-family: monospace; font-size: 12px; }
  .pager button { min-width: 28px; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <div id="gt" class="help"></div>
  <table class="counts" id="counts"></table>
</header>
<div class="bar">
  <div class="controls">
    <label>class <select id="f-class"><option value="">all</option></select></label>
    <label>flag <select id="f-flag"><option value="">all</option><option value="noisy">suspected label error</option><option value="hard">hard</option></select></label>
    <label>decision <select id="f-decision"><option value="">all</option><option value="undecided">undecided</option><option value="keep">keep</option><option value="relabel">relabel</option></select></label>
    <span class="pager"><button id="prev" title="previous page ([)">&lsaquo;</button> <span id="page-info"></span> <button id="next" title="next page (])">&rsaquo;</button></span>
    <button id="export">Export corrected CSV</button>
    <span id="progress"></span>
  </div>
  <div class="help">Keys: <b>j</b>/<b>&darr;</b> next video, <b>k</b>/<b>&uarr;</b> previous, <b>a</b> keep the label,
    <b>1</b>-<b>9</b> relabel as the n-th class, <b>0</b> undecided, <b>[</b> <b>]</b> pages, <b>e</b> export.
    Timeline: red = frames the model read (ticks: read positions), green = true key window (synthetic data).</div>
</div>
<main id="rows"></main>
<section style="padding: 0 16px 16px">
  <h2 style="font-size:15px">Corrected CSV (<code>path,label</code>, the whole audited set; readable by <code>rdfer train csv</code>)</h2>
  <textarea id="csv-out" readonly placeholder="Press Export (or e) to fill this and download corrected_labels.csv"></textarea>
</section>
<script type="application/json" id="audit-data">__DATA__</script>
<script>
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("audit-data").textContent);
  const PAGE_SIZE = 50;
  const STORE = "rdfer-review:" + DATA.key;
  let decisions = {};  // dataset index -> {keep: true} or {relabel: "class"}
  try { decisions = JSON.parse(localStorage.getItem(STORE) || "{}"); } catch (e) { decisions = {}; }
  let page = 0, focus = 0, visible = [];

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function save() { try { localStorage.setItem(STORE, JSON.stringify(decisions)); } catch (e) { /* private mode: keep in memory */ } }
  function decisionOf(row) { const d = decisions[row.index]; return d ? (d.keep ? "keep" : "relabel") : "undecided"; }

  function renderCounts() {
    const t = $("counts");
    t.textContent = "";
    const head = el("tr");
    ["class", "videos", "suspected label errors", "hard", "kept", "relabelled from", "relabelled to"].forEach((h) => head.appendChild(el("th", {}, h)));
    t.appendChild(head);
    const from = {}, to = {}, kept = {};
    DATA.rows.forEach((r) => {
      const d = decisions[r.index];
      if (!d) return;
      if (d.keep) kept[r.label] = (kept[r.label] || 0) + 1;
      else { from[r.label] = (from[r.label] || 0) + 1; to[d.relabel] = (to[d.relabel] || 0) + 1; }
    });
    DATA.per_class.forEach(([name, videos, noisy, hard]) => {
      const tr = el("tr");
      [name, videos, noisy, hard, kept[name] || 0, from[name] || 0, to[name] || 0].forEach((v) => tr.appendChild(el("td", {}, String(v))));
      t.appendChild(tr);
    });
    const done = Object.keys(decisions).length;
    $("progress").textContent = done + " of " + DATA.rows.length + " flagged videos decided";
  }

  function applyFilters() {
    const c = $("f-class").value, f = $("f-flag").value, d = $("f-decision").value;
    visible = DATA.rows.filter((r) => (!c || r.label === c) && (!f || r.flag === f) && (!d || decisionOf(r) === d));
    const pages = Math.max(1, Math.ceil(visible.length / PAGE_SIZE));
    page = Math.min(page, pages - 1);
    focus = Math.min(focus, Math.max(0, visible.length - 1));
    renderPage();
  }

  function pct(x, n) { return (100 * x / Math.max(1, n)).toFixed(2) + "%"; }

  function renderRow(r, k) {
    const dec = decisionOf(r);
    const card = el("article", {class: "row " + r.flag + " decided-" + dec, id: "row-" + r.index, "data-index": String(r.index), "data-k": String(k)});
    const left = el("div");
    const strip = el("div", {class: "strip"});
    left.appendChild(strip);
    strip.appendChild(el("img", {src: r.strip, alt: "frames read from " + r.path, loading: "lazy"}));
    const clips = el("div", {class: "clips"});
    r.clip_votes.forEach((v, j) => clips.appendChild(el("span", {class: v === r.label ? "" : "against", title: "clip " + (j + 1)}, v + " " + r.clip_probs[j].toFixed(2))));
    strip.appendChild(clips);
    const tl = el("div", {class: "timeline", title: "whole video (" + r.num_loaded + " loaded frames)"});
    const n = Math.max(1, r.num_loaded - 1);
    const lo = Math.min.apply(null, r.positions), hi = Math.max.apply(null, r.positions);
    tl.appendChild(el("div", {class: "read", style: "left:" + pct(lo, n) + ";width:" + pct(hi - lo, n)}));
    if (r.truth && r.truth.key_window) {
      const [a, b] = r.truth.key_window;
      tl.appendChild(el("div", {class: "truth", style: "left:" + pct(a, n) + ";width:" + pct(b - a, n)}));
    }
    r.positions.forEach((p) => tl.appendChild(el("div", {class: "tick", style: "left:" + pct(p, n)})));
    strip.appendChild(tl);
    card.appendChild(left);

    const meta = el("div", {class: "meta"});
    meta.appendChild(el("div", {class: "flag"}, r.flag === "noisy" ? "suspected label error" : "hard video"));
    meta.appendChild(el("div", {class: "path"}, r.path));
    const facts = [["given label", r.label], ["clip vote", r.clip_vote], ["predicted", r.predicted],
                   ["agreement", r.agreement.toFixed(2)], ["confidence", r.confidence.toFixed(2)],
                   ["loss", r.loss.toFixed(3) + " (rank " + r.loss_rank + " of " + DATA.num_samples + ")"]];
    if (r.truth) facts.push(["ground truth", r.truth.label + (r.truth.is_noisy ? " (label is wrong)" : " (label is right)") + (r.truth.is_hard ? ", hard: " + r.truth.difficulty : "")]);
    facts.forEach(([k, v]) => { const d = el("div"); d.appendChild(el("b", {}, k + ": ")); d.appendChild(document.createTextNode(v)); meta.appendChild(d); });
    const box = el("div", {class: "decision"});
    const name = "d-" + r.index;
    const keep = el("input", {type: "radio", name: name, value: "keep", id: name + "-keep"});
    const rel = el("input", {type: "radio", name: name, value: "relabel", id: name + "-relabel"});
    const sel = el("select", {class: "relabel-as", "aria-label": "relabel as"});
    DATA.classes.forEach((c) => sel.appendChild(el("option", {value: c}, c)));
    const d = decisions[r.index];
    if (d && d.keep) keep.checked = true;
    if (d && d.relabel) { rel.checked = true; sel.value = d.relabel; } else sel.value = r.clip_vote;
    keep.addEventListener("change", () => decide(r, {keep: true}));
    rel.addEventListener("change", () => decide(r, {relabel: sel.value}));
    sel.addEventListener("change", () => decide(r, {relabel: sel.value}));
    const l1 = el("label", {"for": name + "-keep"}); l1.appendChild(keep); l1.appendChild(document.createTextNode(" keep"));
    const l2 = el("label", {"for": name + "-relabel"}); l2.appendChild(rel); l2.appendChild(document.createTextNode(" relabel as "));
    box.appendChild(l1); box.appendChild(l2); box.appendChild(sel);
    meta.appendChild(box);
    card.appendChild(meta);
    card.addEventListener("click", () => { focus = k; markFocus(false); });
    return card;
  }

  function renderPage() {
    const main = $("rows");
    main.textContent = "";
    const start = page * PAGE_SIZE;
    visible.slice(start, start + PAGE_SIZE).forEach((r, j) => main.appendChild(renderRow(r, start + j)));
    if (!visible.length) main.appendChild(el("p", {}, "No video matches the filters."));
    const pages = Math.max(1, Math.ceil(visible.length / PAGE_SIZE));
    $("page-info").textContent = "page " + (page + 1) + " of " + pages + " (" + visible.length + " videos)";
    renderCounts();
    markFocus(false);
  }

  function markFocus(scroll) {
    document.querySelectorAll(".row.focus").forEach((e) => e.classList.remove("focus"));
    const r = visible[focus];
    const e = r && document.getElementById("row-" + r.index);
    if (e) { e.classList.add("focus"); if (scroll) e.scrollIntoView({block: "nearest"}); }
  }

  function moveFocus(delta) {
    if (!visible.length) return;
    focus = Math.max(0, Math.min(visible.length - 1, focus + delta));
    const p = Math.floor(focus / PAGE_SIZE);
    if (p !== page) { page = p; renderPage(); }
    markFocus(true);
  }

  function decide(row, d) {
    if (d === null) delete decisions[row.index];
    else if (d.relabel !== undefined && d.relabel === row.label) decisions[row.index] = {keep: true};  // relabel to itself = keep
    else decisions[row.index] = d;
    save();
    const card = document.getElementById("row-" + row.index);
    if (card) {
      const k = Number(card.dataset.k);
      card.replaceWith(renderRow(row, k));
    }
    renderCounts();
    markFocus(false);
  }

  function csvField(s) { return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }

  function exportCsv() {
    const relabel = {};
    DATA.rows.forEach((r) => { const d = decisions[r.index]; if (d && d.relabel) relabel[r.path] = d.relabel; });
    const lines = ["path,label"];
    DATA.all.forEach(([path, label]) => lines.push(csvField(path) + "," + csvField(relabel[path] || label)));
    const text = lines.join("\n") + "\n";
    $("csv-out").value = text;
    try {
      const url = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
      const a = el("a", {href: url, download: "corrected_labels.csv"});
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (e) { /* the textarea still holds the CSV */ }
    return text;
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.target && (ev.target.tagName === "SELECT" || ev.target.tagName === "TEXTAREA") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const r = visible[focus];
    if (ev.key === "j" || ev.key === "ArrowDown") moveFocus(1);
    else if (ev.key === "k" || ev.key === "ArrowUp") moveFocus(-1);
    else if (ev.key === "]") moveFocus(PAGE_SIZE - (focus % PAGE_SIZE));
    else if (ev.key === "[") moveFocus(-(focus % PAGE_SIZE) - PAGE_SIZE);
    else if (ev.key === "a" && r) decide(r, {keep: true});
    else if (ev.key === "0" && r) decide(r, null);
    else if (/^[1-9]$/.test(ev.key) && r && Number(ev.key) <= DATA.classes.length) decide(r, {relabel: DATA.classes[Number(ev.key) - 1]});
    else if (ev.key === "e") exportCsv();
    else return;
    ev.preventDefault();
  });

  $("title").textContent = DATA.title;
  const gt = DATA.ground_truth, parts = [];
  for (const k in gt) parts.push(k.split("_")[0] + " flags vs ground truth: precision " + (100 * gt[k].precision).toFixed(1) + "% (random " + (100 * gt[k].random_precision).toFixed(1) + "%), recall " + (100 * gt[k].recall).toFixed(1) + "%");
  $("gt").textContent = DATA.rows.length + " flagged of " + DATA.num_samples + " videos, most suspicious first. " + parts.join("; ");
  DATA.classes.forEach((c, i) => $("f-class").appendChild(el("option", {value: c}, (i + 1) + " " + c)));
  ["f-class", "f-flag", "f-decision"].forEach((id) => $(id).addEventListener("change", () => { page = 0; focus = 0; applyFilters(); }));
  $("prev").addEventListener("click", () => moveFocus(-(focus % PAGE_SIZE) - PAGE_SIZE));
  $("next").addEventListener("click", () => moveFocus(PAGE_SIZE - (focus % PAGE_SIZE)));
  $("export").addEventListener("click", exportCsv);
  window.rdferReview = {exportCsv: exportCsv, decisions: () => decisions};
  applyFilters();
})();
</script>
</body>
</html>
"""
