// The review page's behaviour (rdfer/analysis/review_page.py inlines it into review.html).
// Data reaches the DOM only through textContent and setAttribute, never as HTML.
"use strict";
(function () {
  // A CSV field as Python's csv module (QUOTE_MINIMAL) writes it, so `rdfer train csv` reads it back.
  function csvField(s) { s = String(s); return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }

  // The corrected training CSV: every audited video (`all`: [path, label, dataset index], paths
  // absolute where the video is a file on disk), with the relabel decisions (index -> {relabel}) applied.
  function correctedCsv(all, decisions) {
    const lines = ["path,label"];
    all.forEach(([path, label, index]) => {
      const d = decisions[index];
      lines.push(csvField(path) + "," + csvField(d && d.relabel ? d.relabel : label));
    });
    return lines.join("\n") + "\n";
  }

  if (typeof document === "undefined") {  // node (the tests): the pure helpers only
    if (typeof module === "object" && module.exports) module.exports = {csvField, correctedCsv};
    return;
  }

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

  function exportCsv() {
    const text = correctedCsv(DATA.all, decisions);
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
