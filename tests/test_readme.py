"""The README and the documentation pages (``docs/``) cannot drift: every shell command of their
``bash`` blocks is listed below and run (with tiny sizes appended, on miniature data standing in
for the user's), in the order a reader meets them (the README, then the site's nav), and every
``python`` block runs top to bottom, one session per page. Every other fence is output or data
(``text``, ``csv``, ``diff``), never code left unrun. The checkpoint paths the examples use are
the ones ``make run`` really writes: the workspace gets them from a real (tiny) ``rdfer demo``.

A new or changed command on any page fails ``test_every_docs_command_is_listed`` until it is
added to ``COMMANDS`` with how to run it.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from conftest import REAL_VIDEO_DIR, REPO
from data_trees import write_dfew_csv, write_frames, write_video
from readme import RUN_LANGS, SHOWN_LANGS, all_blocks, blocks, doc_pages, shell_commands

README = REPO / "README.md"
DOCS = REPO / "docs"


def _nav_pages(nav) -> list:
    """The pages of mkdocs.yml's nav, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_pages(v)]
    return [p for item in nav for p in _nav_pages(item)]


def _reading_order() -> list:
    """README.md, then the docs pages in the site's nav order, then any page the nav leaves out."""
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("!", lambda *_: None)  # mkdocs.yml's !relative and friends
    nav = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=loader)["nav"]
    pages = [DOCS / p for p in _nav_pages(nav)]
    return [README] + pages + [p for p in doc_pages([DOCS]) if p not in pages]


PAGES = _reading_order()
# `--8<-- "FILE"` / `--8<-- "FILE:SECTION"`: what the site includes into a page (pymdownx.snippets).
_INCLUDE = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"\s*$', re.M)


def _page_commands():
    """Every shell command of every page, each once, in reading order."""
    found = []
    for page in PAGES:
        for command in shell_commands(page.read_text(encoding="utf-8")):
            if command not in found:
                found.append(command)
    return found

# Appended to every training command (argparse: the last value of a flag wins).
TINY_TRAIN = ["--epochs", "1", "--warmup-epochs", "0", "--num-frames", "8", "--image-size", "32", "--batch-size", "8",
              "--workers", "0", "--synthetic-train", "16", "--synthetic-test", "8", "--quiet"]
# The paper-sized backbones (33 M / 25 M parameters): one optimizer step on the 14 training videos,
# 2 clips of 2 frames.
ONE_STEP = TINY_TRAIN + ["--batch-size", "16", "--model-option", "n_clips=2", "--model-option", "clip_len=2"]
TINY_DATA = ["--num-frames", "8", "--image-size", "32", "--workers", "0"]
TINY_SYNTHETIC = ["--synthetic-train", "48", "--synthetic-test", "24", "--workers", "0"]
# `make run` is `rdfer demo` = rdfer.engine.demo.run_demo; here with tiny sizes.
DEMO = dict(epochs=1, synthetic_train=32, synthetic_test=16, num_frames=8, progress=False)

CREMA_D = REPO.parent / "shared" / "data" / "crema-d"
CREMA_D_CLIPS = {"HAP": "happy", "SAD": "sad", "NEU": "neutral", "ANG": "angry"}
CREMA_D_PRESENT = all((CREMA_D / f"1001_DFA_{k}_XX.flv").is_file() for k in CREMA_D_CLIPS)

