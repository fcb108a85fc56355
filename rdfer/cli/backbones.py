"""``rdfer backbones``: the registered backbones with their sizes."""

from __future__ import annotations

def _add_backbones(sub) -> None:
    p = sub.add_parser("backbones", help="list the registered backbones with their sizes")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'r*' or 'timm/resnet*'")
    p.set_defaults(func=_cmd_backbones)


def _cmd_backbones(args) -> int:
    from ..backbones.table import backbone_table

    print(backbone_table(args.pattern))
    return 0
