"""The ``rdfer`` command line: thin wrappers that parse arguments and call the library.

Each subcommand is added by one ``_add_<name>(subparsers)`` function that sets ``func``.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _add_backbones(sub) -> None:
    p = sub.add_parser("backbones", help="list the registered backbones with their sizes")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'r*' or 'timm/resnet*'")
    p.set_defaults(func=_cmd_backbones)


def _cmd_backbones(args) -> int:
    from .backbones.table import backbone_table

    print(backbone_table(args.pattern))
    return 0


# -- subcommands: add new `_add_<name>` functions above this line, and call them in build_parser --


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdfer",
        description="Robust dynamic facial expression recognition: train, evaluate and inspect RDFER models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in [_add_backbones]:
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
