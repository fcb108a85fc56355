"""MkDocs hook: the benchmarks' figures (``benchmarks/results/*.png``) are served at
``benchmarks/results/NAME.png``, beside the pages that include the results' Markdown
(``docs/benchmarks/results/``), so the site shows the committed files themselves, never a copy."""

from pathlib import Path

from mkdocs.structure.files import File


def on_files(files, config):
    results = Path(config["config_file_path"]).parent / "benchmarks" / "results"
    for figure in sorted(results.glob("*.png")):
        files.append(File.generated(config, f"benchmarks/results/{figure.name}", abs_src_path=str(figure)))
    return files
