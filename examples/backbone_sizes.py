"""Parameter counts of the paper's five backbones with a 7-class linear head, next to Table VI.

    python examples/backbone_sizes.py
"""

import rdfer

PAPER_TABLE_VI = {"cnn_lstm": 22.2, "mc3_18": 11.5, "r2plus1d_18": 31.3, "r3d_18": 33.2, "former_dfer": 18.0}

print(f"{'backbone':<12} {'ours (M)':>9} {'paper (M)':>10} {'diff':>7}   wrapped with RDFER (M)")
for name, paper in PAPER_TABLE_VI.items():
    backbone = rdfer.create_backbone(name)
    ours = (sum(p.numel() for p in backbone.parameters()) + 7 * (backbone.feature_dim + 1)) / 1e6
    wrapped = sum(p.numel() for p in rdfer.wrap_with_rdfer(name, num_classes=7).parameters()) / 1e6
    print(f"{name:<12} {ours:9.2f} {paper:10.1f} {100 * (ours - paper) / paper:+6.1f}%   {wrapped:.2f}")
