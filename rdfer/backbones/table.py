"""A Markdown table of the registered backbones (name, token level, feature size, parameters)."""

from __future__ import annotations

from typing import Optional

from ..registry import create_backbone, list_backbones


def backbone_table(pattern: Optional[str] = None, num_classes: int = 7) -> str:
    """Build every backbone matching ``pattern`` and tabulate it.

    Parameters are counted with a ``num_classes``-way linear head, the convention of the paper's
    Table VI. The ``timm/*`` family row is a pointer, not a model.
    """
    rows = ["| backbone | token level | feature dim | params (M, with a 7-class head) |", "|---|---|---:|---:|"]
    for name in list_backbones(pattern):
        if name.endswith("*"):
            rows.append(f"| `{name}` | frame | timm's `num_features` | any timm image model, e.g. `timm/resnet18` |")
            continue
        model = create_backbone(name)
        params = sum(p.numel() for p in model.parameters()) + num_classes * (model.feature_dim + 1)
        rows.append(f"| `{name}` | {model.token_level} | {model.feature_dim} | {params / 1e6:.2f} |")
    return "\n".join(rows)