# Command of a page -> (extra arguments, or None to skip; why). Commands run in reading order, each once.
PACK = ["--num-frames", "8", "--image-size", "32", "--quiet"]
COMMANDS = {
    "make run": (None, "run by the `workspace` fixture as `rdfer demo` with 1 epoch of 48 videos"),
    "make test": (None, "this test suite itself"),
    "pip install 'rdfer @ git+https://github.com/OWNER/rdfer.git'": ([], "git URL -> this checkout, --dry-run"),
    "pip install 'rdfer[faces,viz] @ git+https://github.com/OWNER/rdfer.git'": ([], "git URL -> this checkout, --dry-run"),
    "pip install ./rdfer": ([], "local checkout, --dry-run"),
    "pip wheel --no-deps -w dist ./rdfer": ([], "builds the wheel for real"),
    "pip install 'dist/rdfer-*.whl'": ([], "the wheel just built, --dry-run"),
    "rdfer train dfew --root /data/DFEW --fold 1": (TINY_TRAIN, ""),
    "rdfer train dfew --root /data/DFEW --folds 1-5": (TINY_TRAIN, ""),
    "rdfer train ferv39k --root /data/FERV39K": (TINY_TRAIN, ""),
    "rdfer train csv --train train.csv --test test.csv": (TINY_TRAIN, ""),
    "rdfer pack dfew --root /data/DFEW --fold 1 --split train --out packs/dfew1_train": (PACK, ""),
    "rdfer pack dfew --root /data/DFEW --fold 1 --split test --out packs/dfew1_test": (PACK, ""),
    "rdfer train packed --train packs/dfew1_train --test packs/dfew1_test": (TINY_TRAIN, ""),
    "rdfer pack ferv39k --root /data/FERV39K --split train --out packs/ferv_train": (PACK, ""),
    "rdfer pack csv --csv train.csv --out packs/mine_train": (PACK, ""),
    "rdfer pack csv --csv test.csv --classes happy,sad,neutral,angry,surprise,disgust,fear --out packs/mine_test": (PACK, ""),
    "rdfer pack dfew --root /data/DFEW --fold 1 --split train --format webdataset --shard-size 64 --out shards/dfew1_train": (
        PACK + ["--shard-size", "4"], "14 videos in 4 shards, as the next command's pattern names"),
    "rdfer pack dfew --root /data/DFEW --fold 1 --split test --format webdataset --out shards/dfew1_test": (PACK, ""),
    "rdfer train webdataset --train 'shards/dfew1_train/shard-{000000..000003}.tar' --test shards/dfew1_test": (
        TINY_TRAIN, ""),
    "python benchmarks/dataloading.py": (None, "a benchmark (minutes): tests/test_benchmarks.py runs its --quick variant"),
    "python benchmarks/scalability.py": (None, "a benchmark (minutes): tests/test_flops.py runs its --quick variant"),
    "python benchmarks/feeding.py": (None, "a benchmark (about a minute): tests/test_benchmarks.py runs its --quick variant"),
    "python benchmarks/feeding.py --device cuda": (None, "needs a GPU; tests/test_benchmarks.py runs the same code with --device cpu"),
    "python benchmarks/scalability.py --device cuda": (None, "needs a GPU; the same code as the CPU run"),
    "python benchmarks/scalability.py --backbones r3d_18 timm/resnet18 x3d_xs --no-timing": (
        None, "the --quick run's code (tests/test_flops.py) on three full-size backbones: a minute of CPU"),
    "python benchmarks/scalability.py --quick --out /tmp/s": (None, "tests/test_flops.py::test_scalability_quick_end_to_end runs it"),
    "rdfer train synthetic --noise-rate 0.3": (TINY_TRAIN, ""),
    "rdfer train synthetic --noise-rate 0.3 --recipe paper --out runs/synthetic_paper": (TINY_TRAIN, ""),
    "rdfer train dfew --root /data/DFEW --fold 1 --out runs/dfew_fold1": (TINY_TRAIN, ""),
    "rdfer eval dfew --root /data/DFEW --fold 1 --checkpoint runs/dfew_fold1": (TINY_DATA, ""),
    "rdfer train dfew --root /data/DFEW --fold 1 --backbone r3d_18 --pretrained": (ONE_STEP, "--pretrained dropped: no download in tests"),
    "rdfer train dfew --root /data/DFEW --fold 1 --model rdfer_resnet50 --val-fraction 0.1": (
        ONE_STEP + ["--val-fraction", "0.5"], "0.5: one validation video per class of the miniature tree"),
    "rdfer train csv --train train.csv --test test.csv --strategy ce --class-weighted": (TINY_TRAIN, ""),
    "rdfer train ferv39k --root /data/FERV39K --config my.yaml --lr 3e-4": (TINY_TRAIN, ""),
    "torchrun --standalone --nproc_per_node=4 -m rdfer train dfew --root /data/DFEW --fold 1 --amp": (TINY_TRAIN, "2 processes on 2 cores"),
    "rdfer predict clip1.mp4 clip2.mov --checkpoint runs/demo/rdfer": ([], ""),
    "rdfer train --config runs/demo/rdfer/config.yaml --out runs/rerun": (TINY_TRAIN, ""),
    "rdfer publish runs/demo/rdfer --repo ORG/NAME --dry-run staged/rdfer-demo": ([], ""),
    "rdfer publish runs/demo/rdfer --repo ORG/NAME": (None, "uploads to the Hugging Face Hub (tests: --dry-run above)"),
    "rdfer predict clip.mp4 --checkpoint hf-hub:ORG/NAME": (None, "needs a published model; tests/test_hub.py loads one from a fake cache"),
    "hf download ORG/NAME": (None, "downloads from the Hugging Face Hub"),
    "rdfer audit dfew --root /data/DFEW --fold 1 --checkpoint runs/dfew_fold1": (TINY_DATA, ""),
    "rdfer audit synthetic --checkpoint runs/demo/rdfer --synthetic-train 1200 --synthetic-test 600 --noise-rate 0.3 --synthetic-distribution long_tail": (TINY_SYNTHETIC, ""),
    "rdfer analyze synthetic --checkpoint runs/demo/rdfer --synthetic-train 1200 --synthetic-test 600 --noise-rate 0.3 --synthetic-distribution long_tail": (TINY_SYNTHETIC, ""),
    # Your own videos: raw face videos (the real CREMA-D clips) -> pack --crop-faces -> train -> predict.
    "rdfer pack csv --csv raw/train.csv --crop-faces --out packs/faces_train": (
        PACK + ["--detect-stride", "16"] if CREMA_D_PRESENT else None, "needs raw face videos: ../shared/data/crema-d"),
    "rdfer pack csv --csv raw/test.csv --crop-faces --classes happy,sad,neutral,angry --out packs/faces_test": (
        PACK + ["--detect-stride", "16"] if CREMA_D_PRESENT else None, "needs raw face videos"),
    "rdfer train packed --train packs/faces_train --test packs/faces_test --num-frames 16 --out runs/faces": (
        TINY_TRAIN if CREMA_D_PRESENT else None, "needs the packs above"),
    "rdfer eval packed --train packs/faces_train --test packs/faces_test --checkpoint runs/faces": (
        TINY_DATA if CREMA_D_PRESENT else None, "needs the run above"),
    "rdfer predict new_video.mp4 --checkpoint runs/faces": ([] if CREMA_D_PRESENT else None, "needs the run above"),
    "rdfer audit packed --train packs/faces_train --test packs/faces_test --checkpoint runs/faces --html": (
        TINY_DATA if CREMA_D_PRESENT else None, "needs the run above"),
    "rdfer export --checkpoint runs/demo/rdfer --format onnx": ([], ""),
    "rdfer export --checkpoint runs/demo/rdfer --format torchscript": ([], ""),
}


