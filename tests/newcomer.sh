#!/usr/bin/env bash
# The newcomer's path from a built wheel (`make newcomer`; CI runs it after `make test`):
#   1. build the wheel with pip (the build backend, setuptools, comes from the package index);
#   2. install it NON-editable into a fresh virtualenv without system site-packages (torch and
#      torchvision pinned by constraints.txt, which pip takes from local disk on the project's machines);
#   3. from a folder outside the checkout: rdfer --version / --help / backbones, the one-line errors
#      of missing extras, one tiny training run, then the `faces` extra, `rdfer predict` on a real
#      clip and every Python block of the README and of the docs pages (tests/readme.py), against the
#      installed package.
# A module, py.typed, the licence, the entry point or package data missing from the wheel fails it.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/rdfer-newcomer.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
step() { printf '\n== newcomer: %s (%ss)\n' "$1" "$SECONDS"; }

step "build the wheel"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$REPO"
WHEEL="$(ls "$WORK"/dist/rdfer-*.whl)"
echo "$WHEEL"

step "fresh virtualenv, non-editable install"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet -c "$REPO/constraints.txt" "$WHEEL"
mkdir "$WORK/home"
cd "$WORK/home"  # nothing of the checkout on sys.path from here on

step "the installed package"
"$VPY" - "$REPO" <<'EOF'
import importlib.metadata as md, importlib.resources as res, pathlib, sys
import rdfer

repo = pathlib.Path(sys.argv[1]).resolve()
where = pathlib.Path(rdfer.__file__).resolve()
assert "site-packages" in where.parts and repo not in where.parents, f"rdfer imported from {where}, not the wheel"
assert md.version("rdfer") == rdfer.__version__, (md.version("rdfer"), rdfer.__version__)
assert res.files("rdfer").joinpath("py.typed").is_file(), "py.typed missing from the wheel"
assert res.files("rdfer.analysis").joinpath("review_assets/page.js").is_file(), "the review page's files missing from the wheel"
files = [str(f) for f in md.files("rdfer")]
assert any(f.endswith("licenses/LICENSE") for f in files), "LICENSE missing from the wheel"
# Every module of the checkout is in the wheel.
missing = sorted(str(p.relative_to(repo)) for p in (repo / "rdfer").rglob("*.py")
                 if not (where.parent / p.relative_to(repo / "rdfer")).is_file())
assert not missing, f"modules missing from the wheel: {missing}"
meta = md.metadata("rdfer")
assert meta["License-Expression"] == "MIT" and meta.get_all("Classifier") and meta.get_all("Project-URL")
print(f"rdfer {rdfer.__version__} from {where.parent}: modules, py.typed, LICENSE, metadata ok")
EOF
RDFER="$WORK/venv/bin/rdfer"
test "$("$RDFER" --version)" = "rdfer $("$VPY" -c 'import rdfer; print(rdfer.__version__)')"
"$RDFER" --help > /dev/null
"$RDFER" train --help > /dev/null
"$RDFER" backbones

step "missing extras are named, not a traceback"
for cmd in "export --checkpoint runs/none --format onnx" "analyze synthetic --checkpoint runs/none" \
           "predict clip.mp4 --checkpoint runs/none"; do
  if "$RDFER" $cmd > out.txt 2>&1; then echo "rdfer $cmd should fail without its extra"; exit 1; fi
  grep -q "pip install 'rdfer\[" out.txt || { cat out.txt; exit 1; }
  if grep -q Traceback out.txt; then cat out.txt; exit 1; fi
  head -1 out.txt
done

step "one tiny training run (the README's checkpoint path)"
"$RDFER" train synthetic --epochs 1 --warmup-epochs 0 --synthetic-train 16 --synthetic-test 8 --num-frames 8 \
  --batch-size 8 --quiet --out runs/demo/rdfer
test -f runs/demo/rdfer/model.safetensors && test -f runs/demo/rdfer/train.log
"$RDFER" export --checkpoint runs/demo/rdfer --format torchscript
"$RDFER" audit synthetic --checkpoint runs/demo/rdfer --synthetic-train 16 --synthetic-test 8 --num-frames 8 \
  --image-size 32 --html --out runs/demo/audit > /dev/null  # review.html is built from the wheel's package data
grep -q 'id="audit-data"' runs/demo/audit/review.html

step "the faces extra, predict on a real clip, the python blocks of the README and docs/"
"$VPY" -m pip install --quiet -c "$REPO/constraints.txt" "$WHEEL[faces]"
CLIP="$REPO/../shared/data/real-video/single_face.mp4"
if [ -f "$CLIP" ]; then
  cp "$CLIP" clip.mp4
  "$RDFER" predict clip.mp4 --checkpoint runs/demo/rdfer
else  # a pip user's checkout without the shared test clips: any video will do for the blocks
  "$VPY" -c "import av, numpy as np
with av.open('clip.mp4', 'w') as c:
    s = c.add_stream('mpeg4', rate=10); s.width = s.height = 48; s.pix_fmt = 'yuv420p'
    for k in range(12):
        for p in s.encode(av.VideoFrame.from_ndarray(np.full((48, 48, 3), 20 * k, np.uint8), format='rgb24')): c.mux(p)
    for p in s.encode(): c.mux(p)"
fi
"$VPY" "$REPO/tests/readme.py" python "$REPO/README.md" "$REPO/docs" --cwd "$WORK/home"

step "done"
echo "newcomer: 1 passed, 0 failed"
