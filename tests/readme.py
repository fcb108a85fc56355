"""The code of the README and of the documentation pages (``docs/``), as a reader pastes it: their
fenced blocks, their shell commands, and a runner for their Python blocks. Standard library only,
so the newcomer script can run it with a fresh wheel install
(``python tests/readme.py python README.md docs --cwd DIR``).

Used by ``tests/test_readme.py`` (every command of every page runs, with tiny sizes) and by
``tests/newcomer.sh`` (every Python block runs against the installed wheel).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Iterable, List, NamedTuple, Union

_FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)

#: The fences that are code a reader runs: every one of them is run by the tests.
RUN_LANGS = ("bash", "python")
#: The fences that are not code: program output, folder layouts, file contents, diffs.
SHOWN_LANGS = ("text", "csv", "diff")


class Block(NamedTuple):
    lang: str
    code: str
    line: int  # 1-based line of the opening fence


def all_blocks(text: str) -> List[Block]:
    """Every fenced code block, in order."""
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in _FENCE.finditer(text)]


def blocks(text: str, lang: str) -> List[Block]:
    """The fenced code blocks of language ``lang``, in order."""
    return [b for b in all_blocks(text) if b.lang == lang]


def shell_commands(text: str) -> List[str]:
    """Every command of the ``bash`` blocks: continuation lines joined, comments dropped, blanks
    squeezed, so a command reads as one line (what the command tables key on)."""
    out: List[str] = []
    for block in blocks(text, "bash"):
        joined = re.sub(r"\\\n\s*", " ", block.code)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            while words:  # `a && b` is two commands
                cut = words.index("&&") if "&&" in words else len(words)
                out.append(shlex.join(words[:cut]))
                words = words[cut + 1:]
    return out


def doc_pages(paths: Iterable[Union[str, Path]]) -> List[Path]:
    """The Markdown pages named: a file as it is, a folder as every ``*.md`` below it (sorted)."""
    pages: List[Path] = []
    for path in map(Path, paths):
        pages += sorted(path.rglob("*.md")) if path.is_dir() else [path]
    return pages


def run_python_blocks(page: Path, cwd: Path) -> int:
    """Exec every ``python`` block of ``page`` in order, in one namespace (one reader, one
    session), with ``cwd`` as the working directory. Returns the number of blocks run."""
    text = Path(page).read_text(encoding="utf-8")
    namespace: dict = {"__name__": "__readme__"}
    os.chdir(cwd)
    found = blocks(text, "python")
    for block in found:
        start = time.time()
        try:
            exec(compile(block.code, f"{page}:{block.line}", "exec"), namespace)
        except Exception as err:
            raise RuntimeError(f"{page}: python block at line {block.line} failed: {type(err).__name__}: {err}") from err
        print(f"{page}: python block at line {block.line}: ok ({time.time() - start:.1f} s)", flush=True)
    return len(found)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["python", "commands"], help="run the python blocks, or list the shell commands")
    p.add_argument("pages", type=Path, nargs="+", help="Markdown files, or folders of them (README.md docs)")
    p.add_argument("--cwd", type=Path, default=Path.cwd(), help="working directory for the python blocks")
    args = p.parse_args(argv)
    pages = [page.resolve() for page in doc_pages(args.pages)]  # before the blocks change directory
    if args.what == "commands":
        for page in pages:
            for command in shell_commands(page.read_text(encoding="utf-8")):
                print(command)
        return 0
    total = 0
    for page in pages:  # each page is its own session
        n = run_python_blocks(page, args.cwd)
        if n:
            print(f"{page}: {n} python blocks ran", flush=True)
        total += n
    print(f"{total} python blocks ran in {len(pages)} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