def test_every_docs_command_is_listed():
    """The README's and every docs page's commands, against COMMANDS (a command on several pages
    runs once, where a reader first meets it)."""
    found = _page_commands()
    assert len(found) == len(set(found))
    new = [c for c in found if c not in COMMANDS]
    gone = [c for c in COMMANDS if c not in found]
    assert not new and not gone, (f"commands of README.md or docs/ not in COMMANDS: {new}; "
                                  f"listed but on no page any more: {gone}")
    assert README in PAGES and len(PAGES) > 8 and all(p.is_file() for p in PAGES)


def test_every_code_block_is_run_or_shown():
    """Every fence of every page, and of every file the site includes into a page, is code the
    tests run (bash, python) or shown output or data (text, csv, diff): no unlabelled fence, no
    indented one the parser would not see, no include of a missing file or README section."""
    texts = {page: page.read_text(encoding="utf-8") for page in PAGES}
    for page, text in list(texts.items()):
        for m in _INCLUDE.finditer(text):
            target = REPO / m.group(1)
            assert target.is_file(), f"{page}: includes {m.group(1)}, which does not exist"
            included = target.read_text(encoding="utf-8")
            if m.group(2):
                assert f"<!-- --8<-- [start:{m.group(2)}] -->" in included, f"{page}: no section {m.group(2)} in {m.group(1)}"
            texts.setdefault(target, included)
    assert len(texts) > len(PAGES), "the benchmark pages include benchmarks/results/*.md"
    for path, text in texts.items():
        for block in all_blocks(text):
            assert block.lang in RUN_LANGS + SHOWN_LANGS, (
                f"{path.relative_to(REPO)}:{block.line}: a ```{block.lang} fence; code is ```bash or ```python "
                f"(run by this test), output and data are ```{' / ```'.join(SHOWN_LANGS)}")
        indented = [n + 1 for n, line in enumerate(text.splitlines()) if re.match(r"^\s+```", line)]
        assert not indented, f"{path.relative_to(REPO)}: indented fences at lines {indented} are not run"
    assert sum(len(blocks(text, "python")) for text in texts.values()) >= 5


