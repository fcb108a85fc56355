"""The command line starts at once: --version and every --help import no torch, and `import rdfer`
then a model load imports only what that model needs (the lazy package and registry). Times are
measured by benchmarks/startup.py, never asserted here."""

import subprocess
import sys

import pytest

from conftest import REPO

COMMANDS = ["demo", "synth-preview", "train", "eval", "predict", "audit", "analyze", "export", "publish", "backbones",
            "pack"]
HEAVY = ("torch", "torchvision", "timm", "pytorchvideo", "cv2", "numpy")


def _modules_after(code: str) -> set:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stdout.split())


def _run_cli(args) -> str:
    return ("from rdfer.cli import main\ntry:\n    main(" + repr(args) + ")\nexcept SystemExit:\n    pass")


@pytest.mark.parametrize("args", [["--version"], ["--help"]] + [[c, "--help"] for c in COMMANDS])
def test_version_and_help_import_no_torch(args):
    loaded = _modules_after(_run_cli(args))
    assert not [m for m in HEAVY if m in loaded]


def test_import_rdfer_is_lazy_and_complete():
    assert not [m for m in HEAVY if m in _modules_after("import rdfer")]
    import rdfer

    for name in rdfer.__all__:  # every advertised name resolves
        assert getattr(rdfer, name) is not None
    assert set(rdfer.__all__) <= set(dir(rdfer)) and "losses" in dir(rdfer)
    with pytest.raises(AttributeError, match="no attribute 'wrap_with_rdfr'"):
        rdfer.wrap_with_rdfr


def test_a_small_model_imports_no_model_zoo(trained_run):
    run, _ = trained_run
    loaded = _modules_after(f"import rdfer\nrdfer.load_model({str(run)!r})")
    assert "torch" in loaded
    assert not [m for m in ("torchvision.models", "timm", "pytorchvideo") if m in loaded]


def test_builtin_backbone_names_match_their_modules():
    from rdfer.backbones import BUILTIN_BACKBONES, load_all_backbones
    from rdfer.registry import BACKBONES, list_backbones

    listed = list_backbones()
    load_all_backbones()
    assert not BACKBONES._lazy  # every declared name was registered by its module
    assert set(listed) <= set(list_backbones())  # (other tests may have registered their own)
    for name, module in BUILTIN_BACKBONES.items():
        factory = BACKBONES._families[name][0] if name.endswith("/") else BACKBONES._factories[name]
        assert factory.__module__ == f"rdfer.backbones.{module}", name


def test_checkpoint_hub_card_import_no_circle():
    """files <- checkpoint -> hub, model_card -> files, publish -> all of them: no module imports
    one that imports it back (also inside functions)."""
    import ast
    from pathlib import Path

    names = ("files", "checkpoint", "hub", "model_card", "publish")
    graph = {}
    for name in names:
        tree = ast.parse((Path(REPO) / "rdfer" / "engine" / f"{name}.py").read_text())
        graph[name] = {node.module.lstrip(".").split(".")[-1] for node in ast.walk(tree)
                       if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module} & set(names)

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, seen + (n,))) for n in graph[start])

    assert not [n for n in names if reaches(n, n)], graph
    assert graph["files"] == set() and "publish" not in set().union(*graph.values())
