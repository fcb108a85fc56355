"""The README's code, as a reader pastes it: its fenced blocks, its shell commands, and a runner
for its Python blocks. Standard library only, so the newcomer script can run it with a fresh
wheel install (``python tests/readme.py python README.md --cwd DIR``).

Used by ``tests/test_readme.py`` (every command of the README runs, with tiny sizes) and by
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
from typing import List, NamedTuple

_FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


class Block(NamedTuple):
    lang: str
    code: str
    line: int  # 1-based line of the opening fence


def blocks(text: str, lang: str) -> List[Block]:
    """The fenced code blocks of language ``lang``, in order."""
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
            for m in _FENCE.finditer(text) if m.group(1) == lang]


def shell_commands(text: str) -> List[str]:
    """Every command of the ``bash`` blocks: continuation lines joined, comments dropped, blanks
    squeezed, so a README command reads as one line (what the command tables key on)."""
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


def run_python_blocks(readme: Path, cwd: Path) -> int:
    """Exec every ``python`` block of ``readme`` in order, in one namespace (one reader, one
    session), with ``cwd`` as the working directory. Returns the number of blocks run."""
    text = Path(readme).read_text(encoding="utf-8")
    namespace: dict = {"__name__": "__readme__"}
    os.chdir(cwd)
    found = blocks(text, "python")
    for block in found:
        start = time.time()
        try:
            exec(compile(block.code, f"{readme}:{block.line}", "exec"), namespace)
        except Exception as err:
            raise RuntimeError(f"README python block at line {block.line} failed: {type(err).__name__}: {err}") from err
        print(f"README python block at line {block.line}: ok ({time.time() - start:.1f} s)", flush=True)
    return len(found)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["python", "commands"], help="run the python blocks, or list the shell commands")
    p.add_argument("readme", type=Path)
    p.add_argument("--cwd", type=Path, default=Path.cwd(), help="working directory for the python blocks")
    args = p.parse_args(argv)
    if args.what == "commands":
        print("\n".join(shell_commands(args.readme.read_text(encoding="utf-8"))))
        return 0
    n = run_python_blocks(args.readme.resolve(), args.cwd)
    print(f"{n} README python blocks ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