def test_every_benchmark_result_is_a_docs_page():
    """docs/benchmarks/results/NAME.md includes benchmarks/results/NAME.md, for every results file."""
    results = {p.name for p in (REPO / "benchmarks" / "results").glob("*.md")}
    pages = {p.name for p in (DOCS / "benchmarks" / "results").glob("*.md")}
    assert results == pages, f"results without a page: {sorted(results - pages)}; pages without results: {sorted(pages - results)}"
    for name in pages:
        text = (DOCS / "benchmarks" / "results" / name).read_text(encoding="utf-8")
        assert f'--8<-- "benchmarks/results/{name}"' in text


def test_readme_stays_short():
    """The README is what a newcomer needs in five minutes; the rest is in docs/."""
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move sections into docs/"


@contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _dfew(root: Path) -> None:
    """14 clips, two of each class; fold 1 trains on all, folds 2-5 (for --folds 1-5) on 7; tests on 7."""
    for i in range(1, 15):
        write_frames(root / "Clip" / "clip_224x224" / f"{i:05d}", 8, 32)
    for fold in range(1, 6):
        write_dfew_csv(root, "train", fold, [f"{i},{(i - 1) % 7 + 1}" for i in range(1, 15 if fold == 1 else 8)])
        write_dfew_csv(root, "test", fold, [f"{i},{(i - 1) % 7 + 1}" for i in range(1, 8)])


def _ferv39k(root: Path) -> None:
    names = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
    rels = [f"Action/{name}/{k:04d}" for k in range(2) for name in names]
    for rel in rels:
        write_frames(root / "2_ClipsforFaceCrop" / rel, 8, 32)
    for split in ("train", "test"):
        path = root / "4_setups" / "All_scenes" / f"{split}_All.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{rel} {rel.split('/')[1]}\n" for rel in rels))


