"""Issue 27, the audit's outputs: paths holding markup, commas, quotes and newlines survive the
review page (its data cannot end its <script>), the audit CSVs (stdlib csv writer) and the page's
corrected-CSV export (absolute paths, read back by VideoCSV from another working directory). The
page's own script runs in node (when installed) and in headless Chromium (when installed)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from data_trees import write_frames
from rdfer.analysis.audit import write_audit
from rdfer.analysis.review_page import render_page, script_json
from rdfer.cli import main
from rdfer.data import VideoCSV
from test_review_page import _Page, _open, browser  # noqa: F401  (browser: the Chromium fixture)

NODE = shutil.which("node")
PAGE_JS = Path(__file__).resolve().parents[1] / "rdfer" / "analysis" / "review_assets" / "page.js"
# Each piece once broke something: a markup end / comment opener inside the page's JSON (blank
# page), a comma, quote or newline in a CSV field, "|" in a markdown table, U+2028 in a script.
HOSTILE = 'v{i},"q"\n<!--<script>&\u2028|</script>'
KEYS = ["index", "path", "label", "predicted", "clip_vote", "agreement", "confidence", "loss", "flag"]


def _script_text(html: str) -> str:
    parser = _Page()
    parser.feed(html)
    return parser.data


def test_script_json_cannot_end_its_script_element():
    data = {"title": "</script><script>alert(1)</script>", "rows": [{"path": "a<!--<script>b</script>&c\u2028d\u2029"}]}
    text = script_json(data)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == data
    page = render_page(data)
    assert "<title>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;</title>" in page
    assert json.loads(_script_text(page)) == data
    # The page's own script is still there, whole, after the data.
    assert page.count("<script") == 2 and page.count("</script>") == 2 and "function correctedCsv" in page


def test_page_script_puts_data_into_the_dom_as_text_only():
    js = PAGE_JS.read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    assert 'JSON.parse(document.getElementById("audit-data").textContent)' in js


def test_audit_csvs_round_trip_a_comma_a_quote_and_a_newline(tmp_path):
    path = '/data/a,b "c"\nd|e\\f'
    row = {"index": 0, "path": path, "label": "happy", "predicted": "sad", "clip_vote": "sad", "agreement": 1.0,
           "confidence": 0.9, "loss": 2.5, "flag": "noisy"}
    other = {**row, "index": 1, "path": "/data/plain", "flag": "ordinary"}
    report = {"num_samples": 2, "t_hard": 0.2, "t_noisy": 0.1, "noisy_requires_mismatch": True, "per_class": [],
              "suspected_label_errors": [row], "hard_samples": [], "all": [row, other], "invalid_excluded": [path]}
    files = write_audit(report, tmp_path)
    for name, expected in (("csv", [row, other]), ("errors", [row]), ("hard", [])):
        with open(files[name], newline="", encoding="utf-8") as f:
            got = list(csv.reader(f))
        assert got == [KEYS] + [[str(r[k]) for k in KEYS] for r in expected]
    md = files["md"].read_text(encoding="utf-8")
    assert "| 0 | /data/a,b \"c\"\\nd\\|e\\\\f | happy |" in md and "- /data/a,b \"c\"\\nd\\|e\\\\f" in md


@pytest.fixture(scope="module")
def hostile_audit(trained_run, tmp_path_factory):
    """``rdfer audit csv --html`` run from ``work/`` on a CSV given by a relative path, whose
    frame folders are named with :data:`HOSTILE`. Returns (root, report rows by index, page)."""
    root = tmp_path_factory.mktemp("hostile")
    data, work = root / "work" / "data", root / "work"
    labels = ["happy", "sad", "angry"]
    rows = []
    for i in range(10):
        rel = f"clips/{HOSTILE.format(i=i)}"
        write_frames(data / rel, 12, size=32)
        rows.append([rel, labels[i % 3]])
    for name, part in (("train.csv", rows[:7]), ("test.csv", rows[7:])):
        with open(data / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["path", "label"], *part])
    cwd = Path.cwd()
    try:
        os.chdir(work)  # the audit runs where the CSV's paths are relative: data/clips/...
        assert main(["audit", "csv", "--train", "data/train.csv", "--test", "data/test.csv", "--checkpoint",
                     str(trained_run[0]), "--num-frames", "8", "--image-size", "32", "--device", "cpu", "--workers", "0",
                     "--t-noisy", "0.3", "--t-hard", "0.3", "--out", "audit", "--html"]) == 0
    finally:
        os.chdir(cwd)
    with open(work / "audit" / "audit.csv", newline="", encoding="utf-8") as f:
        audit = {int(r["index"]): r for r in csv.DictReader(f)}
    return root, audit, work / "audit" / "review.html"


def test_audit_of_hostile_paths_writes_absolute_paths_that_round_trip(hostile_audit):
    root, audit, page = hostile_audit
    expected = {i: str(root / "work" / "data" / "clips" / HOSTILE.format(i=i)) for i in range(7)}
    assert {i: r["path"] for i, r in audit.items()} == expected  # absolute, every character intact
    assert all(Path(p).is_dir() for p in expected.values())
    for name in ("label_errors.csv", "hard_samples.csv"):
        with open(page.parent / name, newline="", encoding="utf-8") as f:
            flagged = list(csv.DictReader(f))
        assert all(r["path"] == expected[int(r["index"])] for r in flagged)
    md = (page.parent / "audit.md").read_text(encoding="utf-8")
    assert "\\n<!--<script>&\u2028\\|</script> |" in md  # one table row per video, the "|" escaped

    html = page.read_text(encoding="utf-8")
    text = _script_text(html)
    assert not set("<>&\u2028") & set(text)
    data = json.loads(text)
    assert [[p, audit[i]["label"], i] for p, _, i in data["all"]] == data["all"]
    assert {i: p for p, _, i in data["all"]} == expected
    assert len(data["rows"]) >= 3 and all(r["path"] == expected[r["index"]] for r in data["rows"])


def _node_export(html: str, decisions: dict) -> str:
    """The corrected CSV as the page's script builds it: page.js's correctedCsv on the JSON that
    JSON.parse reads from the page's data element."""
    prog = ("const {correctedCsv} = require(process.argv[1]); const fs = require('fs');"
            "const input = JSON.parse(fs.readFileSync(0, 'utf8'));"
            "const DATA = JSON.parse(input.text); process.stdout.write(correctedCsv(DATA.all, input.decisions));")
    proc = subprocess.run([NODE, "-e", prog, str(PAGE_JS)], input=json.dumps({"text": _script_text(html), "decisions": decisions}),
                          capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_exported_csv_feeds_back_into_video_csv_from_another_folder(hostile_audit, monkeypatch):
    root, audit, page = hostile_audit
    data = json.loads(_script_text(page.read_text(encoding="utf-8")))
    first, second = data["rows"][0], data["rows"][1]
    new = "fear" if first["label"] != "fear" else "happy"
    text = _node_export(page.read_text(encoding="utf-8"), {str(first["index"]): {"relabel": new},
                                                           str(second["index"]): {"keep": True}})
    assert list(csv.reader(io.StringIO(text, newline="")))[0] == ["path", "label"]
    (root / "export").mkdir()
    (root / "export" / "corrected_labels.csv").write_text(text, encoding="utf-8", newline="")
    (root / "elsewhere").mkdir()
    monkeypatch.chdir(root / "elsewhere")  # neither the audit's folder nor the CSV's
    ds = VideoCSV(root / "export" / "corrected_labels.csv", num_frames=8, image_size=32)
    expected = {int(i): (r["path"], r["label"]) for i, r in audit.items()}
    expected[first["index"]] = (first["path"], new)
    assert [(p, ds.classes[y]) for p, y in ds.samples] == [expected[i] for _, _, i in data["all"]]
    assert ds[0]["video"].shape[1] == 8  # the frames load from the exported path


def test_hostile_page_renders_and_exports_in_chromium(hostile_audit, browser, tmp_path):  # noqa: F811
    root, audit, page = hostile_audit
    data = json.loads(_script_text(page.read_text(encoding="utf-8")))
    _open(browser, page)
    assert browser.js("document.querySelectorAll('article.row').length") == len(data["rows"])  # not a blank page
    assert browser.js("[...document.querySelectorAll('article.row .path')].map(e => e.textContent)") == \
        [r["path"] for r in data["rows"]]
    assert browser.js("document.querySelectorAll('script').length") == 2  # nothing injected
    browser.key("e")
    text = browser.js("document.getElementById('csv-out').value")
    assert [tuple(r) for r in csv.reader(io.StringIO(text, newline=""))][1:] == [(p, label) for p, label, _ in data["all"]]
    assert browser.errors() == []