def _user_clip(ws: Path, name: str, real: str) -> None:
    """A user's video: a real clip when the shared test clips are here, else a generated one."""
    src = REAL_VIDEO_DIR / real
    if src.is_file():
        shutil.copyfile(src, ws / name)
    else:
        write_video(ws / name, 12, 48)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder laid out as a README reader's: `make run` done, their data and files beside it."""
    ws = tmp_path_factory.mktemp("readme")
    from rdfer.engine.demo import run_demo

    with _cwd(ws):
        run_demo(**DEMO)  # `make run`, tiny: the README's checkpoint paths must be the ones it writes
    _dfew(ws / "DFEW")
    _ferv39k(ws / "FERV39K")
    labels = ["happy", "sad", "neutral", "angry"]
    for split, n in (("train", 8), ("test", 4)):
        rows = []
        for i in range(n):
            write_video(ws / "videos" / f"{split}_{i}.mp4", 10, 32)
            rows.append(f"videos/{split}_{i}.mp4,{labels[i % 4]}")
        (ws / f"{split}.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (ws / "my.yaml").write_text("model: rdfer_small\nweight_decay: 0.01\n")
    _user_clip(ws, "clip1.mp4", "single_face.mp4")
    _user_clip(ws, "clip2.mov", "face_noface.mov")
    _user_clip(ws, "clip.mp4", "single_face.mp4")
    _user_clip(ws, "new_video.mp4", "single_face.mp4")
    if CREMA_D_PRESENT:  # "Your own videos": raw videos of a face, labelled
        (ws / "raw").mkdir()
        rows = [f"{CREMA_D / f'1001_DFA_{k}_XX.flv'},{label}" for k, label in CREMA_D_CLIPS.items()]
        (ws / "raw" / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
        (ws / "raw" / "test.csv").write_text("path,label\n" + "\n".join(rows[:2]) + "\n")
    return ws


def _argv(command: str, ws: Path, extra):
    words = shlex.split(command)
    words = [w.replace("/data/DFEW", str(ws / "DFEW")).replace("/data/FERV39K", str(ws / "FERV39K"))
             .replace("https://github.com/OWNER/rdfer.git", f"file://{REPO}").replace("./rdfer", str(REPO))
             for w in words if w != "--pretrained"]
    words = [m for w in words for m in (sorted(glob.glob(str(ws / w))) if "*" in w else [w])]
    return words + list(extra)


def _run_pip(words, ws: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    if words[1] == "install":  # resolve and build metadata, install nothing; no build download
        words = words[:2] + ["--dry-run", "--no-deps", "--no-build-isolation"] + words[2:]
    else:
        words = words[:2] + ["--no-build-isolation"] + words[2:]
    proc = subprocess.run(pip + words[1:], cwd=ws, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_every_docs_command_runs(workspace):
    from rdfer.cli import main

    ws, outs = workspace, {}
    assert (ws / "runs" / "demo" / "rdfer" / "model.safetensors").is_file()
    for n, command in enumerate(_page_commands()):
        start = time.time()
        extra, why = COMMANDS[command]
        if extra is None:
            continue
        words = _argv(command, ws, extra)
        if (words[:2] == ["rdfer", "train"] or words[0] == "torchrun") and "--out" not in command:
            words += ["--out", f"runs/readme_{n}"]  # each its own run folder
            outs[command] = ws / "runs" / f"readme_{n}"
        if words[0] == "pip":
            if "git+" in command and not (REPO / ".git").exists():
                continue  # an unpacked sdist: no git history to install from
            _run_pip(words, ws)
        elif words[0] == "torchrun":
            nproc = [w for w in words if w.startswith("--nproc_per_node")][0]
            words[words.index(nproc)] = "--nproc_per_node=2"
            proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", *words[1:]], cwd=ws,
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{command}: {proc.stderr[-3000:]}"
        else:
            assert words[0] == "rdfer", command
            with _cwd(ws):
                code = main(words[1:])
            # Without the shared real clips the user's videos are generated ones with no face in
            # them: predict then exits 3, its documented "no face" status.
            no_real_face = words[1] == "predict" and not (REAL_VIDEO_DIR / "single_face.mp4").is_file()
            assert code == 0 or (no_real_face and code == 3), f"`{command}` exited {code}"
        print(f"[readme] {time.time() - start:5.1f} s  {command}", flush=True)
    # What the commands promise to write.
    assert (ws / "runs" / "dfew_fold1" / "eval_test" / "metrics.json").is_file()
    assert (ws / "runs" / "dfew_fold1" / "audit_train" / "audit.md").is_file()
    # `rdfer train synthetic` starts from the CPU recipe, `--recipe paper` from the paper's.
    default_run = yaml.safe_load((outs["rdfer train synthetic --noise-rate 0.3"] / "config.yaml").read_text())
    paper_run = yaml.safe_load((ws / "runs" / "synthetic_paper" / "config.yaml").read_text())
    assert (default_run["lr"], default_run["weight_decay"], default_run["augment"]) == (2e-3, 0.05, False)
    assert (paper_run["lr"], paper_run["weight_decay"], paper_run["augment"]) == (7e-4, 0.05, True)
    for name in ("model.onnx", "model.torchscript.pt", "audit_train/audit.md", "analyze_test/analysis.md"):
        assert (ws / "runs" / "demo" / "rdfer" / name).is_file(), name
    for pack in ("dfew1_train", "ferv_train", "mine_train", "mine_test"):
        assert (ws / "packs" / pack / "index.json").is_file(), pack
    if CREMA_D_PRESENT:  # the crop recorded by the pack is the model's, and predict applies it
        framing = json.loads((ws / "runs" / "faces" / "results.json").read_text())["face_framing"]
        assert framing["source"] == "pack" and framing["margin"] == 0.25
        assert (ws / "runs" / "faces" / "audit_train" / "review.html").is_file()
        assert (ws / "packs" / "faces_train" / "faces.csv").is_file()
    assert list(ws.glob("dist/rdfer-*.whl"))


PYTHON_PAGES = [p for p in PAGES if blocks(p.read_text(encoding="utf-8"), "python")]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[str(p.relative_to(REPO)) for p in PYTHON_PAGES])
def test_docs_python_blocks_run(workspace, page):
    """Every ```python block of a page, in one session, as a reader pastes them (a real process:
    the same runner the newcomer script uses against the installed wheel)."""
    n = len(blocks(page.read_text(encoding="utf-8"), "python"))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "readme.py"), "python", str(page), "--cwd", str(workspace)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"{n} python blocks ran in 1 pages" in proc.stdout


def test_docs_run_times_are_the_results_files():
    """A run time the docs state is the one its results file recorded, not typed by hand."""
    text = (DOCS / "data.md").read_text(encoding="utf-8")
    meta = json.loads((REPO / "benchmarks" / "results" / "synthetic_learnability.json").read_text())["meta"]
    stated = re.search(r"(\d+) s in all\s*\n?\s*\(\[results\]\(benchmarks/results/synthetic_learnability\.md\)", text)
    assert stated, "docs/data.md: the learnability benchmark's run time and results link"
    assert int(stated.group(1)) == round(meta["seconds"])
